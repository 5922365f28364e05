//! Listener certificates from Kubernetes Secrets (type kubernetes.io/tls: `tls.crt`, `tls.key`).

use ferry_model::{Meta, PrivateKeyPem, ServerCertificate, Str};
use k8s_openapi::api::core::v1::Secret;

use super::Context;

/// Why a certificate reference cannot be served: a Gateway API listener reason and a message.
pub(crate) type CertificateProblem = (&'static str, String);

/// Loads and validates the certificate in Secret `namespace/name` for `server_names`.
/// Reference permission (ReferenceGrant) is the caller's business; this checks the Secret.
pub(crate) fn secret_certificate(
    cx: &Context<'_>,
    namespace: &str,
    name: &str,
    server_names: Vec<Str>,
) -> Result<ServerCertificate, CertificateProblem> {
    let invalid = |message: String| ("InvalidCertificateRef", message);
    let secret = find_secret(&cx.inputs.secrets, namespace, name)
        .ok_or_else(|| invalid(format!("Secret {namespace}/{name} not found")))?;
    let field = |key: &str| {
        secret_text(secret, key)
            .ok_or_else(|| invalid(format!("Secret {namespace}/{name} has no `{key}`")))
    };
    let chain = field("tls.crt")?;
    let key = field("tls.key")?;
    ferry_model::certified_key(&chain, &key)
        .map_err(|e| invalid(format!("Secret {namespace}/{name}: {e}")))?;
    Ok(ServerCertificate {
        server_names: server_names.into(),
        secret: Meta::new("Secret", namespace, name),
        cert_chain_pem: chain.into(),
        private_key_pem: PrivateKeyPem(key.into()),
    })
}

/// Secret `namespace/name`, if read.
pub(crate) fn find_secret<'s>(
    secrets: &'s [Secret],
    namespace: &str,
    name: &str,
) -> Option<&'s Secret> {
    secrets.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(name)
    })
}

/// A key of `data` (base64 in the API, decoded by k8s-openapi) or of `stringData` (what a
/// hand-written manifest for standalone mode usually has).
pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
    from_data.or_else(|| secret.string_data.as_ref()?.get(key).cloned())
}

/// A client CA bundle for credential `name` in `namespace`: the Secret's `ca.crt`, or the
/// `<name>-cacert` Secret's `cacert` / `ca.crt` (Istio's two layouts). Checked to hold PEM
/// certificates.
pub(crate) fn client_ca(cx: &Context<'_>, namespace: &str, name: &str) -> Result<String, String> {
    let secrets = &cx.inputs.secrets;
    let in_secret = find_secret(secrets, namespace, name).and_then(|s| secret_text(s, "ca.crt"));
    let separate = || {
        let secret = find_secret(secrets, namespace, &format!("{name}-cacert"))?;
        secret_text(secret, "cacert").or_else(|| secret_text(secret, "ca.crt"))
    };
    let ca = in_secret.or_else(separate).ok_or_else(|| {
        format!("no client CA: Secret {namespace}/{name} has no `ca.crt` and there is no Secret {namespace}/{name}-cacert")
    })?;
    check_ca_bundle(&ca).map_err(|e| format!("client CA of {namespace}/{name}: {e}"))?;
    Ok(ca)
}

/// At least one PEM certificate, all parseable.
pub(crate) fn check_ca_bundle(pem: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certificates.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(())
}
