//! Listeners that forward whole connections instead of HTTP requests: TCP (Gateway API
//! TCPRoute, Istio `tcp` routes) and TLS by server name (TLSRoute, Istio `tls` routes) —
//! passed through untouched, or terminated first when the listener carries certificates.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::{Meta, Str, WeightedBackend};

/// The routes of a connection-level port. The route is chosen once per connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRoutes {
    /// Routes are chosen by the server name of the client's TLS ClientHello (TLS
    /// listeners); otherwise every connection takes the first route (TCP).
    pub by_server_name: bool,
    /// In precedence order: among routes whose hostnames match, the most specific pattern
    /// wins, then the earlier route.
    pub routes: Arc<[StreamRoute]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRoute {
    /// The route object (TLSRoute, TCPRoute, VirtualService) this came from.
    pub meta: Meta,
    /// Stable name for metrics and logs: `<namespace>/<name>/rule/<n>`.
    pub name: Str,
    /// Server-name patterns: an exact name, `*.suffix`, or `*` (any name, and a client that
    /// sends none). Ignored on TCP ports.
    pub hostnames: Arc<[Str]>,
    /// Weighted choice per connection; an invalid target closes the connection.
    pub backends: Arc<[WeightedBackend]>,
    /// TLS is terminated here (with the listener's certificates) and the decrypted bytes
    /// relayed; otherwise a TLS connection passes through untouched. One port may hold both,
    /// told apart by server name.
    #[serde(default, skip_serializing_if = "is_false")]
    pub terminate: bool,
    /// Istio `destinationSubnets`: the route applies only to connections whose destination
    /// address (the gateway's own, or the one a sidecar's client dialled) is in one of
    /// these blocks; empty: any.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub destination_subnets: Arc<[crate::authz::IpBlock]>,
}

impl StreamRoute {
    /// Whether a connection to `destination` may take this route.
    pub fn admits_destination(&self, destination: Option<std::net::IpAddr>) -> bool {
        self.destination_subnets.is_empty()
            || destination.is_some_and(|ip| {
                self.destination_subnets
                    .iter()
                    .any(|block| block.contains(ip))
            })
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

impl StreamRoutes {
    /// The route for a connection to `destination` that named `server_name` in its
    /// ClientHello (None: no SNI, or a TCP port): the most specific matching pattern, the
    /// earliest route on a tie; on a TCP port the first route.
    pub fn route_for(
        &self,
        server_name: Option<&str>,
        destination: Option<std::net::IpAddr>,
    ) -> Option<&StreamRoute> {
        let mut routes = self
            .routes
            .iter()
            .filter(|r| r.admits_destination(destination));
        if !self.by_server_name {
            return routes.next();
        }
        best_by_name(routes, server_name)
    }

    /// Whether any route depends on the destination address.
    pub fn by_destination(&self) -> bool {
        self.routes
            .iter()
            .any(|r| !r.destination_subnets.is_empty())
    }
}

/// Among `routes`, the one whose pattern matches `server_name` most specifically (the
/// earliest on a tie).
fn best_by_name<'r>(
    routes: impl IntoIterator<Item = &'r StreamRoute>,
    server_name: Option<&str>,
) -> Option<&'r StreamRoute> {
    let mut best: Option<(usize, &StreamRoute)> = None;
    for route in routes {
        let score = route
            .hostnames
            .iter()
            .filter_map(|pattern| specificity(pattern, server_name))
            .max();
        if let Some(score) = score {
            if best.is_none_or(|(held, _)| score > held) {
                best = Some((score, route));
            }
        }
    }
    best.map(|(_, route)| route)
}

/// How closely `pattern` matches the name: exact beats the longest wildcard suffix beats `*`.
/// A client without a server name only matches `*`.
fn specificity(pattern: &str, name: Option<&str>) -> Option<usize> {
    let Some(name) = name else {
        return (pattern == "*").then_some(0);
    };
    match pattern.strip_prefix('*') {
        Some("") => Some(0),
        Some(suffix) => {
            let matches = name.len() > suffix.len()
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
            matches.then_some(suffix.len())
        }
        None => pattern.eq_ignore_ascii_case(name).then_some(usize::MAX),
    }
}

/// What a sidecar lets out on one port beyond the Services it knows by ClusterIP: the
/// destinations of ServiceEntries and of VirtualService `tls`/`tcp` routes bound to the mesh.
/// HTTP hosts with endpoints are virtual hosts of the port's listener instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundPort {
    pub port: u16,
    /// TLS connections, chosen by the ClientHello's server name.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub tls: Arc<[StreamRoute]>,
    /// TCP connections, chosen by the address dialled; the first match wins.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub tcp: Arc<[AddressRoute]>,
    /// HTTP hosts (Host header patterns) whose connections go on to the address dialled
    /// (ServiceEntry `resolution: NONE`).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub http_passthrough: Arc<[Str]>,
    /// The port's listener routes ServiceEntry hosts by Host header: a connection to an
    /// address no Service has may still be for one of them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub http_hosts: bool,
}

/// A connection-level route for connections to some addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRoute {
    /// IP addresses or CIDR blocks; empty matches any address.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub addresses: Arc<[Str]>,
    pub route: StreamRoute,
}

fn is_empty<T>(items: &Arc<[T]>) -> bool {
    items.is_empty()
}

