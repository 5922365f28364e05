//! Traffic policies: per route (timeouts, retries, faults, CORS) and per cluster
//! (connection pool limits, load balancing, outlier detection).

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::{Str, StringMatch};

/// Policies attached to one route. Durations are in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoutePolicy {
    /// Whole request, across retries; expiry answers 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Limit on each try (Istio `perTryTimeout`, Gateway API `backendRequest`); expiry answers
    /// 504 or, with retries left, tries again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Client addresses the route answers (ingress-nginx `whitelist-source-range` /
    /// `denylist-source-range`); others get 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<SourceRanges>,
    /// Local rate limits, each counted by this proxy alone (N replicas allow N times the
    /// rate); a request must pass all of them.
    #[serde(default, skip_serializing_if = "<[RateLimit]>::is_empty")]
    pub rate_limits: Arc<[RateLimit]>,
    /// Requests of one client address in progress at once (ingress-nginx
    /// `limit-connections`), counted by this proxy alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<ConcurrencyLimit>,
    /// Requests with a larger body get 413 (ingress-nginx `proxy-body-size`); the
    /// proxy-wide `--max-request-body` holds as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// HTTP Basic authentication (ingress-nginx `auth-type: basic`): 401 without valid
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// External authentication (ingress-nginx `auth-url`): a subrequest decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExtAuth>,
    /// Passing one of the access checks (source ranges, Basic credentials, external
    /// authentication) suffices, instead of all of them (nginx's `satisfy any`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub satisfy_any: bool,
    /// ingress-nginx `default-backend` and `custom-http-errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_pages: Option<ErrorPages>,
}

/// A backend for what the route's own cannot answer: requests when the route's cluster has
/// no endpoints go there instead, and upstream answers with one of `codes` are replaced by
/// its answer to a `GET /` carrying `X-Code`, `X-Format`, `X-Original-URI` and the route's
/// names (ingress-nginx's `default-backend` with `custom-http-errors`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPages {
    pub cluster: Str,
    #[serde(default, skip_serializing_if = "<[u16]>::is_empty")]
    pub codes: Arc<[u16]>,
}

/// An HTTP service asked about each request before it is forwarded. Two protocols:
/// nginx's `auth_request` (ingress-nginx `auth-url`: a GET to a fixed URL; 2xx lets the
/// request through, 401 and 403 are the client's answer, anything else or no answer 500)
/// and Envoy's HTTP ext_authz (Gateway API `ExternalAuth`: the request's method and path
/// under a prefix; 200 lets it through, any other answer is the client's, no answer 403).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtAuth {
    #[serde(default, skip_serializing_if = "ExtAuthProtocol::is_nginx")]
    pub protocol: ExtAuthProtocol,
    /// `http://` or `https://host[:port]/path` (nginx protocol).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub url: Str,
    /// nginx protocol: the check's method (`auth-method`; GET when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Str>,
    /// nginx protocol: the `X-Auth-Request-Redirect` sent (`auth-request-redirect`; the
    /// request's own path and query when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<Str>,
    /// The cluster whose endpoints answer (instead of `url`), over plain HTTP/1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Str>,
    /// Envoy protocol: put before the request's path in the check.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub path_prefix: Str,
    /// Envoy protocol: request headers sent besides Host, Authorization and the method and
    /// path (lower-case).
    #[serde(default, skip_serializing_if = "<[Str]>::is_empty")]
    pub request_headers: Arc<[Str]>,
    /// Where a 401 sends a browser (`auth-signin`), with the original URL in `redirect_param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<Str>,
    #[serde(default = "default_redirect_param")]
    pub redirect_param: Str,
    /// Headers of the service's allowing answer set on the forwarded request (lower-case);
    /// `*`: all but Host and framing.
    #[serde(default, skip_serializing_if = "<[Str]>::is_empty")]
    pub response_headers: Arc<[Str]>,
    /// Envoy protocol: headers of a denial passed to the client; empty: all but framing.
    #[serde(default, skip_serializing_if = "<[Str]>::is_empty")]
    pub denial_headers: Arc<[Str]>,
    /// Envoy protocol: headers added to each check (Istio `includeAdditionalHeadersInCheck`).
    #[serde(default, skip_serializing_if = "<[(Str, Str)]>::is_empty")]
    pub check_headers: Arc<[(Str, Str)]>,
    /// The whole check, answer included (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A check that cannot be made lets the request through (Istio `failOpen`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// The status of a request whose check could not be made (Envoy protocol: 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExtAuthProtocol {
    #[default]
    Nginx,
    Envoy,
}

