//! The reader on real loopback sockets: headers as load balancers and Ferry's own sender write
//! them, followed by the connection's first bytes, which must reach the server untouched.

use super::read::{read, HeaderError};
use super::send::header;
use ferry_model::ProxyProtocol;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Writes `pieces` (pausing between them) then PAYLOAD; returns what the reader made of the
/// header and what the server read after it.
async fn exchange(pieces: Vec<Vec<u8>>) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        for piece in pieces {
            tcp.write_all(&piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tcp.write_all(PAYLOAD).await.unwrap();
        tcp.shutdown().await.unwrap();
    });
    let (mut tcp, _) = listener.accept().await.unwrap();
    let result = read(&mut tcp).await;
    let mut rest = Vec::new();
    if result.is_ok() {
        tcp.read_to_end(&mut rest).await.unwrap();
    }
    client.await.unwrap();
    (result, rest)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn version_1_reports_the_client_and_leaves_the_request() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n".to_vec();
    let (client, rest) = exchange(vec![line]).await;
    assert_eq!(client, Ok(Some(addr("203.0.113.7:5555"))));
    assert_eq!(rest, PAYLOAD);

    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 6000 80\r\n".to_vec();
    let (client, rest) = exchange(vec![line]).await;
    assert_eq!(client, Ok(Some(addr("[2001:db8::7]:6000"))));
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn version_2_reports_the_client_and_skips_its_tlvs() {
    use ppp::v2::{Builder, Command, Protocol, Type, Version};
    let addresses = (addr("198.51.100.4:40000"), addr("10.0.0.1:443"));
    // Longer than any buffer the reader peeks into: a load balancer's TLVs (AWS sends its
    // VPC endpoint id) are read exactly, wherever their length goes.
    let tlv = vec![b'x'; 2000];
    let built = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .write_tlv(Type::Authority, &tlv)
        .unwrap()
        .build()
        .unwrap();
    let (client, rest) = exchange(vec![built]).await;
    assert_eq!(client, Ok(Some(addr("198.51.100.4:40000"))));
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn the_load_balancers_own_connections_keep_the_socket_addresses() {
    for local in [
        header(ProxyProtocol::V2, None, None),
        b"PROXY UNKNOWN\r\n".to_vec(),
    ] {
        let (client, rest) = exchange(vec![local]).await;
        assert_eq!(client, Ok(None));
        assert_eq!(rest, PAYLOAD);
    }
}

#[tokio::test]
async fn what_ferry_sends_is_what_ferry_reads() {
    let (client, local) = (addr("192.0.2.9:1234"), addr("10.1.2.3:8443"));
    let (client6, local6) = (addr("[2001:db8::9]:1234"), addr("[2001:db8::1]:8443"));
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        for (c, l) in [(client, local), (client6, local6)] {
            let (read_back, rest) = exchange(vec![header(version, Some(c), Some(l))]).await;
            assert_eq!(read_back, Ok(Some(c)), "{version:?}");
            assert_eq!(rest, PAYLOAD);
        }
    }
}

#[tokio::test]
async fn a_header_in_pieces_is_waited_for() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n";
    let (first, second) = line.split_at(3);
    let (client, rest) = exchange(vec![first.to_vec(), second.to_vec()]).await;
    assert_eq!(client, Ok(Some(addr("203.0.113.7:5555"))));
    assert_eq!(rest, PAYLOAD);

    let v2 = header(
        ProxyProtocol::V2,
        Some(addr("192.0.2.1:1")),
        Some(addr("10.0.0.1:2")),
    );
    let (first, second) = v2.split_at(8);
    let (client, rest) = exchange(vec![first.to_vec(), second.to_vec()]).await;
    assert_eq!(client, Ok(Some(addr("192.0.2.1:1"))));
    assert_eq!(rest, PAYLOAD);
}

#[tokio::test]
async fn connections_without_a_valid_header_are_refused() {
    // A client that reached the port directly, past the load balancer.
    let (result, _) = exchange(vec![]).await;
    assert_eq!(result, Err(HeaderError::Missing));
    let (result, _) = exchange(vec![b"PROXY TCP4 not-an-address\r\n".to_vec()]).await;
    assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
    let endless = [b"PROXY TCP4 ".to_vec(), vec![b'1'; 200]].concat();
    let (result, _) = exchange(vec![endless]).await;
    assert!(matches!(result, Err(HeaderError::Invalid(_))), "{result:?}");
}

#[tokio::test]
async fn a_connection_closed_before_its_header_is_told_apart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        tcp.write_all(b"PROX").await.unwrap();
    });
    let (mut tcp, _) = listener.accept().await.unwrap();
    client.await.unwrap();
    // The reader waits for the rest of the prefix; the close ends the wait.
    let result = tokio::time::timeout(Duration::from_secs(5), read(&mut tcp)).await;
    assert_eq!(result.expect("not stuck"), Err(HeaderError::Closed));
}
