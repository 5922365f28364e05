//! Istio's AuthorizationPolicy, compiled: which requests a proxy lets through.
//!
//! Evaluation follows Istio: CUSTOM policies first — a request one matches is asked about
//! at its provider (an HTTP ext_authz service, see [`custom_match`]; where the proxy cannot
//! ask, the match denies) — then DENY — any match denies; then ALLOW policies — when at
//! least one applies to the workload, a request must match one of them; with none, it is
//! allowed. AUDIT policies decide nothing (their matches are only reported).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::jwt::RequestAuth;
use crate::{Meta, Str};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    Audit,
    /// Asks `provider` about the requests the rules match.
    Custom,
}

/// One policy. Empty `rules` with ALLOW match nothing (deny all); a rule with no `from`,
/// `to` or `when` matches everything (Istio's "allow all" / "deny all" shapes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzPolicy {
    pub meta: Meta,
    pub action: AuthzAction,
    /// Workload labels it applies to (sidecars); None: every workload in its scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Vec<(String, String)>>,
    /// In the mesh's root namespace without a selector: every workload.
    #[serde(default)]
    pub mesh_wide: bool,
    pub rules: Vec<AuthzRule>,
    /// At a gateway, a policy targeting one Gateway applies to its listener ports only;
    /// empty: to every request the proxy serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_ports: Vec<u16>,
    /// CUSTOM: the external authorization service (Envoy's HTTP ext_authz protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<crate::ExtAuth>,
}

/// A rule matches when one of its sources, one of its operations and all its conditions do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// Values that must match (when not empty) and values that must not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub none: Vec<T>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values {
            any: Vec::new(),
            none: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Peer principals without `spiffe://` (Istio's form), with Istio's `*` prefix/suffix.
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub principals: Values<Str>,
    /// JWT principals (`iss/sub`) from RequestAuthentication. Without a verified token,
    /// `requestPrincipals` never matches and `notRequestPrincipals` always does.
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub request_principals: Values<Str>,
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub namespaces: Values<Str>,
    /// The peer address (the connection's source).
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub ip_blocks: Values<IpBlock>,
    /// The original client (X-Forwarded-For, else the peer).
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub remote_ip_blocks: Values<IpBlock>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub hosts: Values<Str>,
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub ports: Values<u16>,
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub methods: Values<Str>,
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub paths: Values<Str>,
}

/// A `when` condition on one request attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub key: ConditionKey,
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub values: Values<Str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKey {
    /// `request.headers[name]` (lower-case name).
    RequestHeader(Str),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    /// `connection.sni`: the server name a TLS client asked for at a gateway (absent over
    /// cleartext, and at a sidecar's inbound, whose mesh connections name no service).
    ConnectionSni,
    /// `request.auth.principal` (`iss/sub` of the verified JWT).
    RequestAuthPrincipal,
    /// `request.auth.audiences`.
    RequestAuthAudiences,
    /// `request.auth.presenter` (`azp`).
    RequestAuthPresenter,
    /// `request.auth.claims[a][b]`: the claim at that path.
    RequestAuthClaim(Vec<Str>),
}

/// An address range (`10.0.0.0/8`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub network: IpAddr,
    pub prefix: u8,
}

