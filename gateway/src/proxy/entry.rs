//! Where a request entered the proxy: the listener whose routes apply and, for a sidecar's
//! captured connections, the address the app dialled.

/// Where a request entered the proxy.
pub(super) struct Entry {
    /// The listener (route table) that applies.
    pub port: u16,
    /// Captured outbound: the IP the app dialled.
    pub dialled_ip: Option<std::net::IpAddr>,
    /// Captured inbound: the app's address, the pod IP and port the client dialled (not
    /// loopback: an app port bound to 127.0.0.1 only stays private, as in Istio since 1.10).
    pub inbound: Option<std::net::SocketAddr>,
}

impl Entry {
    /// `original`: the original destination of a captured connection; `inbound_port`: a
    /// sidecar's inbound capture port.
    pub(super) fn of(
        local_port: u16,
        original: Option<std::net::SocketAddr>,
        inbound_port: Option<u16>,
    ) -> Entry {
        match original {
            Some(original) if Some(local_port) == inbound_port => Entry {
                port: original.port(),
                dialled_ip: None,
                inbound: Some(original),
            },
            Some(original) => Entry {
                port: original.port(),
                dialled_ip: Some(original.ip()),
                inbound: None,
            },
            None => Entry {
                port: local_port,
                dialled_ip: None,
                inbound: None,
            },
        }
    }
}
