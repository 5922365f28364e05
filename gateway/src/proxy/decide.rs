//! What to do with a request: answer it locally, or forward it to an endpoint.

use ferry_model::{Action, BackendTarget, Filter};
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::sync::Arc;

use super::facts::{authority_of, RequestFacts};

use super::mirror::{MirrorTarget, PendingMirror};
use super::respond::{self, LocalReply};
use crate::compiled::{CompiledCluster, CompiledRoute, CompiledSnapshot, RequestView};
use crate::rewrite::{redirect_location, RedirectRequest};

pub enum Decision {
    Reply(Reply),
    Forward(Forward),
}

/// A response the proxy writes itself. `cause` goes into the cause header:
/// a code (NR no route, UH no healthy upstream, NC no cluster (invalid or missing backend), DR direct response,
/// RD redirect, UF upstream connect failure, UC upstream connection error, UO overflow,
/// UT upstream timeout, URX retries exhausted, FI fault injected) followed by the object
/// responsible.
pub struct Reply {
    pub status: u16,
    pub cause: String,
    pub body: String,
    /// Names are lower-case; most are fixed, an auth service's denial brings its own.
    pub headers: Vec<(std::borrow::Cow<'static, str>, String)>,
    pub route: Option<Arc<CompiledRoute>>,
}

pub struct Forward {
    pub route: Arc<CompiledRoute>,
    pub backend: usize,
    pub cluster: Arc<CompiledCluster>,
    /// Header changes RequestAuthentication asks for (token removed, claims copied out).
    pub auth_edits: Vec<super::jwt::HeaderEdit>,
    /// The request's place under the route's concurrency limit, held until it ends.
    pub in_flight: Option<crate::in_flight::Permit>,
    /// The CUSTOM AuthorizationPolicy (its number in the snapshot) whose provider is asked
    /// before the request goes on.
    pub custom_authz: Option<usize>,
    /// `satisfy any`: an access check passed already, the route's external authentication
    /// is not asked.
    pub access_granted: bool,
}

/// What a request that passed the route's admission takes along.
#[derive(Default)]
struct Admitted {
    in_flight: Option<crate::in_flight::Permit>,
    access_granted: bool,
}

impl Reply {
    /// Adds the headers of an answer this reply relays (an error page, an auth service's
    /// denial) that `wanted` admits, leaving out framing and hop-by-hop ones.
    pub fn relay_headers(&mut self, headers: &http::HeaderMap, wanted: impl Fn(&str) -> bool) {
        for (name, value) in headers {
            let name = name.as_str();
            if crate::header_names::NOT_RELAYED.contains(&name) || !wanted(name) {
                continue;
            }
            if let Ok(value) = value.to_str() {
                self.headers
                    .push((name.to_string().into(), value.to_string()));
            }
        }
    }
}

impl Decision {
    pub fn reply(status: u16, cause: impl Into<String>) -> Reply {
        let cause = cause.into();
        Reply {
            status,
            body: format!("{cause}\n"),
            cause,
            headers: Vec::new(),
            route: None,
        }
    }
}

impl Reply {
    pub fn for_route(mut self, route: &Arc<CompiledRoute>) -> Self {
        self.route = Some(route.clone());
        self
    }

