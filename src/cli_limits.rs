//! The flags of `ferry gateway` and `ferry sidecar` that set what the proxy allows its
//! clients (the limits protecting it: ferry_gateway::limits explains each default and where
//! it differs from Envoy's and nginx's) and what it tells them (ferry_gateway::disclosure).

use clap::{Args, ValueEnum};
use ferry_gateway::disclosure::Disclosure;
use ferry_gateway::limits::{ClientAddress, ConnectionLimits, Http2Limits, Limits, Timeouts};
use ferry_gateway::proxy::http1::HeadLimits;
use ferry_model::authz::IpBlock;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct LimitArgs {
    /// Client connections held at once; at the limit a new connection replaces the one idle
    /// longest, or is closed when none is idle (0, or more than the open-file limit allows:
    /// as many as it allows).
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,
    /// Client connections one address may hold (0: no limit; behind a LoadBalancer with
    /// externalTrafficPolicy Cluster every client shares a node's address).
    #[arg(long, default_value_t = 0)]
    pub max_connections_per_client: usize,
    /// Resident memory past which the proxy sheds load (idle connections closed, new ones
    /// only in their place), e.g. 900Mi (0: off). The chart sets 90% of the memory limit.
    #[arg(long, env = "FERRY_OVERLOAD_MEMORY", default_value = "0", value_parser = parse_bytes)]
    pub overload_memory: u64,
    /// Time a client has to complete its TLS handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Time from a request's first byte (a new connection: from accept) to its whole head
    /// (408 when part came).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request (HTTP/2: with no stream
    /// open).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Largest request body accepted, e.g. 1Mi (413 beyond; 0: no limit).
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    pub max_request_body: u64,
    /// HTTP/2 streams open at once on one client connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = 100)]
    pub h2_max_concurrent_streams: u32,
    /// Decoded size of an HTTP/2 request's header list (SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(long, default_value = "60Ki", value_parser = parse_bytes)]
    pub h2_max_header_list: u64,
    /// HTTP/2 streams a client may reset before the server accepted them (rapid reset)
    /// before its connection is closed with GOAWAY.
    #[arg(long, default_value_t = 20)]
    pub h2_max_pending_reset_streams: usize,
}

/// What a gateway believes about its clients' addresses when proxies stand in front of it.
#[derive(Args, Clone, Debug)]
pub struct ClientAddressArgs {
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer in
    /// front, naming the client: its address is the client's for X-Forwarded-For, logs,
    /// authorization and limits. Connections without one are closed.
    #[arg(long, env = "FERRY_PROXY_PROTOCOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub proxy_protocol: bool,
    /// Proxies in front that append to X-Forwarded-For (Istio's numTrustedProxies):
    /// AuthorizationPolicy remoteIpBlocks match the N-th address from its right. 0: the
    /// header is not trusted and the connection's client is matched.
    #[arg(long, default_value_t = 0)]
    pub trusted_proxies: usize,
}

impl ClientAddressArgs {
    pub fn client_address(&self) -> ClientAddress {
        ClientAddress {
            proxy_protocol: self.proxy_protocol,
            trusted_proxies: self.trusted_proxies,
        }
    }
}

/// How much a reply the proxy writes itself tells the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CauseDetail {
    /// The cause code alone (`UH`) and a generic body: a gateway's default.
    Code,
    /// The whole cause, naming the route, Service and endpoint: a sidecar's default.
    Full,
}

#[derive(Args, Clone, Debug)]
pub struct DisclosureArgs {
    /// What `x-ferry-cause` and the body of the proxy's own replies tell clients it does not
    /// trust (default: `code` for a gateway, `full` for a sidecar). Mesh peers, --full-cause-cidr
    /// and --full-cause-header are trusted; the access log always has the full cause.
    #[arg(long, value_enum)]
    pub cause_detail: Option<CauseDetail>,
    /// Clients in this range get the full cause (repeatable), e.g. 10.0.0.0/8.
    #[arg(long = "full-cause-cidr", value_parser = parse_block)]
    pub full_cause_cidrs: Vec<IpBlock>,
    /// A request carrying this header with this value gets the full cause: `NAME=SECRET`
    /// (from a Secret through the environment).
    #[arg(long, env = "FERRY_FULL_CAUSE_HEADER", value_parser = parse_header, hide_env_values = true)]
    pub full_cause_header: Option<(String, String)>,
}

impl DisclosureArgs {
    pub fn disclosure(&self, default: CauseDetail) -> Disclosure {
        Disclosure {
            full_for_all: self.cause_detail.unwrap_or(default) == CauseDetail::Full,
            trusted_cidrs: self.full_cause_cidrs.clone(),
            trusted_header: self.full_cause_header.clone(),
        }
    }
}

fn parse_block(text: &str) -> Result<IpBlock, String> {
    IpBlock::parse(text).ok_or_else(|| format!("{text:?}: an address or range, e.g. 10.0.0.0/8"))
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if !name.chars().all(token) {
                return Err(format!("{name:?} is not a header name"));
            }
            Ok((name.to_ascii_lowercase(), value.to_string()))
        }
        _ => Err("NAME=VALUE, both non-empty".to_string()),
    }
}

impl LimitArgs {
    pub fn limits(&self, http1: HeadLimits) -> Limits {
        Limits {
            connections: ConnectionLimits {
                max_connections: self.max_connections,
                max_connections_per_client: self.max_connections_per_client,
                overload_memory_bytes: self.overload_memory,
            },
            timeouts: Timeouts {
                tls_handshake: self.tls_handshake_timeout,
                request_header: self.request_header_timeout,
                idle: self.idle_timeout,
            },
            http1,
            http2: Http2Limits {
                max_concurrent_streams: self.h2_max_concurrent_streams,
                max_header_list_bytes: u32::try_from(self.h2_max_header_list).unwrap_or(u32::MAX),
                max_pending_reset_streams: self.h2_max_pending_reset_streams,
            },
            max_request_body_bytes: self.max_request_body,
            client_address: ClientAddress::default(),
        }
    }
}

/// `1048576`, `512Ki`, `100Mi`, `1Gi` (Kubernetes' binary suffixes), `1M` / `1G` (decimal).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(char::is_alphabetic);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: a number of bytes, optionally with Ki, Mi, Gi, K, M, G"))?;
    let scale: u64 = match &text[digits.len()..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        unit => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (Ki, Mi, Gi, K, M, G)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too large"))
}

/// `500ms`, `10s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.trim_end_matches(char::is_alphabetic);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: a number and a unit (ms, s, m, h)"))?;
    let duration = match &text[digits.len()..] {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => return Err(format!("{text:?}: unit must be ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_kubernetes_suffixes() {
        assert_eq!(parse_bytes("60Ki"), Ok(61_440));
        assert_eq!(parse_bytes("1Mi"), Ok(1 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("1Xi").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn durations_need_a_unit_and_time() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
