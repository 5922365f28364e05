//! Sending: the header a relayed connection sends its backend first (a DestinationRule's
//! `proxyProtocol`), so the backend sees the client's address instead of the proxy's.

use ferry_model::ProxyProtocol;
use std::net::SocketAddr;

use super::V2_SIGNATURE;

/// The header for a connection from `client` to `local` (the proxy's address the client
/// reached). Unknown addresses (or mixed families) send v1's `UNKNOWN` / v2's LOCAL command.
pub fn header(
    version: ProxyProtocol,
    client: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Vec<u8> {
    let pair = match (client, local) {
        (Some(c), Some(l)) if c.is_ipv4() == l.is_ipv4() => Some((c, l)),
        _ => None,
    };
    match version {
        ProxyProtocol::V1 => v1(pair),
        ProxyProtocol::V2 => v2(pair),
    }
}

fn v1(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    match pair {
        Some((client, local)) => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            let (source, destination) = (client.ip(), local.ip());
            let (source_port, destination_port) = (client.port(), local.port());
            format!("PROXY {family} {source} {destination} {source_port} {destination_port}\r\n")
                .into_bytes()
        }
        None => b"PROXY UNKNOWN\r\n".to_vec(),
    }
}

fn v2(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let Some((client, local)) = pair else {
        // Version 2, command LOCAL, family UNSPEC, no addresses.
        out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        return out;
    };
    let mut addresses = Vec::with_capacity(36);
    let family = match (client.ip(), local.ip()) {
        (std::net::IpAddr::V4(c), std::net::IpAddr::V4(l)) => {
            addresses.extend_from_slice(&c.octets());
            addresses.extend_from_slice(&l.octets());
            0x11 // TCP over IPv4
        }
        (c, l) => {
            addresses.extend_from_slice(&to_v6(c).octets());
            addresses.extend_from_slice(&to_v6(l).octets());
            0x21 // TCP over IPv6
        }
    };
    addresses.extend_from_slice(&client.port().to_be_bytes());
    addresses.extend_from_slice(&local.port().to_be_bytes());
    out.extend_from_slice(&[0x21, family]); // version 2, command PROXY
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    out.extend_from_slice(&addresses);
    out
}

fn to_v6(ip: std::net::IpAddr) -> std::net::Ipv6Addr {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn v1_is_one_text_line() {
        let line = header(
            ProxyProtocol::V1,
            addr("192.0.2.7:51000"),
            addr("10.0.0.1:443"),
        );
        assert_eq!(line, b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n");
        let line = header(
            ProxyProtocol::V1,
            addr("[2001:db8::7]:51000"),
            addr("[2001:db8::1]:443"),
        );
        assert_eq!(line, b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n");
        assert_eq!(header(ProxyProtocol::V1, None, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_carries_addresses_and_ports_in_network_order() {
        let bytes = header(
            ProxyProtocol::V2,
            addr("192.0.2.7:51000"),
            addr("10.0.0.1:443"),
        );
        assert_eq!(&bytes[..12], &V2_SIGNATURE);
        assert_eq!(bytes[12], 0x21);
        assert_eq!(bytes[13], 0x11);
        assert_eq!(u16::from_be_bytes([bytes[14], bytes[15]]), 12);
        assert_eq!(&bytes[16..20], &[192, 0, 2, 7]);
        assert_eq!(&bytes[20..24], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([bytes[24], bytes[25]]), 51000);
        assert_eq!(u16::from_be_bytes([bytes[26], bytes[27]]), 443);
        assert_eq!(bytes.len(), 28);
        let local = header(ProxyProtocol::V2, None, None);
        assert_eq!(&local[12..], &[0x20, 0x00, 0x00, 0x00]);
    }
}