    /// Writes the reply: the full cause, or (`public`) the code alone and a generic body
    /// (crate::disclosure).
    pub async fn send(&self, session: &mut Session, public: bool) -> Result<()> {
        let (cause, body) = match public {
            false => (self.cause.as_str(), self.body.as_str()),
            true => crate::disclosure::public_reply(&self.cause, &self.body),
        };
        let reply = LocalReply {
            status: self.status,
            cause,
            body,
            headers: &self.headers,
        };
        respond::send(session, reply).await
    }
}

/// A gateway request whose Host another server of its port owns than the one its TLS
/// connection was set up for (SNI): 421, so it never reaches routes (and a certificate or
/// client validation) the connection did not negotiate.
fn misdirected(
    snapshot: &CompiledSnapshot,
    req: &RequestFacts<'_>,
    port: u16,
    host: &str,
    dialled_ip: Option<std::net::IpAddr>,
) -> Option<Reply> {
    let sni = crate::downstream_io::requested_server_name(req.tls)?;
    // The usual request names its SNI as Host: nothing to look up.
    if dialled_ip.is_some()
        || sni.eq_ignore_ascii_case(host)
        || !snapshot.misdirected(port, sni, host)
    {
        return None;
    }
    let cause = format!("NR Host {host:?} is served on another connection than SNI {sni:?}'s");
    Some(Decision::reply(421, cause))
}

/// `dialled_ip`: matched as the host when the listener has no virtual host for the Host
/// header (a sidecar passes the IP the app dialled, so `Host: anything` to a ClusterIP works).
pub fn decide(
    snapshot: &CompiledSnapshot,
    req: &RequestFacts<'_>,
    port: u16,
    dialled_ip: Option<std::net::IpAddr>,
    client_address: crate::limits::ClientAddress,
) -> Decision {
    // AuthorizationPolicy at a gateway, before routing (a sidecar's captured outbound
    // requests, which have a dialled IP, are authorized at the destination's inbound).
    let mut auth_edits = Vec::new();
    let mut custom_authz = None;
    if dialled_ip.is_none() {
        // A verified client certificate naming a SPIFFE ID is the peer's principal.
        let peer = super::authz::Peer {
            identity: crate::downstream_io::peer_identity_str(req.tls),
            destination_ip: None,
            port,
            sni: crate::downstream_io::requested_server_name(req.tls),
            client_address,
        };
        match super::authz::check_with_custom(snapshot, req, &peer) {
            Ok(checked) => (auth_edits, custom_authz) = (checked.edits, checked.custom),
            Err(refused) => return Decision::Reply(refused),
        }
        client_cert_header(req, &mut auth_edits);
    }
    let (mut host, host_port) = host_of(req.authority);
    if let Some(ip) = dialled_ip.filter(|_| !snapshot.serves_host(port, &host)) {
        host = ip.to_string().into();
    }
    if let Some(refused) = misdirected(snapshot, req, port, &host, dialled_ip) {
        return Decision::Reply(refused);
    }
    let view = RequestView {
        port,
        host: &host,
        path: req.path,
        query: req.query,
        method: req.method,
        headers: req.headers,
    };
    let Some(route) = snapshot.route(&view) else {
        return Decision::Reply(Decision::reply(
            404,
            format!("NR no route for host {host:?} on port {port}"),
        ));
    };
    let admitted = match admission(req, route, client_address) {
        Ok(admitted) => admitted,
        Err(refused) => return Decision::Reply(refused),
    };
    let meta = &route.route.meta;
    match &route.route.action {
        Action::Redirect(redirect) => {
            let request = RedirectRequest {
                scheme: if req.tls.is_some() { "https" } else { "http" },
                host: &host,
                host_port,
                listener_port: port,
                path: view.path,
                query: view.query,
                matched: &route.route.matcher.path,
            };
            let mut reply = Decision::reply(redirect.status, format!("RD {meta}")).for_route(route);
            reply
                .headers
                .push(("location".into(), redirect_location(redirect, &request)));
            reply.body.clear();
            Decision::Reply(reply)
        }
        Action::Direct { status, body } => {
            let mut reply = Decision::reply(*status, format!("DR {meta}")).for_route(route);
            reply.body = body.to_string();
            Decision::Reply(reply)
        }
        Action::Forward(_) => match forward(snapshot, route) {
            Decision::Forward(forward) => Decision::Forward(Forward {
                auth_edits,
                in_flight: admitted.in_flight,
                access_granted: admitted.access_granted,
                custom_authz,
                ..forward
            }),
            reply => reply,
        },
    }
}

/// The route's own conditions on who may use it and how often, in nginx's phase order:
/// the body limit (413), rate limits (429 or the limit's status: before the checks below,
/// so a flood never reaches password hashing), the concurrency limit, source ranges (403),
/// Basic credentials (401) — all of them, or one with `satisfy_any`. Passed: the request's
/// place under the concurrency limit.
fn admission(
    req: &RequestFacts<'_>,
    route: &Arc<CompiledRoute>,
    client_address: crate::limits::ClientAddress,
) -> Result<Admitted, Reply> {
    let policy = &route.route.policy;
    if let Some(limit) = policy.max_request_body_bytes {
        let declared = crate::header_lookup::first_text(req.headers, "content-length");
        if super::body_limit::declared_over(declared.map(str::as_bytes), limit) {
            let reply = Decision::reply(413, super::body_limit::cause(limit));
            return Err(reply.for_route(route));
        }
    }
    if policy.source_ranges.is_none()
        && policy.rate_limits.is_empty()
        && policy.concurrency_limit.is_none()
        && policy.basic_auth.is_none()
    {
        return Ok(Admitted::default());
    }
    let meta = &route.route.meta;
    // The client's address (X-Forwarded-For read) only when something here asks for it.
    let by_client = |l: &ferry_model::RateLimit| {
        l.key == ferry_model::RateLimitKey::ClientIp || !l.exempt.is_empty()
    };
    let wants_client = policy.source_ranges.is_some()
        || policy.concurrency_limit.is_some()
        || policy.rate_limits.iter().any(by_client);
    let client = match wants_client {
        true => {
            let forwarded_for = crate::header_lookup::joined(req.headers, "x-forwarded-for");
            client_address.remote_ip(forwarded_for.as_deref(), req.client_ip)
        }
        false => None,
    };
    if let Some(refused) = super::rate_limits::check(req, &policy.rate_limits, client) {
        return Err(refused.for_route(route));
    }
    let in_flight = match &policy.concurrency_limit {
        Some(limit) => super::rate_limits::enter(limit, client).map_err(|r| r.for_route(route))?,
        None => None,
    };
    let access_granted = access(req, policy, client, meta).map_err(|r| r.for_route(route))?;
    Ok(Admitted {
        in_flight,
        access_granted,
    })
}

/// Source ranges (403) and Basic credentials (401): both must pass, or with `satisfy_any`
/// one of them (or the external authentication asked later). Ok(true): access is granted
/// already, the external authentication is not asked.
fn access(
    req: &RequestFacts<'_>,
    policy: &ferry_model::RoutePolicy,
    client: Option<std::net::IpAddr>,
    meta: &ferry_model::Meta,
) -> Result<bool, Reply> {
    let ranges = policy.source_ranges.as_ref().map(|r| r.admits(client));
    let ranges_refusal = || {
        let cause = format!("RBAC denied by {meta}: client address not in its source ranges");
        let mut reply = Decision::reply(403, cause);
        reply.body = "RBAC: access denied".into();
        reply
    };
    // Checked only when needed: a password hash costs far more than a range lookup.
    let basic = || {
        policy
            .basic_auth
            .as_ref()
            .map(|auth| super::basic_auth::check(req, auth, meta))
    };
    if !policy.satisfy_any {
        if ranges == Some(false) {
            return Err(ranges_refusal());
        }
        return match basic() {
            Some(Some(refused)) => Err(refused),
            _ => Ok(false),
        };
    }
    if ranges == Some(true) {
        return Ok(true);
    }
    match basic() {
        Some(None) => Ok(true),
        _ if policy.ext_auth.is_some() => Ok(false), // the auth service decides alone
        Some(Some(refused)) => Err(refused),
        None if ranges == Some(false) => Err(ranges_refusal()),
        None => Ok(false),
    }
}

const XFCC: &str = "x-forwarded-client-cert";

/// At the edge, `x-forwarded-client-cert` describes the verified client certificate, and
/// nothing a client wrote itself (Istio's SANITIZE_SET at gateways).
fn client_cert_header(req: &RequestFacts<'_>, edits: &mut Vec<super::jwt::HeaderEdit>) {
    use super::jwt::HeaderEdit;
    let details = req.tls.and_then(crate::downstream_io::client_cert_details);
    if details.is_none() && crate::header_lookup::first_text(req.headers, XFCC).is_none() {
        return; // the common case: nothing to remove or add
    }
    edits.push(HeaderEdit::Remove(XFCC.into()));
    if let Some(details) = details {
        edits.push(HeaderEdit::Set(XFCC.into(), details));
    }
}

fn forward(snapshot: &CompiledSnapshot, route: &Arc<CompiledRoute>) -> Decision {
    let meta = &route.route.meta;
    let Some(backend) = route.pick_backend(rand::random()) else {
        return Decision::Reply(
            Decision::reply(500, format!("NC {meta}: all backends have weight 0")).for_route(route),
        );
    };
    let cluster_name = match route.backend_target(backend) {
        Some(BackendTarget::Cluster(name)) => name,
        Some(BackendTarget::Invalid { status, reason }) => {
            if let Some(fallback) = default_backend(snapshot, route) {
                return forward_to(route, backend, fallback);
            }
            return Decision::Reply(
                Decision::reply(*status, format!("NC {meta}: {reason}")).for_route(route),
            );
        }
        None => {
            return Decision::Reply(
                Decision::reply(500, format!("NC {meta}: no backend")).for_route(route),
            )
        }
    };
    let Some(cluster) = snapshot.cluster(cluster_name) else {
        return Decision::Reply(
            Decision::reply(500, format!("NC {meta}: cluster {cluster_name} missing"))
                .for_route(route),
        );
    };
    if cluster.cluster.endpoints.is_empty() {
        if let Some(fallback) = default_backend(snapshot, route) {
            return forward_to(route, backend, fallback);
        }
        return Decision::Reply(Decision::reply(503, no_endpoints(cluster)).for_route(route));
    }
    forward_to(route, backend, cluster)
}

/// The route's default backend (ingress-nginx `default-backend`), when it has endpoints: it
/// answers for a backend that has none.
fn default_backend<'s>(
    snapshot: &'s CompiledSnapshot,
    route: &CompiledRoute,
) -> Option<&'s Arc<CompiledCluster>> {
    let pages = route.route.policy.error_pages.as_ref()?;
    let cluster = snapshot.cluster(&pages.cluster)?;
    (!cluster.cluster.endpoints.is_empty()).then_some(cluster)
}

