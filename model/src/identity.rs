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

/// How a workload's inbound port accepts peers (Istio's PeerAuthentication modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Inherit from the next level up (workload -> namespace -> mesh -> PERMISSIVE).
    #[default]
    Unset,
    /// Plaintext only; mesh mTLS is not terminated.
    Disable,
    /// Mesh mTLS and plaintext both accepted.
    Permissive,
    /// Mesh mTLS only.
    Strict,
}

impl MtlsMode {
    pub fn parse(text: &str) -> Option<MtlsMode> {
        match text {
            "UNSET" => Some(MtlsMode::Unset),
            "DISABLE" => Some(MtlsMode::Disable),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "STRICT" => Some(MtlsMode::Strict),
            _ => None,
        }
    }
}

/// One PeerAuthentication, compiled. In a snapshot they are ordered oldest first within
/// each level, as Istio picks the oldest when several apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAuthenticationPolicy {
    pub meta: crate::Meta,
    /// In the root namespace without a selector: the whole mesh.
    #[serde(default)]
    pub mesh_wide: bool,
    /// Labels a workload must carry (workload-level policy); None for namespace/mesh level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Vec<(String, String)>>,
    #[serde(default)]
    pub mode: MtlsMode,
    /// Per (container) port modes; only workload-level policies have them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_modes: Vec<(u16, MtlsMode)>,
}

impl PeerAuthenticationPolicy {
    fn selects(&self, labels: &[(String, String)]) -> bool {
        self.selector.as_ref().is_some_and(|wanted| {
            wanted
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }
}

/// The mode for a workload of `namespace` with `labels`, receiving on `port`: the oldest
/// workload policy selecting it (its port-level mode first), else its namespace's, else the
/// mesh's, each level only when it says more than UNSET; PERMISSIVE when none does.
pub fn effective_mtls_mode(
    policies: &[PeerAuthenticationPolicy],
    namespace: &str,
    labels: &[(String, String)],
    port: u16,
) -> MtlsMode {
    let in_namespace = |p: &&PeerAuthenticationPolicy| &*p.meta.namespace == namespace;
    let workload = policies
        .iter()
        .filter(in_namespace)
        .find(|p| p.selects(labels));
    let port_mode = workload.and_then(|p| {
        p.port_modes
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, mode)| *mode)
    });
    let namespace_level = policies
        .iter()
        .filter(in_namespace)
        .find(|p| p.selector.is_none() && !p.mesh_wide);
    let mesh_level = policies.iter().find(|p| p.mesh_wide);
    [
        port_mode,
        workload.map(|p| p.mode),
        namespace_level.map(|p| p.mode),
        mesh_level.map(|p| p.mode),
    ]
    .into_iter()
    .flatten()
    .find(|mode| *mode != MtlsMode::Unset)
    .unwrap_or(MtlsMode::Permissive)
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

    fn policy(
        namespace: &str,
        selector: Option<&[(&str, &str)]>,
        mode: MtlsMode,
    ) -> PeerAuthenticationPolicy {
        PeerAuthenticationPolicy {
            meta: crate::Meta::new("PeerAuthentication", namespace, "p"),
            mesh_wide: namespace == "istio-system" && selector.is_none(),
            selector: selector.map(|s| {
                s.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            mode,
            port_modes: Vec::new(),
        }
    }

    #[test]
    fn the_most_specific_level_that_says_something_wins() {
        let labels = vec![("app".to_string(), "web".to_string())];
        assert_eq!(
            effective_mtls_mode(&[], "shop", &labels, 80),
            MtlsMode::Permissive
        );
        let mesh = policy("istio-system", None, MtlsMode::Strict);
        let namespace = policy("shop", None, MtlsMode::Disable);
        let mut workload = policy("shop", Some(&[("app", "web")]), MtlsMode::Unset);
        workload.port_modes = vec![(8080, MtlsMode::Permissive)];
        let all = [workload, namespace.clone(), mesh.clone()];
        assert_eq!(
            effective_mtls_mode(&all, "shop", &labels, 8080),
            MtlsMode::Permissive
        );
        assert_eq!(
            effective_mtls_mode(&all, "shop", &labels, 80),
            MtlsMode::Disable,
            "UNSET inherits"
        );
        assert_eq!(
            effective_mtls_mode(&all, "other", &labels, 80),
            MtlsMode::Strict,
            "mesh-wide"
        );
        let other_app = vec![("app".to_string(), "db".to_string())];
        assert_eq!(
            effective_mtls_mode(&[namespace, mesh], "shop", &other_app, 80),
            MtlsMode::Disable
        );
    }
}
