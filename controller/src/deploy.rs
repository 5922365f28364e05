//! What the controller deploys for each Gateway of its classes, as Istio and Envoy Gateway do:
//! a ServiceAccount, a Deployment running `ferry gateway --scope ns/name`, its Service and a
//! PodDisruptionBudget, in the Gateway's namespace and owned by it (Kubernetes' garbage
//! collector deletes them with the Gateway). Pure: `cluster::deployer` applies the result.
//!
//! A Gateway already served by a deployment someone else made — a Service labelled with its
//! name (`gateway.networking.k8s.io/gateway-name`) that Ferry's controller did not create, as
//! the Helm chart's shared gateway is — gets nothing.

use std::collections::BTreeMap;

use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use crate::status::GATEWAY_NAME_LABEL;
use crate::Inputs;

/// `app.kubernetes.io/managed-by` of every object deployed here.
pub const MANAGED_BY: &str = "ferry-controller";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
/// The suffix of every deployed object's name (`<gateway>-ferry`, as Istio's `<gateway>-istio`):
/// a Gateway named like an application's Deployment does not collide with it.
pub const NAME_SUFFIX: &str = "-ferry";

/// What every deployed gateway runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployConfig {
    pub image: String,
    pub pull_policy: String,
    /// The controller's proxy port, as the proxies dial it (`host:port`).
    pub controller: String,
    /// Flags added to every deployed `ferry gateway` (limits, cause detail...), checked by
    /// the controller at start.
    pub proxy_args: Vec<String>,
}

/// The objects one Gateway gets.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayObjects {
    pub namespace: String,
    pub gateway: String,
    /// ServiceAccount, Deployment, Service, PodDisruptionBudget (full manifests).
    pub objects: Vec<Value>,
}

/// Settings a Gateway's `spec.infrastructure.parametersRef` ConfigMap may give (keys kept by
/// `Inputs::add`, see [`PARAMETER_KEYS`]).
#[derive(Clone, Debug, Default, PartialEq)]
struct Parameters {
    service_type: Option<String>,
    /// Extra metadata of the Service only (a cloud load balancer's annotations, say).
    service_annotations: BTreeMap<String, String>,
    service_labels: BTreeMap<String, String>,
    replicas: Option<i64>,
}

/// The ConfigMap keys a parametersRef may set: `service.type` (LoadBalancer, NodePort or
/// ClusterIP), `service.annotations` and `service.labels` (YAML maps), `deployment.replicas`.
pub const PARAMETER_KEYS: &[&str] = &[
    "service.type",
    "service.annotations",
    "service.labels",
    "deployment.replicas",
];

/// Keys of the Gateway's parametersRef ConfigMap that Ferry does not read (reported on the
/// Gateway as not applied).
pub fn unread_parameters(inputs: &Inputs, gateway: &Gateway) -> Vec<String> {
    let Ok(Some(map)) = parameters_map(inputs, gateway) else {
        return Vec::new();
    };
    let data = map.data.iter().flatten();
    data.map(|(key, _)| key)
        .filter(|key| !PARAMETER_KEYS.contains(&key.as_str()))
        .cloned()
        .collect()
}
const SERVICE_TYPES: &[&str] = &["LoadBalancer", "NodePort", "ClusterIP"];

/// Every deployment the controller should keep, one per Gateway of its classes.
pub fn desired(inputs: &Inputs, config: &DeployConfig) -> Vec<GatewayObjects> {
    inputs
        .gateways
        .iter()
        .filter(|g| deploys(inputs, g))
        .filter_map(|g| {
            let parameters = parameters(inputs, g).ok()?;
            Some(objects_for(g, &parameters, config))
        })
        .collect()
}

/// Whether a deploying controller deploys `gateway`'s proxies (the Gateway is of a class it
/// serves, no one else's Service stands for it, and its parameters are usable).
pub fn deploys(inputs: &Inputs, gateway: &Gateway) -> bool {
    crate::translate::served_class_names(inputs).contains(&gateway.spec.gateway_class_name)
        && !served_by_others(inputs, gateway)
        && parameters(inputs, gateway).is_ok()
}