impl Default for ExtAuth {
    fn default() -> Self {
        ExtAuth {
            protocol: ExtAuthProtocol::Nginx,
            url: "".into(),
            method: None,
            request_redirect: None,
            cluster: None,
            path_prefix: "".into(),
            request_headers: Vec::new().into(),
            signin: None,
            redirect_param: default_redirect_param(),
            response_headers: Vec::new().into(),
            denial_headers: Vec::new().into(),
            check_headers: Vec::new().into(),
            timeout_ms: None,
            fail_open: false,
            status_on_error: None,
        }
    }
}

impl ExtAuthProtocol {
    pub fn is_nginx(&self) -> bool {
        *self == ExtAuthProtocol::Nginx
    }
}

fn default_redirect_param() -> Str {
    "rd".into()
}

/// The users a route lets in, with their htpasswd hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuth {
    pub realm: Str,
    pub users: Arc<[BasicAuthUser]>,
}

impl BasicAuth {
    /// Whether proxies verify a hash of this form: bcrypt, Apache MD5 (`$apr1$`), `{SHA}`.
    pub fn verifiable(hash: &str) -> bool {
        ["$2y$", "$2a$", "$2b$", "$apr1$", "{SHA}"]
            .iter()
            .any(|prefix| hash.starts_with(prefix))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuthUser {
    pub name: Str,
    pub password_hash: PasswordHash,
}

/// An htpasswd hash: pushed to the proxy serving the route, never printed by `Debug` (logs)
/// and replaced in configuration dumps, as private keys are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(pub Str);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::PrivateKeyPem::REDACTED)
    }
}

/// A token bucket per key: `requests` per `window_ms` sustained, up to `burst` at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Who set the limit (`Ingress/ns/name`, `LocalRateLimitPolicy/ns/name`): buckets and
    /// the `RateLimit-Policy` header are named by it.
    pub name: Str,
    pub requests: u32,
    pub window_ms: u64,
    /// The bucket's size: requests allowed at once after a quiet spell (>= 1).
    pub burst: u32,
    pub key: RateLimitKey,
    /// The status of a limited request (429; ingress-nginx answers 503).
    pub status: u16,
    /// Client addresses the limit does not apply to (ingress-nginx `limit-whitelist`).
    #[serde(default, skip_serializing_if = "<[crate::authz::IpBlock]>::is_empty")]
    pub exempt: Arc<[crate::authz::IpBlock]>,
}

/// At most `max` requests of one client address in progress at once; more get `status`
/// (nginx's `limit_conn` keyed by the client address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyLimit {
    /// Who set the limit (`Ingress/ns/name`): counts are kept by it.
    pub name: Str,
    pub max: u32,
    /// 503 as ingress-nginx's `limit-conn-status-code`.
    pub status: u16,
    /// Client addresses the limit does not apply to (ingress-nginx `limit-whitelist`).
    #[serde(default, skip_serializing_if = "<[crate::authz::IpBlock]>::is_empty")]
    pub exempt: Arc<[crate::authz::IpBlock]>,
}

/// What requests share a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// All requests of the route.
    Route,
    /// Requests from one client address (after `--trusted-proxies`).
    ClientIp,
    /// Requests with one value of this header (lower-case name); those without it share
    /// one bucket.
    Header(Str),
}

/// The client address (after `--trusted-proxies`, as AuthorizationPolicy's `remoteIpBlocks`)
/// must be in `allow` when it lists any, and in no `deny` range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceRanges {
    #[serde(default, skip_serializing_if = "<[crate::authz::IpBlock]>::is_empty")]
    pub allow: Arc<[crate::authz::IpBlock]>,
    #[serde(default, skip_serializing_if = "<[crate::authz::IpBlock]>::is_empty")]
    pub deny: Arc<[crate::authz::IpBlock]>,
}

