//! DestinationRule `tls.mode` SIMPLE / MUTUAL -> the TLS a proxy originates to a cluster.
//!
//! Keys and CAs come from the `credentialName` Secret, looked up in the proxy's own namespace
//! (Istio's rule; standalone: the DestinationRule's namespace), so no proxy receives another
//! namespace's keys. Whatever cannot be honoured makes the cluster's connections fail
//! (`unusable`) instead of going out in cleartext or unverified.

use ferry_model::{ClientCertificate, Meta, PrivateKeyPem, Str, UpstreamTls};
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::tls::{check_ca_bundle, find_secret, secret_text};
use crate::inputs::istio::ClientTlsSettings;

/// A field and what is wrong with it.
pub type Problem = (String, String);

/// Where to read Secrets from, and which.
pub struct SecretScope<'a> {
    pub secrets: &'a [Secret],
    pub namespace: &'a str,
}

/// The origination settings for a SIMPLE or MUTUAL `tls` block at `field` of a rule for
/// `host`; problems are errors to report on the rule.
pub fn from_destination_rule(
    source: Meta,
    host: &str,
    tls: &ClientTlsSettings,
    field: &str,
    scope: &SecretScope<'_>,
    problems: &mut Vec<Problem>,
) -> UpstreamTls {
    let mutual = tls.mode.as_deref() == Some("MUTUAL");
    let mut unusable: Option<String> = None;
    let mut refuse = |at: &str, message: String, problems: &mut Vec<Problem>| {
        problems.push((format!("{field}.{at}"), message.clone()));
        unusable.get_or_insert(message);
    };
    if tls.ca_crl.is_some() {
        let message = "caCrl (certificate revocation lists) is not supported yet".to_string();
        refuse("caCrl", message, problems);
    }
    let files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    if files && tls.credential_name.is_some() {
        let message = "credentialName and certificate files are exclusive".to_string();
        refuse("credentialName", message, problems);
    }
    // Files on the proxy, as Envoy reads them: the proxy loads them when it applies the
    // snapshot (a file it cannot read fails the cluster's connections).
    let ca_file = tls.ca_certificates.as_deref().map(Str::from);
    let client_certificate_files = match (&tls.client_certificate, &tls.private_key) {
        (Some(cert), Some(key)) => Some((Str::from(cert.as_str()), Str::from(key.as_str()))),
        (None, None) => None,
        _ => {
            let message = "clientCertificate and privateKey go together".to_string();
            refuse("clientCertificate", message, problems);
            None
        }
    };
    let mut ca_pem = None;
    let mut client_certificate = None;
    match tls.credential_name.as_deref() {
        Some(name) => {
            let found = credential(scope, name, mutual);
            match found {
                Ok((ca, client)) => (ca_pem, client_certificate) = (ca, client),
                Err(message) => refuse("credentialName", message, problems),
            }
        }
        None if mutual && client_certificate_files.is_none() => refuse(
            "credentialName",
            "mode MUTUAL needs credentialName (a Secret with tls.crt and tls.key) or clientCertificate and privateKey".into(),
            problems,
        ),
        None => {}
    }
    let insecure = tls.insecure_skip_verify.unwrap_or(false);
    let default_sni = (!host.contains('*')).then(|| Str::from(host));
    UpstreamTls {
        source,
        sni: tls.sni.as_deref().map(Str::from).or(default_sni),
        subject_alt_names: tls
            .subject_alt_names
            .iter()
            .map(|s| Str::from(s.as_str()))
            .collect(),
        ca_pem: ca_pem.map(Str::from),
        client_certificate,
        ca_file,
        client_certificate_files,
        insecure_skip_verify: insecure,
        unusable: unusable.map(Str::from),
    }
}

/// The CA (`ca.crt` or `cacert`, in the Secret or in `<name>-cacert`) and, for MUTUAL, the
/// client certificate (`tls.crt`, `tls.key`) of Secret `name`.
fn credential(
    scope: &SecretScope<'_>,
    name: &str,
    mutual: bool,
) -> Result<(Option<String>, Option<ClientCertificate>), String> {
    let namespace = scope.namespace;
    let secret = find_secret(scope.secrets, namespace, name)
        .ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
    let ca_of = |s: &Secret| secret_text(s, "ca.crt").or_else(|| secret_text(s, "cacert"));
    let ca = ca_of(secret).or_else(|| {
        find_secret(scope.secrets, namespace, &format!("{name}-cacert")).and_then(ca_of)
    });
    if let Some(ca) = &ca {
        check_ca_bundle(ca).map_err(|e| format!("Secret {namespace}/{name}: CA {e}"))?;
    }
    if !mutual {
        return Ok((ca, None));
    }
    let field = |key: &str| {
        secret_text(secret, key).ok_or_else(|| format!("Secret {namespace}/{name} has no `{key}`"))
    };
    let (chain, key) = (field("tls.crt")?, field("tls.key")?);
    ferry_model::certified_key(&chain, &key)
        .map_err(|e| format!("Secret {namespace}/{name}: {e}"))?;
    let client = ClientCertificate {
        secret: Meta::new("Secret", namespace, name),
        cert_chain_pem: chain.into(),
        private_key_pem: PrivateKeyPem(key.into()),
    };
    Ok((ca, Some(client)))
}

