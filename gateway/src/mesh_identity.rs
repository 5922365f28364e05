//! This proxy's workload identity (an X.509 SVID: certificate chain and key) and the mesh's
//! roots, and the TLS configurations built on them for mutual TLS between proxies.
//!
//! Both configurations are built once and read the current certificate and roots at every
//! handshake, so a renewed certificate or a rotated bundle takes effect for new connections
//! at once and open connections carry on. Peers are checked by their SPIFFE ID (the URI SAN),
//! not by host names: the client side verifies the chain against the roots and then compares
//! the peer's ID with the identity the snapshot expects for the endpoint.

use arc_swap::ArcSwapOption;
use ferry_model::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// ALPN names a Ferry proxy offers when it originates mesh mTLS; the inner protocol is in
/// the name, so the receiving sidecar knows it before reading a byte. A TLS client without
/// them (an app speaking TLS itself) is not mesh traffic.
pub const ALPN_MESH_H2: &[u8] = b"ferry-mesh-h2";
pub const ALPN_MESH_HTTP1: &[u8] = b"ferry-mesh-http/1.1";

/// The certificate this proxy presents.
pub struct Svid {
    pub id: SpiffeId,
    /// `id` as a URI, shared by every request that reports it.
    pub uri: Arc<str>,
    pub key: Arc<CertifiedKey>,
    pub not_after: SystemTime,
    pub not_before: SystemTime,
}

/// The roots peers' certificates must chain to.
pub struct Roots {
    pub store: Arc<RootCertStore>,
    /// Built from `store`: checks client certificates on the server side.
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// Built from `store`: checks server chains (names are checked separately, by SPIFFE ID).
    server_verifier: Arc<rustls::client::WebPkiServerVerifier>,
}

/// The proxy's identity as it stands; empty until a certificate arrives.
#[derive(Default)]
pub struct WorkloadIdentity {
    svid: ArcSwapOption<Svid>,
    roots: ArcSwapOption<Roots>,
    /// Counts installs, so readers caching what they derived from it know when to refresh.
    generation: AtomicU64,
}

impl WorkloadIdentity {
    /// Installs a certificate chain (leaf first), its key and the roots, all PEM. Checked
    /// before anything changes: a bad set leaves the current identity in place.
    pub fn install(
        &self,
        chain_pem: &str,
        key_pem: &str,
        roots_pem: &str,
    ) -> Result<SpiffeId, String> {
        let key = ferry_model::certified_key(chain_pem, key_pem)?;
        let leaf = key.cert.first().ok_or("no certificate")?;
        let (id, not_before, not_after) = leaf_facts(leaf)?;
        let roots = Roots::from_pem(roots_pem)?;
        self.roots.store(Some(Arc::new(roots)));
        self.svid.store(Some(Arc::new(Svid {
            uri: id.to_string().into(),
            id: id.clone(),
            key: Arc::new(key),
            not_after,
            not_before,
        })));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(id)
    }

    /// Increases with every install (renewals included).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn svid(&self) -> Option<Arc<Svid>> {
        self.svid.load_full()
    }

    /// Whether a certificate and roots are installed (mTLS is possible).
    pub fn is_ready(&self) -> bool {
        self.svid.load().is_some() && self.roots.load().is_some()
    }

    /// The SPIFFE ID this proxy presents, as a URI, if it has one.
    pub fn uri(&self) -> Option<Arc<str>> {
        self.svid.load().as_ref().map(|s| s.uri.clone())
    }

    /// The SPIFFE ID this proxy presents, if it has one.
    pub fn id(&self) -> Option<SpiffeId> {
        self.svid.load().as_ref().map(|s| s.id.clone())
    }

    /// Server side of mesh mTLS: presents the current certificate, requires a client
    /// certificate chaining to the current roots, offers the mesh ALPN names.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 is supported")
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(CurrentCert(self.clone())));
        config.alpn_protocols = vec![ALPN_MESH_H2.to_vec(), ALPN_MESH_HTTP1.to_vec()];
        Arc::new(config)
    }

    /// Client side of mesh mTLS for the inner protocol `alpn`: presents the current
    /// certificate and verifies the server's chain against the current roots; the caller
    /// compares the server's SPIFFE ID with the one it expects ([`peer_id`]).
    pub fn client_config(self: &Arc<Self>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 is supported")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(CurrentCert(self.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

impl Roots {
    fn from_pem(pem: &str) -> Result<Roots, String> {
        use rustls::pki_types::pem::PemObject;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("trust bundle: {e}"))?;
            store.add(cert).map_err(|e| format!("trust bundle: {e}"))?;
        }
        if store.is_empty() {
            return Err("trust bundle holds no certificate".into());
        }
        let store = Arc::new(store);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
                .build()
                .map_err(|e| format!("trust bundle: {e}"))?;
        let server_verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(store.clone(), provider)
                .build()
                .map_err(|e| format!("trust bundle: {e}"))?;
        Ok(Roots {
            store,
            client_verifier,
            server_verifier,
        })
    }
}

/// The SPIFFE ID in a certificate's URI SAN, and its validity.
fn leaf_facts(der: &CertificateDer) -> Result<(SpiffeId, SystemTime, SystemTime), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate: {e}"))?;
    let id = spiffe_id_of(&cert).ok_or("the certificate names no spiffe:// URI SAN")?;
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok((
        id,
        time(cert.validity().not_before),
        time(cert.validity().not_after),
    ))
}

fn spiffe_id_of(cert: &x509_parser::certificate::X509Certificate) -> Option<SpiffeId> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => SpiffeId::parse(uri),
        _ => None,
    })
}

/// The SPIFFE ID of a peer's leaf certificate (after a verified handshake).
pub fn peer_id(certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = certificates?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    spiffe_id_of(&cert)
}

/// Presents whatever certificate is current.
#[derive(Debug)]
struct CurrentCert(Arc<WorkloadIdentity>);

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkloadIdentity({:?})", self.id())
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.svid.load().as_ref().map(|s| s.key.clone())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.svid.load().as_ref().map(|s| s.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.svid.load().is_some()
    }
}

/// Client certificates must chain to the current roots (and carry a SPIFFE ID, checked by
/// the acceptor after the handshake).
#[derive(Debug)]
struct CurrentClientVerifier(Arc<WorkloadIdentity>);

fn no_roots() -> rustls::Error {
    rustls::Error::General("no mesh trust bundle installed".into())
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let roots = self.0.roots.load();
        let roots = roots.as_ref().ok_or_else(no_roots)?;
        roots
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// Server chains must chain to the current roots. Mesh certificates name SPIFFE IDs, not
/// hosts: a name mismatch is expected and ignored here, and the connector compares the
/// peer's SPIFFE ID with the endpoint's expected identity right after the handshake.
#[derive(Debug)]
struct CurrentServerVerifier(Arc<WorkloadIdentity>);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = self.0.roots.load();
        let roots = roots.as_ref().ok_or_else(no_roots)?;
        let verified = roots.server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// Handshake signatures are checked the same way on both sides, with ring's algorithms (the
/// chains are checked against the current roots by the verifiers above).
mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
        rustls::crypto::ring::default_provider().signature_verification_algorithms
    }

    pub fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    pub fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    pub fn schemes() -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}
