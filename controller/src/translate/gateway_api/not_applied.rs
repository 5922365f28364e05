//! Gateway API fields Ferry reads but does not apply, named on their objects (status,
//! `ferry analyze`, `/config_dump`) instead of being dropped without a word.

use gateway_api::apis::standard::gateways::Gateway;

use crate::translate::report::Condition;
use crate::translate::{meta_of, Context};

/// Reports the unapplied fields of Ferry's GatewayClasses, of the Gateways of `classes` and of
/// every HTTPRoute.
pub(super) fn report(cx: &mut Context<'_>, classes: &[String]) {
    for class in &cx.inputs.gateway_classes {
        if classes.contains(&class.metadata.name.clone().unwrap_or_default())
            && class.spec.parameters_ref.is_some()
        {
            let meta = meta_of("GatewayClass", &class.metadata);
            let message = "spec.parametersRef is accepted but not applied yet: a gateway's \
                           settings come from each Gateway's spec.infrastructure.parametersRef";
            let condition = Condition::warn("Valid", "NotYetSupported", message);
            cx.reports
                .push(&meta, condition.field("spec.parametersRef".to_string()));
        }
    }
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
    found.extend(insecure_fallbacks(gateway));
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

/// Frontend validations in mode AllowInsecureFallback: Ferry admits a client without a
/// certificate but refuses an invalid one (stricter than the spec asks, never looser).
fn insecure_fallbacks(gateway: &Gateway) -> Vec<(String, &'static str)> {
    let frontend = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref());
    let frontend = serde_json::to_value(frontend).unwrap_or_default();
    let per_port = frontend["perPort"].as_array().cloned().unwrap_or_default();
    let validations = std::iter::once((
        "spec.tls.frontend.default".to_string(),
        &frontend["default"],
    ))
    .chain(
        per_port
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("spec.tls.frontend.perPort[{i}].tls"), &p["tls"])),
    );
    validations
        .filter(|(_, v)| v["validation"]["mode"] == "AllowInsecureFallback")
        .map(|(field, _)| {
            let why = "a client without a certificate is admitted, one with an invalid \
                       certificate is refused";
            (format!("{field}.validation.mode"), why)
        })
        .collect()
}
