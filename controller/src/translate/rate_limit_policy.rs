//! LocalRateLimitPolicy (Gateway API policy attachment): each policy's limit joins the
//! routes of its targets. Two policies on one target: the older applies and the other is
//! `Conflicted` there (Gateway API's tie-break: creation time, then namespace/name).
//! Policies on different targets (a Gateway and one of its HTTPRoutes) both apply: a
//! request passes every limit of its route.

use std::collections::BTreeMap;

use ferry_model::authz::IpBlock;
use ferry_model::{Action, BackendTarget, Meta, RateLimit, RateLimitKey, Route};

use super::report::Condition;
use super::{meta_of, Context};
use crate::inputs::ferry::{KeyType, LocalRateLimitPolicy, TargetRef};

/// The kinds a policy may target: (group, kind, how routes name them).
const TARGETS: &[(&str, &str, &str)] = &[
    ("gateway.networking.k8s.io", "Gateway", "Gateway"),
    ("gateway.networking.k8s.io", "HTTPRoute", "HTTPRoute"),
    ("gateway.networking.k8s.io", "GRPCRoute", "GRPCRoute"),
    ("networking.istio.io", "VirtualService", "VirtualService"),
    ("networking.k8s.io", "Ingress", "Ingress"),
    ("", "Service", "Service"),
];

/// One target of one accepted policy.
struct Attachment {
    /// The target as routes and listeners name it.
    target: Meta,
    limit: RateLimit,
}

pub(super) fn apply(cx: &mut Context<'_>) {
    let attachments = attachments(cx);
    if attachments.is_empty() {
        return;
    }
    cx.table.for_each_route(|sources, route| {
        for attachment in &attachments {
            if applies(&attachment.target, sources, route) {
                let mut limits = route.policy.rate_limits.to_vec();
                limits.push(attachment.limit.clone());
                route.policy.rate_limits = limits.into();
            }
        }
    });
}

/// The accepted policies' targets, each target taken by its oldest policy; every policy
/// is reported on.
fn attachments(cx: &mut Context<'_>) -> Vec<Attachment> {
    let mut policies: Vec<&LocalRateLimitPolicy> = cx.inputs.rate_limit_policies.iter().collect();
    policies.sort_by_key(|p| super::table::RouteOrder::age_of(&p.metadata));
    let mut taken: BTreeMap<Meta, Meta> = BTreeMap::new();
    let mut out = Vec::new();
    for policy in policies {
        let meta = meta_of("LocalRateLimitPolicy", &policy.metadata);
        let limit = match limit_of(policy, &meta) {
            Ok(limit) => limit,
            Err((field, message)) => {
                let condition = Condition::warn("Accepted", "Invalid", message);
                cx.reports.push(&meta, condition.field(field));
                continue;
            }
        };
        for (index, target_ref) in policy.spec.target_refs.iter().enumerate() {
            let field = format!("spec.targetRefs[{index}]");
            let target = match target_of(cx, target_ref, &meta.namespace) {
                Ok(target) => target,
                Err((reason, message)) => {
                    let condition = Condition::warn("Accepted", reason, message);
                    cx.reports.push(&meta, condition.field(field));
                    continue;
                }
            };
            if let Some(older) = taken.get(&target) {
                let message = format!("{target} already has the older {older}");
                let condition = Condition::warn("Accepted", "Conflicted", message);
                cx.reports
                    .push(&meta, condition.field(field).parent(target.to_string()));
                continue;
            }
            taken.insert(target.clone(), meta.clone());
            let message = format!("limits the routes of {target}");
            let condition = Condition::ok("Accepted", "Accepted", message);
            cx.reports.push(&meta, condition.parent(target.to_string()));
            out.push(Attachment {
                target,
                limit: limit.clone(),
            });
        }
    }
    out
}

