//! Per-request state carried between Pingora's phases.

use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::compiled::{CompiledCluster, CompiledRoute, CompiledSnapshot};
use crate::proxy::mirror::PendingMirror;

pub struct RequestCtx {
    pub started: Instant,
    /// The snapshot version pinned for this request's whole life.
    pub snapshot: Option<Arc<CompiledSnapshot>>,
    pub listener_port: u16,
    pub route: Option<Arc<CompiledRoute>>,
    /// Index of the chosen backend in the route's Forward list.
    pub backend: Option<usize>,
    pub cluster: Option<Arc<CompiledCluster>>,
    pub endpoint: Option<SocketAddr>,
    pub mirror: Option<PendingMirror>,
    pub mirror_body: BytesMut,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            listener_port: 0,
            route: None,
            backend: None,
            cluster: None,
            endpoint: None,
            mirror: None,
            mirror_body: BytesMut::new(),
        }
    }
}