impl OutboundPort {
    /// The TLS route for a server name (the most specific pattern, then the earlier route)
    /// of a connection to `destination`.
    pub fn tls_route(
        &self,
        server_name: Option<&str>,
        destination: std::net::IpAddr,
    ) -> Option<&StreamRoute> {
        let routes = self
            .tls
            .iter()
            .filter(|r| r.admits_destination(Some(destination)));
        best_by_name(routes, server_name)
    }

    /// The TCP route of a connection to an address that names a Service of the mesh: only
    /// routes naming the address apply (a catch-all entry for the port does not take
    /// traffic meant for a Service, as Istio's per-address listeners win over its
    /// wildcard one).
    pub fn tcp_route_naming(&self, address: std::net::IpAddr) -> Option<&StreamRoute> {
        self.tcp
            .iter()
            .find(|r| r.addresses.iter().any(|a| cidr_contains(a, address)))
            .map(|r| &r.route)
    }

    pub fn tcp_route(&self, address: std::net::IpAddr) -> Option<&StreamRoute> {
        self.tcp
            .iter()
            .find(|r| {
                r.addresses.is_empty() || r.addresses.iter().any(|a| cidr_contains(a, address))
            })
            .map(|r| &r.route)
    }

    /// Whether an HTTP host (without its port) is let through to the address dialled.
    pub fn passes_http_host(&self, host: &str) -> bool {
        self.http_passthrough
            .iter()
            .any(|pattern| specificity(pattern, Some(host)).is_some())
    }
}

/// Whether `block` (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`) holds `address`; a block that
/// does not parse holds nothing.
pub fn cidr_contains(block: &str, address: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (network, bits) = match block.split_once('/') {
        Some((network, bits)) => (network, bits.parse::<u32>().ok()),
        None => (block, None),
    };
    let Ok(network) = network.parse::<IpAddr>() else {
        return false;
    };
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendTarget;

    fn route(name: &str, hostnames: &[&str]) -> StreamRoute {
        StreamRoute {
            meta: Meta::new("TLSRoute", "default", name),
            name: name.into(),
            hostnames: hostnames.iter().map(|h| Str::from(*h)).collect(),
            backends: vec![WeightedBackend {
                weight: 1,
                target: BackendTarget::Cluster(name.into()),
                filters: Arc::new([]),
            }]
            .into(),
            terminate: false,
            destination_subnets: Arc::new([]),
        }
    }

    fn chosen(routes: &StreamRoutes, name: Option<&str>) -> Option<String> {
        routes.route_for(name, None).map(|r| r.name.to_string())
    }

    #[test]
    fn destination_subnets_narrow_a_route_to_the_addresses_reached() {
        let mut internal = route("internal", &["*"]);
        internal.destination_subnets =
            vec![crate::authz::IpBlock::parse("10.0.0.0/8").unwrap()].into();
        let routes = StreamRoutes {
            by_server_name: false,
            routes: vec![internal, route("rest", &["*"])].into(),
        };
        let to = |ip: &str| {
            let ip = ip.parse().ok();
            routes.route_for(None, ip).map(|r| r.name.to_string())
        };
        assert_eq!(to("10.1.2.3").as_deref(), Some("internal"));
        assert_eq!(to("192.0.2.1").as_deref(), Some("rest"));
        assert_eq!(
            to("not an address").as_deref(),
            Some("rest"),
            "unknown: not inside"
        );
        assert!(routes.by_destination());
    }

    #[test]
    fn the_most_specific_server_name_pattern_wins() {
        let routes = StreamRoutes {
            by_server_name: true,
            routes: vec![
                route("any", &["*"]),
                route("wild", &["*.example.com"]),
                route("exact", &["db.example.com"]),
                route("later-exact", &["db.example.com"]),
            ]
            .into(),
        };
        assert_eq!(
            chosen(&routes, Some("db.example.com")).as_deref(),
            Some("exact")
        );
        assert_eq!(
            chosen(&routes, Some("DB.Example.com")).as_deref(),
            Some("exact")
        );
        assert_eq!(
            chosen(&routes, Some("mq.example.com")).as_deref(),
            Some("wild")
        );
        assert_eq!(chosen(&routes, Some("example.com")).as_deref(), Some("any"));
        assert_eq!(chosen(&routes, None).as_deref(), Some("any"));
    }

    #[test]
    fn without_a_catch_all_unknown_and_missing_names_find_no_route() {
        let routes = StreamRoutes {
            by_server_name: true,
            routes: vec![route("wild", &["*.example.com"])].into(),
        };
        assert_eq!(chosen(&routes, Some("example.org")), None);
        assert_eq!(chosen(&routes, None), None);
    }

    #[test]
    fn address_blocks_hold_their_addresses_only() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(cidr_contains("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!cidr_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(cidr_contains("192.0.2.7", ip("192.0.2.7")));
        assert!(!cidr_contains("192.0.2.7", ip("192.0.2.8")));
        assert!(cidr_contains("0.0.0.0/0", ip("203.0.113.9")));
        assert!(cidr_contains("2001:db8::/32", ip("2001:db8::1")));
        assert!(!cidr_contains("2001:db8::/32", ip("10.0.0.1")));
        assert!(!cidr_contains("not-an-address", ip("10.0.0.1")));
    }

    #[test]
    fn a_tcp_port_takes_its_first_route() {
        let routes = StreamRoutes {
            by_server_name: false,
            routes: vec![route("first", &[]), route("second", &[])].into(),
        };
        assert_eq!(chosen(&routes, Some("x")).as_deref(), Some("first"));
        assert_eq!(chosen(&routes, None).as_deref(), Some("first"));
    }
}
