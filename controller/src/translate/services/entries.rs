//! ServiceEntry hosts as clusters. A host's port becomes a cluster named `host:port` whose
//! endpoints are the entry's addresses (`resolution: STATIC`), names the proxy resolves itself
//! (`DNS`), or whatever address the client dialled (`NONE`). A DestinationRule for the host
//! applies to it as to a Service (policies, subsets by endpoint labels, TLS origination).

use ferry_model::{Cluster, ClusterPolicy, DnsName, Endpoint, ServiceId, UpstreamProtocol};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{labels_match, RefError, ServiceCatalog, SubsetRef};
use crate::inputs::istio::{DestinationRule, ServiceEntry, ServiceEntryPort, WorkloadEntrySpec};

/// How a ServiceEntry's endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The address the client dialled.
    None,
    /// The entry's endpoint addresses (or the Pods its workloadSelector picks).
    Static,
    /// Names resolved by the proxy: the endpoints' addresses, else the host itself.
    Dns,
}

/// `spec.resolution`, NONE when unset as in Istio.
pub fn resolution(entry: &ServiceEntry) -> Result<Resolution, String> {
    match entry.spec.resolution.as_deref().unwrap_or("NONE") {
        "NONE" => Ok(Resolution::None),
        "STATIC" => Ok(Resolution::Static),
        // Envoy's LOGICAL_DNS connects to the first answer; every answer is an endpoint here.
        "DNS" | "DNS_ROUND_ROBIN" => Ok(Resolution::Dns),
        other => Err(format!(
            "resolution {other} is not one of NONE, STATIC, DNS, DNS_ROUND_ROBIN"
        )),
    }
}

/// What a ServiceEntry port carries, which decides how a sidecar recognises its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryProtocol {
    /// By Host header.
    Http,
    /// By the ClientHello's server name.
    Tls,
    /// By the address dialled.
    Tcp,
}

pub fn port_protocol(port: &ServiceEntryPort) -> EntryProtocol {
    match port
        .protocol
        .as_deref()
        .unwrap_or("TCP")
        .to_ascii_uppercase()
        .as_str()
    {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => EntryProtocol::Http,
        "HTTPS" | "TLS" => EntryProtocol::Tls,
        _ => EntryProtocol::Tcp,
    }
}

/// Whether workloads in namespace `from` see the entry: `exportTo` unset or `*` exports it
/// everywhere, `.` to its own namespace, a name to that namespace.
pub fn visible_from(entry: &ServiceEntry, from: &str) -> bool {
    let own = entry.metadata.namespace.as_deref().unwrap_or("default");
    let export = &entry.spec.export_to;
    export.is_empty()
        || export
            .iter()
            .any(|e| e == "*" || e == from || (e == "." && own == from))
}

/// An exact host (case-insensitive) or a `*.suffix` wildcard matching a longer name.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn entry_label(entry: &ServiceEntry) -> String {
    format!(
        "{}/{}",
        entry.metadata.namespace.as_deref().unwrap_or("default"),
        entry.metadata.name.as_deref().unwrap_or_default()
    )
}

impl<'a> ServiceCatalog<'a> {
    /// The ServiceEntry declaring `host` that namespace `from` sees: one naming the host
    /// exactly first, then the longest wildcard; among equals one with `port` (several
    /// entries may declare one host, each with its ports, as in Istio), then one in `from`,
    /// then the first read. With the host as the entry writes it.
    pub fn entry_for_host(
        &self,
        host: &str,
        from: &str,
        port: Option<u32>,
    ) -> Option<(&'a ServiceEntry, &'a str)> {
        let usable = |e: &&ServiceEntry| {
            visible_from(e, from) && crate::translate::istio::entries::problems(e).is_empty()
        };
        let mut found: Vec<(usize, bool, bool, &'a ServiceEntry, &'a str)> = Vec::new();
        for entry in self.service_entries.iter().filter(usable) {
            let local = entry.metadata.namespace.as_deref() == Some(from);
            let has_port = port.is_none_or(|n| entry.spec.ports.iter().any(|p| p.number == n));
            for pattern in entry.spec.hosts.iter().filter(|p| host_matches(p, host)) {
                let score = if pattern.starts_with('*') {
                    pattern.len()
                } else {
                    usize::MAX
                };
                found.push((score, has_port, local, entry, pattern.as_str()));
            }
        }
        // Stable: the first read wins among equals.
        found.sort_by_key(|(score, has_port, local, ..)| {
            (std::cmp::Reverse(*score), !has_port, !local)
        });
        found.first().map(|(.., entry, host)| (*entry, *host))
    }

