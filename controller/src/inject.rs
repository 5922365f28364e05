//! Sidecar injection: the pod mutation the admission webhook applies and `ferry inject`
//! prints. Two init containers go first: `ferry-init` (the capture rules, NET_ADMIN, exits)
//! and `ferry-proxy`, a native sidecar (`restartPolicy: Always`) with a startup probe, so
//! the app's containers start only once the proxy is ready and Jobs still complete.
//!
//! Works on JSON values, not typed Pods, so fields this code does not know survive untouched
//! and the same function serves Pods (webhook) and pod templates (Deployments... in files).

use serde_json::{json, Map, Value};

/// The annotation recording that a pod was injected (and by what).
pub const STATUS_ANNOTATION: &str = "sidecar.ferry.dev/status";
/// Istio's per-pod opt-out, honoured as a label or an annotation.
pub const INJECT_FLAG: &str = "sidecar.istio.io/inject";
pub const INIT_NAME: &str = "ferry-init";
pub const PROXY_NAME: &str = "ferry-proxy";

/// What the injected containers run.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    pub image: String,
    /// The controller's push address, as the sidecar dials it.
    pub controller: String,
    pub proxy_uid: u32,
    /// Flags added to every injected `ferry sidecar` (limits, cause detail...), checked by
    /// the controller at start.
    pub proxy_args: Vec<String>,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            image: format!("ghcr.io/ferry-dev/ferry:{}", env!("CARGO_PKG_VERSION")),
            controller: "ferry-controller.ferry-system.svc:15012".into(),
            proxy_uid: 1337,
            proxy_args: Vec::new(),
        }
    }
}

/// The sidecar's status port (probes, metrics; never captured), as Istio's 15020.
pub const STATUS_PORT: u16 = 15020;

/// The mesh's roots (the controller publishes them in every namespace) and the pod's
/// ServiceAccount token for audience `ferry`: what the sidecar proves itself with.
const ROOT_VOLUME: &str = "ferry-ca-root";
const TOKEN_VOLUME: &str = "ferry-token";

fn proxy_volumes() -> [Value; 2] {
    [
        json!({"name": ROOT_VOLUME, "configMap": {"name": "ferry-ca-root"}}),
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken":
            {"path": "ferry-token", "audience": "ferry", "expirationSeconds": 3600}}]}}),
    ]
}

/// Istio's traffic annotations and the `ferry sidecar-init` flag each one becomes.
const TRAFFIC_ANNOTATIONS: [(&str, &str); 4] = [
    (
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "--exclude-outbound-ports",
    ),
    (
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "--exclude-inbound-ports",
    ),
    (
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "--exclude-outbound-ip-ranges",
    ),
    (
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "--include-outbound-ip-ranges",
    ),
];

/// Why a pod was left as it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Skipped {
    OptedOut,
    AlreadyInjected,
    HostNetwork,
}

/// Adds the sidecar to a pod (or pod template: `metadata` + `spec`). `Err` says why not.
pub fn inject(pod: &mut Value, config: &InjectConfig) -> Result<(), Skipped> {
    let metadata = pod.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let flag = |map: &str| {
        metadata
            .get(map)
            .and_then(|m| m.get(INJECT_FLAG))
            .and_then(Value::as_str)
    };
    if [flag("labels"), flag("annotations")].contains(&Some("false")) {
        return Err(Skipped::OptedOut);
    }
    let spec = pod.get("spec").cloned().unwrap_or_else(|| json!({}));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(Skipped::HostNetwork); // rules would capture the node's traffic
    }
    let existing = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if existing.iter().any(|c| c["name"] == PROXY_NAME) {
        return Err(Skipped::AlreadyInjected);
    }
    let annotations = metadata
        .get("annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let probes = crate::inject_probes::rewrite(&annotations, &mut containers, STATUS_PORT);
    if !probes.is_empty() {
        pod["spec"]["containers"] = Value::Array(containers);
    }
    let mut proxy = proxy_container(config, &identity_args(&metadata));
    if !probes.is_empty() {
        let probes = Value::Object(probes).to_string();
        if let Some(env) = proxy["env"].as_array_mut() {
            env.push(json!({"name": "FERRY_APP_PROBES", "value": probes}));
        }
    }
    let mut init_containers = vec![init_container(&annotations, config), proxy];
    init_containers.extend(existing);
    pod["spec"]["initContainers"] = Value::Array(init_containers);
    let mut volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes.retain(|v| v["name"] != ROOT_VOLUME && v["name"] != TOKEN_VOLUME);
    volumes.extend(proxy_volumes());
    pod["spec"]["volumes"] = Value::Array(volumes);
    // The token volume needs a ServiceAccount; the API server's ServiceAccount admission
    // sets `default` before webhooks run, `ferry inject` on a bare manifest does it here.
    if pod["spec"]["serviceAccountName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        pod["spec"]["serviceAccountName"] = json!("default");
    }
    let mut annotations = annotations.as_object().cloned().unwrap_or_else(Map::new);
    annotations.insert(
        STATUS_ANNOTATION.into(),
        json!(format!("injected {PROXY_NAME}")),
    );
    pod["metadata"]["annotations"] = Value::Object(annotations);
    Ok(())
}

