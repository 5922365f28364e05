//! What a relayed connection reports: Istio's TCP metrics (opened, closed, bytes each way)
//! and one access-log line when it ends.

use ferry_model::Str;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::connect::{Backend, Refusal};
use super::relay::{Counters, Ending, Totals};
use crate::compiled::CompiledCluster;
use crate::proxy::http1::Http1Proxy;
use crate::telemetry::access_log::Entry;
use crate::telemetry::istio::TcpSeries;
use crate::telemetry::RequestLabels;

/// Facts about one connection, filled in as it is routed.
pub struct Connection {
    started_at: SystemTime,
    client: Option<SocketAddr>,
    local: Option<SocketAddr>,
    /// The listener port the client reached.
    port: u16,
    pub server_name: Option<String>,
    pub route: Option<Str>,
    pub cluster: Option<Arc<CompiledCluster>>,
    upstream: Option<SocketAddr>,
    endpoint_workload: Option<Arc<ferry_model::Workload>>,
    /// Where a sidecar's captured client was going (SO_ORIGINAL_DST): what an
    /// original-destination cluster dials. Never set on a gateway's own listeners, whose
    /// local address is the proxy itself.
    pub original: Option<SocketAddr>,
}

impl Connection {
    pub fn new(
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
        port: u16,
        started_at: SystemTime,
    ) -> Self {
        Connection {
            started_at,
            client,
            local,
            port,
            server_name: None,
            route: None,
            cluster: None,
            upstream: None,
            endpoint_workload: None,
            original: None,
        }
    }

    /// The address the client reached (Istio's destination of `destinationSubnets`): where
    /// a sidecar's client was going, else the proxy's own address.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.original.or(self.local).map(|a| a.ip())
    }

    /// Whether the AuthorizationPolicies of this proxy let the connection through (checked
    /// before routing, as Istio's network RBAC filter is; rules naming HTTP attributes cannot
    /// match a connection, so an ALLOW that needs them lets nothing through).
    pub fn authorized(&self, snapshot: &crate::compiled::CompiledSnapshot) -> bool {
        let peer = crate::proxy::authz::Peer {
            identity: None,
            destination_ip: self.local.map(|l| l.ip()),
            port: self.port,
            sni: self.server_name.as_deref(),
            client_address: Default::default(), // a connection has no X-Forwarded-For
        };
        crate::proxy::authz::allows_connection(snapshot, &peer, self.client.map(|c| c.ip()))
    }

    /// The client's address and the proxy's address it reached.
    pub fn ends(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.client, self.local)
    }

    pub fn upstream(&mut self, backend: &Backend) {
        self.cluster = Some(backend.cluster.clone());
        self.upstream = Some(backend.endpoint.address);
        self.endpoint_workload = backend.endpoint.workload.clone();
    }

    fn labels(&self, flags: &str) -> RequestLabels {
        RequestLabels {
            inbound: false,
            service: self.cluster.as_ref().map(|c| c.cluster.service.clone()),
            workload: self.endpoint_workload.clone(),
            peer_identity: None,
            upstream_identity: None,
            grpc: false,
            response_code: 0,
            grpc_status: None,
            response_flags: flags.to_string(),
        }
    }

    /// Counts the connection opened once its backend answered.
    pub fn opened(&self, app: &Http1Proxy) -> Arc<TcpSeries> {
        let series = app.metrics.istio.tcp_series(self.labels("-"));
        series.opened.inc();
        series
    }

    /// A connection that never reached a backend: opened and closed at once, with the flag
    /// saying why, and logged.
    pub fn refused(&self, app: &Http1Proxy, refusal: Refusal, started: Instant) {
        tracing::debug!(
            client = ?self.client,
            server_name = ?self.server_name,
            "connection not forwarded: {refusal:?}"
        );
        let series = app.metrics.istio.tcp_series(self.labels(refusal.flag()));
        series.opened.inc();
        series.closed.inc();
        series.edge.connection(0, 0, true);
        self.log(app, refusal.flag(), (0, 0), started);
    }

    pub fn closed(
        &self,
        app: &Http1Proxy,
        series: &TcpSeries,
        totals: Totals,
        replayed: u64,
        started: Instant,
    ) {
        series.received.inc_by(replayed);
        series.closed.inc();
        series
            .edge
            .connection(totals.sent, totals.received + replayed, false);
        if totals.ending == Ending::Idle {
            app.count_timeout("tcp_idle");
        }
        let flags = match totals.ending {
            Ending::Idle => "SI", // Envoy's "stream idle timeout"
            Ending::Closed | Ending::Broken => "-",
        };
        self.log(
            app,
            flags,
            (totals.received + replayed, totals.sent),
            started,
        );
    }

    fn log(&self, app: &Http1Proxy, flags: &str, (received, sent): (u64, u64), started: Instant) {
        let Some(log) = app.telemetry.access_log.as_ref() else {
            return;
        };
        log.log(&Entry {
            start_time: crate::proxy::observe::rfc3339(self.started_at),
            method: "-",
            authority: self.server_name.as_deref().unwrap_or("-"),
            path: "-",
            protocol: "tcp",
            response_code: 0,
            response_flags: flags,
            response_code_details: "-",
            bytes_received: received,
            bytes_sent: sent,
            duration: started.elapsed().as_millis() as u64,
            upstream_host: self.upstream,
            upstream_cluster: self.cluster.as_ref().map(|c| &*c.cluster.name),
            route_name: self.route.as_deref(),
            request_id: None,
            trace_id: None,
            user_agent: None,
            x_forwarded_for: None,
            downstream_remote_address: self.client.map(|a| a.to_string()),
            downstream_local_address: self.local.map(|a| a.to_string()),
            downstream_peer_uri_san: None,
            upstream_peer_uri_san: None,
        });
    }
}

impl TcpSeries {
    pub fn counters(&self) -> Counters {
        Counters {
            received: self.received.clone(),
            sent: self.sent.clone(),
        }
    }
}
