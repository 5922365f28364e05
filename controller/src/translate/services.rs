//! Resolving Service references to clusters of ready endpoints.

pub(crate) mod entries;

use ferry_model::{Cluster, ClusterPolicy, Endpoint, Meta, ServiceId, UpstreamProtocol, Workload};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::inputs::istio::{ClientTlsSettings, DestinationRule};
use crate::inputs::Inputs;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a reference to a Service could not be turned into a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("Service {0} not found")]
    ServiceNotFound(String),
    #[error("Service {service} has no port {port}")]
    PortNotFound { service: String, port: String },
    #[error("Service {0} has several ports; the reference must name one")]
    PortRequired(String),
    #[error("ServiceEntry {entry} has no port {port} for host {host}")]
    EntryPortNotFound {
        entry: String,
        host: String,
        port: String,
    },
    #[error("ServiceEntry {entry} has several ports for host {host}; the reference must name one")]
    EntryPortRequired { entry: String, host: String },
}

/// A DestinationRule subset narrowing a Service to Pods with these labels.
#[derive(Clone, Copy)]
pub struct SubsetRef<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub rule: &'a DestinationRule,
}

/// `(namespace, name)` of the Service a host names: a short name (in `default_ns`),
/// `name.namespace`, or the cluster-local FQDN. None for other hosts.
pub fn service_of_host(host: &str, default_ns: &str) -> Option<(String, String)> {
    let short = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    let parts: Vec<&str> = short.split('.').collect();
    match parts.as_slice() {
        [name] => Some((default_ns.to_string(), name.to_string())),
        [name, namespace] => Some((namespace.to_string(), name.to_string())),
        _ => None,
    }
}

/// A Service's cluster-local FQDN, as the mesh names it (the inverse of `service_of_host`).
pub fn service_fqdn(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

/// A field of an object that could not be used, and why.
pub struct Problem {
    pub object: Meta,
    pub field: String,
    pub message: String,
}

/// Index over Services, their EndpointSlices and Pods; accumulates the clusters in use.
pub struct ServiceCatalog<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    pods: HashMap<(&'a str, &'a str), &'a Pod>,
    /// Workload identity per Pod, shared by all of its endpoints.
    workloads: HashMap<(&'a str, &'a str), Arc<Workload>>,
    destination_rules: &'a [DestinationRule],
    service_entries: &'a [crate::inputs::istio::ServiceEntry],
    clusters: BTreeMap<String, Cluster>,
    mesh_tls: super::mesh_tls::MeshTls,
    secrets: &'a [k8s_openapi::api::core::v1::Secret],
    config_maps: &'a [k8s_openapi::api::core::v1::ConfigMap],
    backend_tls_policies: &'a [gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy],
    /// The proxy's namespace, where DestinationRule credentialName Secrets are read.
    workload_namespace: Option<String>,
    pub problems: Vec<Problem>,
}

