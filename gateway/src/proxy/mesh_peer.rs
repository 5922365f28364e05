//! The upstream peer of a try, plain or over mesh mTLS, for both request paths.

use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use std::net::SocketAddr;

use crate::mesh_connect::MeshClients;

/// A peer for `address`; with `mtls` (the endpoint's expected SPIFFE ID) it is dialled through
/// the mesh connector, and its pool key differs from a plain peer's (Pingora keys pooled
/// connections by the peer's hash, which covers the SNI field: unused without TLS at this
/// layer, it carries the expected identity).
pub fn peer(
    mesh: &MeshClients,
    address: SocketAddr,
    mtls: Option<&str>,
    h2: bool,
) -> Result<HttpPeer> {
    let Some(expected) = mtls else {
        return Ok(HttpPeer::new(address, false, String::new()));
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
