//! ingress-nginx annotations on an Ingress: read once into [`Settings`], with every
//! annotation Ferry does not apply (or cannot read) named in [`Finding`]s. ingress-nginx's
//! documentation is the reference for each meaning; where it is subtle, the parser says
//! which reading Ferry follows.

pub mod canary;
mod parse;
pub mod registry;

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;

pub use canary::Canary;
use registry::{Support, PREFIX};

/// What the annotations of one Ingress ask for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// `rewrite-target`: the whole path becomes this, `$n` being the path regex's groups.
    pub rewrite_target: Option<String>,
    /// `use-regex` (implied by `rewrite-target`): paths are case-insensitive regexes
    /// anchored at the start, as nginx's `location ~*`.
    pub use_regex: bool,
    pub app_root: Option<String>,
    pub x_forwarded_prefix: Option<String>,
    /// `ssl-redirect`: hosts with TLS redirect cleartext requests (when not given: yes for
    /// the `nginx` class, as ingress-nginx; no for Ferry's own, which serves both).
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    /// `permanent-redirect` / `temporal-redirect`: every request answered with this.
    pub redirect: Option<FixedRedirect>,
    pub from_to_www_redirect: bool,
    /// `ssl-passthrough`: the hosts' TLS connections go to the backend undecrypted.
    pub ssl_passthrough: bool,
    pub backend_protocol: BackendProtocol,
    pub canary: Option<Canary>,
    pub connect_timeout_ms: Option<u64>,
    /// `proxy-read-timeout`: the longest gap between two reads of the backend's response.
    pub read_timeout_ms: Option<u64>,
    /// `proxy-send-timeout`: the longest gap between two writes of the request to it.
    pub send_timeout_ms: Option<u64>,
    pub next_upstream: Option<NextUpstream>,
    pub cors: Option<ferry_model::Cors>,
    pub upstream_vhost: Option<String>,
    pub allow_sources: Vec<ferry_model::authz::IpBlock>,
    pub deny_sources: Vec<ferry_model::authz::IpBlock>,
    pub hash_on: Option<ferry_model::HashOn>,
    /// `limit-rps` / `limit-rpm`: (requests, window in ms, burst), per client address.
    pub limits: Vec<(u32, u64, u32)>,
    /// `limit-connections`: requests of one client address in progress at once.
    pub max_connections: Option<u32>,
    /// The statuses of requests the limits refuse (ingress-nginx's ConfigMap keys
    /// `limit-req-status-code` / `limit-conn-status-code` through the IngressClass's
    /// parameters; 503 when not given).
    pub limit_req_status: Option<u16>,
    pub limit_conn_status: Option<u16>,
    /// `limit-whitelist`: client ranges no limit applies to.
    pub limit_exempt: Vec<ferry_model::authz::IpBlock>,
    /// `proxy-body-size` in bytes; `Some(0)`: no limit.
    pub body_size: Option<u64>,
    /// `auth-type: basic` with `auth-secret` (`namespace/name` or `name`) and `auth-realm`.
    pub basic_auth_secret: Option<BasicAuthSecret>,
    /// The users of that Secret, once read (the translator fills it in).
    pub basic_auth: Option<ferry_model::BasicAuth>,
    /// With `backend-protocol: HTTPS`.
    pub backend_tls: BackendTls,
    /// `default-backend`: a Service of the Ingress's namespace.
    pub default_backend: Option<String>,
    /// `custom-http-errors`: upstream statuses the default backend's page replaces.
    pub error_codes: Vec<u16>,
    /// The two, once the Service is found (the translator fills it in).
    pub error_pages: Option<ferry_model::ErrorPages>,
    /// `satisfy: any`: one passing access check (source ranges, Basic credentials,
    /// `auth-url`) suffices.
    pub satisfy_any: bool,
    /// `auth-url` with `auth-signin` and `auth-response-headers`.
    pub ext_auth: Option<ferry_model::ExtAuth>,
}

impl Settings {
    /// ingress-nginx's defaults for what its class's Ingresses do not say: a 1 MiB body
    /// limit, a 5 s connect timeout and 60 s read and send timeouts (its
    /// `proxy-body-size`, `proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout`).
    pub fn with_nginx_defaults(mut self) -> Settings {
        self.body_size.get_or_insert(1 << 20);
        self.connect_timeout_ms.get_or_insert(5_000);
        self.read_timeout_ms.get_or_insert(60_000);
        self.send_timeout_ms.get_or_insert(60_000);
        self
    }

    /// The body limit to enforce, if any.
    pub fn max_body_bytes(&self) -> Option<u64> {
        self.body_size.filter(|bytes| *bytes > 0)
    }
}

