//! What the shared decision code reads of a request, whichever loop parsed it.

use pingora_core::protocols::tls::SslDigest;
use pingora_http::RequestHeader;
use std::net::IpAddr;

use crate::header_lookup::HeaderLookup;

/// A request as routing, policies and telemetry see it. Built from Pingora's parsed header on
/// its path and from offsets into the read buffer on the HTTP/1 fast path.
pub struct RequestFacts<'a> {
    /// The URI authority (HTTP/2, absolute form) or else the Host header, as sent.
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub headers: &'a dyn HeaderLookup,
    pub client_ip: Option<IpAddr>,
    /// The downstream TLS session, when the listener terminated TLS (client certificate).
    pub tls: Option<&'a SslDigest>,
}

impl<'a> RequestFacts<'a> {
    pub fn of(
        req: &'a RequestHeader,
        client_ip: Option<IpAddr>,
        tls: Option<&'a SslDigest>,
    ) -> Self {
        RequestFacts {
            tls,
            authority: authority_of(req),
            path: req.uri.path(),
            query: req.uri.query(),
            method: req.method.as_str(),
            headers: &req.headers,
            client_ip,
        }
    }
}

/// The URI authority or else the Host header ("" when neither is there).
pub fn authority_of(req: &RequestHeader) -> &str {
    match req.uri.authority() {
        Some(authority) => authority.as_str(),
        None => req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default(),
    }
}