/// Whether a controller deployed `object` (its managed-by label).
pub fn is_deployed(object: &ObjectMeta) -> bool {
    object
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|by| by == MANAGED_BY)
}

/// Whether the controller deployed `object` for the Gateway object with `uid` (its owner
/// reference: a deleted namesake's objects linger until garbage collection).
pub fn is_deployed_for(object: &ObjectMeta, uid: &str) -> bool {
    let owners = object.owner_references.iter().flatten();
    is_deployed(object)
        && owners
            .into_iter()
            .any(|o| o.kind == "Gateway" && o.uid == uid)
}

fn served_by_others(inputs: &Inputs, gateway: &Gateway) -> bool {
    let namespace = gateway.metadata.namespace.as_deref();
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    inputs.services.iter().any(|s| {
        let labels = s.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        s.metadata.namespace.as_deref() == namespace
            && label(GATEWAY_NAME_LABEL) == Some(name)
            && label(MANAGED_BY_LABEL) != Some(MANAGED_BY)
    })
}

/// The parametersRef's settings, or why it is unusable (the Gateway is then not Accepted:
/// `InvalidParameters`, see the translator).
pub fn parameters_error(inputs: &Inputs, gateway: &Gateway) -> Option<String> {
    parameters(inputs, gateway).err()
}

fn parameters(inputs: &Inputs, gateway: &Gateway) -> Result<Parameters, String> {
    match parameters_map(inputs, gateway)? {
        Some(map) => parameters_of(map),
        None => Ok(Parameters::default()),
    }
}

/// The ConfigMap the Gateway's parametersRef names (None without one), or why it is unusable.
fn parameters_map<'i>(
    inputs: &'i Inputs,
    gateway: &Gateway,
) -> Result<Option<&'i ConfigMap>, String> {
    let reference = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    let Some(reference) = reference else {
        return Ok(None);
    };
    if !reference.group.is_empty() || reference.kind != "ConfigMap" {
        return Err(format!(
            "spec.infrastructure.parametersRef: {}/{} is not a kind Ferry reads (a ConfigMap)",
            reference.group, reference.kind
        ));
    }
    let map = inputs
        .config_maps
        .iter()
        .find(|c| {
            c.metadata.namespace == gateway.metadata.namespace
                && c.metadata.name.as_deref() == Some(&reference.name)
        })
        .ok_or_else(|| {
            format!(
                "spec.infrastructure.parametersRef: ConfigMap {} not found in this namespace",
                reference.name
            )
        })?;
    Ok(Some(map))
}

fn parameters_of(map: &ConfigMap) -> Result<Parameters, String> {
    let name = map.metadata.name.as_deref().unwrap_or_default();
    let data = map.data.clone().unwrap_or_default();
    let service_type = data.get("service.type").cloned();
    if let Some(kind) = service_type.as_deref() {
        if !SERVICE_TYPES.contains(&kind) {
            return Err(format!(
                "ConfigMap {name} service.type: {kind:?} is not one of {SERVICE_TYPES:?}"
            ));
        }
    }
    let replicas = match data.get("deployment.replicas") {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    format!("ConfigMap {name} deployment.replicas: {text:?} is not a count")
                })?,
        ),
    };
    Ok(Parameters {
        service_type,
        service_annotations: string_map(name, &data, "service.annotations")?,
        service_labels: string_map(name, &data, "service.labels")?,
        replicas,
    })
}

/// A YAML map of strings under `key` (absent: empty).
fn string_map(
    config_map: &str,
    data: &BTreeMap<String, String>,
    key: &str,
) -> Result<BTreeMap<String, String>, String> {
    let Some(text) = data.get(key) else {
        return Ok(BTreeMap::new());
    };
    serde_yaml::from_str(text)
        .map_err(|e| format!("ConfigMap {config_map} {key}: not a map of strings: {e}"))
}

/// The deployed objects' name: `<gateway>-ferry`, shortened with a hash when the Service name
/// would pass the 63 characters of a DNS label.
pub fn object_name(gateway: &str) -> String {
    let name = format!("{gateway}{NAME_SUFFIX}");
    if name.len() <= 63 {
        return name;
    }
    let hash = fnv(gateway.as_bytes());
    let keep = gateway
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= 63 - NAME_SUFFIX.len() - 9)
        .last()
        .unwrap_or(0);
    format!(
        "{}-{hash:08x}{NAME_SUFFIX}",
        gateway[..keep].trim_end_matches('-')
    )
}