    /// Resolves a ServiceEntry host at `port` (None = the entry's only port) and returns the
    /// cluster name, registering the cluster in the snapshot.
    pub fn resolve_entry(
        &mut self,
        entry: &'a ServiceEntry,
        host: &str,
        port: Option<u32>,
        subset: Option<SubsetRef<'_>>,
    ) -> Result<Arc<str>, RefError> {
        let entry_port = entry_port(entry, host, port)?;
        let cluster_name = match &subset {
            Some(s) => format!("{host}:{}/{}", entry_port.number, s.name),
            None => format!("{host}:{}", entry_port.number),
        };
        if !self.clusters.contains_key(&cluster_name) {
            let cluster = self.entry_cluster(&cluster_name, entry, host, entry_port, subset);
            self.clusters.insert(cluster_name.clone(), cluster);
        }
        Ok(cluster_name.into())
    }

    fn entry_cluster(
        &mut self,
        cluster_name: &str,
        entry: &'a ServiceEntry,
        host: &str,
        port: &ServiceEntryPort,
        subset: Option<SubsetRef<'_>>,
    ) -> Cluster {
        let namespace = entry.metadata.namespace.as_deref().unwrap_or("default");
        let rule = subset
            .as_ref()
            .map(|s| s.rule)
            .or_else(|| self.entry_rule(host, namespace));
        let subset_name = subset.as_ref().map(|s| s.name);
        let (tls_mode, tls) = self.rule_tls(rule, subset_name);
        let wanted = subset.as_ref().map(|s| s.labels);
        let number = i32::try_from(port.number).unwrap_or_default();
        let policy = rule.map_or_else(ClusterPolicy::default, |dr| {
            self.policy_of(dr, subset_name, number)
        });
        let resolution = resolution(entry).unwrap_or(Resolution::None);
        let (endpoints, dns) = match resolution {
            Resolution::None => (Vec::new(), Vec::new()),
            Resolution::Static => (
                self.static_endpoints(entry, port, wanted, tls_mode.as_deref()),
                Vec::new(),
            ),
            Resolution::Dns => (Vec::new(), dns_names(entry, host, port, wanted)),
        };
        let meta = match &subset {
            Some(s) => crate::translate::meta_of("DestinationRule", &s.rule.metadata),
            None => crate::translate::meta_of("ServiceEntry", &entry.metadata),
        };
        Cluster {
            name: cluster_name.into(),
            meta,
            service: ServiceId {
                namespace: namespace.into(),
                name: host.into(),
            },
            protocol: entry_upstream_protocol(port),
            endpoints: endpoints.into(),
            policy,
            tls,
            dns: dns.into(),
            original_destination: resolution == Resolution::None,
        }
    }