impl<'a> ServiceCatalog<'a> {
    pub fn new(
        inputs: &'a Inputs,
        mesh_tls: super::mesh_tls::MeshTls,
        workload_namespace: Option<String>,
    ) -> Self {
        let services = inputs
            .services
            .iter()
            .map(|s| (key(&s.metadata), s))
            .collect();
        let pods = inputs.pods.iter().map(|p| (key(&p.metadata), p)).collect();
        let workloads = inputs
            .pods
            .iter()
            .map(|p| (key(&p.metadata), Arc::new(super::workloads::workload_of(p))))
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &inputs.endpoint_slices {
            let labels = slice.metadata.labels.as_ref();
            if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
                slices
                    .entry((namespace, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        ServiceCatalog {
            services,
            slices,
            pods,
            workloads,
            destination_rules: &inputs.destination_rules,
            service_entries: &inputs.service_entries,
            clusters: BTreeMap::new(),
            mesh_tls,
            secrets: &inputs.secrets,
            config_maps: &inputs.config_maps,
            backend_tls_policies: &inputs.backend_tls_policies,
            workload_namespace,
            problems: Vec::new(),
        }
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(&(namespace, name)).copied()
    }

    /// Resolves `namespace/name` at `port` (a Service port number; None = the only port) and
    /// returns the cluster name, registering the cluster in the snapshot.
    pub fn resolve(
        &mut self,
        namespace: &str,
        name: &str,
        port: Option<u32>,
        subset: Option<SubsetRef<'_>>,
    ) -> Result<Arc<str>, RefError> {
        let service = self
            .service(namespace, name)
            .ok_or_else(|| RefError::ServiceNotFound(format!("{namespace}/{name}")))?;
        let service_port = select_port(service, port, namespace, name)?;
        let cluster_name = match &subset {
            Some(s) => format!("{namespace}/{name}:{}/{}", service_port.port, s.name),
            None => format!("{namespace}/{name}:{}", service_port.port),
        };
        if !self.clusters.contains_key(&cluster_name) {
            let cluster = self.build_cluster(&cluster_name, namespace, name, service_port, subset);
            self.clusters.insert(cluster_name.clone(), cluster);
        }
        Ok(cluster_name.into())
    }

    /// A copy of cluster `base` under `base@suffix`, changed by `edit` (settings one route
    /// object gives its backend, such as an Ingress's connect timeout, without touching
    /// what other routes to the same Service get). `base` must have been resolved.
    pub fn variant(
        &mut self,
        base: &str,
        suffix: &str,
        edit: impl FnOnce(&mut Cluster),
    ) -> Arc<str> {
        let name = format!("{base}@{suffix}");
        if !self.clusters.contains_key(&name) {
            if let Some(mut cluster) = self.clusters.get(base).cloned() {
                cluster.name = name.as_str().into();
                edit(&mut cluster);
                self.clusters.insert(name.clone(), cluster);
            }
        }
        name.into()
    }

    fn build_cluster(
        &mut self,
        cluster_name: &str,
        namespace: &str,
        name: &str,
        service_port: &ServicePort,
        subset: Option<SubsetRef<'_>>,
    ) -> Cluster {
        let rule = subset
            .as_ref()
            .map(|s| s.rule)
            .or_else(|| self.destination_rule(namespace, name));
        let (tls_mode, upstream_tls) = self.rule_tls(rule, subset.as_ref().map(|s| s.name));
        let upstream_tls = upstream_tls.or_else(|| self.backend_tls(namespace, name, service_port));
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(&(namespace, name))
            .cloned()
            .unwrap_or_default();
        let mut endpoints: Vec<Endpoint> = slices
            .iter()
            .flat_map(|slice| {
                self.slice_endpoints(slice, service_port, subset.as_ref(), tls_mode.as_deref())
            })
            .collect();
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        let policy = rule.map_or_else(ClusterPolicy::default, |dr| {
            self.policy_of(dr, subset.as_ref().map(|s| s.name), service_port.port)
        });
        let meta = match &subset {
            Some(s) => crate::translate::meta_of("DestinationRule", &s.rule.metadata),
            None => Meta::new("Service", namespace, name),
        };
        Cluster {
            name: cluster_name.into(),
            meta,
            service: ServiceId {
                namespace: namespace.into(),
                name: name.into(),
            },
            protocol: upstream_protocol(service_port),
            endpoints: endpoints.into(),
            policy,
            tls: upstream_tls,
            dns: Arc::new([]),
            original_destination: false,
        }
    }

    /// The rule's `tls.mode` for `subset` and the TLS it originates (SIMPLE / MUTUAL).
    fn rule_tls(
        &mut self,
        rule: Option<&DestinationRule>,
        subset: Option<&str>,
    ) -> (Option<String>, Option<ferry_model::UpstreamTls>) {
        let tls = rule.and_then(|dr| self.client_tls_of(dr, subset));
        let tls_mode = tls.as_ref().and_then(|(settings, _)| settings.mode.clone());
        let upstream_tls = match (rule, tls) {
            (Some(dr), Some((settings, field))) => self.upstream_tls(dr, &settings, &field),
            _ => None,
        };
        (tls_mode, upstream_tls)
    }

    /// The DestinationRule for a Service: one in the Service's namespace first, then any.
    fn destination_rule(&self, namespace: &str, name: &str) -> Option<&'a DestinationRule> {
        let mut rules: Vec<&DestinationRule> = self
            .destination_rules
            .iter()
            .filter(|dr| {
                let dr_ns = dr.metadata.namespace.as_deref().unwrap_or("default");
                service_of_host(&dr.spec.host, dr_ns)
                    .is_some_and(|(n, s)| n == namespace && s == name)
            })
            .collect();
        rules.sort_by_key(|dr| dr.metadata.namespace.as_deref() != Some(namespace));
        rules.first().copied()
    }

    fn policy_of(
        &mut self,
        dr: &DestinationRule,
        subset: Option<&str>,
        port: i32,
    ) -> ClusterPolicy {
        let port = u16::try_from(port).unwrap_or_default();
        match crate::translate::istio::destination::cluster_policy(dr, subset, port) {
            Ok(policy) => policy,
            Err(problem) => {
                self.rule_problem(dr, problem);
                ClusterPolicy::default()
            }
        }
    }

    /// A DestinationRule's `tls.mode`; a problem with it is reported and mTLS is decided
    /// automatically meanwhile.
    /// The rule's `tls` block in force for `subset`, if any (an invalid one is reported and
    /// left out).
    fn client_tls_of(
        &mut self,
        dr: &DestinationRule,
        subset: Option<&str>,
    ) -> Option<(ClientTlsSettings, String)> {
        match crate::translate::istio::destination::client_tls(dr, subset) {
            Ok(found) => found.map(|(settings, field)| (settings.clone(), field)),
            Err(problem) => {
                self.rule_problem(dr, problem);
                None
            }
        }
    }

    /// A BackendTLSPolicy's origination for the Service port (its problems are reported on
    /// the policy by `gateway_api::backend_tls`).
    fn backend_tls(
        &self,
        namespace: &str,
        name: &str,
        port: &ServicePort,
    ) -> Option<ferry_model::UpstreamTls> {
        let policy = super::upstream_tls::backend_tls_policy_for(
            self.backend_tls_policies,
            namespace,
            name,
            port.name.as_deref(),
        )?;
        Some(super::upstream_tls::from_backend_tls_policy(policy, self.config_maps).0)
    }

    /// SIMPLE / MUTUAL: the TLS to originate.
    fn upstream_tls(
        &mut self,
        dr: &DestinationRule,
        settings: &ClientTlsSettings,
        field: &str,
    ) -> Option<ferry_model::UpstreamTls> {
        if !matches!(settings.mode.as_deref(), Some("SIMPLE" | "MUTUAL")) {
            return None;
        }
        let rule_namespace = dr.metadata.namespace.as_deref().unwrap_or("default");
        let scope = super::upstream_tls::SecretScope {
            secrets: self.secrets,
            namespace: self.workload_namespace.as_deref().unwrap_or(rule_namespace),
        };
        let mut problems = Vec::new();
        let source = crate::translate::meta_of("DestinationRule", &dr.metadata);
        let tls = super::upstream_tls::from_destination_rule(
            source,
            &dr.spec.host,
            settings,
            field,
            &scope,
            &mut problems,
        );
        for problem in problems {
            self.rule_problem(dr, problem);
        }
        Some(tls)
    }

    fn rule_problem(&mut self, dr: &DestinationRule, (field, message): (String, String)) {
        let object = crate::translate::meta_of("DestinationRule", &dr.metadata);
        self.problems.push(Problem {
            object,
            field,
            message,
        });
    }

    /// Ready endpoints of one slice for one Service port, filtered by subset labels.
    fn slice_endpoints(
        &self,
        slice: &EndpointSlice,
        service_port: &ServicePort,
        subset: Option<&SubsetRef<'_>>,
        tls_mode: Option<&str>,
    ) -> Vec<Endpoint> {
        let Some(port) = endpoint_port(slice.ports.as_deref(), service_port) else {
            return Vec::new();
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        let mut endpoints = Vec::new();
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
            if ready == Some(false) {
                continue;
            }
            let pod_name = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_deref());
            let pod = pod_name.and_then(|n| self.pods.get(&(namespace, n)).copied());
            if let Some(subset) = subset {
                if !pod.is_some_and(|p| labels_match(subset.labels, p.metadata.labels.as_ref())) {
                    continue;
                }
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            endpoints.push(Endpoint {
                address: SocketAddr::new(ip, port),
                pod: pod_name.map(Into::into),
                workload: pod_name.and_then(|n| self.workloads.get(&(namespace, n)).cloned()),
                mtls: self
                    .mesh_tls
                    .endpoint_identity(pod, namespace, port, tls_mode),
            });
        }
        endpoints
    }

    /// The compiled PeerAuthentications (what a sidecar resolves its inbound mode from).
    pub fn mesh_tls_policies(&self) -> Vec<ferry_model::PeerAuthenticationPolicy> {
        self.mesh_tls.policies.clone()
    }

    pub fn into_clusters(self) -> Vec<Cluster> {
        self.clusters.into_values().collect()
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn select_port<'s>(
    service: &'s Service,
    port: Option<u32>,
    namespace: &str,
    name: &str,
) -> Result<&'s ServicePort, RefError> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[]);
    match port {
        Some(number) => ports
            .iter()
            .find(|p| p.port as u32 == number)
            .ok_or_else(|| RefError::PortNotFound {
                service: format!("{namespace}/{name}"),
                port: number.to_string(),
            }),
        None if ports.len() == 1 => Ok(&ports[0]),
        None => Err(RefError::PortRequired(format!("{namespace}/{name}"))),
    }
}

/// The endpoint port for a Service port: the slice port with the same name, else the
/// Service's numeric targetPort (or its port when no targetPort is given).
fn endpoint_port(slice_ports: Option<&[EndpointPort]>, service_port: &ServicePort) -> Option<u16> {
    let wanted = service_port.name.as_deref().unwrap_or_default();
    if let Some(ports) = slice_ports.filter(|p| !p.is_empty()) {
        let found = ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or_default() == wanted)?;
        return found.port.and_then(|p| u16::try_from(p).ok());
    }
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match &service_port.target_port {
        Some(IntOrString::Int(p)) => u16::try_from(*p).ok(),
        Some(IntOrString::String(_)) => None,
        None => u16::try_from(service_port.port).ok(),
    }
}

fn labels_match(
    wanted: &BTreeMap<String, String>,
    have: Option<&BTreeMap<String, String>>,
) -> bool {
    wanted
        .iter()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// h2c when the port says so: appProtocol `kubernetes.io/h2c`/`h2c`/`grpc`, or an Istio-style
/// port name `http2`, `grpc`, `h2c` (optionally followed by `-suffix`).
fn upstream_protocol(port: &ServicePort) -> UpstreamProtocol {
    let app = port.app_protocol.as_deref().unwrap_or_default();
    let name = port.name.as_deref().unwrap_or_default();
    let prefix = name.split('-').next().unwrap_or_default();
    let h2 = matches!(app, "kubernetes.io/h2c" | "h2c" | "grpc" | "http2")
        || matches!(prefix, "http2" | "grpc" | "h2c");
    if h2 {
        UpstreamProtocol::H2c
    } else {
        UpstreamProtocol::Http1
    }
}