impl SourceRanges {
    /// Whether a client at `ip` may use the route; an unknown address may not.
    pub fn admits(&self, ip: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        let allowed = self.allow.is_empty() || self.allow.iter().any(|b| b.contains(ip));
        allowed && !self.deny.iter().any(|b| b.contains(ip))
    }
}

impl RoutePolicy {
    pub fn is_empty(&self) -> bool {
        self == &RoutePolicy::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio `attempts`, Gateway API `attempts`).
    pub attempts: u32,
    pub retry_on: RetryOn,
    /// Exponential backoff with full jitter: base * 2^n, capped at max.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

/// Conditions that make a try worth repeating (Envoy / Istio `retryOn` semantics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RetryOn {
    /// Any 5xx response, or a connect failure / reset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_error: bool,
    /// 502, 503, 504.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway_error: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connect_failure: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused_stream: bool,
    /// Upstream reset or connection closed before a response.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    /// 409.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retriable_4xx: bool,
    /// Explicit status codes (Istio `retriable-status-codes` / bare codes, Gateway API `codes`).
    #[serde(default, skip_serializing_if = "<[u16]>::is_empty")]
    pub status_codes: Arc<[u16]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultDelay {
    pub delay_ms: u64,
    /// Share of requests delayed, parts per million.
    pub per_million: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAbort {
    pub status: u16,
    pub per_million: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cors {
    /// Origins allowed; `Exact("*")` allows any.
    pub allow_origins: Arc<[StringMatch]>,
    #[serde(default, skip_serializing_if = "<[Str]>::is_empty")]
    pub allow_methods: Arc<[Str]>,
    #[serde(default, skip_serializing_if = "<[Str]>::is_empty")]
    pub allow_headers: Arc<[Str]>,
    #[serde(default, skip_serializing_if = "<[Str]>::is_empty")]
    pub expose_headers: Arc<[Str]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// A preflight from an origin not allowed goes on to the backend (Istio's, that is
    /// Envoy's, CORS filter); false: the proxy answers it without CORS headers (Gateway API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_refused_preflights: bool,
}

/// Policies of one cluster (DestinationRule trafficPolicy, with subset and port overrides
/// already applied by the translator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// The longest wait for the next bytes of an upstream's response (nginx's
    /// `proxy_read_timeout`: between two reads, not for the whole response); 504 before
    /// the response starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
    /// The longest wait for an upstream to take the next bytes of a request (nginx's
    /// `proxy_send_timeout`: between two writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Limits::is_unlimited")]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "LoadBalancer::is_default")]
    pub load_balancer: LoadBalancer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// A PROXY protocol header sent to each endpoint before a relayed connection's bytes
    /// (connection-level routes), carrying the client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// TCP keep-alive probes on the cluster's upstream connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// DestinationRule `tcp.tcpKeepalive`: SO_KEEPALIVE on each upstream connection, with the
/// values given; the ones not given are the operating system's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

/// The PROXY protocol version (haproxy.org's proxy-protocol.txt): v1 is a text line, v2 a
/// binary header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// Circuit-breaker thresholds; None = unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self == &Limits::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    /// Power of two random choices, fewer active requests wins.
    LeastRequest,
    Random,
    /// Consistent hashing on a ring: moving one endpoint moves only its share of keys.
    ConsistentHash(HashOn),
}

impl LoadBalancer {
    pub fn is_default(&self) -> bool {
        self == &LoadBalancer::RoundRobin
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    Header(Str),
    /// With a TTL the proxy issues the cookie when the request lacks it.
    Cookie {
        name: Str,
        path: Option<Str>,
        ttl_seconds: Option<u64>,
    },
    SourceIp,
    QueryParameter(Str),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx (incl. connect failures) that eject an endpoint; 0 = off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connect failures that eject an endpoint; 0 = off.
    pub consecutive_gateway_errors: u32,
    pub interval_ms: u64,
    /// Ejection lasts base * number of times ejected.
    pub base_ejection_ms: u64,
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ejection is suspended (all serve).
    pub min_health_percent: u32,
}

/// Retries allowed as a share of active requests, so retries cannot multiply an outage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudget {
    pub percent: u32,
    /// Retries always allowed up to this many concurrent ones.
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    /// Envoy's default budget: 20% of active requests, at least 3 concurrent retries.
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_retry_concurrency: 3,
        }
    }
}
