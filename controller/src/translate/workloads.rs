//! The workload identity of Pods, named the way Istio's telemetry names it.

use ferry_model::Workload;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

/// Workload name, app, version and canonical service/revision of a Pod.
pub fn workload_of(pod: &Pod) -> Workload {
    let metadata = &pod.metadata;
    let namespace = metadata.namespace.as_deref().unwrap_or("default");
    let pod_name = metadata.name.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = metadata.labels.as_ref().unwrap_or(&empty);
    let label = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).map(String::as_str);
    let name = owner_workload(pod).unwrap_or_else(|| pod_name.to_string());
    Workload {
        app: label(&["app"]).map(Into::into),
        version: label(&["version"]).map(Into::into),
        canonical_service: label(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or(&name)
        .into(),
        canonical_revision: label(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or("latest")
        .into(),
        name: name.into(),
        namespace: namespace.into(),
    }
}

/// The controller a Pod belongs to: a ReplicaSet's Deployment (the ReplicaSet name less its
/// pod-template hash), a Job's CronJob likewise, or the owner itself.
fn owner_workload(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    let name = match (owner.kind.as_str(), hash) {
        ("ReplicaSet", Some(hash)) => owner
            .name
            .strip_suffix(&format!("-{hash}"))
            .unwrap_or(&owner.name),
        _ => &owner.name,
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn deployment_pods_are_named_after_the_deployment() {
        let w = workload_of(&pod(
            "metadata: {name: reviews-v2-7d9f8c-abcde, namespace: shop, \
             labels: {app: reviews, version: v2, pod-template-hash: 7d9f8c}, \
             ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v2-7d9f8c, uid: u, controller: true}]}",
        ));
        assert_eq!(&*w.name, "reviews-v2");
        assert_eq!(w.app.as_deref(), Some("reviews"));
        assert_eq!(w.version.as_deref(), Some("v2"));
        assert_eq!(&*w.canonical_service, "reviews");
        assert_eq!(&*w.canonical_revision, "v2");
    }

    #[test]
    fn bare_pods_and_canonical_labels() {
        let w = workload_of(&pod(
            "metadata: {name: solo, namespace: ns, labels: {service.istio.io/canonical-name: shop-api}}",
        ));
        assert_eq!(&*w.name, "solo");
        assert_eq!(w.app, None);
        assert_eq!(&*w.canonical_service, "shop-api");
        assert_eq!(&*w.canonical_revision, "latest");
    }
}
