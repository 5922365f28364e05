//! Collecting routes per listener port and hostname, then ordering them by precedence.

use ferry_model::{
    Listener, ListenerTls, Meta, Route, ServerCertificate, StreamRoute, StreamRoutes, VirtualHost,
};
use std::collections::{BTreeMap, BTreeSet};

/// Sort key for routes sharing a virtual host; smaller sorts first and wins.
///
/// `family` keeps API families apart (Gateway API, then Istio, then Ingress) on the rare port
/// shared by several; within a family `rank` carries the spec's specificity rules and the rest
/// the spec's tie-breakers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct RouteOrder {
    pub family: u8,
    pub rank: [i64; 5],
    /// creationTimestamp (RFC 3339); objects without one sort after those with one.
    pub age: (bool, String),
    /// Position in the input (document order).
    pub load: usize,
    pub name: String,
    pub rule: usize,
    pub matched: usize,
}

impl RouteOrder {
    pub fn age_of(
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> (bool, String) {
        match &meta.creation_timestamp {
            Some(t) => (false, serde_json::to_string(t).unwrap_or_default()),
            None => (true, String::new()),
        }
    }
}

/// What a port speaks. One port cannot be both: the proxy decides per connection, before any
/// request, whether to run a TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    Http,
    Https,
    /// TLS routed by server name and passed through undecrypted.
    TlsPassthrough,
    /// TLS terminated here, the connection's bytes then relayed.
    TlsTerminate,
    Tcp,
}

impl PortProtocol {
    /// Ports that relay whole connections rather than serve HTTP requests.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            PortProtocol::TlsPassthrough | PortProtocol::TlsTerminate | PortProtocol::Tcp
        )
    }

    fn is_tls_stream(self) -> bool {
        matches!(
            self,
            PortProtocol::TlsPassthrough | PortProtocol::TlsTerminate
        )
    }

    fn terminates_tls(self) -> bool {
        matches!(self, PortProtocol::Https | PortProtocol::TlsTerminate)
    }
}

impl std::fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortProtocol::Http => "HTTP",
            PortProtocol::Https => "HTTPS",
            PortProtocol::TlsPassthrough => "TLS (passthrough)",
            PortProtocol::TlsTerminate => "TLS (terminated)",
            PortProtocol::Tcp => "TCP",
        })
    }
}

#[derive(Default)]
struct PortEntry {
    sources: BTreeSet<Meta>,
    protocol: Option<PortProtocol>,
    certificates: Vec<ServerCertificate>,
    client_validation: Option<ferry_model::ClientValidation>,
    /// Who asked for the mesh's mTLS on this port (Istio ISTIO_MUTUAL servers).
    mesh_tls: Option<Meta>,
    hosts: BTreeMap<String, Vec<(RouteOrder, Route)>>,
    streams: Vec<(RouteOrder, StreamRoute)>,
    /// Server names an HTTPS port passes through.
    passthrough: Vec<(RouteOrder, StreamRoute)>,
}

#[derive(Default)]
pub struct RouteTable {
    ports: BTreeMap<u16, PortEntry>,
}

impl RouteTable {
    /// Declares a listener port (it is bound even if no route attaches to it). The first
    /// declaration fixes the port's protocol; a later one speaking the other protocol is
    /// refused with a message naming who holds the port.
    pub fn listener(
        &mut self,
        port: u16,
        source: &Meta,
        protocol: PortProtocol,
    ) -> Result<(), String> {
        let entry = self.ports.entry(port).or_default();
        match entry.protocol {
            // TLS passed through and TLS terminated share a port, told apart by server name;
            // the port then holds certificates for the terminated names.
            Some(held) if held.is_tls_stream() && protocol.is_tls_stream() => {
                if protocol == PortProtocol::TlsTerminate {
                    entry.protocol = Some(protocol);
                }
            }
            Some(held) if held != protocol => {
                let holders: Vec<String> = entry.sources.iter().map(|m| m.to_string()).collect();
                return Err(format!(
                    "port {port} is already served as {held} by {}",
                    holders.join(", ")
                ));
            }
            _ => entry.protocol = Some(protocol),
        }
        entry.sources.insert(source.clone());
        Ok(())
    }

    /// Adds a certificate to an HTTPS port declared with [`RouteTable::listener`].
    /// Terminates the mesh's mTLS on an HTTPS port (Istio ISTIO_MUTUAL). One TLS handshake
    /// serves the whole port, so it cannot also present Secret certificates.
    pub fn mesh_tls(&mut self, port: u16, source: &Meta) -> Result<(), String> {
        let entry = self.ports.entry(port).or_default();
        if !entry.certificates.is_empty() {
            return Err(format!(
                "port {port} presents certificates from Secrets; ISTIO_MUTUAL needs a port of \
                 its own (the workload certificate is the port's only one)"
            ));
        }
        entry.mesh_tls = Some(source.clone());
        Ok(())
    }

    /// Whether the port terminates the mesh's mTLS, and who asked for it.
    pub fn mesh_tls_of(&self, port: u16) -> Option<&Meta> {
        self.ports.get(&port).and_then(|p| p.mesh_tls.as_ref())
    }

    pub fn certificate(&mut self, port: u16, certificate: ServerCertificate) {
        let entry = self.ports.entry(port).or_default();
        if !entry.certificates.contains(&certificate) {
            entry.certificates.push(certificate);
        }
    }