/// A stable 32-bit hash (FNV-1a): names must not change between controller versions.
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

fn objects_for(
    gateway: &Gateway,
    parameters: &Parameters,
    config: &DeployConfig,
) -> GatewayObjects {
    let namespace = gateway.metadata.namespace.clone().unwrap_or_default();
    let name = gateway.metadata.name.clone().unwrap_or_default();
    let deployed = Deployed {
        gateway,
        namespace: &namespace,
        gateway_name: &name,
        name: object_name(&name),
    };
    GatewayObjects {
        objects: vec![
            deployed.service_account(),
            deployed.deployment(parameters, config),
            deployed.service(parameters),
            deployed.disruption_budget(),
        ],
        namespace,
        gateway: name,
    }
}

struct Deployed<'a> {
    gateway: &'a Gateway,
    namespace: &'a str,
    gateway_name: &'a str,
    name: String,
}

impl Deployed<'_> {
    /// Labels of every object (and the pods): the Gateway's `spec.infrastructure.labels`, then
    /// Ferry's, which selectors and the status address rely on.
    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.infrastructure(|i| i.labels.clone());
        labels.insert(GATEWAY_NAME_LABEL.into(), self.gateway_name.into());
        labels.insert(
            CLASS_LABEL.into(),
            self.gateway.spec.gateway_class_name.clone(),
        );
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        labels.insert("app.kubernetes.io/name".into(), self.name.clone());
        labels
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        self.infrastructure(|i| i.annotations.clone())
    }

    fn infrastructure(
        &self,
        field: impl Fn(
            &gateway_api::apis::standard::gateways::GatewayInfrastructure,
        ) -> Option<BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
        self.gateway
            .spec
            .infrastructure
            .as_ref()
            .and_then(field)
            .unwrap_or_default()
    }

    fn selector(&self) -> Value {
        json!({ GATEWAY_NAME_LABEL: self.gateway_name })
    }

    /// Owned by the Gateway: deleting it deletes them (Kubernetes' garbage collector).
    fn metadata(&self) -> Value {
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels(),
            "annotations": self.annotations(),
            "ownerReferences": [{
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": self.gateway_name,
                "uid": self.gateway.metadata.uid.clone().unwrap_or_default(),
                "controller": true,
            }],
        })
    }

    fn service_account(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self.metadata()})
    }

    fn deployment(&self, parameters: &Parameters, config: &DeployConfig) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(),
            "spec": {
                "replicas": parameters.replicas.unwrap_or(1),
                "selector": {"matchLabels": self.selector()},
                "template": {
                    "metadata": {
                        "labels": self.labels(),
                        "annotations": self.pod_annotations(),
                    },
                    "spec": self.pod(config),
                },
            },
        })
    }

    fn pod_annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = self.annotations();
        for (key, value) in [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "15020"),
            ("prometheus.io/path", "/stats/prometheus"),
        ] {
            annotations.insert(key.into(), value.into());
        }
        annotations
    }

    /// As the chart's gateway: unprivileged, read-only root, binding the listeners' low ports
    /// through the pod's `ip_unprivileged_port_start` sysctl; the controller's roots and a
    /// token of audience `ferry` for the control channel.
    /// `ferry gateway` for this Gateway, then the flags the chart adds.
    fn gateway_args(&self, config: &DeployConfig) -> Vec<String> {
        let mut args = vec![
            "gateway".to_string(),
            format!("--controller={}", config.controller),
            format!("--scope={}/{}", self.namespace, self.gateway_name),
            "--admin=127.0.0.1:15000".to_string(),
            "--status=0.0.0.0:15020".to_string(),
            format!("--workload-name={}", self.name),
        ];
        args.extend_from_slice(&config.proxy_args);
        args
    }

    fn pod(&self, config: &DeployConfig) -> Value {
        let ports: Vec<Value> = std::iter::once(json!({"name": "status", "containerPort": 15020}))
            .chain(
                self.listener_ports()
                    .iter()
                    .map(|(_, port)| json!({"containerPort": port})),
            )
            .collect();
        json!({
            "serviceAccountName": self.name,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            },
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "gateway",
                "image": config.image,
                "imagePullPolicy": config.pull_policy,
                "args": self.gateway_args(config),
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                ],
                "ports": ports,
                "readinessProbe": {
                    "httpGet": {"path": "/healthz/ready", "port": 15020},
                    "periodSeconds": 2,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": 15020},
                    "periodSeconds": 10,
                },
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "ferry-ca-root", "mountPath": "/var/run/secrets/ferry", "readOnly": true},
                    {"name": "ferry-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "ferry-ca-root", "configMap": {"name": "ferry-ca-root"}},
                {"name": "ferry-token", "projected": {"sources": [{"serviceAccountToken": {
                    "path": "ferry-token", "audience": "ferry", "expirationSeconds": 3600,
                }}]}},
            ],
        })
    }

    /// One port per distinct listener port, named after the first listener's protocol on it.
    fn listener_ports(&self) -> Vec<(String, i32)> {
        let mut ports: Vec<(String, i32)> = Vec::new();
        for listener in &self.gateway.spec.listeners {
            if !ports.iter().any(|(_, p)| *p == listener.port) {
                let name = format!("{}-{}", listener.protocol.to_lowercase(), listener.port);
                ports.push((name, listener.port));
            }
        }
        ports
    }

    fn service(&self, parameters: &Parameters) -> Value {
        let ports: Vec<Value> = self
            .listener_ports()
            .into_iter()
            .map(|(name, port)| {
                json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"})
            })
            .collect();
        let kind = parameters.service_type.as_deref().unwrap_or("LoadBalancer");
        let mut metadata = self.metadata();
        for (key, value) in &parameters.service_annotations {
            metadata["annotations"][key] = value.clone().into();
        }
        for (key, value) in &parameters.service_labels {
            metadata["labels"][key] = value.clone().into();
        }
        // Ferry's labels win: the status address and the selector rely on them.
        for (key, value) in self.labels() {
            metadata["labels"][key] = value.into();
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {"type": kind, "selector": self.selector(), "ports": ports},
        })
    }

    /// One pod at a time may be evicted: a node drain proceeds with a single replica, and more
    /// replicas are never all evicted at once.
    fn disruption_budget(&self) -> Value {
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": self.metadata(),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self.selector()}},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::parse_manifests;

    fn inputs(yaml: &str) -> Inputs {
        let mut inputs = Inputs::default();
        for object in parse_manifests(yaml, "test").unwrap() {
            inputs.add(object);
        }
        inputs
    }

    fn config() -> DeployConfig {
        DeployConfig {
            image: "ghcr.io/ferry-dev/ferry:0.1.0".into(),
            pull_policy: "IfNotPresent".into(),
            controller: "ferry-controller.ferry.svc:15012".into(),
            proxy_args: vec!["--max-connections=1000".into()],
        }
    }

    const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra, uid: "1234"}
