//! Mutual TLS decisions the translator makes: which PeerAuthentications apply (compiled for
//! the sidecars, which resolve their own inbound mode), and for each endpoint whether the
//! proxy originates mesh mTLS to it and which SPIFFE ID it must present.

use ferry_model::{effective_mtls_mode, MtlsMode, PeerAuthenticationPolicy, SpiffeId, Str};
use k8s_openapi::api::core::v1::Pod;

use crate::inputs::security::PeerAuthentication;
use crate::inputs::Inputs;

/// Annotations an injector leaves on a Pod it gave a sidecar (Ferry's and Istio's).
const INJECTED_ANNOTATIONS: [&str; 2] = ["sidecar.ferry.dev/status", "sidecar.istio.io/status"];

/// What decides mTLS for the endpoints of one translation.
pub struct MeshTls {
    pub trust_domain: String,
    pub policies: Vec<PeerAuthenticationPolicy>,
}

impl MeshTls {
    pub fn new(inputs: &Inputs, trust_domain: &str, root_namespace: &str) -> MeshTls {
        MeshTls {
            trust_domain: trust_domain.into(),
            policies: compile(&inputs.peer_authentications, root_namespace),
        }
    }

    /// The identity to expect from `pod`'s endpoint on `port` when mTLS is used, per the
    /// DestinationRule's `tls.mode` (None: automatic).
    pub fn endpoint_identity(
        &self,
        pod: Option<&Pod>,
        service_namespace: &str,
        port: u16,
        rule_mode: Option<&str>,
    ) -> Option<Str> {
        match rule_mode {
            // No mesh mTLS: plaintext, or the rule's own TLS (SIMPLE / MUTUAL origination).
            Some("DISABLE" | "SIMPLE" | "MUTUAL") => None,
            Some("ISTIO_MUTUAL") => Some(self.identity_of(pod, service_namespace)),
            _ => {
                let pod = pod.filter(|p| injected(p))?;
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                let labels: Vec<(String, String)> = pod
                    .metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let mode = effective_mtls_mode(&self.policies, namespace, &labels, port);
                (mode != MtlsMode::Disable).then(|| self.identity_of(Some(pod), service_namespace))
            }
        }
    }

    /// `spiffe://<trust domain>/ns/<pod ns>/sa/<pod's ServiceAccount>`; a Pod not known
    /// (forced mTLS to an endpoint without a Pod reference) is expected to run as the
    /// `default` ServiceAccount of the Service's namespace.
    fn identity_of(&self, pod: Option<&Pod>, service_namespace: &str) -> Str {
        let namespace = pod
            .and_then(|p| p.metadata.namespace.as_deref())
            .unwrap_or(service_namespace);
        let service_account = pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|sa| !sa.is_empty())
            .unwrap_or("default");
        SpiffeId::new(&self.trust_domain, namespace, service_account)
            .to_string()
            .into()
    }
}

fn injected(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    INJECTED_ANNOTATIONS
        .iter()
        .any(|a| annotations.is_some_and(|map| map.contains_key(*a)))
}

/// The valid PeerAuthentications, oldest first (Istio's tie-break), then by name.
fn compile(policies: &[PeerAuthentication], root_namespace: &str) -> Vec<PeerAuthenticationPolicy> {
    let mut valid: Vec<&PeerAuthentication> = policies
        .iter()
        .filter(|p| {
            super::security::peer_authentication_problems(p, root_namespace)
                .iter()
                .all(|c| c.severity != super::Severity::Error)
        })
        .collect();
    valid.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    valid
        .into_iter()
        .map(|p| compiled(p, root_namespace))
        .collect()
}

fn compiled(policy: &PeerAuthentication, root_namespace: &str) -> PeerAuthenticationPolicy {
    let mode_of = |mtls: Option<&crate::inputs::security::MutualTls>| {
        mtls.and_then(|m| m.mode.as_deref())
            .and_then(MtlsMode::parse)
            .unwrap_or_default()
    };
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let selector = policy
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone().into_iter().collect());
    PeerAuthenticationPolicy {
        meta: super::meta_of("PeerAuthentication", &policy.metadata),
        mesh_wide: namespace == root_namespace && policy.spec.selector.is_none(),
        selector,
        mode: mode_of(policy.spec.mtls.as_ref()),
        port_modes: policy
            .spec
            .port_level_mtls
            .iter()
            .filter_map(|(port, mtls)| Some((port.parse().ok()?, mode_of(Some(mtls)))))
            .collect(),
    }
}