fn forward_to(
    route: &Arc<CompiledRoute>,
    backend: usize,
    cluster: &Arc<CompiledCluster>,
) -> Decision {
    Decision::Forward(Forward {
        route: route.clone(),
        backend,
        cluster: cluster.clone(),
        auth_edits: Vec::new(),
        in_flight: None,
        custom_authz: None,
        access_granted: false,
    })
}

pub fn no_endpoints(cluster: &CompiledCluster) -> String {
    format!(
        "UH {}: no ready endpoints in {}",
        cluster.cluster.meta, cluster.cluster.name
    )
}

/// Host (lower-case, port removed) and the port written after it, from an authority.
pub fn host_of(authority: &str) -> (std::borrow::Cow<'_, str>, Option<u16>) {
    let (host, port) = split_host_port(authority);
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    };
    (host, port)
}

fn split_host_port(raw: &str) -> (&str, Option<u16>) {
    if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (raw, None),
        };
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (raw, None),
    }
}

/// The mirror copies this request should produce (each mirror filter rolls its own share).
pub fn mirror_for(
    snapshot: &CompiledSnapshot,
    forward: &Forward,
    req: &RequestHeader,
) -> Option<PendingMirror> {
    let targets: Vec<MirrorTarget> = forward
        .route
        .filters_for(Some(forward.backend))
        .filter_map(|f| match f {
            Filter::Mirror(m) if rand::random_range(0..1_000_000) < m.per_million => Some(m),
            _ => None,
        })
        .filter_map(|m| {
            let cluster = snapshot.cluster(&m.cluster)?;
            let (_, endpoint) = cluster.pick(None, &[])?;
            Some(MirrorTarget {
                address: endpoint.address,
                protocol: cluster.cluster.protocol,
            })
        })
        .collect();
    if targets.is_empty() {
        return None;
    }
    Some(PendingMirror {
        targets,
        head: req.clone(),
        host: host_of(authority_of(req)).0.into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_split_handles_ipv6_and_missing_port() {
        assert_eq!(split_host_port("a.com:8080"), ("a.com", Some(8080)));
        assert_eq!(split_host_port("a.com"), ("a.com", None));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
    }
}
