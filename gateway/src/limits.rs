//! The limits that protect a proxy from its clients: how many connections it holds, how long a
//! client may take to say something, how large a request may be, and what HTTP/2 allows.
//!
//! Defaults follow Envoy's edge best practices where they set one (Istio gateways run Envoy
//! with them mostly unset): 60 KiB / 100 request headers, 100 HTTP/2 streams per connection,
//! a cap on downstream connections (Envoy's overload manager example uses 50,000). Ferry
//! differs where a gateway without a limit is an open door: the whole request head must
//! arrive within 10 s (HAProxy's recommended `timeout http-request`; Envoy leaves
//! `request_headers_timeout` off, nginx allows 60 s) and keep-alive connections idle for 60 s
//! close (nginx 75 s, Envoy 1 h). Per-client connection limits and the request body limit
//! are off by default: behind a LoadBalancer with `externalTrafficPolicy: Cluster` every
//! client arrives from a node address, and a body limit is the application's to choose.

use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

use crate::proxy::http1::HeadLimits;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Limits {
    pub connections: ConnectionLimits,
    pub timeouts: Timeouts,
    pub http1: HeadLimits,
    pub http2: Http2Limits,
    /// Largest request body accepted, in bytes (413 beyond); 0: no limit.
    pub max_request_body_bytes: u64,
    pub client_address: ClientAddress,
}

/// Where a client's address comes from when proxies stand in front (Istio's
/// `gatewayTopology`: `proxyProtocol` and `numTrustedProxies`).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ClientAddress {
    /// Every connection starts with a PROXY protocol header naming the client (a load
    /// balancer in front speaks it); crate::proxy_protocol. Gateways only.
    pub proxy_protocol: bool,
    /// Proxies in front that append the address they were reached from to X-Forwarded-For:
    /// the remote address AuthorizationPolicy `remoteIpBlocks` match is the N-th address from
    /// the right of that header, as Envoy's `xff_num_trusted_hops`. 0 (a gateway's default):
    /// the header is the client's to write, so the connection's client is used. A sidecar
    /// uses 1: its peer is the mesh proxy that appended the client.
    pub trusted_proxies: usize,
}

impl ClientAddress {
    /// The address `remoteIpBlocks` match: X-Forwarded-For's N-th address from the right
    /// when N proxies are trusted and the header has that many, else the connection's client.
    pub fn remote_ip(&self, forwarded_for: Option<&str>, client: Option<IpAddr>) -> Option<IpAddr> {
        let Some(from_right) = self.trusted_proxies.checked_sub(1) else {
            return client; // nobody trusted: the header is the client's own
        };
        forwarded_for
            .and_then(|v| v.rsplit(',').nth(from_right))
            .and_then(|address| address.trim().parse().ok())
            .or(client)
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Client connections this proxy holds at once; at the limit a new connection takes the
    /// place of the connection idle longest, and is closed when none is idle. 0: no limit.
    pub max_connections: usize,
    /// Client connections one address may hold at once (more are closed). 0: no limit.
    pub max_connections_per_client: usize,
    /// Resident memory (bytes) past which the proxy sheds load: new connections only take an
    /// idle connection's place, idle connections are closed, keep-alive connections close
    /// after their response. 0: off.
    pub overload_memory_bytes: u64,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Timeouts {
    #[serde(serialize_with = "seconds")]
    pub tls_handshake: Duration,
    /// From a request's first byte (a new connection: from accept) to its whole head.
    #[serde(serialize_with = "seconds")]
    pub request_header: Duration,
    /// A keep-alive connection waiting for its next request.
    #[serde(serialize_with = "seconds")]
    pub idle: Duration,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    /// Decoded size of a request's header list (HPACK), as SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_bytes: u32,
    /// Streams a client may open and reset before the server accepted them (the rapid-reset
    /// attack, CVE-2023-44487) before the connection is closed with GOAWAY.
    pub max_pending_reset_streams: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 50_000,
            max_connections_per_client: 0,
            overload_memory_bytes: 0,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tls_handshake: Duration::from_secs(10),
            request_header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 100,
            max_header_list_bytes: 60 * 1024,
            max_pending_reset_streams: 20,
        }
    }
}

