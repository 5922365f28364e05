//! The CustomResourceDefinitions Ferry ships, for `ferry crds` (and the ferry-crds chart):
//! Istio's networking and security kinds, defined with an open schema as early Istio releases
//! did (the API server stores any spec and Ferry's own decoder validates it, reporting
//! problems by field).
//!
//! The Gateway API CRDs are not Ferry's to ship: users apply the upstream release's install
//! manifest, as Istio and Envoy Gateway document it, and `ferry precheck` checks its
//! bundle version against [`GATEWAY_API_BUNDLES`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The Gateway API release Ferry is built and conformance-tested against.
pub const GATEWAY_API_VERSION: &str = "v1.5.1";
/// Bundle versions (`gateway.networking.k8s.io/bundle-version`, major.minor) Ferry reads.
pub const GATEWAY_API_BUNDLES: &[&str] = &["v1.4", "v1.5"];
/// The annotation the upstream CRDs carry.
pub const BUNDLE_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";
/// The Gateway API kinds Ferry reads (plural.group): the CRDs precheck looks for.
pub const GATEWAY_API_CRDS: &[&str] = &[
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
    "backendtlspolicies.gateway.networking.k8s.io",
];

/// The command that installs the upstream Gateway API CRDs Ferry is tested with.
pub fn gateway_api_install_command() -> String {
    format!(
        "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API_VERSION}/standard-install.yaml"
    )
}

/// Whether a bundle version (`v1.5.1`) is one Ferry reads.
pub fn supported_bundle(version: &str) -> bool {
    GATEWAY_API_BUNDLES.iter().any(|minor| {
        version
            .strip_prefix(minor)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// Whether an unsupported bundle version is newer than those Ferry reads (its kinds still
/// read, fields Ferry does not know are reported), rather than older (fields Ferry relies on
/// may be missing).
pub fn newer_bundle(version: &str) -> bool {
    let minor_of = |v: &str| -> Option<(u32, u32)> {
        let mut parts = v.trim_start_matches('v').split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let newest = GATEWAY_API_BUNDLES.iter().filter_map(|v| minor_of(v)).max();
    matches!((minor_of(version), newest), (Some(v), Some(n)) if v > n)
}

/// Every CRD Ferry ships.
pub fn all() -> Vec<CustomResourceDefinition> {
    ISTIO_KINDS
        .iter()
        .map(istio_crd)
        .chain(std::iter::once(rate_limit_policy_crd()))
        .map(kept_by_helm)
        .collect()
}

/// Ferry's LocalRateLimitPolicy (`policy.ferry.dev/v1alpha1`), with its schema: the API
/// server refuses a malformed policy before Ferry sees it, and Ferry's decoder names the
/// field of anything else.
fn rate_limit_policy_crd() -> CustomResourceDefinition {
    use serde_json::json;
    let string = json!({"type": "string"});
    let target = json!({
        "type": "object",
        "required": ["kind", "name"],
        "properties": {"group": string, "kind": string, "name": string},
    });
    let spec = json!({
        "type": "object",
        "required": ["targetRefs", "limit"],
        "properties": {
            "targetRefs": {"type": "array", "minItems": 1, "maxItems": 16, "items": target},
            "limit": {
                "type": "object",
                "required": ["requests", "unit"],
                "properties": {
                    "requests": {"type": "integer", "minimum": 1},
                    "unit": {"type": "string", "enum": ["Second", "Minute", "Hour"]},
                },
            },
            "burst": {"type": "integer", "minimum": 1},
            "key": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["Route", "ClientIP", "Header"]},
                    "header": string,
                },
            },
            "statusCode": {"type": "integer", "minimum": 400, "maximum": 599},
            "exemptSourceRanges": {"type": "array", "items": string},
        },
    });
    let status = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "localratelimitpolicies.policy.ferry.dev",
            "labels": {"gateway.networking.k8s.io/policy": "Direct"},
        },
        "spec": {
            "group": "policy.ferry.dev",
            "names": {
                "kind": "LocalRateLimitPolicy",
                "listKind": "LocalRateLimitPolicyList",
                "plural": "localratelimitpolicies",
                "singular": "localratelimitpolicy",
                "shortNames": ["lrlp"],
                "categories": ["ferry", "gateway-api"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Requests", "type": "integer", "jsonPath": ".spec.limit.requests"},
                    {"name": "Per", "type": "string", "jsonPath": ".spec.limit.unit"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": spec, "status": status},
                }},
            }],
        },
    });
    serde_json::from_value(crd).expect("valid CRD")
}

