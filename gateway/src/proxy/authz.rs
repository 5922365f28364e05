//! AuthorizationPolicy enforcement, shared by both request paths: at a gateway before
//! routing, at a sidecar's inbound before the app. A denied request is answered 403
//! `RBAC: access denied` with the response flag RBAC and the deciding policy in the cause
//! header (`x-ferry-cause`), as Envoy's RBAC filter answers for Istio.

use ferry_model::authz::{authorize, AuthzRequest, AuthzVerdict};
use std::net::IpAddr;

use super::decide::{Decision, Reply};
use super::facts::RequestFacts;
use crate::compiled::CompiledSnapshot;
use crate::header_lookup;

/// Who is asking, beyond the request itself.
pub struct Peer<'a> {
    /// The mTLS peer's SPIFFE ID (URI form), if any.
    pub identity: Option<&'a str>,
    pub destination_ip: Option<IpAddr>,
    /// The port the request arrived on (a sidecar: the app port the client dialled).
    pub port: u16,
}

/// None when the request may go on; else the 403 to send.
pub fn check(
    snapshot: &CompiledSnapshot,
    facts: &RequestFacts<'_>,
    peer: &Peer<'_>,
) -> Option<Reply> {
    let all = &snapshot.source.authorization;
    if all.is_empty() {
        return None; // the common case costs one length check
    }
    let policies = all
        .iter()
        .filter(|p| p.listener_ports.is_empty() || p.listener_ports.contains(&peer.port));
    let remote_ip = || {
        header_lookup::first_text(facts.headers, "x-forwarded-for")
            .and_then(|xff| xff.split(',').next())
            .and_then(|first| first.trim().parse().ok())
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
        http: true,
    };
    match authorize(policies, &request) {
        AuthzVerdict::Allowed => None,
        AuthzVerdict::Denied(by) => {
            let cause = match by {
                Some(meta) => format!("RBAC denied by {meta}"),
                None => "RBAC no ALLOW policy matched".to_string(),
            };
            let mut reply = Decision::reply(403, cause);
            reply.body = "RBAC: access denied".into();
            Some(reply)
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
        http: false,
    };
    authorize(all.iter(), &request) == AuthzVerdict::Allowed
}
