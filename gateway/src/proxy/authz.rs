//! RequestAuthentication (see `jwt`) and AuthorizationPolicy enforcement, shared by both
//! request paths: at a gateway before
//! routing, at a sidecar's inbound before the app. A denied request is answered 403
//! `RBAC: access denied` with the response flag RBAC and the deciding policy in the cause
//! header (`x-ferry-cause`), as Envoy's RBAC filter answers for Istio.

use ferry_model::authz::{authorize, authorize_with, custom_match, AuthzRequest, AuthzVerdict};
use ferry_model::jwt::RequestAuth;
use std::net::IpAddr;

use super::authz_index;
use super::decide::{Decision, Reply};
use super::facts::RequestFacts;
use super::jwt::{self, HeaderEdit};
use crate::compiled::CompiledSnapshot;
use crate::header_lookup;
use crate::limits::ClientAddress;

/// Who is asking, beyond the request itself.
pub struct Peer<'a> {
    /// The mTLS peer's SPIFFE ID (URI form), if any.
    pub identity: Option<&'a str>,
    pub destination_ip: Option<IpAddr>,
    /// The port the request arrived on (a sidecar: the app port the client dialled).
    pub port: u16,
    /// The TLS server name the client asked for, when the connection is TLS.
    pub sni: Option<&'a str>,
    /// Which X-Forwarded-For addresses name the remote client (`remoteIpBlocks`).
    pub client_address: ClientAddress,
}

/// What RequestAuthentication and AuthorizationPolicy let through.
#[derive(Default)]
pub struct Checked {
    /// Header edits to make upstream.
    pub edits: Vec<HeaderEdit>,
    /// The CUSTOM policy (its number in the snapshot) whose provider is still to be asked.
    pub custom: Option<usize>,
}

/// RequestAuthentication then AuthorizationPolicy where a CUSTOM policy's provider cannot be
/// asked (a sidecar's inbound): a request a CUSTOM policy matches is denied (fails closed).
pub fn check(
    snapshot: &CompiledSnapshot,
    facts: &RequestFacts<'_>,
    peer: &Peer<'_>,
) -> Result<Vec<HeaderEdit>, Reply> {
    let checked = check_with_custom(snapshot, facts, peer)?;
    if let Some(index) = checked.custom {
        let meta = &snapshot.source.authorization[index].meta;
        let cause = format!("RBAC denied by {meta}: its CUSTOM provider is not asked here (a sidecar's inbound) yet");
        let mut reply = Decision::reply(403, cause);
        reply.body = "RBAC: access denied".into();
        return Err(reply);
    }
    Ok(checked.edits)
}

/// RequestAuthentication then AuthorizationPolicy: what the request may go on with, else
/// the 401 or 403 to send.
pub fn check_with_custom(
    snapshot: &CompiledSnapshot,
    facts: &RequestFacts<'_>,
    peer: &Peer<'_>,
) -> Result<Checked, Reply> {
    let mut edits = Vec::new();
    if snapshot.jwt.is_empty() && snapshot.source.authorization.is_empty() {
        return Ok(Checked::default()); // the common case costs two length checks
    }
    let auth = match jwt::authenticate(&snapshot.jwt, facts, peer.port, &mut edits) {
        jwt::Outcome::Anonymous => None,
        jwt::Outcome::Verified(auth) => Some(auth),
        jwt::Outcome::Refused(reason) => return Err(unauthenticated(facts, reason)),
    };
    let custom = authorize_request(snapshot, facts, peer, auth.as_ref())?;
    Ok(Checked { edits, custom })
}

/// Envoy's answer to a bad token: 401, the reason as body, a Bearer challenge.
fn unauthenticated(facts: &RequestFacts<'_>, reason: &str) -> Reply {
    let mut reply = Decision::reply(401, format!("JWT {reason}"));
    reply.body = reason.to_string();
    reply.headers.push((
        "www-authenticate".into(),
        format!(
            "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
            facts.authority, facts.path
        ),
    ));
    reply
}

/// The DENY and ALLOW verdict, and the CUSTOM policy matching the request, if any.
fn authorize_request(
    snapshot: &CompiledSnapshot,
    facts: &RequestFacts<'_>,
    peer: &Peer<'_>,
    auth: Option<&RequestAuth>,
) -> Result<Option<usize>, Reply> {
    let all = &snapshot.source.authorization;
    if all.is_empty() {
        return Ok(None);
    }
    let policies = all
        .iter()
        .enumerate()
        .filter(|(_, p)| p.listener_ports.is_empty() || p.listener_ports.contains(&peer.port));
    let remote_ip = || {
        let forwarded_for = header_lookup::joined(facts.headers, "x-forwarded-for");
        peer.client_address
            .remote_ip(forwarded_for.as_deref(), facts.client_ip)
    };
    let header = |name: &str| header_lookup::joined(facts.headers, name).map(|v| v.into_owned());
    let request = AuthzRequest {
        principal: peer
            .identity
            .map(|id| id.strip_prefix("spiffe://").unwrap_or(id)),
        source_ip: facts.client_ip,
        remote_ip: &remote_ip,
        destination_ip: peer.destination_ip,
        destination_port: peer.port,
        host: facts.authority,
        method: facts.method,
        path: facts.path,
        header: &header,
        auth,
        sni: peer.sni,
        http: true,
    };
    let index = &snapshot.authz_index;
    let rules =
        |i: usize, p| authz_index::candidates(index.get(i).and_then(Option::as_ref), p, facts.path);
    match authorize_with(policies.clone(), &request, rules) {
        AuthzVerdict::Allowed => Ok(custom_match(policies, &request, rules).map(|(i, _)| i)),
        AuthzVerdict::Denied(by) => {
            let cause = match by {
                Some(meta) => format!("RBAC denied by {meta}"),
                None => "RBAC no ALLOW policy matched".to_string(),
            };
            let mut reply = Decision::reply(403, cause);
            reply.body = "RBAC: access denied".into();
            Err(reply)
        }
    }
}

/// AuthorizationPolicy on a TCP connection (a sidecar's inbound opaque traffic): true when
/// it may go on.
pub fn allows_connection(
    snapshot: &CompiledSnapshot,
    peer: &Peer<'_>,
    source_ip: Option<IpAddr>,
) -> bool {
    let all = &snapshot.source.authorization;
    if all.is_empty() {
        return true;
    }
    let request = AuthzRequest {
        principal: peer
            .identity
            .map(|id| id.strip_prefix("spiffe://").unwrap_or(id)),
        source_ip,
        remote_ip: &|| None,
        destination_ip: peer.destination_ip,
        destination_port: peer.port,
        host: "",
        method: "",
        path: "",
        header: &|_| None,
        auth: None,
        sni: peer.sni,
        http: false,
    };
    // A CUSTOM policy matching a connection: no HTTP check can be made (fails closed).
    let custom = custom_match(all.iter().enumerate(), &request, |_, p| p.rules.iter());
    custom.is_none() && authorize(all.iter(), &request) == AuthzVerdict::Allowed
}
