//! Workload identity names (SPIFFE IDs) and the certificate exchange between a proxy and the
//! controller's certificate authority.

use serde::{Deserialize, Serialize};

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`: the identity of every
/// workload running as that Kubernetes ServiceAccount, as Istio names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Parses the URI form; None for anything else (other path shapes, empty parts).
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let mut parts = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let all = [trust_domain, namespace, service_account];
        if all.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(SpiffeId::new(trust_domain, namespace, service_account))
    }

    /// The principal as Istio's metrics and AuthorizationPolicy write it (no scheme).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}", self.principal())
    }
}

/// Path of the certificate exchange on the controller's port.
pub const CERTIFICATE_PATH: &str = "/ferry.v1/certificate";

/// What a proxy sends (with its ServiceAccount token as `Authorization: Bearer`): a
/// certificate signing request for a key that never leaves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequest {
    pub csr_pem: String,
}

/// What the controller answers: the signed chain (leaf first) and the roots to trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    pub cert_chain_pem: String,
    /// Every root the mesh trusts now: more than one while a root rotation overlaps.
    pub trust_bundle_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_odd_shapes_are_refused() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/weather/sa/default").unwrap();
        assert_eq!(id, SpiffeId::new("cluster.local", "weather", "default"));
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/weather/sa/default"
        );
        assert_eq!(id.principal(), "cluster.local/ns/weather/sa/default");
        for bad in [
            "spiffe://cluster.local/ns/weather",
            "spiffe://cluster.local/ns/weather/sa/default/extra",
            "spiffe:///ns/a/sa/b",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://td/ns//sa/b",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }
}
