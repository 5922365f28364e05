//! TLS termination: one rustls server configuration per HTTPS listener, picking the
//! certificate by SNI, offering HTTP/2 and HTTP/1.1 by ALPN, and verifying client
//! certificates when the listener asks for them (MUTUAL / OPTIONAL_MUTUAL).

use ferry_model::{ClientValidation, ListenerTls, ServerCertificate};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The listener's certificates, loaded. Fails (naming the Secret) if one cannot be used, so a
/// bad certificate is rejected with the snapshot instead of failing handshakes later.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, String> {
    let mut certificates = Vec::with_capacity(tls.certificates.len());
    for certificate in tls.certificates.iter() {
        let key =
            ferry_model::certified_key(&certificate.cert_chain_pem, &certificate.private_key_pem.0)
                .map_err(|e| format!("{}: {e}", certificate.secret))?;
        certificates.push((certificate.clone(), Arc::new(key)));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_validation {
        Some(validation) => {
            builder.with_client_cert_verifier(client_verifier(validation, provider)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certificates }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Verifies client certificates against the listener's CA (and names, when given).
fn client_verifier(
    validation: &ClientValidation,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(validation.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("{}: client CA: {e}", validation.source))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: client CA: {e}", validation.source))?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if validation.optional {
        builder = builder.allow_unauthenticated();
    }
    let webpki = builder
        .build()
        .map_err(|e| format!("{}: client CA: {e}", validation.source))?;
    if validation.subject_alt_names.is_empty() {
        return Ok(webpki);
    }
    Ok(Arc::new(NamedClients {
        webpki,
        names: validation
            .subject_alt_names
            .iter()
            .map(|n| n.to_string())
            .collect(),
    }))
}

/// WebPKI verification, then the certificate must carry one of `names` (URI or DNS SAN).
#[derive(Debug)]
struct NamedClients {
    webpki: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        if crate::cert_names::carries_one_of(end_entity, &self.names) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Picks the certificate naming the client's SNI most specifically (exact, then the longest
/// wildcard, then `*`; the first declared on a tie). Without SNI: the first `*` certificate.
/// No match: no certificate, and the handshake fails as on any server without one for the name.
#[derive(Debug)]
struct SniResolver {
    certificates: Vec<(ServerCertificate, Arc<CertifiedKey>)>,
}

impl SniResolver {
    fn for_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let chosen = match sni {
            Some(name) => {
                let name = name.to_ascii_lowercase();
                let mut best: Option<(usize, &Arc<CertifiedKey>)> = None;
                for (certificate, key) in &self.certificates {
                    let Some(score) = certificate.specificity(&name) else {
                        continue;
                    };
                    if best.is_none_or(|(top, _)| score > top) {
                        best = Some((score, key));
                    }
                }
                best.map(|(_, key)| key)
            }
            None => self
                .certificates
                .iter()
                .find(|(c, _)| c.is_default())
                .map(|(_, key)| key),
        };
        chosen.cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.for_name(hello.server_name())
    }
}
