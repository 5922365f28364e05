//! TLS termination: one rustls server configuration per HTTPS listener, picking the
//! certificate by SNI, offering HTTP/2 and HTTP/1.1 by ALPN.

use ferry_model::{ListenerTls, ServerCertificate};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
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
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certificates }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
