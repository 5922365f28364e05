//! A sidecar's outbound destinations beyond the Services it knows by ClusterIP, collected per
//! port while translating (ServiceEntries, VirtualService `tls`/`tcp` routes for the mesh).

use ferry_model::{AddressRoute, OutboundPort, Str, StreamRoute};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
struct PortRoutes {
    tls: Vec<StreamRoute>,
    tcp: Vec<AddressRoute>,
    http_passthrough: BTreeSet<String>,
    http_hosts: bool,
}

#[derive(Default)]
pub struct Outbound {
    ports: BTreeMap<u16, PortRoutes>,
}

impl Outbound {
    /// A TLS route chosen by server name; earlier routes win ties.
    pub fn tls(&mut self, port: u16, route: StreamRoute) {
        self.ports.entry(port).or_default().tls.push(route);
    }

    /// A TCP route for connections to `addresses` (empty: any); the first match wins.
    pub fn tcp(&mut self, port: u16, addresses: Vec<String>, route: StreamRoute) {
        let addresses = addresses.into_iter().map(Str::from).collect();
        let entry = AddressRoute { addresses, route };
        self.ports.entry(port).or_default().tcp.push(entry);
    }

    /// An HTTP host whose connections go on to the address the client dialled.
    pub fn http_passthrough(&mut self, port: u16, host: &str) {
        let routes = self.ports.entry(port).or_default();
        routes.http_passthrough.insert(host.to_ascii_lowercase());
    }

    /// The port's listener routes ServiceEntry hosts by Host header.
    pub fn http_hosts(&mut self, port: u16) {
        self.ports.entry(port).or_default().http_hosts = true;
    }

    pub fn into_ports(self) -> Vec<OutboundPort> {
        self.ports
            .into_iter()
            .map(|(port, routes)| OutboundPort {
                port,
                tls: routes.tls.into(),
                // Routes for named addresses before catch-alls, keeping their order otherwise.
                tcp: stable_specific_first(routes.tcp).into(),
                http_passthrough: routes.http_passthrough.into_iter().map(Str::from).collect(),
                http_hosts: routes.http_hosts,
            })
            .collect()
    }
}

fn stable_specific_first(mut routes: Vec<AddressRoute>) -> Vec<AddressRoute> {
    routes.sort_by_key(|r| r.addresses.is_empty());
    routes
}
