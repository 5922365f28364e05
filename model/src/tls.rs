//! TLS settings: termination at a listener (which certificate answers which SNI name) and
//! origination to a cluster's endpoints.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::{Meta, Str};

/// A listener that terminates TLS. Requests inside are routed like on a plain listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerTls {
    /// In the order they were declared; the first whose names match the SNI wins, and a
    /// client without SNI (or with an unknown name) gets the first `*` certificate, if any.
    pub certificates: Arc<[ServerCertificate]>,
    /// Client certificates asked for and verified (Istio MUTUAL / OPTIONAL_MUTUAL, Gateway
    /// API frontend validation); None: none asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
    /// The mesh's mutual TLS is terminated here (Istio `tls.mode: ISTIO_MUTUAL`): the proxy
    /// presents its workload certificate and requires a client certificate from the mesh's
    /// roots; `certificates` and `client_validation` are then empty.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mesh: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl ListenerTls {
    /// The server name (an exact name, a wildcard or `*`) that owns `name` on this port: the
    /// most specific of the certificates' names matching it. Two listeners of one port are
    /// told apart by it.
    pub fn owner_of(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.certificates
            .iter()
            .flat_map(|c| c.server_names.iter())
            .filter_map(|pattern| Some((name_specificity(pattern, &name)?, &**pattern)))
            .max_by_key(|(score, _)| *score)
            .map(|(_, pattern)| pattern)
    }

    /// A request whose Host belongs to another server name of this port than the one its
    /// TLS connection was set up for (SNI): 421 Misdirected Request (RFC 9110, 15.5.20), so a
    /// client reusing a connection across hostnames never reaches a server whose certificate
    /// and client validation it did not negotiate.
    pub fn misdirected(&self, sni: &str, host: &str) -> bool {
        self.owner_of(sni) != self.owner_of(host)
    }
}

/// How a listener verifies client certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientValidation {
    /// Who asked for it.
    pub source: Meta,
    /// PEM trust anchors the client's chain must lead to.
    pub ca_pem: Str,
    /// OPTIONAL_MUTUAL / AllowInsecureFallback: a client without a certificate is served
    /// (one with a certificate that does not verify is still refused).
    #[serde(default)]
    pub optional: bool,
    /// Names the client certificate must carry one of (URI or DNS); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<Str>,
}

/// One certificate chain and its key, taken from a Kubernetes Secret of type kubernetes.io/tls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCertificate {
    /// SNI names served: exact (`shop.example.com`), suffix wildcard (`*.example.com`) or `*`.
    pub server_names: Arc<[Str]>,
    /// The Secret the chain and key came from (for logs and NACK reasons).
    pub secret: Meta,
    /// PEM: the leaf certificate first, then intermediates.
    pub cert_chain_pem: Str,
    pub private_key_pem: PrivateKeyPem,
}

/// A PEM private key. Pushed to the proxy in full, but never printed by `Debug` (logs) and
/// replaced by [`PrivateKeyPem::REDACTED`] in configuration dumps.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrivateKeyPem(pub Str);

impl PrivateKeyPem {
    pub const REDACTED: &'static str = "[redacted]";
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl ServerCertificate {
    /// How specifically this certificate names `sni` (already lower-case), if at all: an exact
    /// name beats any wildcard, a longer wildcard suffix beats a shorter one, `*` comes last.
    pub fn specificity(&self, sni: &str) -> Option<usize> {
        self.server_names
            .iter()
            .filter_map(|name| name_specificity(name, sni))
            .max()
    }

    pub fn is_default(&self) -> bool {
        self.server_names.iter().any(|name| &**name == "*")
    }
}

/// Parses the PEM chain and key into what rustls serves, checking that the key belongs to the
/// leaf certificate. The controller calls this to validate a Secret before pushing it, the
/// proxy to load it, so both reject exactly the same inputs.
#[cfg(feature = "rustls")]
pub fn certified_key(
    cert_chain_pem: &str,
    private_key_pem: &str,
) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes())
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "tls.key does not belong to the certificate in tls.crt".into()
        }
        other => format!("tls.key cannot be used: {other}"),
    })
}