/// The Secret of `auth-type: basic` (its namespace: the Ingress's when not given) and the
/// realm of the challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuthSecret {
    pub namespace: Option<String>,
    pub name: String,
    pub realm: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedRedirect {
    pub url: String,
    pub status: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    #[default]
    Http,
    /// HTTP/2 in cleartext (`H2C`, `GRPC`).
    H2c,
    /// HTTP/1.1 over TLS (`HTTPS`), with the `proxy-ssl-*` settings.
    Https,
    /// HTTP/2 over TLS, ALPN h2 (`GRPCS`), with the `proxy-ssl-*` settings.
    Grpcs,
}

impl BackendProtocol {
    /// TLS is originated to the backend (`proxy-ssl-*` apply).
    pub fn originates_tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::Grpcs)
    }

    /// The backend speaks HTTP/2 (cleartext or TLS).
    pub fn is_http2(self) -> bool {
        matches!(self, BackendProtocol::H2c | BackendProtocol::Grpcs)
    }
}

/// `proxy-ssl-secret` (`namespace/name`: `ca.crt`, and `tls.crt` / `tls.key` to present),
/// `proxy-ssl-verify`, `proxy-ssl-name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendTls {
    pub secret: Option<(String, String)>,
    pub verify: bool,
    pub name: Option<String>,
}

/// `proxy-next-upstream` and its `-tries` / `-timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    pub retry_on: ferry_model::RetryOn,
    /// Tries in all (ingress-nginx counts the first).
    pub tries: u32,
    pub timeout_ms: Option<u64>,
}

/// One annotation Ferry did not apply as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The annotation's name without the prefix.
    pub name: String,
    pub reason: &'static str,
    pub message: String,
    /// The Ingress must not be served while this stands.
    pub blocks: bool,
}

/// The hosts whose paths are all regexes: ingress-nginx makes every path of a host a regex
/// once one Ingress of that host asks for `use-regex` (or `rewrite-target`). `*` stands
/// for rules without a host.
pub fn regex_hosts<'s>(
    ingresses: impl Iterator<Item = (&'s Ingress, &'s Settings)>,
) -> std::collections::BTreeSet<String> {
    ingresses
        .filter(|(_, settings)| settings.use_regex)
        .flat_map(|(ingress, _)| hosts_of(ingress))
        .collect()
}

/// The host of each rule of `ingress` (`*` for a rule without one), lower-case.
pub fn hosts_of(ingress: &Ingress) -> Vec<String> {
    let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_deref());
    rules
        .unwrap_or(&[])
        .iter()
        .map(|r| r.host.as_deref().unwrap_or("*").to_ascii_lowercase())
        .collect()
}

/// Reads the ingress-nginx annotations of `ingress`.
pub fn read(ingress: &Ingress) -> (Settings, Vec<Finding>) {
    let annotations: BTreeMap<&str, &str> = ingress
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.as_str())))
        .collect();
    let mut findings = unapplied(&annotations);
    let settings = parse::settings(&annotations, &mut findings);
    (settings, findings)
}

/// A canary Ingress takes everything but its backend and its `canary-*` settings from the
/// main Ingress (as ingress-nginx): its other annotations are reported, not applied.
pub fn canary_ignores(ingress: &Ingress) -> Vec<Finding> {
    ingress
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter_map(|(key, _)| key.strip_prefix(PREFIX))
        .filter(|name| !name.starts_with("canary"))
        .filter(|name| registry::support(name) == Support::Applied)
        .map(|name| Finding {
            name: name.to_string(),
            reason: "NotApplied",
            message: "a canary Ingress follows its main Ingress's settings (as ingress-nginx): not applied here".into(),
            blocks: false,
        })
        .collect()
}

fn unapplied(annotations: &BTreeMap<&str, &str>) -> Vec<Finding> {
    let finding = |name: &str, reason, message: String, blocks| Finding {
        name: name.to_string(),
        reason,
        message,
        blocks,
    };
    annotations
        .keys()
        .filter_map(|name| match registry::support(name) {
            Support::Applied => None,
            Support::Refused => Some(finding(
                name,
                "Refused",
                "snippet annotations carry raw nginx configuration: refused, and the Ingress is not served until it is removed".into(),
                true,
            )),
            Support::FailsClosed => Some(finding(
                name,
                "NotEnforced",
                "access control or TLS that Ferry does not apply from this annotation: the Ingress is not served until it is removed (fails closed)".into(),
                true,
            )),
            Support::NotApplied => Some(finding(
                name,
                "NotApplied",
                "read but not applied by Ferry; the Ingress is served without it".into(),
                false,
            )),
        })
        .collect()
}