fn limit_of(policy: &LocalRateLimitPolicy, meta: &Meta) -> Result<RateLimit, (String, String)> {
    let spec = &policy.spec;
    let bad = |field: &str, message: String| (field.to_string(), message);
    if spec.limit.requests == 0 {
        return Err(bad("spec.limit.requests", "must be at least 1".into()));
    }
    let key = match spec.key.as_ref().map(|k| (k.type_, k.header.as_deref())) {
        None | Some((KeyType::Route, _)) => RateLimitKey::Route,
        Some((KeyType::ClientIp, _)) => RateLimitKey::ClientIp,
        Some((KeyType::Header, Some(header))) if !header.is_empty() => {
            RateLimitKey::Header(header.to_ascii_lowercase().into())
        }
        Some((KeyType::Header, _)) => {
            return Err(bad(
                "spec.key.header",
                "type Header needs the header's name".into(),
            ))
        }
    };
    let status = spec.status_code.unwrap_or(429);
    if !(400..=599).contains(&status) {
        return Err(bad(
            "spec.statusCode",
            format!("{status} is not a 4xx or 5xx status"),
        ));
    }
    let mut exempt = Vec::new();
    for (i, range) in spec.exempt_source_ranges.iter().enumerate() {
        let block = IpBlock::parse(range.trim()).ok_or_else(|| {
            let field = format!("spec.exemptSourceRanges[{i}]");
            (field, format!("{range:?} is not an address or CIDR range"))
        })?;
        exempt.push(block);
    }
    Ok(RateLimit {
        name: meta.to_string().into(),
        requests: spec.limit.requests,
        window_ms: spec.limit.unit.millis(),
        burst: spec.burst.unwrap_or(spec.limit.requests).max(1),
        key,
        status,
        exempt: exempt.into(),
    })
}

/// The target as routes name it, if it is a kind policies attach to and it exists.
fn target_of(
    cx: &Context<'_>,
    target: &TargetRef,
    namespace: &str,
) -> Result<Meta, (&'static str, String)> {
    let Some((_, _, kind)) = TARGETS
        .iter()
        .find(|(group, kind, _)| *group == target.group && *kind == target.kind)
    else {
        let message = format!(
            "{} ({}) is not a kind a LocalRateLimitPolicy attaches to: Gateway, HTTPRoute, GRPCRoute, VirtualService, Ingress or Service",
            target.kind, target.group
        );
        return Err(("InvalidKind", message));
    };
    let meta = Meta::new(kind, namespace, &target.name);
    if !exists(cx, &meta) {
        let message = format!("{kind} {namespace}/{} not found", target.name);
        return Err(("TargetNotFound", message));
    }
    Ok(meta)
}

fn exists(cx: &Context<'_>, target: &Meta) -> bool {
    let inputs = cx.inputs;
    let named = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.as_deref() == Some(&*target.namespace)
            && m.name.as_deref() == Some(&*target.name)
    };
    match &*target.kind {
        "Gateway" => inputs.gateways.iter().any(|o| named(&o.metadata)),
        "HTTPRoute" => inputs.http_routes.iter().any(|o| named(&o.metadata)),
        "GRPCRoute" => inputs.grpc_routes.iter().any(|o| named(&o.metadata)),
        "VirtualService" => inputs.virtual_services.iter().any(|o| named(&o.metadata)),
        "Ingress" => inputs.ingresses.iter().any(|o| named(&o.metadata)),
        "Service" => inputs.services.iter().any(|o| named(&o.metadata)),
        _ => false,
    }
}

/// A route is limited by a policy on its route object, on a Gateway whose listener it is
/// served on, or on a Service one of its backends belongs to.
fn applies(target: &Meta, sources: &[Meta], route: &Route) -> bool {
    match &*target.kind {
        "Gateway" => sources.contains(target),
        "Service" => forwards_to(route, target),
        _ => route.meta == *target,
    }
}

fn forwards_to(route: &Route, service: &Meta) -> bool {
    let Action::Forward(backends) = &route.action else {
        return false;
    };
    let prefix = format!("{}/{}:", service.namespace, service.name);
    backends.iter().any(|b| match &b.target {
        BackendTarget::Cluster(name) => name.starts_with(&prefix),
        BackendTarget::Invalid { .. } => false,
    })
}
