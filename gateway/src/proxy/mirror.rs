//! Request mirroring: a copy of the request goes to another cluster, fire-and-forget.
//!
//! The copy is sent from its own task once the request body has been read, with a short
//! timeout, and its result is ignored: a slow or failing mirror never delays the primary.

use bytes::Bytes;
use ferry_model::UpstreamProtocol;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::time::Duration;

/// Bodies larger than this are not mirrored (the copy would have to be buffered).
pub const MAX_MIRROR_BODY: usize = 1 << 20;
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);

pub struct MirrorTarget {
    pub address: SocketAddr,
    pub protocol: UpstreamProtocol,
}

/// A request copy waiting for its body.
pub struct PendingMirror {
    pub targets: Vec<MirrorTarget>,
    pub head: RequestHeader,
    pub host: String,
}

#[derive(Clone)]
pub struct MirrorClient {
    http1: Client<HttpConnector, Full<Bytes>>,
    h2c: Client<HttpConnector, Full<Bytes>>,
}

impl Default for MirrorClient {
    fn default() -> Self {
        let http1 = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(HttpConnector::new());
        MirrorClient { http1, h2c }
    }
}

impl MirrorClient {
    /// Sends `pending` with `body` to each target in the background.
    pub fn send(&self, pending: PendingMirror, body: Bytes) {
        for target in &pending.targets {
            let Ok(request) = build_request(&pending, target, body.clone()) else {
                continue;
            };
            let client = match target.protocol {
                UpstreamProtocol::Http1 => self.http1.clone(),
                UpstreamProtocol::H2c => self.h2c.clone(),
            };
            tokio::spawn(async move {
                let result = tokio::time::timeout(MIRROR_TIMEOUT, client.request(request)).await;
                if let Ok(Err(e)) = result {
                    tracing::debug!("mirror request failed: {e}");
                }
            });
        }
    }
}

fn build_request(
    pending: &PendingMirror,
    target: &MirrorTarget,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let path = pending
        .head
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Istio marks shadowed traffic by suffixing the authority.
    let shadow_host = format!("{}-shadow", pending.host);
    let mut builder = http::Request::builder()
        .method(pending.head.method.clone())
        .uri(format!("http://{}{path}", target.address));
    for (name, value) in pending.head.headers.iter() {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            builder = builder.header(name, value);
        }
    }
    if target.protocol == UpstreamProtocol::Http1 {
        builder = builder.header("host", &shadow_host);
    } else {
        builder = builder.uri(format!("http://{shadow_host}{path}"));
    }
    builder.body(Full::new(body))
}