impl IpBlock {
    pub fn parse(text: &str) -> Option<IpBlock> {
        let (ip, bits) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let network: IpAddr = ip.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match bits {
            Some(bits) => bits.parse().ok().filter(|b| *b <= max)?,
            None => max,
        };
        Some(IpBlock { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What a policy is checked against.
pub struct AuthzRequest<'a> {
    /// The peer's SPIFFE principal without the scheme (`cluster.local/ns/a/sa/b`), over mTLS.
    pub principal: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    /// The original client (first X-Forwarded-For entry), asked only by rules that use it.
    pub remote_ip: &'a dyn Fn() -> Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    pub host: &'a str,
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    pub header: &'a dyn Fn(&str) -> Option<String>,
    /// The verified JWT, if the request carried one.
    pub auth: Option<&'a RequestAuth>,
    /// The TLS server name the client asked for.
    pub sni: Option<&'a str>,
    /// False for a TCP connection: HTTP-only fields (hosts, methods, paths, request headers)
    /// make an ALLOW rule never match and are left out of a DENY rule, as Istio does, so
    /// neither becomes more permissive.
    pub http: bool,
}

/// The verdict, with the policy that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthzVerdict {
    Allowed,
    /// Denied by this policy (a DENY or CUSTOM match), or by the absence of a matching ALLOW
    /// policy (None).
    Denied(Option<Meta>),
}

/// Istio's evaluation over the policies that apply to the workload.
pub fn authorize<'p, P>(policies: P, request: &AuthzRequest<'_>) -> AuthzVerdict
where
    P: IntoIterator<Item = &'p AuthzPolicy>,
    P::IntoIter: Clone,
{
    let numbered = policies.into_iter().enumerate();
    authorize_with(numbered, request, |_, p| p.rules.iter())
}

/// [`authorize`] over numbered policies, evaluating only the rules `candidates` yields for
/// each (given its number): an index may leave out rules that cannot match the request (a
/// proxy's path index), never one that can.
pub fn authorize_with<'p, R>(
    policies: impl IntoIterator<Item = (usize, &'p AuthzPolicy)> + Clone,
    request: &AuthzRequest<'_>,
    candidates: impl Fn(usize, &'p AuthzPolicy) -> R,
) -> AuthzVerdict
where
    R: Iterator<Item = &'p AuthzRule>,
{
    let matched = |i: usize, p: &'p AuthzPolicy| {
        let deny = p.action != AuthzAction::Allow;
        candidates(i, p).any(|r| r.matches(request, deny))
    };
    let mut any_allow = false;
    for (i, policy) in policies.clone() {
        match policy.action {
            AuthzAction::Deny if matched(i, policy) => {
                return AuthzVerdict::Denied(Some(policy.meta.clone()))
            }
            AuthzAction::Allow => any_allow = true,
            _ => {}
        }
    }
    let allowed = !any_allow
        || policies
            .into_iter()
            .any(|(i, p)| p.action == AuthzAction::Allow && matched(i, p));
    if allowed {
        AuthzVerdict::Allowed
    } else {
        AuthzVerdict::Denied(None)
    }
}

/// The first CUSTOM policy (with its number) whose rules match `request`: its provider
/// decides about it before DENY and ALLOW policies do.
pub fn custom_match<'p, R>(
    policies: impl IntoIterator<Item = (usize, &'p AuthzPolicy)>,
    request: &AuthzRequest<'_>,
    candidates: impl Fn(usize, &'p AuthzPolicy) -> R,
) -> Option<(usize, &'p AuthzPolicy)>
where
    R: Iterator<Item = &'p AuthzRule>,
{
    policies
        .into_iter()
        .filter(|(_, p)| p.action == AuthzAction::Custom)
        .find(|(i, p)| candidates(*i, p).any(|r| r.matches(request, false)))
}

/// The first path segment every path a rule matches must have, when the rule says so:
/// each of its operations names paths, and each such path is exact or a prefix ending in
/// `/` (`/api/*`) — so a request for another segment cannot match it. None: the rule may
/// match any path (no paths, `*`, `*suffix`, `/api*`...). Used to index rules.
pub fn rule_path_segments(rule: &AuthzRule) -> Option<Vec<Str>> {
    if rule.to.is_empty() {
        return None;
    }
    let mut segments = Vec::new();
    for operation in &rule.to {
        if operation.paths.any.is_empty() {
            return None;
        }
        for pattern in &operation.paths.any {
            segments.push(first_segment_of_pattern(pattern)?);
        }
    }
    Some(segments)
}

/// The first segment of every path `pattern` matches, if it is fixed.
fn first_segment_of_pattern(pattern: &str) -> Option<Str> {
    let rest = pattern.strip_prefix('/')?;
    match rest.strip_suffix('*') {
        // `/api/*`: the segment ends at the slash; `/api*` could continue it.
        Some(prefix) => {
            let (segment, _) = prefix.split_once('/')?;
            (!segment.contains('*')).then(|| segment.into())
        }
        None if rest.contains('*') || pattern.starts_with('*') => None,
        None => Some(rest.split('/').next().unwrap_or_default().into()),
    }
}

/// The first segment of a request path (`/api/x` -> `api`, `/` -> ``).
pub fn first_path_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or_default()
}

impl AuthzRule {
    /// `deny`: evaluated for a DENY policy (HTTP-only fields of a TCP connection are then
    /// left out rather than failing the rule).
    fn matches(&self, request: &AuthzRequest<'_>, deny: bool) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(request, deny)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(request, deny)))
            && self.when.iter().all(|c| c.matches(request, deny))
    }
}

impl<T> Values<T> {
    /// `any` (when set) contains a match and `none` contains none; `test` compares one.
    #[inline]
    fn check(&self, test: impl Fn(&T) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&test)) && !self.none.iter().any(test)
    }

