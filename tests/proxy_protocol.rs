//! A gateway behind a load balancer that speaks the PROXY protocol (`--proxy-protocol`): the
//! client the header names is the client everywhere (X-Forwarded-For, access log,
//! AuthorizationPolicy, a relayed connection's own PROXY header), on cleartext HTTP/1.1,
//! HTTP/2, HTTPS and TCP listeners; a connection that skips the load balancer is closed.

mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use support::manifests::{ep, join, service};
use support::tls::{self, TestCa};
use support::{free_port, ConfigDir, Echo, Gateway};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\n\
spec: {parentRefs: [{name: edge}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n";

struct Ports {
    http: u16,
    https: u16,
    tcp: u16,
}

fn edge(ports: &Ports) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: default}}\n\
         spec:\n  gatewayClassName: ferry\n  listeners:\n\
         \x20   - {{name: http, port: {}, protocol: HTTP}}\n\
         \x20   - {{name: https, port: {}, protocol: HTTPS, tls: {{certificateRefs: [{{name: edge-cert}}]}}}}\n\
         \x20   - {{name: tcp, port: {}, protocol: TCP}}\n",
        ports.http, ports.https, ports.tcp
    )
}

/// The TCP listener's route to a backend that wants a PROXY v1 header too.
fn tcp_route(backend_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: legacy, namespace: default}}\n\
         spec: {{ports: [{{port: 443}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: legacy-1, namespace: default, labels: {{kubernetes.io/service-name: legacy}}}}\n\
         addressType: IPv4\nports: [{{port: {backend_port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: legacy, namespace: default}}\n\
         spec: {{parentRefs: [{{name: edge, sectionName: tcp}}], rules: [{{backendRefs: [{{name: legacy, port: 443}}]}}]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: legacy, namespace: default}}\n\
         spec: {{host: legacy, trafficPolicy: {{proxyProtocol: {{version: V1}}}}}}\n"
    )
}

/// Requests from 198.51.100.0/24 are refused (the load balancer's own address is 127.0.0.1).
const DENY_TEST_NET: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
metadata: {name: no-test-net, namespace: default}\n\
spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]\n  action: DENY\n\
\x20 rules: [{from: [{source: {remoteIpBlocks: [198.51.100.0/24]}}]}]\n";

fn v1(client: Ipv4Addr, client_port: u16, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {client_port} {port}\r\n").into_bytes()
}

/// A version 2 header as a load balancer writes it: PROXY command, TCP over IPv4.
fn v2(client: Ipv4Addr, client_port: u16, port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&client.octets());
    header.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    header.extend_from_slice(&client_port.to_be_bytes());
    header.extend_from_slice(&port.to_be_bytes());
    header
}

/// Sends one HTTP/1.1 request on `io`; the status and the echo's JSON body.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> Option<(u16, serde_json::Value)> {
    let request = "GET /whoami HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n";
    io.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    let _ = io.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or_default()))
}

async fn connect_with(header: &[u8], port: u16) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(header).await.unwrap();
    tcp
}

/// A backend that answers with the first line it reads (the PROXY header Ferry sends it).
async fn first_line_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while tcp.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let _ = tcp.write_all(&[&line[..], b"\n"].concat()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_a_proxy_protocol_header_names_is_the_client_everywhere() {
    let echo = Echo::start("web");
    let ca = TestCa::new("edge-ca");
    let leaf = ca.issue(&["web.example"]);
    let ports = Ports {
        http: free_port(),
        https: free_port(),
        tcp: free_port(),
    };
    let backend = first_line_backend().await;
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &edge(&ports),
            &tls::tls_secret("default", "edge-cert", &leaf),
            &service("default", "web", 80, &[ep(&echo, &[])]),
            ROUTE,
            &tcp_route(backend),
            DENY_TEST_NET,
        ]),
    );
    let gw = Gateway::spawn(dir.path(), &["--proxy-protocol"]);
    gw.wait_ready().await;
    let client = Ipv4Addr::new(203, 0, 113, 7);

    // HTTP/1.1, either version of the header: the echo sees the client in X-Forwarded-For.
    for header in [v1(client, 40000, ports.http), v2(client, 40001, ports.http)] {
        let (status, echoed) = get(connect_with(&header, ports.http).await).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(echoed["headers"]["x-forwarded-for"], "203.0.113.7");
    }

    // HTTPS: the TLS handshake follows the header.
    let tcp = connect_with(&v2(client, 40002, ports.https), ports.https).await;
    let config = tls::client_config(&ca.cert_pem, None, &["http/1.1"]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("web.example").unwrap();
    let session = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake after the PROXY header");
    let (status, echoed) = get(session).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(echoed["headers"]["x-forwarded-for"], "203.0.113.7");

    // HTTP/2 (Pingora's path): the same client.
    let tcp = connect_with(&v1(client, 40003, ports.http), ports.http).await;
    assert_eq!(h2_forwarded_for(tcp).await, "203.0.113.7");

    // AuthorizationPolicy matches the named client, not the load balancer.
    let denied = Ipv4Addr::new(198, 51, 100, 20);
    let (status, _) = get(connect_with(&v1(denied, 40004, ports.http), ports.http).await)
        .await
        .unwrap();
    assert_eq!(
        status, 403,
        "remoteIpBlocks see the client the header named"
    );

    // TCP: the relayed connection's own PROXY header carries the client on to the backend.
    let mut tcp = connect_with(&v2(client, 40005, ports.tcp), ports.tcp).await;
    let mut line = String::new();
    tcp.read_to_string(&mut line).await.unwrap();
    assert_eq!(
        line.trim_end(),
        format!("PROXY TCP4 203.0.113.7 127.0.0.1 40005 {}", ports.tcp)
    );

    // The access log names the client.
    support::eventually(|| async {
        let log = gw.access_log();
        log.iter().any(|l| l.contains("203.0.113.7:40000"))
    })
    .await;

    // Straight to the port, past the load balancer: closed without an answer, and counted.
    let direct = TcpStream::connect(("127.0.0.1", ports.http)).await.unwrap();
    assert_eq!(get(direct).await, None, "no answer without a PROXY header");
    let metrics = gw.admin_get("/metrics").await;
    let missing = metrics
        .lines()
        .find(|l| l.starts_with("ferry_proxy_protocol_refused_total{reason=\"missing\"}"))
        .unwrap_or_default();
    assert!(missing.ends_with(" 1"), "{missing:?}");
}

/// One HTTP/2 request over `tcp` (prior knowledge); its X-Forwarded-For as the echo saw it.
async fn h2_forwarded_for(tcp: TcpStream) -> String {
    use http_body_util::{BodyExt, Empty};
    let io = hyper_util::rt::TokioIo::new(tcp);
    let executor = hyper_util::rt::TokioExecutor::new();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(executor, io)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get("http://web.example/whoami")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("h2 response");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    echoed["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
