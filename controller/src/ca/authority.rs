//! The mesh certificate authority: signs workload certificates (X.509 SVIDs) for a
//! ServiceAccount and the controller's own serving certificate.
//!
//! Its signing material is either a root generated on first start (kept in the `ferry-ca`
//! Secret) or a plug-in CA from Istio's `cacerts` layout (an intermediate signed by the
//! user's root). `root-cert.pem` may hold several roots: during a root rotation both the old
//! and the new one are trusted, so workloads signed by either keep talking.

use ferry_model::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::time::{Duration, SystemTime};

/// What signs, in PEM: the signing certificate and key, the chain from it up to the root
/// (empty when it is the root) and the trusted roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaMaterial {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Certificates between the signing one and the root, root included (Istio's
    /// `cert-chain.pem` minus its first entry); empty for a self-signed root.
    pub chain_pem: String,
    /// Every root the mesh trusts (one or more PEM certificates).
    pub root_cert_pem: String,
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    material: CaMaterial,
    trust_domain: String,
    workload_lifetime: Duration,
}

/// Clock skew allowed between the controller and its proxies.
const BACKDATE: Duration = Duration::from_secs(60);
/// Lifetime of a generated root.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of the controller's own serving certificate (re-issued on each start).
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

impl Authority {
    /// A new self-signed root for `trust_domain`.
    pub fn generate_root(trust_domain: &str) -> Result<CaMaterial, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        name.push(DnType::CommonName, "Ferry mesh root CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, ROOT_LIFETIME);
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(CaMaterial {
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
            chain_pem: String::new(),
            root_cert_pem: cert.pem(),
        })
    }

    pub fn new(
        material: CaMaterial,
        trust_domain: &str,
        workload_lifetime: Duration,
    ) -> Result<Authority, String> {
        let key = KeyPair::from_pem(&material.ca_key_pem).map_err(|e| format!("CA key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(&material.ca_cert_pem, key)
            .map_err(|e| format!("CA certificate: {e}"))?;
        if material.root_cert_pem.trim().is_empty() {
            return Err("no root certificate".into());
        }
        Ok(Authority {
            issuer,
            material,
            trust_domain: trust_domain.into(),
            workload_lifetime,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn material(&self) -> &CaMaterial {
        &self.material
    }

    /// The roots proxies trust.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.material.root_cert_pem
    }

    /// Signs `csr_pem` for `service_account` in `namespace`, whatever the request asked for:
    /// the certificate names exactly that identity (URI SAN), for client and server use.
    /// Returns the chain, leaf first.
    pub fn sign_workload(
        &self,
        csr_pem: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<String, String> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("certificate signing request: {e}"))?;
        let id = SpiffeId::new(&self.trust_domain, namespace, service_account);
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            id.to_string()
                .try_into()
                .map_err(|e| format!("{id}: {e}"))?,
        )];
        params.distinguished_name = DistinguishedName::new();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, self.workload_lifetime);
        let leaf = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(self.chain_after(leaf.pem()))
    }

    /// A serving certificate for the controller's own port, with these DNS names and IPs;
    /// returns (chain, key) in PEM.
    pub fn server_certificate(&self, names: &[String]) -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| format!("{name}: {e}")),
            })
            .collect::<Result<_, String>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, SERVER_LIFETIME);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("signing: {e}"))?;
        Ok((self.chain_after(cert.pem()), key.serialize_pem()))
    }

    /// `leaf` followed by the signing certificate and its chain (not when the signer is the
    /// root itself: peers have it).
    fn chain_after(&self, leaf: String) -> String {
        let mut chain = leaf;
        if !self.material.chain_pem.trim().is_empty() {
            chain.push_str(&self.material.ca_cert_pem);
            chain.push_str(&self.material.chain_pem);
        }
        chain
    }
}

fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        // A request asking for someone else's identity: the authority ignores it.
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .try_into()
                .unwrap(),
        )];
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn uri_sans(pem: &str) -> Vec<String> {
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes());
        let der: rustls_pki_types::CertificateDer = der.unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn workloads_get_the_identity_of_their_service_account_only() {
        let material = Authority::generate_root("cluster.local").unwrap();
        let authority =
            Authority::new(material, "cluster.local", Duration::from_secs(3600)).unwrap();
        let chain = authority.sign_workload(&csr(), "weather", "web").unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 1);
        assert_eq!(
            uri_sans(&chain),
            ["spiffe://cluster.local/ns/weather/sa/web"]
        );
        assert!(authority.sign_workload("not a csr", "a", "b").is_err());
    }

    #[test]
    fn a_plug_in_intermediate_signs_with_its_chain_attached() {
        let root = Authority::generate_root("example.org").unwrap();
        let root_authority =
            Authority::new(root.clone(), "example.org", Duration::from_secs(60)).unwrap();
        // The user's root signs an intermediate (what Istio's cacerts holds).
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let intermediate = params.signed_by(&key, &root_authority.issuer).unwrap();
        let plug_in = CaMaterial {
            ca_cert_pem: intermediate.pem(),
            ca_key_pem: key.serialize_pem(),
            chain_pem: root.root_cert_pem.clone(),
            root_cert_pem: root.root_cert_pem.clone(),
        };
        let authority = Authority::new(plug_in, "example.org", Duration::from_secs(60)).unwrap();
        let chain = authority.sign_workload(&csr(), "ns", "sa").unwrap();
        assert_eq!(
            chain.matches("BEGIN CERTIFICATE").count(),
            3,
            "leaf, intermediate, root"
        );
        assert_eq!(uri_sans(&chain), ["spiffe://example.org/ns/ns/sa/sa"]);
    }
}