    pub fn is_empty(&self) -> bool {
        self.any.is_empty() && self.none.is_empty()
    }
}

/// [`istio_match`] for host names, which compare without regard to ASCII case (and without
/// allocating a lower-case copy per comparison).
fn istio_match_ignoring_case(pattern: &str, value: &str) -> bool {
    let (pattern, value) = (pattern.as_bytes(), value.as_bytes());
    if pattern == b"*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix(b"*") {
        return value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix(b"*") {
        let start = value.len().wrapping_sub(suffix.len());
        return value.len() >= suffix.len() && value[start..].eq_ignore_ascii_case(suffix);
    }
    pattern.eq_ignore_ascii_case(value)
}

/// Istio's string forms: exact, `prefix*`, `*suffix`, `*`. Compared as bytes: a `char`
/// pattern in `strip_suffix` costs several times as many instructions, on every rule of
/// every request.
#[inline]
pub fn istio_match(pattern: &str, value: &str) -> bool {
    let value = value.as_bytes();
    match pattern.as_bytes() {
        [b'*'] => true,
        [prefix @ .., b'*'] => value.starts_with(prefix),
        [b'*', suffix @ ..] => value.ends_with(suffix),
        exact => exact == value,
    }
}

fn namespace_of(principal: &str) -> Option<&str> {
    let rest = principal.split_once("/ns/")?.1;
    Some(rest.split_once('/').map_or(rest, |(ns, _)| ns))
}

impl Source {
    fn matches(&self, r: &AuthzRequest<'_>, deny: bool) -> bool {
        if !r.http && !self.request_principals.is_empty() && !deny {
            return false; // an HTTP-only field: an ALLOW rule never matches a TCP connection
        }
        // A principal (or namespace) condition needs an authenticated peer: without one,
        // `principals` never matches and `notPrincipals` always does (Istio's behaviour).
        let principal_ok = self.principals.is_empty()
            || r.principal
                .is_some_and(|p| self.principals.check(|v| istio_match(v, p)))
            || (self.principals.any.is_empty() && r.principal.is_none());
        let namespace = r.principal.and_then(namespace_of);
        let namespace_ok = self.namespaces.is_empty()
            || namespace.is_some_and(|n| self.namespaces.check(|v| istio_match(v, n)))
            || (self.namespaces.any.is_empty() && namespace.is_none());
        let request_principal = r.auth.map(|a| a.principal.as_str());
        let request_principal_ok = !r.http
            || self.request_principals.is_empty()
            || request_principal
                .is_some_and(|p| self.request_principals.check(|v| istio_match(v, p)))
            || (self.request_principals.any.is_empty() && request_principal.is_none());
        let ip_ok = |blocks: &Values<IpBlock>, ip: Option<IpAddr>| {
            blocks.is_empty() || ip.is_some_and(|ip| blocks.check(|b| b.contains(ip)))
        };
        principal_ok
            && namespace_ok
            && request_principal_ok
            && ip_ok(&self.ip_blocks, r.source_ip)
            && (self.remote_ip_blocks.is_empty()
                || ip_ok(&self.remote_ip_blocks, (r.remote_ip)().or(r.source_ip)))
    }
}

