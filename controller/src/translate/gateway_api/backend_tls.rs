//! BackendTLSPolicy: the conditions it carries. The TLS it asks for is compiled into the
//! clusters of the Services it targets (`upstream_tls::from_backend_tls_policy`); a policy
//! whose CA cannot be resolved makes those connections fail rather than go out unverified.

use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;

use crate::translate::report::Condition;
use crate::translate::upstream_tls::from_backend_tls_policy;
use crate::translate::{meta_of, Context};

pub(super) fn report(cx: &mut Context<'_>) {
    for policy in &cx.inputs.backend_tls_policies {
        let meta = meta_of("BackendTLSPolicy", &policy.metadata);
        let mut accepted = true;
        for (i, target) in policy.spec.target_refs.iter().enumerate() {
            if !target.group.is_empty() || target.kind != "Service" {
                let message = format!("{} {} is not a Service", target.kind, target.name);
                let condition = Condition::warn("Accepted", "Invalid", message)
                    .field(format!("spec.targetRefs[{i}]"));
                cx.reports.push(&meta, condition);
                accepted = false;
            }
        }
        if let Some(condition) = conflict(&cx.inputs.backend_tls_policies, policy) {
            cx.reports.push(&meta, condition);
            accepted = false;
        }
        let (tls, problems) = from_backend_tls_policy(policy, &cx.inputs.config_maps);
        let refs = policy.spec.validation.ca_certificate_refs.as_deref();
        if refs.is_some_and(|r| !r.is_empty()) && tls.ca_pem.is_none() {
            // Not one usable CA: the spec's NoValidCACertificate (connections fail closed).
            let message = "no caCertificateRefs resolved to a CA certificate";
            cx.reports.push(
                &meta,
                Condition::warn("Accepted", "NoValidCACertificate", message),
            );
            accepted = false;
        }
        if problems.is_empty() {
            let resolved =
                Condition::ok("ResolvedRefs", "ResolvedRefs", "CA certificates resolved");
            cx.reports.push(&meta, resolved);
        }
        for (field, reason, message) in problems {
            let condition = if reason == "Invalid" {
                accepted = false;
                Condition::warn("Accepted", "Invalid", message)
            } else {
                Condition::warn(
                    "ResolvedRefs",
                    reason,
                    format!("{message}; connections to the target fail"),
                )
            };
            cx.reports.push(&meta, condition.field(field));
        }
        if accepted {
            cx.reports.push(
                &meta,
                Condition::ok("Accepted", "Accepted", "applied to the Services it targets"),
            );
        }
    }
}

/// Policies targeting the same Service and sectionName conflict: the oldest (then by name)
/// applies, the others are not Accepted (Conflicted). A policy naming a port does not conflict
/// with one for the whole Service: it is more specific.
fn conflict(policies: &[BackendTlsPolicy], policy: &BackendTlsPolicy) -> Option<Condition> {
    let namespace = policy.metadata.namespace.as_deref();
    let key = |p: &BackendTlsPolicy| {
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (created, p.metadata.name.clone())
    };
    for target in &policy.spec.target_refs {
        let same_target = |other: &&BackendTlsPolicy| {
            other.metadata.namespace.as_deref() == namespace
                && other.spec.target_refs.iter().any(|t| {
                    t.group == target.group
                        && t.kind == target.kind
                        && t.name == target.name
                        && t.section_name == target.section_name
                })
        };
        let winner = policies.iter().filter(same_target).min_by_key(|p| key(p))?;
        if winner.metadata.name != policy.metadata.name {
            let message = format!(
                "{} {}{} is already the target of the older BackendTLSPolicy {}",
                target.kind,
                target.name,
                target
                    .section_name
                    .as_ref()
                    .map(|s| format!(" port {s}"))
                    .unwrap_or_default(),
                winner.metadata.name.as_deref().unwrap_or_default()
            );
            return Some(Condition::warn("Accepted", "Conflicted", message));
        }
    }
    None
}
