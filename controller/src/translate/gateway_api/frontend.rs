//! Gateway `spec.tls.frontend`: client certificate validation for the Gateway's HTTPS
//! listeners (`default`, overridden per port by `perPort`). The CA comes from ConfigMaps
//! (`ca.crt`) in the Gateway's namespace; mode AllowInsecureFallback serves clients without a
//! certificate. A CA that cannot be resolved keeps the listener from being programmed: it is
//! never served without the check.

use ferry_model::{ClientValidation, Meta};
use gateway_api::apis::standard::gateways::Gateway;
use serde_json::Value;

use crate::translate::report::Condition;
use crate::translate::tls::check_ca_bundle;
use crate::translate::Context;

/// The validation for HTTPS listeners on `port`, if the Gateway asks for one.
pub(super) fn validation_for(
    cx: &Context<'_>,
    gateway: &Gateway,
    meta: &Meta,
    port: u16,
) -> Result<Option<ClientValidation>, Condition> {
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return Ok(None);
    };
    let frontend = serde_json::to_value(frontend).unwrap_or_default();
    let per_port = frontend["perPort"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .find(|(_, p)| p["port"].as_u64() == Some(u64::from(port)));
    let (validation, field) = match per_port {
        Some((i, entry)) => (
            &entry["tls"]["validation"],
            format!("spec.tls.frontend.perPort[{i}].tls.validation"),
        ),
        None => (
            &frontend["default"]["validation"],
            "spec.tls.frontend.default.validation".to_string(),
        ),
    };
    if validation.is_null() {
        return Ok(None);
    }
    let optional = match validation["mode"].as_str().unwrap_or("AllowValidOnly") {
        "AllowValidOnly" => false,
        "AllowInsecureFallback" => true,
        other => {
            let message = format!("mode {other:?} is not AllowValidOnly or AllowInsecureFallback");
            return Err(Condition::warn("Accepted", "UnsupportedValue", message)
                .field(format!("{field}.mode")));
        }
    };
    let mut bundle = String::new();
    for (i, reference) in validation["caCertificateRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{field}.caCertificateRefs[{i}]");
        bundle.push_str(&ca_of(cx, meta, reference).map_err(|(reason, message)| {
            Condition::warn("ResolvedRefs", reason, message).field(at)
        })?);
    }
    if bundle.is_empty() {
        let message = "client certificate validation needs caCertificateRefs";
        return Err(
            Condition::warn("ResolvedRefs", "InvalidCACertificateRef", message).field(field),
        );
    }
    Ok(Some(ClientValidation {
        source: meta.clone(),
        ca_pem: bundle.into(),
        optional,
        subject_alt_names: Vec::new(),
    }))
}

/// The `ca.crt` of a referenced ConfigMap in the Gateway's namespace.
fn ca_of(
    cx: &Context<'_>,
    gateway: &Meta,
    reference: &Value,
) -> Result<String, (&'static str, String)> {
    let kind = reference["kind"].as_str().unwrap_or_default();
    let group = reference["group"].as_str().unwrap_or_default();
    let name = reference["name"].as_str().unwrap_or_default();
    if !group.is_empty() || kind != "ConfigMap" {
        return Err((
            "InvalidCACertificateKind",
            format!("{kind} {name}: only ConfigMaps hold CA certificates here"),
        ));
    }
    let namespace = reference["namespace"]
        .as_str()
        .unwrap_or(&gateway.namespace);
    if namespace != &*gateway.namespace {
        let message =
            format!("ConfigMap {namespace}/{name} is in another namespace (not supported yet)");
        return Err(("RefNotPermitted", message));
    }
    let ca = cx
        .inputs
        .config_maps
        .iter()
        .find(|c| {
            c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata.name.as_deref() == Some(name)
        })
        .and_then(|c| c.data.as_ref()?.get("ca.crt").cloned())
        .ok_or_else(|| {
            (
                "InvalidCACertificateRef",
                format!("ConfigMap {namespace}/{name} with a ca.crt not found"),
            )
        })?;
    check_ca_bundle(&ca).map_err(|e| {
        (
            "InvalidCACertificateRef",
            format!("ConfigMap {namespace}/{name}: ca.crt {e}"),
        )
    })?;
    Ok(ca)
}