impl Operation {
    fn http_only(&self) -> bool {
        !(self.hosts.is_empty() && self.methods.is_empty() && self.paths.is_empty())
    }

    fn matches(&self, r: &AuthzRequest<'_>, deny: bool) -> bool {
        if !r.http && self.http_only() {
            return deny && self.ports.check(|p| *p == r.destination_port);
        }
        // Most selective first; the host is only looked at when the operation names hosts.
        self.paths.check(|p| istio_match(p, r.path))
            && self.methods.check(|m| istio_match(m, r.method))
            && self.ports.check(|p| *p == r.destination_port)
            && (self.hosts.is_empty() || {
                let host = r.host.split(':').next().unwrap_or(r.host);
                self.hosts.check(|v| istio_match_ignoring_case(v, host))
            })
    }
}

impl Condition {
    fn matches(&self, r: &AuthzRequest<'_>, deny: bool) -> bool {
        let http_only = matches!(
            self.key,
            ConditionKey::RequestHeader(_)
                | ConditionKey::RequestAuthPrincipal
                | ConditionKey::RequestAuthAudiences
                | ConditionKey::RequestAuthPresenter
                | ConditionKey::RequestAuthClaim(_)
        );
        if !r.http && http_only {
            return deny;
        }
        let value: Option<String> = match &self.key {
            ConditionKey::RequestHeader(name) => (r.header)(name),
            ConditionKey::SourceIp => r.source_ip.map(|ip| ip.to_string()),
            ConditionKey::RemoteIp => (r.remote_ip)().or(r.source_ip).map(|ip| ip.to_string()),
            ConditionKey::SourceNamespace => r.principal.and_then(namespace_of).map(Into::into),
            ConditionKey::SourcePrincipal => r.principal.map(Into::into),
            ConditionKey::DestinationIp => r.destination_ip.map(|ip| ip.to_string()),
            ConditionKey::DestinationPort => Some(r.destination_port.to_string()),
            ConditionKey::ConnectionSni => r.sni.map(Into::into),
            ConditionKey::RequestAuthPrincipal => r.auth.map(|a| a.principal.clone()),
            ConditionKey::RequestAuthPresenter => r.auth.and_then(|a| a.presenter.clone()),
            ConditionKey::RequestAuthAudiences => {
                return self.matches_any(r.auth.map(|a| a.audiences.clone()))
            }
            ConditionKey::RequestAuthClaim(path) => {
                return self.matches_any(r.auth.map(|a| a.claim(path)))
            }
        };
        let ip_key = matches!(
            self.key,
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp
        );
        let test = |pattern: &Str, value: &str| {
            if ip_key {
                let block = IpBlock::parse(pattern);
                let ip = value.parse().ok();
                block.zip(ip).is_some_and(|(b, ip)| b.contains(ip))
            } else {
                istio_match(pattern, value)
            }
        };
        match value {
            Some(value) => self.values.check(|p| test(p, &value)),
            None => self.values.any.is_empty(),
        }
    }