/// Deleting a CRD deletes every object of its kind: `helm uninstall` must leave them (the
/// annotation means nothing to kubectl).
fn kept_by_helm(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("helm.sh/resource-policy".into(), "keep".into());
    crd
}

struct IstioKind {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
}

const ISTIO_KINDS: &[IstioKind] = &[
    IstioKind {
        group: "networking.istio.io",
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
    },
    IstioKind {
        group: "networking.istio.io",
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
    },
    IstioKind {
        group: "security.istio.io",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_names: &["pa"],
    },
    IstioKind {
        group: "security.istio.io",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["ap"],
    },
    IstioKind {
        group: "security.istio.io",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        short_names: &["ra"],
    },
];

fn istio_crd(kind: &IstioKind) -> CustomResourceDefinition {
    let open = serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    // v1 is stored; older versions are served too because existing manifests use them
    // (same schema, so the API server converts by relabelling). security.istio.io never had
    // v1alpha3.
    let old_versions: &[&str] = if kind.group == "security.istio.io" {
        &["v1beta1"]
    } else {
        &["v1beta1", "v1alpha3"]
    };
    let versions: Vec<_> = std::iter::once(&"v1")
        .chain(old_versions)
        .map(|version| {
            serde_json::json!({
                "name": version,
                "served": true,
                "storage": *version == "v1",
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": open, "status": open},
                    "x-kubernetes-preserve-unknown-fields": true,
                }},
            })
        })
        .collect();
    let crd = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", kind.plural, kind.group)},
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind,
                "listKind": format!("{}List", kind.kind),
                "plural": kind.plural,
                "singular": kind.kind.to_lowercase(),
                "shortNames": kind.short_names,
                "categories": ["istio-io", kind.group.replace('.', "-")],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    });
    serde_json::from_value(crd).expect("valid CRD")
}

/// Every CRD as one multi-document YAML stream.
pub fn yaml() -> String {
    stream(all())
}

/// Istio's kinds only (the ferry-crds chart's `istio.enabled` set).
pub fn istio_yaml() -> String {
    stream(
        all()
            .into_iter()
            .filter(|c| c.spec.group.ends_with(".istio.io"))
            .collect(),
    )
}

/// Ferry's own kinds only (always installed by the ferry-crds chart).
pub fn ferry_yaml() -> String {
    stream(
        all()
            .into_iter()
            .filter(|c| c.spec.group.ends_with(".ferry.dev"))
            .collect(),
    )
}

fn stream(crds: Vec<CustomResourceDefinition>) -> String {
    crds.iter()
        .map(|crd| serde_yaml::to_string(crd).expect("CRDs serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_istio_kind_the_translator_reads_has_a_definition_and_no_gateway_api_kind_does() {
        let names: Vec<String> = all()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        for wanted in [
            "gateways.networking.istio.io",
            "virtualservices.networking.istio.io",
            "destinationrules.networking.istio.io",
            "serviceentries.networking.istio.io",
            "sidecars.networking.istio.io",
            "peerauthentications.security.istio.io",
            "authorizationpolicies.security.istio.io",
            "requestauthentications.security.istio.io",
            "localratelimitpolicies.policy.ferry.dev",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} missing from {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.ends_with(".k8s.io")), "{names:?}");
    }

    #[test]
    fn supported_bundles_are_matched_by_major_and_minor() {
        assert!(supported_bundle("v1.5.1"));
        assert!(supported_bundle("v1.4.0"));
        assert!(supported_bundle("v1.5"));
        assert!(!supported_bundle("v1.3.0"));
        assert!(!supported_bundle("v1.50.0"));
        assert!(supported_bundle(GATEWAY_API_VERSION));
        assert!(newer_bundle("v1.6.0"));
        assert!(newer_bundle("v2.0.0"));
        assert!(!newer_bundle("v1.2.0"));
        assert!(!newer_bundle("v1.5.1"));
    }
}
