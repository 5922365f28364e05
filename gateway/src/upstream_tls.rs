//! TLS the proxy originates to a cluster's endpoints (DestinationRule SIMPLE / MUTUAL), as
//! Pingora's custom L4 connector (the same seam as mesh mTLS), so both request paths dial
//! through it. Built once per cluster when a snapshot is compiled; settings that cannot be
//! honoured make every connection fail (503) rather than go out in cleartext or unverified.

use async_trait::async_trait;
use ferry_model::UpstreamTls;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::l4::virt::VirtualSocketStream;
use pingora_core::{Error, ErrorType, OrErr, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::net::TcpStream;

use crate::mesh_connect::TlsSocket;

/// A cluster's origination settings, ready to dial.
#[derive(Debug)]
pub struct CompiledUpstreamTls {
    /// Distinguishes pooled connections made with different settings.
    pub pool_id: u64,
    sni: Option<ServerName<'static>>,
    http1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
    /// Why connections are refused, when the settings cannot be honoured.
    unusable: Option<String>,
}

impl CompiledUpstreamTls {
    pub fn compile(tls: &UpstreamTls) -> Self {
        let loaded = with_files(tls);
        let tls = &loaded;
        let pool_id = {
            let mut hasher = std::hash::DefaultHasher::new();
            format!(
                "{tls:?}{}",
                tls.client_certificate
                    .as_ref()
                    .map_or("", |c| &c.private_key_pem.0)
            )
            .hash(&mut hasher);
            hasher.finish() | 1 // never 0 (plain connections)
        };
        let sni = tls
            .sni
            .as_deref()
            .and_then(|name| ServerName::try_from(name.to_string()).ok());
        let built = client_config(tls, b"http/1.1")
            .and_then(|http1| Ok((http1, client_config(tls, b"h2")?)));
        let unusable = tls.unusable.as_deref().map(String::from);
        match built {
            Ok((http1, h2)) => CompiledUpstreamTls {
                pool_id,
                sni,
                http1,
                h2,
                unusable,
            },
            Err(e) => {
                let fallback = Arc::new(fallback_config());
                CompiledUpstreamTls {
                    pool_id,
                    sni,
                    http1: fallback.clone(),
                    h2: fallback,
                    unusable: unusable.or(Some(e)),
                }
            }
        }
    }

    /// The connector for one dial, speaking HTTP/2 inside or not.
    pub fn connector(self: &Arc<Self>, h2: bool) -> Arc<OriginateConnect> {
        Arc::new(OriginateConnect {
            tls: self.clone(),
            h2,
        })
    }
}

/// The settings with the files they name read in (DestinationRule `caCertificates`,
/// `clientCertificate`, `privateKey`); a file that cannot be read makes them unusable.
fn with_files(tls: &UpstreamTls) -> UpstreamTls {
    let mut loaded = tls.clone();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read {path}: {e}", tls.source))
    };
    let mut failed = None;
    if let Some(path) = &tls.ca_file {
        match read(path) {
            Ok(pem) => loaded.ca_pem = Some(pem.into()),
            Err(e) => failed = Some(e),
        }
    }
    if let Some((cert, key)) = &tls.client_certificate_files {
        match (read(cert), read(key)) {
            (Ok(chain), Ok(key)) => {
                loaded.client_certificate = Some(ferry_model::ClientCertificate {
                    secret: tls.source.clone(),
                    cert_chain_pem: chain.into(),
                    private_key_pem: ferry_model::PrivateKeyPem(key.into()),
                })
            }
            (Err(e), _) | (_, Err(e)) => failed = Some(e),
        }
    }
    if loaded.unusable.is_none() {
        loaded.unusable = failed.map(Into::into);
    }
    loaded
}

/// A config that is never used to connect (the cluster is unusable), so one exists.
fn fallback_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn client_config(tls: &UpstreamTls, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots(tls)?;
    // Not verifying, with no roots at all (a machine without a system bundle): the chain is
    // not checked, the handshake's signatures still are.
    let webpki = match roots.is_empty() && tls.insecure_skip_verify {
        true => None,
        false => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("CA certificates unusable: {e}"))?,
        ),
    };
    let verifier = Arc::new(NamesVerifier {
        webpki,
        algorithms: provider.signature_verification_algorithms,
        subject_alt_names: tls
            .subject_alt_names
            .iter()
            .map(|s| s.to_string())
            .collect(),
        insecure: tls.insecure_skip_verify,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_certificate {
        Some(client) => {
            let chain = CertificateDer::pem_slice_iter(client.cert_chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(client.private_key_pem.0.as_bytes())
                .map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_sni = tls.sni.is_some();
    Ok(Arc::new(config))
}

/// The trust anchors: the rule's CA, or the system's roots.
fn roots(tls: &UpstreamTls) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("CA certificates: {e}"))?;
                store
                    .add(cert)
                    .map_err(|e| format!("CA certificate: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert); // a system bundle may hold certificates webpki rejects
            }
        }
    }
    if store.is_empty() && !tls.insecure_skip_verify {
        return Err("no CA certificate to verify the server with".into());
    }
    Ok(store)
}

/// WebPKI chain verification; with `subject_alt_names`, the certificate must carry one of
/// them (DNS or URI), instead of being valid for the SNI name (Istio's semantics).
#[derive(Debug)]
struct NamesVerifier {
    /// None only when not verifying and without trust anchors.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    subject_alt_names: Vec<String>,
    insecure: bool,
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = self.webpki.as_ref().filter(|_| !self.insecure) else {
            return Ok(ServerCertVerified::assertion());
        };
        let verified = webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if self.subject_alt_names.is_empty() {
            return verified;
        }
        match verified {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        if crate::cert_names::carries_one_of(end_entity, &self.subject_alt_names) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Dials one endpoint and originates TLS to it.
#[derive(Debug)]
pub struct OriginateConnect {
    tls: Arc<CompiledUpstreamTls>,
    h2: bool,
}

#[async_trait]
impl L4Connect for OriginateConnect {
    async fn connect(&self, addr: &PingoraAddr) -> Result<Stream> {
        let PingoraAddr::Inet(addr) = addr else {
            return Error::e_explain(
                ErrorType::ConnectError,
                "TLS origination needs an IP endpoint",
            );
        };
        if let Some(why) = &self.tls.unusable {
            return Error::e_explain(
                ErrorType::ConnectError,
                format!("upstream TLS unusable: {why}"),
            );
        }
        let tcp = TcpStream::connect(addr)
            .await
            .or_err(ErrorType::ConnectError, "TCP connect failed")?;
        let _ = tcp.set_nodelay(true);
        let config = if self.h2 {
            &self.tls.h2
        } else {
            &self.tls.http1
        };
        let name = match &self.tls.sni {
            Some(name) => name.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .or_err(
                ErrorType::TLSHandshakeFailure,
                "upstream TLS handshake failed",
            )?;
        Ok(Stream::from(VirtualSocketStream::new(Box::new(TlsSocket(
            tls,
        )))))
    }
}
