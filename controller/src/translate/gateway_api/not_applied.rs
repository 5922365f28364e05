//! Gateway API fields Ferry reads but does not apply, named on their objects (status,
//! `ferry analyze`, `/config_dump`) instead of being dropped without a word.

use gateway_api::apis::standard::gateways::Gateway;

use crate::translate::report::Condition;
use crate::translate::{meta_of, Context};

/// Reports the unapplied fields of the Gateways of `classes` and of every HTTPRoute.
pub(super) fn report(cx: &mut Context<'_>, classes: &[String]) {
    for gateway in &cx.inputs.gateways {
        if classes.contains(&gateway.spec.gateway_class_name) {
            let meta = meta_of("Gateway", &gateway.metadata);
            for (field, why) in gateway_fields(gateway) {
                let message = format!("{field} is accepted but not applied yet: {why}");
                cx.reports.push(
                    &meta,
                    Condition::warn("Valid", "NotYetSupported", message).field(field),
                );
            }
        }
    }
    for route in &cx.inputs.http_routes {
        let meta = meta_of("HTTPRoute", &route.metadata);
        for (i, rule) in route.spec.rules.iter().flatten().enumerate() {
            if rule.session_persistence.is_some() {
                let field = format!("spec.rules[{i}].sessionPersistence");
                let message = "sessionPersistence is accepted but not applied yet (use a \
                               DestinationRule consistentHash with an httpCookie for sticky sessions)";
                cx.reports.push(
                    &meta,
                    Condition::warn("Valid", "NotYetSupported", message).field(field),
                );
            }
        }
    }
}

fn gateway_fields(gateway: &Gateway) -> Vec<(String, &'static str)> {
    let spec = &gateway.spec;
    let mut found = Vec::new();
    if spec.addresses.as_ref().is_some_and(|a| !a.is_empty()) {
        found.push((
            "spec.addresses".into(),
            "the address comes from the gateway's Service",
        ));
    }
    if spec.allowed_listeners.is_some() {
        found.push(("spec.allowedListeners".into(), "ListenerSets are not read"));
    }
    if let Some(tls) = &spec.tls {
        if tls.backend.is_some() {
            found.push((
                "spec.tls.backend".into(),
                "no client certificate is presented to backends",
            ));
        }
    }
    for (i, listener) in spec.listeners.iter().enumerate() {
        let options = listener.tls.as_ref().and_then(|t| t.options.as_ref());
        if options.is_some_and(|o| !o.is_empty()) {
            found.push((
                format!("spec.listeners[{i}].tls.options"),
                "implementation-specific TLS options are not read",
            ));
        }
    }
    found
}