/// The JSON patch the webhook returns: the two fields `inject` rewrote, whole ("add" replaces
/// a member that exists, RFC 6902).
pub fn patch_for(original: &Value, config: &InjectConfig) -> Result<Value, Skipped> {
    let mut pod = original.clone();
    inject(&mut pod, config)?;
    Ok(json!([
        {"op": "add", "path": "/spec/initContainers", "value": pod["spec"]["initContainers"]},
        {"op": "add", "path": "/metadata/annotations", "value": pod["metadata"]["annotations"]},
        {"op": "add", "path": "/spec/volumes", "value": pod["spec"]["volumes"]},
        {"op": "add", "path": "/spec/serviceAccountName", "value": pod["spec"]["serviceAccountName"]},
        {"op": "add", "path": "/spec/containers", "value": pod["spec"]["containers"]},
    ]))
}

fn init_container(annotations: &Value, config: &InjectConfig) -> Value {
    let mut args = vec![
        json!("sidecar-init"),
        json!(format!("--proxy-uid={}", config.proxy_uid)),
        json!(format!("--proxy-gid={}", config.proxy_uid)),
        json!(format!("--status-port={STATUS_PORT}")),
    ];
    for (annotation, flag) in TRAFFIC_ANNOTATIONS {
        if let Some(value) = annotations.get(annotation).and_then(Value::as_str) {
            args.push(json!(format!("{flag}={value}")));
        }
    }
    json!({
        "name": INIT_NAME,
        "image": config.image,
        "args": args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    })
}

/// The workload identity for metrics (`source_*` outbound, `destination_*` inbound), as
/// Istio derives it and as the controller names this pod's endpoints to other proxies
/// (translate/workloads.rs): the workload is the pod's controller (a ReplicaSet's Deployment),
/// else its name, else its `app` label; `app` and `version` (or the Kubernetes recommended
/// labels) as labels.
fn identity_args(metadata: &Value) -> Vec<String> {
    let label = |key: &str| {
        metadata
            .get("labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let app = label("app").or_else(|| label("app.kubernetes.io/name"));
    let version = label("version").or_else(|| label("app.kubernetes.io/version"));
    let mut args = Vec::new();
    if let Some(workload) = workload_name(metadata).or_else(|| app.clone()) {
        args.push(format!("--workload-name={workload}"));
    }
    if let Some(app) = app {
        args.push(format!("--label=app={app}"));
    }
    if let Some(version) = version {
        args.push(format!("--label=version={version}"));
    }
    // Every other label too: PeerAuthentication workload selectors match on any of them.
    let labels = metadata.get("labels").and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        if key != "app" && key != "version" {
            if let Some(value) = value.as_str() {
                args.push(format!("--label={key}={value}"));
            }
        }
    }
    args
}

/// The workload an admitted pod belongs to, by its owner references (its name is often not
/// set yet at admission: `generateName`).
fn workload_name(metadata: &Value) -> Option<String> {
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(json!({ "metadata": metadata })).ok()?;
    Some(
        crate::translate::workloads::workload_of(&pod)
            .name
            .to_string(),
    )
    .filter(|name| !name.is_empty())
}

fn proxy_container(config: &InjectConfig, identity: &[String]) -> Value {
    let mut args = vec![
        "sidecar".to_string(),
        format!("--controller={}", config.controller),
        "--admin=127.0.0.1:15000".to_string(),
        format!("--status=0.0.0.0:{STATUS_PORT}"),
    ];
    args.extend_from_slice(identity);
    args.extend_from_slice(&config.proxy_args);
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut pod_name = field("metadata.name");
    pod_name["name"] = json!("POD_NAME");
    let mut pod_namespace = field("metadata.namespace");
    pod_namespace["name"] = json!("POD_NAMESPACE");
    json!({
        "name": PROXY_NAME,
        "image": config.image,
        // Native sidecar: started before the app, kept running, stopped after it.
        "restartPolicy": "Always",
        "args": args,
        "env": [pod_name, pod_namespace],
        "ports": [{"name": "ferry-status", "containerPort": STATUS_PORT}],
        "startupProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}, "periodSeconds": 1, "failureThreshold": 600},
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}, "periodSeconds": 5},
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsGroup": config.proxy_uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [
            {"name": ROOT_VOLUME, "mountPath": "/var/run/secrets/ferry", "readOnly": true},
            {"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/tokens", "readOnly": true},
        ],
    })
}

