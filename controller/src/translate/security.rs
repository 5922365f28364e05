//! PeerAuthentication, checked field by field (it is enforced by the sidecars, see
//! `mesh_tls`; AuthorizationPolicy by every proxy, see `authz`; RequestAuthentication too,
//! see `jwt`).

use super::report::Condition;
use super::{meta_of, Context};
use crate::inputs::security::{MutualTls, PeerAuthentication};

/// Istio's PeerAuthentication modes.
const MTLS_MODES: [&str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

pub(super) fn translate(cx: &mut Context) {
    for policy in &cx.inputs.peer_authentications {
        let meta = meta_of("PeerAuthentication", &policy.metadata);
        for problem in peer_authentication_problems(policy, &cx.options.root_namespace) {
            cx.reports.push(&meta, problem);
        }
    }
}

/// Field errors of a PeerAuthentication, as istiod's validation words them.
pub(super) fn peer_authentication_problems(
    policy: &PeerAuthentication,
    root_namespace: &str,
) -> Vec<Condition> {
    let mut problems = Vec::new();
    if let Some(problem) = mode_problem(policy.spec.mtls.as_ref(), "spec.mtls.mode") {
        problems.push(problem);
    }
    let spec = &policy.spec;
    if !spec.port_level_mtls.is_empty() && spec.selector.is_none() {
        problems.push(
            Condition::error(
                "Valid",
                "InvalidValue",
                "portLevelMtls requires a workload selector",
            )
            .field("spec.portLevelMtls"),
        );
    }
    for (port, mtls) in &spec.port_level_mtls {
        let field = format!("spec.portLevelMtls[{port}]");
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            let message = format!("port {port:?} is not a number from 1 to 65535");
            problems.push(Condition::error("Valid", "InvalidValue", message).field(&field));
        }
        if let Some(problem) = mode_problem(Some(mtls), &format!("{field}.mode")) {
            problems.push(problem);
        }
    }
    let strict = |m: Option<&MutualTls>| m.and_then(|m| m.mode.as_deref()) == Some("STRICT");
    if strict(spec.mtls.as_ref()) || spec.port_level_mtls.values().any(|m| strict(Some(m))) {
        // Said on the object so nobody is surprised: STRICT refuses such connections.
        problems.push(
            Condition::warn(
                "Valid",
                "NotYetSupported",
                "opaque TCP (not HTTP) between sidecars is not carried over mutual TLS yet, \
                 so STRICT refuses it; DISABLE such ports with portLevelMtls",
            )
            .field("spec.mtls.mode"),
        );
    }
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    if namespace == root_namespace && spec.selector.is_some() {
        // Istio applies it to the selected workloads of the root namespace only; say so,
        // since people often mean it mesh-wide.
        problems.push(
            Condition::warn(
                "Valid",
                "SelectorInRootNamespace",
                format!(
                    "a selector in the root namespace ({root_namespace}) picks workloads of \
                     that namespace only; drop it for a mesh-wide policy"
                ),
            )
            .field("spec.selector"),
        );
    }
    problems
}

fn mode_problem(mtls: Option<&MutualTls>, field: &str) -> Option<Condition> {
    let mode = mtls?.mode.as_deref()?;
    if MTLS_MODES.contains(&mode) {
        return None;
    }
    let message = format!("mode {mode:?} is not one of {}", MTLS_MODES.join(", "));
    Some(Condition::error("Valid", "InvalidValue", message).field(field))
}
