//! `backend-protocol: HTTPS` with its `proxy-ssl-*` settings, as the TLS origination a
//! DestinationRule would ask for: a Secret's `ca.crt` to verify against (with
//! `proxy-ssl-verify: on`), its `tls.crt` / `tls.key` to present, `proxy-ssl-name` as the
//! name sent and verified. A Secret that is missing or unusable makes connections to the
//! backend fail rather than go out unprotected.

use ferry_model::{Meta, UpstreamTls};

use super::nginx::{BackendTls, Finding};
use crate::inputs::istio::ClientTlsSettings;
use crate::translate::upstream_tls::{from_destination_rule, SecretScope};
use crate::Inputs;

/// The origination to `host` (the Service's name) for an Ingress in `namespace`.
pub fn origination(
    inputs: &Inputs,
    source: &Meta,
    tls: &BackendTls,
    host: &str,
) -> (UpstreamTls, Vec<(String, String)>) {
    let (secret_namespace, secret_name) = match &tls.secret {
        Some((ns, name)) if !ns.is_empty() => (ns.as_str(), Some(name.clone())),
        Some((_, name)) => (&*source.namespace, Some(name.clone())),
        None => (&*source.namespace, None),
    };
    let presents = secret_name.as_deref().is_some_and(|name| {
        inputs.secrets.iter().any(|s| {
            s.metadata.namespace.as_deref() == Some(secret_namespace)
                && s.metadata.name.as_deref() == Some(name)
                && s.data.as_ref().is_some_and(|d| d.contains_key("tls.crt"))
        })
    });
    let settings = ClientTlsSettings {
        mode: Some(if presents { "MUTUAL" } else { "SIMPLE" }.into()),
        credential_name: secret_name,
        subject_alt_names: tls.name.iter().cloned().collect(),
        sni: tls.name.clone(),
        insecure_skip_verify: Some(!tls.verify),
        ..ClientTlsSettings::default()
    };
    let scope = SecretScope {
        secrets: &inputs.secrets,
        namespace: secret_namespace,
    };
    let mut problems = Vec::new();
    let field = "metadata.annotations";
    let origination = from_destination_rule(
        source.clone(),
        host,
        &settings,
        field,
        &scope,
        &mut problems,
    );
    (origination, problems)
}

/// What the Ingress is told about its backend TLS: an unverified backend, and problems
/// with the Secret (the backend then gets no connection).
pub fn findings(inputs: &Inputs, source: &Meta, tls: &BackendTls) -> Vec<Finding> {
    let (_, problems) = origination(inputs, source, tls, "backend");
    let mut out: Vec<Finding> = problems
        .into_iter()
        .map(|(_, message)| Finding {
            name: "proxy-ssl-secret".into(),
            reason: "InvalidCertificateRef",
            message: format!("{message}: connections to the backend fail until it is fixed"),
            blocks: false,
        })
        .collect();
    if !tls.verify {
        out.push(Finding {
            name: "proxy-ssl-verify".into(),
            reason: "NotVerified",
            message: "the backend's certificate is not verified (ingress-nginx's default): set proxy-ssl-verify: on with a proxy-ssl-secret holding ca.crt".into(),
            blocks: false,
        });
    }
    out
}