    /// A list-valued attribute (audiences, a list claim): `values` match when one item
    /// does, `notValues` when none does. Absent (no token, no such claim): only `notValues`.
    fn matches_any(&self, items: Option<Vec<String>>) -> bool {
        let items = items.unwrap_or_default();
        let hit = |p: &Str| items.iter().any(|i| istio_match(p, i));
        (self.values.any.is_empty() || self.values.any.iter().any(hit))
            && !self.values.none.iter().any(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(principal: Option<&'a str>, method: &'a str, path: &'a str) -> AuthzRequest<'a> {
        AuthzRequest {
            principal,
            source_ip: Some("10.1.2.3".parse().unwrap()),
            remote_ip: &|| None,
            destination_ip: None,
            destination_port: 8080,
            host: "weather:80",
            method,
            path,
            header: &|name| (name == "x-team").then(|| "ops".to_string()),
            auth: None,
            sni: None,
            http: true,
        }
    }

    fn policy(action: AuthzAction, rules: Vec<AuthzRule>) -> AuthzPolicy {
        AuthzPolicy {
            meta: Meta::new("AuthorizationPolicy", "weather", "p"),
            action,
            selector: None,
            mesh_wide: false,
            rules,
            listener_ports: Vec::new(),
            provider: None,
        }
    }

    fn values<T>(any: Vec<T>) -> Values<T> {
        Values {
            any,
            none: Vec::new(),
        }
    }

    #[test]
    fn deny_wins_no_allow_allows_and_an_unmatched_allow_denies() {
        let client = Some("cluster.local/ns/weather/sa/client");
        let get = request(client, "GET", "/forecast");
        assert_eq!(authorize(&[], &get), AuthzVerdict::Allowed);
        let only_get = policy(
            AuthzAction::Allow,
            vec![AuthzRule {
                to: vec![Operation {
                    methods: values(vec!["GET".into()]),
                    ..Operation::default()
                }],
                ..AuthzRule::default()
            }],
        );
        assert_eq!(authorize([&only_get], &get), AuthzVerdict::Allowed);
        let post = request(client, "POST", "/forecast");
        assert_eq!(authorize([&only_get], &post), AuthzVerdict::Denied(None));
        let deny_admin = policy(
            AuthzAction::Deny,
            vec![AuthzRule {
                to: vec![Operation {
                    paths: values(vec!["/admin*".into()]),
                    ..Operation::default()
                }],
                ..AuthzRule::default()
            }],
        );
        let admin = request(client, "GET", "/admin/users");
        assert!(matches!(
            authorize([&only_get, &deny_admin], &admin),
            AuthzVerdict::Denied(Some(_))
        ));
        let allow_nothing = policy(AuthzAction::Allow, vec![]);
        assert_eq!(
            authorize([&allow_nothing], &get),
            AuthzVerdict::Denied(None)
        );
        let audit = policy(AuthzAction::Audit, vec![AuthzRule::default()]);
        assert_eq!(authorize([&audit], &get), AuthzVerdict::Allowed);
    }

    #[test]
    fn custom_policies_decide_nothing_themselves_but_are_found_for_their_provider() {
        let admin_paths = vec![AuthzRule {
            to: vec![Operation {
                paths: values(vec!["/admin*".into()]),
                ..Operation::default()
            }],
            ..AuthzRule::default()
        }];
        let custom = policy(AuthzAction::Custom, admin_paths);
        let allow_all = policy(AuthzAction::Allow, vec![AuthzRule::default()]);
        let admin = request(None, "GET", "/admin/users");
        let public = request(None, "GET", "/forecast");
        let both = [&allow_all, &custom];
        assert_eq!(authorize(both, &admin), AuthzVerdict::Allowed);
        let numbered = || both.into_iter().enumerate();
        let found = custom_match(numbered(), &admin, |_, p| p.rules.iter());
        assert_eq!(found.map(|(i, _)| i), Some(1));
        assert!(custom_match(numbered(), &public, |_, p| p.rules.iter()).is_none());
    }

    #[test]
    fn sources_match_principals_namespaces_and_ip_blocks() {
        let from = |source: Source| {
            policy(
                AuthzAction::Allow,
                vec![AuthzRule {
                    from: vec![source],
                    ..AuthzRule::default()
                }],
            )
        };
        let by_principal = from(Source {
            principals: values(vec!["cluster.local/ns/weather/sa/*".into()]),
            ..Source::default()
        });
        let client = request(Some("cluster.local/ns/weather/sa/client"), "GET", "/");
        let stranger = request(Some("cluster.local/ns/other/sa/client"), "GET", "/");
        let plaintext = request(None, "GET", "/");
        assert_eq!(authorize([&by_principal], &client), AuthzVerdict::Allowed);
        assert_eq!(
            authorize([&by_principal], &stranger),
            AuthzVerdict::Denied(None)
        );
        assert_eq!(
            authorize([&by_principal], &plaintext),
            AuthzVerdict::Denied(None)
        );
        let by_namespace = from(Source {
            namespaces: values(vec!["weather".into()]),
            ..Source::default()
        });
        assert_eq!(authorize([&by_namespace], &client), AuthzVerdict::Allowed);
        assert_eq!(
            authorize([&by_namespace], &stranger),
            AuthzVerdict::Denied(None)
        );
        let by_ip = from(Source {
            ip_blocks: values(vec![IpBlock::parse("10.1.0.0/16").unwrap()]),
            ..Source::default()
        });
        assert_eq!(authorize([&by_ip], &plaintext), AuthzVerdict::Allowed);
        let not_ip = from(Source {
            ip_blocks: Values {
                any: vec![],
                none: vec![IpBlock::parse("10.1.2.3").unwrap()],
            },
            ..Source::default()
        });
        assert_eq!(authorize([&not_ip], &plaintext), AuthzVerdict::Denied(None));
    }

    #[test]
    fn conditions_read_headers_and_connection_facts() {
        let when = |key: ConditionKey, value: &str| {
            policy(
                AuthzAction::Allow,
                vec![AuthzRule {
                    when: vec![Condition {
                        key,
                        values: values(vec![value.into()]),
                    }],
                    ..AuthzRule::default()
                }],
            )
        };
        let r = request(Some("cluster.local/ns/weather/sa/client"), "GET", "/");
        let header = ConditionKey::RequestHeader("x-team".into());
        assert_eq!(
            authorize([&when(header.clone(), "ops")], &r),
            AuthzVerdict::Allowed
        );
        assert_eq!(
            authorize([&when(header, "dev")], &r),
            AuthzVerdict::Denied(None)
        );
        assert_eq!(
            authorize([&when(ConditionKey::SourceIp, "10.1.0.0/16")], &r),
            AuthzVerdict::Allowed
        );
        assert_eq!(
            authorize([&when(ConditionKey::SourceNamespace, "weather")], &r),
            AuthzVerdict::Allowed
        );
        assert_eq!(
            authorize([&when(ConditionKey::DestinationPort, "8080")], &r),
            AuthzVerdict::Allowed
        );
        assert!(IpBlock::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn hosts_compare_without_case_and_port() {
        let hosts = |pattern: &str| {
            policy(
                AuthzAction::Allow,
                vec![AuthzRule {
                    to: vec![Operation {
                        hosts: values(vec![pattern.into()]),
                        ..Operation::default()
                    }],
                    ..AuthzRule::default()
                }],
            )
        };
        let mut r = request(None, "GET", "/");
        r.host = "API.example.COM:8080";
        for pattern in ["*.example.com", "api.EXAMPLE.com", "API*", "*"] {
            assert_eq!(
                authorize([&hosts(pattern)], &r),
                AuthzVerdict::Allowed,
                "{pattern}"
            );
        }
        assert_eq!(
            authorize([&hosts("*.example.org")], &r),
            AuthzVerdict::Denied(None)
        );
        assert_eq!(
            authorize([&hosts("x.example.com")], &r),
            AuthzVerdict::Denied(None)
        );
    }

    #[test]
    fn http_only_fields_on_tcp_never_allow_and_still_deny() {
        let get_only = Operation {
            methods: values(vec!["GET".into()]),
            ..Operation::default()
        };
        let rule = AuthzRule {
            to: vec![get_only],
            ..AuthzRule::default()
        };
        let mut tcp = request(None, "", "");
        tcp.http = false;
        let allow = policy(AuthzAction::Allow, vec![rule.clone()]);
        assert_eq!(authorize([&allow], &tcp), AuthzVerdict::Denied(None));
        let deny = policy(AuthzAction::Deny, vec![rule]);
        assert!(matches!(
            authorize([&deny], &tcp),
            AuthzVerdict::Denied(Some(_))
        ));
    }
}
