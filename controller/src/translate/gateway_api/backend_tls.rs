//! BackendTLSPolicy: the conditions it carries. The TLS it asks for is compiled into the
//! clusters of the Services it targets (`upstream_tls::from_backend_tls_policy`); a policy
//! whose CA cannot be resolved makes those connections fail rather than go out unverified.

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
        let (_, problems) = from_backend_tls_policy(policy, &cx.inputs.config_maps);
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
