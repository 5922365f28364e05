//! Every Istio field Ferry reads but does not apply, named on its object (status
//! validationMessages, `ferry analyze`, `/config_dump` reports): one list, built from the
//! typed inputs (`NotApplied` fields) plus the typed fields whose meaning is not applied.

use super::report::Condition;
use super::{meta_of, Context};
use crate::inputs::istio::not_applied_fields;

pub(super) fn report(cx: &mut Context) {
    let inputs = cx.inputs;
    let mut found: Vec<(ferry_model::Meta, String)> = Vec::new();
    for gateway in &inputs.istio_gateways {
        let meta = meta_of("Gateway.networking.istio.io", &gateway.metadata);
        found.extend(fields_of(&meta, gateway));
    }
    for vs in &inputs.virtual_services {
        let meta = meta_of("VirtualService", &vs.metadata);
        found.extend(fields_of(&meta, vs));
        if exports_narrowly(&vs.spec.export_to) {
            found.push((meta.clone(), "spec.exportTo".into()));
        }
        for (i, http) in vs.spec.http.iter().enumerate() {
            for (j, m) in http.matches.iter().enumerate() {
                if m.scheme.is_some() {
                    found.push((meta.clone(), format!("spec.http[{i}].match[{j}].scheme")));
                }
            }
        }
    }
    for dr in &inputs.destination_rules {
        let meta = meta_of("DestinationRule", &dr.metadata);
        found.extend(fields_of(&meta, dr));
        if exports_narrowly(&dr.spec.export_to) {
            found.push((meta.clone(), "spec.exportTo".into()));
        }
        report_proxy_protocol(cx, dr, &meta);
    }
    for entry in &inputs.service_entries {
        let meta = meta_of("ServiceEntry", &entry.metadata);
        found.extend(fields_of(&meta, entry));
    }
    for sidecar in &inputs.sidecars {
        let meta = meta_of("Sidecar", &sidecar.metadata);
        found.extend(fields_of(&meta, sidecar));
    }
    for (meta, path) in found {
        let message = format!("{} is accepted but not applied yet", last_segment(&path));
        cx.reports.push(
            &meta,
            Condition::warn("Valid", "NotYetSupported", message).field(path),
        );
    }
}

/// `proxyProtocol` is sent on relayed connections (tcp and tls routes); requests of HTTP
/// routes to the host go without it, which is said once on the rule.
fn report_proxy_protocol(
    cx: &mut Context,
    dr: &crate::inputs::istio::DestinationRule,
    meta: &ferry_model::Meta,
) {
    let top = dr.spec.traffic_policy.as_ref();
    let set = std::iter::once(("spec.trafficPolicy.proxyProtocol".to_string(), top))
        .chain(dr.spec.subsets.iter().enumerate().map(|(i, s)| {
            let field = format!("spec.subsets[{i}].trafficPolicy.proxyProtocol");
            (field, s.traffic_policy.as_ref())
        }))
        .filter(|(_, policy)| policy.is_some_and(|p| p.proxy_protocol.is_some()));
    for (field, _) in set {
        let message = "proxyProtocol is sent on connections of tcp and tls routes; HTTP \
                       requests to this host are sent without it (not applied yet)";
        cx.reports.push(
            meta,
            Condition::warn("Valid", "NotYetSupported", message).field(field),
        );
    }
}

/// `exportTo` limits visibility; Ferry makes every object visible everywhere (as `*`).
/// The object's set fields Ferry does not apply, each with the object.
fn fields_of(
    meta: &ferry_model::Meta,
    object: &impl serde::Serialize,
) -> impl Iterator<Item = (ferry_model::Meta, String)> {
    let meta = meta.clone();
    not_applied_fields(object)
        .into_iter()
        .map(move |path| (meta.clone(), path))
}

fn exports_narrowly(export_to: &[String]) -> bool {
    !export_to.is_empty() && !export_to.iter().any(|e| e == "*")
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}