/// Where the pod template of a workload manifest is, by kind.
pub fn pod_template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(extra_metadata: Value) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "web:1"}], "initContainers": [{"name": "migrate", "image": "web:1"}]},
        });
        if let Value::Object(extra) = extra_metadata {
            for (k, v) in extra {
                pod["metadata"][k] = v;
            }
        }
        pod
    }

    #[test]
    fn a_deployments_pod_is_named_by_its_deployment_as_its_endpoints_are() {
        let mut p = pod(json!({
            "name": null,
            "generateName": "reviews-v2-7d9f8c-",
            "labels": {"app": "reviews", "version": "v2", "pod-template-hash": "7d9f8c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v2-7d9f8c", "uid": "u", "controller": true}],
        }));
        inject(&mut p, &InjectConfig::default()).unwrap();
        let proxy_args = p["spec"]["initContainers"][1]["args"].to_string();
        assert!(
            proxy_args.contains("--workload-name=reviews-v2"),
            "{proxy_args}"
        );
        assert!(proxy_args.contains("--label=app=reviews"), "{proxy_args}");
    }

    #[test]
    fn the_proxy_is_a_native_sidecar_started_after_the_capture_rules_and_before_other_inits() {
        let mut p = pod(json!({
            "annotations": {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432"},
            "labels": {"app": "web", "version": "v2"},
        }));
        inject(&mut p, &InjectConfig::default()).unwrap();
        let names: Vec<&str> = p["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [INIT_NAME, PROXY_NAME, "migrate"]);
        let proxy = &p["spec"]["initContainers"][1];
        assert_eq!(proxy["restartPolicy"], "Always");
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
        assert_eq!(proxy["resources"]["requests"]["memory"], "16Mi");
        let proxy_args = proxy["args"].to_string();
        assert!(proxy_args.contains("--workload-name=web"), "{proxy_args}");
        assert!(proxy_args.contains("--label=app=web"), "{proxy_args}");
        assert!(proxy_args.contains("--label=version=v2"), "{proxy_args}");
        let init_args = p["spec"]["initContainers"][0]["args"].to_string();
        assert!(
            init_args.contains("--exclude-outbound-ports=5432"),
            "{init_args}"
        );
        assert_eq!(p["spec"]["containers"][0]["name"], "app", "app untouched");
        assert!(p["metadata"]["annotations"][STATUS_ANNOTATION].is_string());
    }

    #[test]
    fn opt_out_and_second_injection_leave_the_pod_alone() {
        let mut out = pod(json!({"labels": {INJECT_FLAG: "false"}}));
        assert_eq!(
            inject(&mut out, &InjectConfig::default()),
            Err(Skipped::OptedOut)
        );
        let mut out = pod(json!({"annotations": {INJECT_FLAG: "false"}}));
        assert_eq!(
            inject(&mut out, &InjectConfig::default()),
            Err(Skipped::OptedOut)
        );
        let mut twice = pod(json!({}));
        inject(&mut twice, &InjectConfig::default()).unwrap();
        assert_eq!(
            inject(&mut twice, &InjectConfig::default()),
            Err(Skipped::AlreadyInjected)
        );
    }

    #[test]
    fn the_patch_rewrites_init_containers_and_annotations() {
        let patch = patch_for(&pod(json!({})), &InjectConfig::default()).unwrap();
        assert_eq!(patch[0]["path"], "/spec/initContainers");
        assert_eq!(patch[0]["value"].as_array().unwrap().len(), 3);
        assert_eq!(patch[1]["path"], "/metadata/annotations");
        assert_eq!(patch[2]["path"], "/spec/volumes");
        let volumes = patch[2]["value"].to_string();
        assert!(volumes.contains(r#""audience":"ferry""#), "{volumes}");
        assert!(volumes.contains(r#""name":"ferry-ca-root""#), "{volumes}");
    }
}
