//! The CustomResourceDefinitions Ferry reads, for `ferry crds` (and the Helm chart).
//!
//! Gateway API definitions come from the `gateway-api` crate's types (their OpenAPI schemas
//! are generated from the upstream CRDs). Istio's networking kinds are defined with an open
//! schema, as early Istio releases did: the API server stores any spec and Ferry's own
//! decoder validates it, reporting problems by field.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD, Gateway API first.
pub fn all() -> Vec<CustomResourceDefinition> {
    use gateway_api::apis::experimental::httproutes::HttpRoute;
    use gateway_api::apis::standard::{
        backendtlspolicies::BackendTlsPolicy, gatewayclasses::GatewayClass, gateways::Gateway,
        grpcroutes::GrpcRoute, referencegrants::ReferenceGrant,
    };
    let mut crds: Vec<_> = [
        GatewayClass::crd(),
        Gateway::crd(),
        HttpRoute::crd(),
        GrpcRoute::crd(),
        ReferenceGrant::crd(),
        BackendTlsPolicy::crd(),
    ]
    .into_iter()
    .map(approved)
    .map(with_printer_columns)
    .collect();
    crds.extend(ISTIO_KINDS.iter().map(istio_crd));
    crds.into_iter().map(kept_by_helm).collect()
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

/// `*.k8s.io` groups are protected: the API server only accepts their CRDs with the
/// annotation naming the Kubernetes API review that approved them (Gateway API's is #1538).
fn approved(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            "api-approved.kubernetes.io".into(),
            "https://github.com/kubernetes-sigs/gateway-api/pull/1538".into(),
        );
    crd
}

/// `kubectl get gateway` / `gatewayclass` columns as the upstream CRDs define them, so
/// users see PROGRAMMED / ACCEPTED at a glance.
fn with_printer_columns(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition as Column;
    let column = |name: &str, kind: &str, path: &str| Column {
        name: name.into(),
        type_: kind.into(),
        json_path: path.into(),
        ..Column::default()
    };
    let condition = |name: &str| format!(r#".status.conditions[?(@.type=="{name}")].status"#);
    let columns = match crd.spec.names.kind.as_str() {
        "Gateway" => vec![
            column("Class", "string", ".spec.gatewayClassName"),
            column("Address", "string", ".status.addresses[*].value"),
            column("Programmed", "string", &condition("Programmed")),
            column("Age", "date", ".metadata.creationTimestamp"),
        ],
        "GatewayClass" => vec![
            column("Controller", "string", ".spec.controllerName"),
            column("Accepted", "string", &condition("Accepted")),
            column("Age", "date", ".metadata.creationTimestamp"),
        ],
        "HTTPRoute" | "GRPCRoute" => vec![
            column("Hostnames", "string", ".spec.hostnames"),
            column("Age", "date", ".metadata.creationTimestamp"),
        ],
        _ => return crd,
    };
    for version in &mut crd.spec.versions {
        version.additional_printer_columns = Some(columns.clone());
    }
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

/// The CRD sets a cluster may already have (installed by Istio, or by Gateway API's own
/// release); the Helm chart switches each off on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdSet {
    GatewayApi,
    Istio,
}

impl CrdSet {
    fn contains(self, crd: &CustomResourceDefinition) -> bool {
        let istio = crd.spec.group.ends_with("istio.io");
        istio == (self == CrdSet::Istio)
    }
}

/// The CRDs of `only` (all when None) as one multi-document YAML stream.
pub fn yaml(only: Option<CrdSet>) -> String {
    all()
        .iter()
        .filter(|crd| only.is_none_or(|set| set.contains(crd)))
        .map(|crd| serde_yaml::to_string(crd).expect("CRDs serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_translator_reads_has_a_definition() {
        let names: Vec<String> = all()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        for wanted in [
            "gatewayclasses.gateway.networking.k8s.io",
            "gateways.gateway.networking.k8s.io",
            "httproutes.gateway.networking.k8s.io",
            "referencegrants.gateway.networking.k8s.io",
            "gateways.networking.istio.io",
            "virtualservices.networking.istio.io",
            "destinationrules.networking.istio.io",
            "peerauthentications.security.istio.io",
            "authorizationpolicies.security.istio.io",
            "requestauthentications.security.istio.io",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} missing from {names:?}"
            );
        }
    }
}