impl Limits {
    /// The HTTP/2 server settings these limits ask for.
    pub fn h2_options(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(self.http2.max_concurrent_streams)
            .max_header_list_size(self.http2.max_header_list_bytes)
            .max_pending_accept_reset_streams(self.http2.max_pending_reset_streams)
            // Responses a client does not read stay bounded per stream (h2's default 400 KiB
            // is per stream too; Envoy's edge guide uses 64 KiB windows).
            .max_send_buffer_size(256 * 1024);
        builder
    }

    /// The connection cap lowered to what the open-file limit allows: every proxied
    /// connection may need an upstream socket too, and some descriptors are the process's
    /// own. Past it accept() fails (EMFILE) instead of the idle-longest connection making room.
    pub fn capped_by_open_files(mut self) -> Self {
        let Some(files) = open_file_limit() else {
            return self;
        };
        let room = (files.saturating_sub(256) / 2) as usize;
        let max = &mut self.connections.max_connections;
        if *max == 0 || *max > room {
            tracing::warn!(
                configured = *max,
                open_file_limit = files,
                using = room,
                "--max-connections lowered to what the open-file limit allows (raise `ulimit -n` for more)"
            );
            *max = room.max(1);
        }
        self
    }

    /// The request body limit, if any.
    pub fn body_limit(&self) -> Option<u64> {
        (self.max_request_body_bytes > 0).then_some(self.max_request_body_bytes)
    }
}

/// The soft limit on open files of this process (`Max open files` in /proc/self/limits).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        let files = open_file_limit().expect("linux");
        let mut limits = Limits::default();
        limits.connections.max_connections = usize::MAX;
        let capped = limits.capped_by_open_files();
        assert_eq!(
            capped.connections.max_connections as u64,
            files.saturating_sub(256) / 2
        );
        let mut small = Limits::default();
        small.connections.max_connections = 10;
        assert_eq!(small.capped_by_open_files().connections.max_connections, 10);
    }

    #[test]
    fn the_remote_address_trusts_only_the_proxies_it_is_told_of() {
        let client = Some("192.0.2.1".parse().unwrap());
        let xff = Some("203.0.113.9, 10.0.0.7");
        let trusting = |n| ClientAddress {
            proxy_protocol: false,
            trusted_proxies: n,
        };
        // Nobody trusted: a client's own X-Forwarded-For changes nothing.
        assert_eq!(trusting(0).remote_ip(xff, client), client);
        assert_eq!(
            trusting(1).remote_ip(xff, client),
            Some("10.0.0.7".parse().unwrap())
        );
        assert_eq!(
            trusting(2).remote_ip(xff, client),
            Some("203.0.113.9".parse().unwrap())
        );
        // Fewer addresses than trusted proxies, none, or garbage: the connection's client.
        assert_eq!(trusting(3).remote_ip(xff, client), client);
        assert_eq!(trusting(1).remote_ip(None, client), client);
        assert_eq!(trusting(1).remote_ip(Some("unknown"), client), client);
    }

    #[test]
    fn defaults_show_in_the_dump_in_seconds_and_bytes() {
        let dump = serde_json::to_value(Limits::default()).unwrap();
        assert_eq!(dump["timeouts"]["request_header"], 10.0);
        assert_eq!(dump["timeouts"]["idle"], 60.0);
        assert_eq!(dump["http1"]["max_request_head_bytes"], 60 * 1024);
        assert_eq!(dump["http2"]["max_concurrent_streams"], 100);
        assert_eq!(dump["connections"]["max_connections"], 50_000);
        assert_eq!(dump["max_request_body_bytes"], 0);
        assert_eq!(dump["client_address"]["proxy_protocol"], false);
        assert_eq!(dump["client_address"]["trusted_proxies"], 0);
    }
}