spec:
  gatewayClassName: ferry
  infrastructure:
    labels: {team: edge}
    annotations: {owner: ops}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, hostname: a.example.com}
  - {name: https-b, port: 443, protocol: HTTPS, hostname: b.example.com}
"#;

    fn kind<'a>(objects: &'a GatewayObjects, kind: &str) -> &'a Value {
        objects.objects.iter().find(|o| o["kind"] == kind).unwrap()
    }

    #[test]
    fn a_gateway_gets_an_account_a_deployment_a_service_and_a_budget_it_owns() {
        let all = desired(&inputs(GATEWAY), &config());
        assert_eq!(all.len(), 1);
        let web = &all[0];
        for object in &web.objects {
            assert_eq!(object["metadata"]["name"], "web-ferry");
            assert_eq!(object["metadata"]["namespace"], "infra");
            assert_eq!(object["metadata"]["labels"]["team"], "edge");
            assert_eq!(object["metadata"]["labels"][GATEWAY_NAME_LABEL], "web");
            assert_eq!(object["metadata"]["annotations"]["owner"], "ops");
            assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "1234");
        }
        let pod = &kind(web, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "web-ferry");
        let args = pod["containers"][0]["args"].as_array().unwrap();
        assert!(args.contains(&json!("--scope=infra/web")));
        assert_eq!(
            args.last(),
            Some(&json!("--max-connections=1000")),
            "the chart's extra flags come last"
        );
        assert!(args.contains(&json!("--controller=ferry-controller.ferry.svc:15012")));
        let service = &kind(web, "Service")["spec"];
        assert_eq!(service["type"], "LoadBalancer");
        assert_eq!(
            service["ports"],
            json!([
                {"name": "http-80", "port": 80, "targetPort": 80, "protocol": "TCP"},
                {"name": "https-443", "port": 443, "targetPort": 443, "protocol": "TCP"},
            ])
        );
    }

    #[test]
    fn other_classes_and_gateways_with_their_own_service_get_nothing() {
        let other = GATEWAY.replace("gatewayClassName: ferry", "gatewayClassName: istio");
        assert!(desired(&inputs(&other), &config()).is_empty());
        let chart_service = r#"
---
apiVersion: v1
kind: Service
metadata:
  name: ferry-gateway
  namespace: infra
  labels: {gateway.networking.k8s.io/gateway-name: web, app.kubernetes.io/managed-by: Helm}
"#;
        let manual = format!("{GATEWAY}{chart_service}");
        assert!(desired(&inputs(&manual), &config()).is_empty());
        let ours = manual.replace("managed-by: Helm", "managed-by: ferry-controller");
        assert_eq!(desired(&inputs(&ours), &config()).len(), 1);
    }

    #[test]
    fn a_parameters_config_map_sets_the_service_type_and_replicas() {
        let with_ref = GATEWAY.replace(
            "    annotations: {owner: ops}",
            "    annotations: {owner: ops}\n    parametersRef: {group: \"\", kind: ConfigMap, name: web-options}",
        );
        let missing = inputs(&with_ref);
        assert!(desired(&missing, &config()).is_empty());
        let gateway = &missing.gateways[0];
        assert!(parameters_error(&missing, gateway)
            .unwrap()
            .contains("ConfigMap web-options not found"));
        let map = r#"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-options, namespace: infra}
data:
  service.type: NodePort
  deployment.replicas: "3"
  service.annotations: "{cloud.example/lb: internal}"
  service.labels: "{exposure: private, app.kubernetes.io/managed-by: someone}"
  unrelated: secret-ish
"#;
        let found = inputs(&format!("{with_ref}{map}"));
        let web = &desired(&found, &config())[0];
        assert_eq!(kind(web, "Service")["spec"]["type"], "NodePort");
        assert_eq!(kind(web, "Deployment")["spec"]["replicas"], 3);
        let service = &kind(web, "Service")["metadata"];
        assert_eq!(service["annotations"]["cloud.example/lb"], "internal");
        assert_eq!(service["labels"]["exposure"], "private");
        assert_eq!(service["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert!(kind(web, "Deployment")["metadata"]["labels"]["exposure"].is_null());
        let data = "  unrelated: secret-ish\n";
        let unread = inputs(&format!(
            "{with_ref}{}",
            map.replace(data, "  service.ipFamilies: x\n")
        ));
        let gateway = &unread.gateways[0];
        assert_eq!(unread_parameters(&unread, gateway), ["service.ipFamilies"]);
        // A key Ferry does not read is reported by name; its value is not kept.
        assert_eq!(unread_parameters(&found, &found.gateways[0]), ["unrelated"]);
        assert_eq!(found.config_maps[0].data.as_ref().unwrap()["unrelated"], "");
        let bad = inputs(&format!("{with_ref}{}", map.replace("NodePort", "Magic")));
        assert!(parameters_error(&bad, &bad.gateways[0])
            .unwrap()
            .contains("service.type"));
    }

    #[test]
    fn long_gateway_names_are_shortened_to_a_dns_label_stably() {
        assert_eq!(object_name("web"), "web-ferry");
        let long = "a".repeat(80);
        let short = object_name(&long);
        assert!(short.len() <= 63, "{short}");
        assert!(short.ends_with("-ferry"));
        assert_eq!(short, object_name(&long));
        assert_ne!(short, object_name(&"b".repeat(80)));
    }
}
