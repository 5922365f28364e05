//! A sidecar's inbound request on the fast path: the mTLS peer and any JWT are checked against
//! the workload's policies, then the request goes to the app as it came, plus the forwarding
//! headers. No routing, retries or load balancing: the app is one address (the same as on
//! Pingora's path).

use std::net::SocketAddr;

use super::{Conn, Http1Proxy, Next};
use crate::proxy::authz;
use crate::proxy::decide::Decision;
use crate::proxy::RequestCtx;

impl Http1Proxy {
    pub(super) async fn serve_inbound(&self, conn: &mut Conn, app: SocketAddr) -> Next {
        // Before the first snapshot nothing says which policies apply: refused, not waved on.
        let Some(snapshot) = self.store.load() else {
            let reply = Decision::reply(503, "NR no configuration applied yet");
            return self.answer(conn, RequestCtx::default(), reply).await;
        };
        let lookup = conn.lookup();
        let facts = conn.facts(&lookup);
        let mut ctx = self.request_ctx(conn, &facts);
        ctx.inbound = Some(app); // request_ctx took the peer's identity
        let peer = authz::Peer {
            identity: ctx.peer_identity.as_deref(),
            destination_ip: Some(app.ip()),
            port: conn.entry.port,
            sni: None,
            client_address: self.options.limits.client_address,
        };
        match authz::check(&snapshot, &facts, &peer) {
            Ok(edits) => ctx.auth_edits = edits,
            Err(refused) => return self.answer(conn, ctx, refused).await,
        }
        ctx.tries.current = Some((0, app));
        self.send_upstream(conn, ctx).await
    }
}