/// TLS the proxy originates to a cluster's endpoints (DestinationRule `tls.mode` SIMPLE or
/// MUTUAL, Gateway API BackendTLSPolicy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// The object that asked for it.
    pub source: Meta,
    /// The server name sent (SNI) and, when `subject_alt_names` is empty, the name the
    /// certificate must be valid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<Str>,
    /// Names the certificate must carry one of (DNS names, or URIs such as SPIFFE IDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<Str>,
    /// PEM trust anchors; None: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<Str>,
    /// MUTUAL: the certificate the proxy presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// Files on the proxy (DestinationRule `caCertificates`, `clientCertificate`,
    /// `privateKey`), read by the proxy when it applies the snapshot; in place of the PEM
    /// fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<Str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_files: Option<(Str, Str)>,
    /// DestinationRule `insecureSkipVerify`: the server's certificate is not checked.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Set when the settings cannot be honoured (a missing Secret, a bad CA): connections
    /// fail with this reason instead of going out unprotected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusable: Option<Str>,
}

/// A client certificate chain and key from a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertificate {
    pub secret: Meta,
    pub cert_chain_pem: Str,
    pub private_key_pem: PrivateKeyPem,
}

/// `*.example.com` matches any name ending in `.example.com` (one label or more, as Gateway API
/// listener hostnames do), never `example.com` itself.
fn name_specificity(pattern: &str, sni: &str) -> Option<usize> {
    match pattern.strip_prefix('*') {
        Some("") => Some(0),
        Some(suffix) => (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len()),
        None => pattern.eq_ignore_ascii_case(sni).then_some(usize::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_owned_by_another_server_name_than_the_sni_is_misdirected() {
        // The Gateway API conformance suite's four HTTPS listeners on one port.
        let tls = ListenerTls {
            certificates: vec![
                cert(&["*"]),
                cert(&["second-example.org"]),
                cert(&["*.wildcard.org"]),
                cert(&["fourth-example.wildcard.org"]),
            ]
            .into(),
            client_validation: None,
            mesh: false,
        };
        let misdirected = [
            ("example.org", "second-example.org"),
            ("second-example.org", "example.org"),
            ("second-example.org", "unknown-example.org"),
            ("third-example.wildcard.org", "fourth-example.wildcard.org"),
            ("third-example.wildcard.org", "second-example.org"),
            ("fourth-example.wildcard.org", "fith-example.wildcard.org"),
        ];
        for (sni, host) in misdirected {
            assert!(tls.misdirected(sni, host), "{sni} -> {host}");
        }
        let served = [
            ("example.org", "example.org"),
            ("example.org", "unknown-example.org"),
            ("third-example.wildcard.org", "fith-example.wildcard.org"),
            ("unknown-example.org", "example.org"),
            ("Second-Example.org", "second-example.org"),
        ];
        for (sni, host) in served {
            assert!(!tls.misdirected(sni, host), "{sni} -> {host}");
        }
    }

    fn cert(names: &[&str]) -> ServerCertificate {
        ServerCertificate {
            server_names: names.iter().map(|n| Str::from(*n)).collect(),
            secret: Meta::new("Secret", "ns", "s"),
            cert_chain_pem: "".into(),
            private_key_pem: PrivateKeyPem("secret material".into()),
        }
    }

    #[test]
    fn names_match_exactly_by_suffix_wildcard_or_catch_all() {
        let c = cert(&["shop.example.com", "*.api.example.com"]);
        assert_eq!(c.specificity("shop.example.com"), Some(usize::MAX));
        assert_eq!(
            c.specificity("v1.api.example.com"),
            Some(".api.example.com".len())
        );
        assert!(c.specificity("a.b.api.example.com").is_some());
        assert_eq!(c.specificity("api.example.com"), None);
        assert_eq!(c.specificity("other.example.com"), None);
        assert!(!c.is_default());
        let wider = cert(&["*.example.com"]);
        assert!(wider.specificity("v1.api.example.com") < c.specificity("v1.api.example.com"));
        assert_eq!(cert(&["*"]).specificity("anything.test"), Some(0));
        assert!(cert(&["*"]).is_default());
    }

    #[test]
    fn the_private_key_never_appears_in_debug_output() {
        let printed = format!("{:?}", cert(&["*"]));
        assert!(!printed.contains("secret material"), "{printed}");
        assert!(printed.contains(PrivateKeyPem::REDACTED));
    }
}
