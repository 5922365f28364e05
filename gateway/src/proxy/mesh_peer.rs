//! The upstream peer of a try, plain or over mesh mTLS, for both request paths.

use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use std::net::SocketAddr;

use crate::mesh_connect::MeshClients;
use crate::upstream_tls::CompiledUpstreamTls;

/// How a try's connection is protected.
#[derive(Clone, Copy)]
pub enum Security<'a> {
    Plain,
    /// Mesh mTLS, expecting this SPIFFE ID.
    Mesh(&'a str),
    /// TLS the cluster's DestinationRule asks for.
    Originate(&'a std::sync::Arc<CompiledUpstreamTls>),
}

impl<'a> Security<'a> {
    /// The cluster's own TLS wins over the endpoint's mesh identity (Istio: a DestinationRule
    /// with SIMPLE / MUTUAL replaces ISTIO_MUTUAL).
    pub fn of(tls: Option<&'a std::sync::Arc<CompiledUpstreamTls>>, mtls: Option<&'a str>) -> Self {
        match (tls, mtls) {
            (Some(tls), _) => Security::Originate(tls),
            (None, Some(expected)) => Security::Mesh(expected),
            (None, None) => Security::Plain,
        }
    }

    /// Distinguishes pooled connections: 0 plain, 1 mesh, else the TLS settings' id.
    pub fn pool_class(&self) -> u64 {
        match self {
            Security::Plain => 0,
            Security::Mesh(_) => 1,
            Security::Originate(tls) => tls.pool_id,
        }
    }
}

/// A peer for `address`; with `mtls` (the endpoint's expected SPIFFE ID) it is dialled through
/// the mesh connector, and its pool key differs from a plain peer's (Pingora keys pooled
/// connections by the peer's hash, which covers the SNI field: unused without TLS at this
/// layer, it carries the expected identity).
pub fn peer(
    mesh: &MeshClients,
    address: SocketAddr,
    security: Security<'_>,
    h2: bool,
) -> Result<HttpPeer> {
    let expected = match security {
        Security::Plain => return Ok(HttpPeer::new(address, false, String::new())),
        Security::Mesh(expected) => expected,
        Security::Originate(tls) => {
            // The pool key covers the SNI field: it names the settings the connection has.
            let mut peer = HttpPeer::new(address, false, format!("tls:{:x}", tls.pool_id));
            peer.options.custom_l4 = Some(tls.connector(h2));
            return Ok(peer);
        }
    };
    let Some(id) = ferry_model::SpiffeId::parse(expected) else {
        return Error::e_explain(
            ErrorType::ConnectError,
            format!("endpoint {address}: {expected:?} is not a SPIFFE ID"),
        );
    };
    let mut peer = HttpPeer::new(address, false, expected.to_string());
    peer.options.custom_l4 = Some(mesh.connector(id, h2));
    Ok(peer)
}
