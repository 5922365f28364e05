//! The Sidecar resource: the one that applies to a workload (Istio's order: one in the
//! workload's namespace whose `workloadSelector` matches its labels, else the namespace's
//! without a selector, else the root namespace's without a selector; the oldest on a tie),
//! its `outboundTrafficPolicy` and its `egress[].hosts` (what the sidecar receives).

use crate::inputs::istio::Sidecar;
use crate::translate::report::Condition;
use crate::translate::services::entries::host_matches;
use crate::translate::{meta_of, Context};

/// `egress[].hosts` of the Sidecar in force: `namespace/dnsName` pairs.
#[derive(Clone, Debug)]
pub struct EgressHosts {
    /// The Sidecar's namespace (what `.` names).
    own: String,
    entries: Vec<(String, String)>,
}

impl EgressHosts {
    /// Whether a Service or ServiceEntry host of `namespace` is imported.
    pub fn allows(&self, namespace: &str, host: &str) -> bool {
        self.entries.iter().any(|(ns, name)| {
            let ns_ok = match ns.as_str() {
                "*" => true,
                "." => namespace == self.own,
                "~" => false,
                other => other == namespace,
            };
            ns_ok && (name == "*" || host_matches(name, host))
        })
    }
}

/// The Sidecar in force for a workload of `namespace` with `labels`.
pub(crate) fn in_force<'a>(
    sidecars: &'a [Sidecar],
    namespace: &str,
    labels: &[(String, String)],
    root_namespace: &str,
) -> Option<&'a Sidecar> {
    let selects = |s: &&Sidecar| {
        let wanted = s.spec.workload_selector.as_ref().map(|w| &w.labels);
        wanted.is_some_and(|w| {
            w.iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    };
    let in_ns = |ns: &str| {
        let ns = ns.to_string();
        move |s: &&Sidecar| s.metadata.namespace.as_deref().unwrap_or("default") == ns
    };
    let unselected = |s: &&Sidecar| s.spec.workload_selector.is_none();
    let oldest = |found: Vec<&'a Sidecar>| {
        found
            .into_iter()
            .min_by_key(|s| crate::translate::table::RouteOrder::age_of(&s.metadata))
    };
    let own: Vec<&Sidecar> = sidecars.iter().filter(in_ns(namespace)).collect();
    oldest(own.iter().copied().filter(selects).collect())
        .or_else(|| oldest(own.iter().copied().filter(unselected).collect()))
        .or_else(|| {
            let root = sidecars.iter().filter(in_ns(root_namespace));
            oldest(root.filter(unselected).collect())
        })
}

/// REGISTRY_ONLY (true) or ALLOW_ANY (false) when the Sidecar sets a mode; a mode Ferry
/// cannot read fails closed (REGISTRY_ONLY) and is reported.
pub(crate) fn registry_only(sidecar: &Sidecar) -> Option<bool> {
    let mode = sidecar
        .spec
        .outbound_traffic_policy
        .as_ref()?
        .mode
        .as_deref()?;
    match mode {
        "REGISTRY_ONLY" => Some(true),
        "ALLOW_ANY" => Some(false),
        _ => Some(true),
    }
}

/// The hosts the Sidecar imports; None when it names none (everything is imported).
pub(crate) fn egress_hosts(sidecar: &Sidecar) -> Option<EgressHosts> {
    let entries: Vec<(String, String)> = sidecar
        .spec
        .egress
        .iter()
        .flat_map(|e| e.hosts.iter())
        .filter_map(|h| h.split_once('/'))
        .map(|(ns, name)| (ns.to_string(), name.to_ascii_lowercase()))
        .collect();
    if sidecar.spec.egress.is_empty() {
        return None;
    }
    Some(EgressHosts {
        own: sidecar
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        entries,
    })
}

/// Reports every Sidecar's problems (a bad mode, a host without its namespace part); the
/// rest of the Sidecar still applies, the bad part does not.
pub(crate) fn report(cx: &mut Context<'_>) {
    for sidecar in &cx.inputs.sidecars {
        let meta = meta_of("Sidecar", &sidecar.metadata);
        let mut problems = Vec::new();
        let mode = sidecar
            .spec
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref());
        if let Some(mode) = mode.filter(|m| !matches!(*m, "ALLOW_ANY" | "REGISTRY_ONLY")) {
            problems.push((
                "spec.outboundTrafficPolicy.mode".to_string(),
                format!("{mode} is not one of ALLOW_ANY, REGISTRY_ONLY: REGISTRY_ONLY applies"),
            ));
        }
        for (i, egress) in sidecar.spec.egress.iter().enumerate() {
            for (j, host) in egress.hosts.iter().enumerate() {
                if !host.contains('/') {
                    problems.push((
                        format!("spec.egress[{i}].hosts[{j}]"),
                        format!(
                            "{host:?} must be namespace/dnsName (e.g. \"./*\", \"istio-system/*\")"
                        ),
                    ));
                }
            }
        }
        if problems.is_empty() {
            cx.reports.push(
                &meta,
                Condition::ok("Valid", "Accepted", "applied to sidecars"),
            );
        }
        for (field, message) in problems {
            cx.reports.push(
                &meta,
                Condition::error("Valid", "Invalid", message).field(field),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::istio::{OutboundTrafficPolicy, SidecarSpec};

    fn with_mode(mode: &str) -> Sidecar {
        Sidecar {
            spec: SidecarSpec {
                outbound_traffic_policy: Some(OutboundTrafficPolicy {
                    mode: Some(mode.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_mode_that_cannot_be_read_fails_closed() {
        assert_eq!(registry_only(&with_mode("ALLOW_ANY")), Some(false));
        assert_eq!(registry_only(&with_mode("REGISTRY_ONLY")), Some(true));
        assert_eq!(registry_only(&with_mode("REGISTRY-ONLY")), Some(true));
        assert_eq!(registry_only(&Sidecar::default()), None);
    }
}