    /// A DestinationRule for a ServiceEntry host (its `host` names it exactly): one in the
    /// entry's namespace first, then any.
    pub(crate) fn entry_rule(&self, host: &str, namespace: &str) -> Option<&'a DestinationRule> {
        let mut rules: Vec<&DestinationRule> = self
            .destination_rules
            .iter()
            .filter(|dr| dr.spec.host.eq_ignore_ascii_case(host))
            .collect();
        rules.sort_by_key(|dr| dr.metadata.namespace.as_deref() != Some(namespace));
        rules.first().copied()
    }

    /// STATIC endpoints: the entry's addresses, or its workloadSelector's Pods (in its
    /// namespace).
    fn static_endpoints(
        &self,
        entry: &ServiceEntry,
        port: &ServiceEntryPort,
        wanted: Option<&std::collections::BTreeMap<String, String>>,
        tls_mode: Option<&str>,
    ) -> Vec<Endpoint> {
        let mut endpoints: Vec<Endpoint> = match &entry.spec.workload_selector {
            Some(selector) => self.selected_pods(entry, &selector.labels, port, wanted, tls_mode),
            None => entry
                .spec
                .endpoints
                .iter()
                .filter(|e| wanted.is_none_or(|w| labels_match(w, Some(&e.labels))))
                .filter_map(|e| self.entry_endpoint(entry, e, port, tls_mode))
                .collect(),
        };
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        endpoints
    }

    fn entry_endpoint(
        &self,
        entry: &ServiceEntry,
        endpoint: &WorkloadEntrySpec,
        port: &ServiceEntryPort,
        tls_mode: Option<&str>,
    ) -> Option<Endpoint> {
        let ip: IpAddr = endpoint.address.as_deref()?.parse().ok()?;
        let number = endpoint_port_number(endpoint, port)?;
        Some(Endpoint {
            address: SocketAddr::new(ip, number),
            pod: None,
            workload: None,
            mtls: self.entry_identity(entry, endpoint.service_account.as_deref(), tls_mode),
        })
    }

    fn selected_pods(
        &self,
        entry: &ServiceEntry,
        selector: &std::collections::BTreeMap<String, String>,
        port: &ServiceEntryPort,
        wanted: Option<&std::collections::BTreeMap<String, String>>,
        tls_mode: Option<&str>,
    ) -> Vec<Endpoint> {
        let namespace = entry.metadata.namespace.as_deref().unwrap_or("default");
        let number = u16::try_from(port.target_port.unwrap_or(port.number)).ok();
        let mut found = Vec::new();
        for (&(pod_ns, name), pod) in &self.pods {
            let labels = pod.metadata.labels.as_ref();
            let chosen = pod_ns == namespace
                && labels_match(selector, labels)
                && wanted.is_none_or(|w| labels_match(w, labels));
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
            let (true, Some(ip), Some(number)) = (chosen, ip, number) else {
                continue;
            };
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            found.push(Endpoint {
                address: SocketAddr::new(ip, number),
                pod: Some(name.into()),
                workload: self.workloads.get(&(pod_ns, name)).cloned(),
                mtls: self
                    .mesh_tls
                    .endpoint_identity(Some(pod), namespace, number, tls_mode),
            });
        }
        found
    }

    /// The SPIFFE ID a MESH_INTERNAL endpoint proves with mesh mTLS: the entry's only
    /// subjectAltName, else the endpoint's ServiceAccount in the entry's namespace. External
    /// endpoints, and rules that originate their own TLS or disable it, get none.
    fn entry_identity(
        &self,
        entry: &ServiceEntry,
        service_account: Option<&str>,
        tls_mode: Option<&str>,
    ) -> Option<ferry_model::Str> {
        let internal = entry.spec.location.as_deref() == Some("MESH_INTERNAL");
        if !internal || matches!(tls_mode, Some("DISABLE" | "SIMPLE" | "MUTUAL")) {
            return None;
        }
        if let [only] = entry.spec.subject_alt_names.as_slice() {
            return Some(only.as_str().into());
        }
        let namespace = entry.metadata.namespace.as_deref().unwrap_or("default");
        let account = service_account?;
        Some(
            ferry_model::SpiffeId::new(&self.mesh_tls.trust_domain, namespace, account)
                .to_string()
                .into(),
        )
    }
}

/// The entry's port numbered `port`, or its only port.
fn entry_port<'e>(
    entry: &'e ServiceEntry,
    host: &str,
    port: Option<u32>,
) -> Result<&'e ServiceEntryPort, RefError> {
    let ports = &entry.spec.ports;
    match port {
        Some(number) => {
            ports
                .iter()
                .find(|p| p.number == number)
                .ok_or_else(|| RefError::EntryPortNotFound {
                    entry: entry_label(entry),
                    host: host.into(),
                    port: number.to_string(),
                })
        }
        None if ports.len() == 1 => Ok(&ports[0]),
        None => Err(RefError::EntryPortRequired {
            entry: entry_label(entry),
            host: host.into(),
        }),
    }
}

/// An endpoint's port for an entry port: its `ports` entry under the port's name, else the
/// port's targetPort, else its number.
fn endpoint_port_number(endpoint: &WorkloadEntrySpec, port: &ServiceEntryPort) -> Option<u16> {
    let named = port
        .name
        .as_ref()
        .and_then(|name| endpoint.ports.get(name))
        .copied();
    u16::try_from(named.or(port.target_port).unwrap_or(port.number)).ok()
}

/// The names a DNS entry's proxy resolves: its endpoints' addresses, else the host.
fn dns_names(
    entry: &ServiceEntry,
    host: &str,
    port: &ServiceEntryPort,
    wanted: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<DnsName> {
    let endpoints = &entry.spec.endpoints;
    if endpoints.is_empty() {
        let number = u16::try_from(port.target_port.unwrap_or(port.number)).unwrap_or_default();
        return vec![DnsName {
            host: host.into(),
            port: number,
        }];
    }
    endpoints
        .iter()
        .filter(|e| wanted.is_none_or(|w| labels_match(w, Some(&e.labels))))
        .filter_map(|e| {
            Some(DnsName {
                host: e.address.as_deref()?.into(),
                port: endpoint_port_number(e, port)?,
            })
        })
        .collect()
}

fn entry_upstream_protocol(port: &ServiceEntryPort) -> UpstreamProtocol {
    match port
        .protocol
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("HTTP2" | "GRPC") => UpstreamProtocol::H2c,
        _ => UpstreamProtocol::Http1,
    }
}