/// A Gateway API BackendTLSPolicy as origination settings: `hostname` is the SNI and, without
/// `subjectAltNames`, the name verified; the CA is the `ca.crt` of ConfigMaps in the policy's
/// namespace, or the system's roots (`wellKnownCACertificates: System`). Problems are
/// `(field, reason, message)`, with the Gateway API reasons.
pub fn from_backend_tls_policy(
    policy: &BackendTlsPolicy,
    config_maps: &[ConfigMap],
) -> (UpstreamTls, Vec<(String, &'static str, String)>) {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let validation = &policy.spec.validation;
    let mut problems = Vec::new();
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let mut bundle = String::new();
    for (i, reference) in refs.iter().enumerate() {
        let field = format!("spec.validation.caCertificateRefs[{i}]");
        if !reference.group.is_empty() || reference.kind != "ConfigMap" {
            let message = format!("{} {} is not a ConfigMap", reference.kind, reference.name);
            problems.push((field, "InvalidKind", message));
            continue;
        }
        let found = config_maps.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata.name.as_deref() == Some(reference.name.as_str())
        });
        let ca = found.and_then(|c| c.data.as_ref()?.get("ca.crt").cloned());
        match ca.map(|ca| check_ca_bundle(&ca).map(|_| ca)) {
            Some(Ok(ca)) => bundle.push_str(&ca),
            Some(Err(e)) => problems.push((
                field,
                "InvalidCACertificateRef",
                format!("ConfigMap {namespace}/{}: ca.crt {e}", reference.name),
            )),
            None => problems.push((
                field,
                "InvalidCACertificateRef",
                format!(
                    "ConfigMap {namespace}/{} with a ca.crt not found",
                    reference.name
                ),
            )),
        }
    }
    let system = validation.well_known_ca_certificates.as_deref();
    match (system, refs.is_empty()) {
        (Some("System"), true) | (None, false) => {}
        (Some("System"), false) => problems.push((
            "spec.validation".into(),
            "Invalid",
            "caCertificateRefs and wellKnownCACertificates are exclusive".into(),
        )),
        (Some(other), _) => problems.push((
            "spec.validation.wellKnownCACertificates".into(),
            "Invalid",
            format!("{other:?} is not supported (System only)"),
        )),
        (None, true) => problems.push((
            "spec.validation".into(),
            "Invalid",
            "one of caCertificateRefs or wellKnownCACertificates is required".into(),
        )),
    }
    if policy.spec.options.as_ref().is_some_and(|o| !o.is_empty()) {
        // Implementation-specific TLS options (versions, ciphers...) could only tighten the
        // connection: not applying them would make it looser than asked.
        let message = "options are not supported; connections to the target are refused".into();
        problems.push(("spec.options".into(), "Invalid", message));
    }
    let subject_alt_names = validation
        .subject_alt_names
        .iter()
        .flatten()
        .filter_map(|san| san.hostname.clone().or_else(|| san.uri.clone()))
        .map(Str::from)
        .collect();
    let unusable = problems
        .first()
        .map(|(_, _, message)| Str::from(message.as_str()));
    let tls = UpstreamTls {
        source: Meta::new(
            "BackendTLSPolicy",
            namespace,
            policy.metadata.name.as_deref().unwrap_or_default(),
        ),
        sni: Some(validation.hostname.as_str().into()),
        subject_alt_names,
        ca_pem: (!bundle.is_empty()).then(|| bundle.into()),
        client_certificate: None,
        ca_file: None,
        client_certificate_files: None,
        insecure_skip_verify: false,
        unusable,
    };
    (tls, problems)
}

/// The policy for port `port_name` of Service `namespace/name`: one naming the port
/// (sectionName) wins over one for the whole Service; among equals the oldest, then by name
/// (Gateway API's conflict rule).
pub fn backend_tls_policy_for<'p>(
    policies: &'p [BackendTlsPolicy],
    namespace: &str,
    name: &str,
    port_name: Option<&str>,
) -> Option<&'p BackendTlsPolicy> {
    let targets = |p: &&BackendTlsPolicy, by_section: bool| {
        p.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && p.spec.target_refs.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name == name
                    && match (&t.section_name, by_section) {
                        (Some(section), true) => Some(section.as_str()) == port_name,
                        (None, false) => true,
                        _ => false,
                    }
            })
    };
    let oldest = |candidates: Vec<&'p BackendTlsPolicy>| {
        candidates.into_iter().min_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone(),
            )
        })
    };
    oldest(policies.iter().filter(|p| targets(p, true)).collect())
        .or_else(|| oldest(policies.iter().filter(|p| targets(p, false)).collect()))
}