    /// Asks for client certificates on an HTTPS port. Servers sharing the port share one TLS
    /// configuration, so the strictest validation wins (required beats optional); a second,
    /// different one is refused with the message naming the first (its clients are then
    /// checked against the first's CA: stricter, never looser).
    pub fn client_validation(
        &mut self,
        port: u16,
        validation: ferry_model::ClientValidation,
    ) -> Result<(), String> {
        let entry = self.ports.entry(port).or_default();
        match &entry.client_validation {
            None => entry.client_validation = Some(validation),
            Some(held)
                if held.ca_pem == validation.ca_pem
                    && held.subject_alt_names == validation.subject_alt_names =>
            {
                if !validation.optional {
                    entry.client_validation = Some(validation);
                }
            }
            Some(held) if held.optional && !validation.optional => {
                entry.client_validation = Some(validation)
            }
            Some(held) => {
                return Err(format!(
                    "port {port} already verifies client certificates as {} asks; one TLS \
                     configuration serves the port, so this server's validation is not used",
                    held.source
                ))
            }
        }
        Ok(())
    }

    /// Whether the port verifies client certificates.
    pub fn validates_clients(&self, port: u16) -> Option<&ferry_model::ClientValidation> {
        self.ports.get(&port)?.client_validation.as_ref()
    }

    /// Declares a virtual host even without routes: a listener's hostname owns its requests
    /// (listener isolation), so they find this host, not a wider one, and get 404 when no
    /// route of that listener matches.
    pub fn host(&mut self, port: u16, host: &str) {
        let entry = self.ports.entry(port).or_default();
        entry.hosts.entry(host.to_ascii_lowercase()).or_default();
    }

    /// Adds a connection-level route to a TCP or TLS port.
    pub fn add_stream(&mut self, port: u16, order: RouteOrder, route: StreamRoute) {
        let entry = self.ports.entry(port).or_default();
        entry.streams.push((order, route));
    }

    /// Passes the TLS connections for `route`'s server names through on HTTPS `port`
    /// (declared with [`RouteTable::listener`]); the port's other names stay HTTPS.
    pub fn add_passthrough(&mut self, port: u16, order: RouteOrder, route: StreamRoute) {
        let entry = self.ports.entry(port).or_default();
        entry.passthrough.push((order, route));
    }

    /// Routes a TCP port holds beyond the one it forwards to (the oldest): (unused, used, port).
    pub fn shadowed_tcp_routes(&self) -> Vec<(Meta, Meta, u16)> {
        let mut out = Vec::new();
        for (port, entry) in &self.ports {
            if entry.protocol != Some(PortProtocol::Tcp) {
                continue;
            }
            let mut routes: Vec<_> = entry.streams.iter().collect();
            routes.sort_by(|a, b| a.0.cmp(&b.0));
            let Some(((_, used), rest)) = routes.split_first() else {
                continue;
            };
            let others = rest.iter().filter(|(_, r)| r.meta != used.meta);
            out.extend(others.map(|(_, r)| (r.meta.clone(), used.meta.clone(), *port)));
        }
        out
    }

    pub fn add(&mut self, port: u16, host: &str, order: RouteOrder, route: Route) {
        let entry = self.ports.entry(port).or_default();
        let routes = entry.hosts.entry(host.to_ascii_lowercase()).or_default();
        routes.push((order, route));
    }

    /// Calls `f` on every HTTP route, with the objects that declared its port.
    pub fn for_each_route(&mut self, mut f: impl FnMut(&[Meta], &mut Route)) {
        for entry in self.ports.values_mut() {
            let sources: Vec<Meta> = entry.sources.iter().cloned().collect();
            for (_, route) in entry.hosts.values_mut().flatten() {
                f(&sources, route);
            }
        }
    }

    /// Whether `port` is declared as an HTTPS listener.
    pub fn is_https(&self, port: u16) -> bool {
        self.ports
            .get(&port)
            .is_some_and(|p| p.protocol == Some(PortProtocol::Https))
    }

    /// Ports that have a host `host` already (used to append Ingress default backends).
    pub fn hosts_on(&self, port: u16) -> Vec<String> {
        self.ports
            .get(&port)
            .map(|p| p.hosts.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn into_listeners(self) -> Vec<Listener> {
        self.ports
            .into_iter()
            .map(|(port, entry)| {
                let protocol = entry.protocol.unwrap_or(PortProtocol::Http);
                Listener {
                    name: format!("port-{port}").into(),
                    port,
                    sources: entry.sources.into_iter().collect(),
                    virtual_hosts: entry.hosts.into_iter().map(virtual_host).collect(),
                    tls: protocol.terminates_tls().then(|| ListenerTls {
                        certificates: entry.certificates.into(),
                        client_validation: entry.client_validation,
                        mesh: entry.mesh_tls.is_some(),
                    }),
                    stream: protocol
                        .is_stream()
                        .then(|| stream_routes(protocol, entry.streams)),
                    passthrough: (protocol == PortProtocol::Https && !entry.passthrough.is_empty())
                        .then(|| stream_routes(PortProtocol::TlsPassthrough, entry.passthrough)),
                }
            })
            .collect()
    }
}

/// A TCP port takes its oldest route; TLS ports choose by server name among all of them.
fn stream_routes(
    protocol: PortProtocol,
    mut routes: Vec<(RouteOrder, StreamRoute)>,
) -> StreamRoutes {
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    StreamRoutes {
        by_server_name: protocol != PortProtocol::Tcp,
        routes: routes.into_iter().map(|(_, r)| r).collect(),
    }
}

fn virtual_host((hostname, mut routes): (String, Vec<(RouteOrder, Route)>)) -> VirtualHost {
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    VirtualHost {
        hostname: hostname.into(),
        routes: routes.into_iter().map(|(_, r)| r).collect(),
    }
}
