//! Connection-level routing on a standalone gateway: TLS passed through by server name to
//! real TLS backends (checked by their own certificates), TLS terminated before a TCP
//! backend, TCP split by weight, and what the proxy counts and logs per connection.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::tls::{self, Leaf, TestCa};
use support::{free_port, ConfigDir, Gateway};

/// A TCP backend: says its name, then echoes what it reads until the client closes.
async fn tcp_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(greet_and_echo(stream, name));
        }
    });
    address
}

async fn greet_and_echo<S>(mut stream: S, name: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if stream
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// A TLS backend serving `leaf` (its own certificate: the gateway never holds its key).
async fn tls_backend(name: &'static str, leaf: &Leaf) -> SocketAddr {
    let config = tls::server_config(leaf);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(session) = acceptor.accept(stream).await {
                    greet_and_echo(session, name).await;
                }
            });
        }
    });
    address
}

/// A Service whose one endpoint is `backend` (port 443 on the Service).
fn service(name: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{ports: [{{name: tcp, port: 443, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: tcp, port: {port}}}]\n\
         endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n",
        port = backend.port(),
        ip = backend.ip(),
    )
}

/// The first line a backend sends (its name), read through the proxy.
async fn greeting<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Connects over TLS through the gateway, checking the certificate against `ca`.
async fn tls_through(
    port: u16,
    sni: &str,
    ca: &TestCa,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = tls::client_config(&ca.cert_pem, None, &[])?;
    tls::connect(port, sni, config).await
}

fn gateway_with(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: default}}\n\
         spec:\n  gatewayClassName: ferry\n  listeners:\n{listeners}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_passes_through_by_server_name_to_backends_that_hold_their_own_keys() {
    let backend_ca = TestCa::new("backend-ca");
    let db = tls_backend("db", &backend_ca.issue(&["db.example.com"])).await;
    let mq = tls_backend("mq", &backend_ca.issue(&["mq.example.com"])).await;
    let port = free_port();
    let dir = ConfigDir::new();
    let manifests = [
        gateway_with(&format!(
            "    - {{name: tls, port: {port}, protocol: TLS, tls: {{mode: Passthrough}}}}\n"
        )),
        service("db", db),
        service("mq", mq),
        route(
            "TLSRoute",
            "db",
            "[db.example.com]",
            "[{name: db, port: 443}]",
        ),
        route(
            "TLSRoute",
            "mq",
            "[\"*.mq.example.com\", mq.example.com]",
            "[{name: mq, port: 443}]",
        ),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let gw = Gateway::start(dir.path()).await;

    // Each name reaches its own backend, whose certificate the client verifies end to end.
    let mut session = tls_through(port, "db.example.com", &backend_ca)
        .await
        .unwrap();
    assert_eq!(greeting(&mut session).await, "db");
    session.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    session.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    drop(session);
    let mut session = tls_through(port, "mq.example.com", &backend_ca)
        .await
        .unwrap();
    assert_eq!(greeting(&mut session).await, "mq");
    drop(session);

    // A name no route serves: the connection is closed before any backend sees it.
    let refused = tls_through(port, "web.example.com", &backend_ca).await;
    assert!(refused.is_err(), "an unrouted name was served");
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("response_flags=\"NR\"")),
        "no NR connection counted:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("destination_service=\"db.default.svc.cluster.local\"")
                && l.contains("request_protocol=\"tcp\"")),
        "no db connection counted:\n{metrics}"
    );
    // One access-log line per connection, written when it closes.
    support::eventually(|| async {
        gw.access_log().iter().any(|l| {
            l.contains("\"authority\":\"db.example.com\"")
                && l.contains("\"protocol\":\"tcp\"")
                && l.contains("\"upstream_cluster\":\"default/db:443\"")
        })
    })
    .await;
}

fn route(kind: &str, name: &str, hostnames: &str, backends: &str) -> String {
    let (version, hostnames) = match kind {
        "TLSRoute" => ("v1", format!("  hostnames: {hostnames}\n")),
        _ => ("v1alpha2", String::new()),
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\n\
         metadata: {{name: {name}, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n{hostnames}  rules: [{{backendRefs: {backends}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_connections_split_by_weight() {
    let blue = tcp_backend("blue").await;
    let green = tcp_backend("green").await;
    let port = free_port();
    let dir = ConfigDir::new();
    let manifests = [
        gateway_with(&format!(
            "    - {{name: tcp, port: {port}, protocol: TCP}}\n"
        )),
        service("blue", blue),
        service("green", green),
        route(
            "TCPRoute",
            "split",
            "",
            "[{name: blue, port: 443, weight: 3}, {name: green, port: 443, weight: 1}]",
        ),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let gw = Gateway::start(dir.path()).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        *seen.entry(greeting(&mut tcp).await).or_default() += 1;
    }
    let blue_share = seen.get("blue").copied().unwrap_or(0);
    // 3:1 of 400 is 300; five standard deviations (~43) either way.
    assert!((257..=343).contains(&blue_share), "{seen:?}");
    assert_eq!(
        blue_share + seen.get("green").copied().unwrap_or(0),
        400,
        "{seen:?}"
    );

    // Bytes both ways are relayed whole, a half-close passed on, and counted.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = greeting(&mut tcp).await;
    let payload = vec![7u8; 1 << 20];
    tcp.write_all(&payload).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).await.unwrap();
    assert_eq!(back.len(), payload.len(), "echo through {name}");
    let metrics = gw.admin_get("/metrics").await;
    let received: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_received_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // The 401 connections before sent nothing; this one sent the payload.
    assert_eq!(received, payload.len() as f64, "{metrics}");
}

/// One port terminates TLS for one name and passes another through (the spec's mixed mode).
#[tokio::test(flavor = "multi_thread")]
async fn one_port_terminates_some_names_and_passes_others_through() {
    let ca = TestCa::new("edge-ca");
    let leaf = ca.issue(&["*.example.com"]);
    let backend_ca = TestCa::new("backend-ca");
    let plain = tcp_backend("plain").await;
    let db = tls_backend("db", &backend_ca.issue(&["db.example.org"])).await;
    let port = free_port();
    let dir = ConfigDir::new();
    let manifests = [
        gateway_with(&format!(
            "    - {{name: term, port: {port}, protocol: TLS, hostname: \"*.example.com\", \
             tls: {{mode: Terminate, certificateRefs: [{{name: edge-cert}}]}}}}\n\
             \x20   - {{name: pass, port: {port}, protocol: TLS, hostname: db.example.org, \
             tls: {{mode: Passthrough}}}}\n"
        )),
        tls::tls_secret("default", "edge-cert", &leaf),
        service("plain", plain),
        service("db", db),
        route(
            "TLSRoute",
            "term",
            "[app.example.com]",
            "[{name: plain, port: 443}]",
        ),
        route(
            "TLSRoute",
            "pass",
            "[db.example.org]",
            "[{name: db, port: 443}]",
        ),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let _gw = Gateway::start(dir.path()).await;
    // Terminated with the gateway's certificate (the edge CA), relayed in plaintext.
    let mut session = tls_through(port, "app.example.com", &ca).await.unwrap();
    assert_eq!(greeting(&mut session).await, "plain");
    session.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    session.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    // Passed through: the backend's own certificate (the backend CA) answers.
    let mut session = tls_through(port, "db.example.org", &backend_ca)
        .await
        .unwrap();
    assert_eq!(greeting(&mut session).await, "db");
    assert!(
        tls_through(port, "db.example.org", &ca).await.is_err(),
        "the edge certificate answered a passed-through name"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_tls_passthrough_and_tcp_servers_follow_virtual_service_routes() {
    let backend_ca = TestCa::new("backend-ca");
    let db = tls_backend("db", &backend_ca.issue(&["db.example.com"])).await;
    let cache = tcp_backend("cache").await;
    let cache_overflow = tcp_backend("cache-overflow").await;
    let (tls_port, tcp_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let istio = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: default}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20   - port: {{number: {tls_port}, name: tls, protocol: TLS}}\n      hosts: [\"*.example.com\"]\n      tls: {{mode: PASSTHROUGH}}\n\
         \x20   - port: {{number: {tcp_port}, name: redis, protocol: TCP}}\n      hosts: [\"*\"]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db, namespace: default}}\n\
         spec:\n  hosts: [db.example.com]\n  gateways: [edge]\n  tls:\n\
         \x20   - match: [{{sniHosts: [db.example.com]}}]\n      route: [{{destination: {{host: db, port: {{number: 443}}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: cache, namespace: default}}\n\
         spec:\n  hosts: [\"*\"]\n  gateways: [edge]\n  tcp:\n\
         \x20   - match: [{{port: {tcp_port}}}]\n      route:\n\
         \x20       - {{destination: {{host: cache, port: {{number: 443}}}}, weight: 100}}\n\
         \x20       - {{destination: {{host: cache-overflow, port: {{number: 443}}}}, weight: 0}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: cache, namespace: default}}\n\
         spec:\n  host: cache\n  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 2}}}}}}\n"
    );
    let manifests = [
        istio,
        service("db", db),
        service("cache", cache),
        service("cache-overflow", cache_overflow),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let gw = Gateway::start(dir.path()).await;

    let mut session = tls_through(tls_port, "db.example.com", &backend_ca)
        .await
        .unwrap();
    assert_eq!(greeting(&mut session).await, "db");

    // maxConnections: 2 — two held connections fill the pool, a third is refused (UO).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
        assert_eq!(greeting(&mut tcp).await, "cache");
        held.push(tcp);
    }
    let mut third = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    let mut rest = Vec::new();
    let _ = third.read_to_end(&mut rest).await;
    assert!(
        rest.is_empty(),
        "an overflowing connection reached a backend"
    );
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_closed_total")
                && l.contains("response_flags=\"UO\"")
                && l.contains("destination_service=\"cache.default.svc.cluster.local\"")),
        "no overflow counted:\n{metrics}"
    );
    drop(held);
    // Slots freed: served again.
    support::eventually(|| async {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", tcp_port)).await else {
            return false;
        };
        greeting(&mut tcp).await == "cache"
    })
    .await;
}

/// AUTO_PASSTHROUGH (an east-west gateway): no VirtualService; the ClientHello names the
/// Service port the way the mesh names it (`outbound_.<port>_.<subset>_.<host>`) and the
/// connection passes through, still encrypted, to that Service's endpoints.
#[tokio::test(flavor = "multi_thread")]
async fn auto_passthrough_routes_by_the_meshs_server_names() {
    let sni = |service: &str| format!("outbound_.443_._.{service}.default.svc.cluster.local");
    let backend_ca = TestCa::new("backend-ca");
    let db = tls_backend("db", &backend_ca.issue(&[&sni("db")])).await;
    let mq = tls_backend("mq", &backend_ca.issue(&[&sni("mq")])).await;
    let port = free_port();
    let dir = ConfigDir::new();
    let istio = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: east-west, namespace: default}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20   - port: {{number: {port}, name: tls, protocol: TLS}}\n      hosts: [\"*.local\"]\n      \
         tls: {{mode: AUTO_PASSTHROUGH}}\n"
    );
    dir.write(
        "all.yaml",
        &[istio, service("db", db), service("mq", mq)].join("---\n"),
    );
    let _gw = Gateway::start(dir.path()).await;
    for name in ["db", "mq"] {
        let mut session = tls_through(port, &sni(name), &backend_ca)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(greeting(&mut session).await, name);
    }
    // A name the mesh gives nothing here (another port) reaches no backend.
    let other = "outbound_.8080_._.db.default.svc.cluster.local";
    assert!(tls_through(port, other, &backend_ca).await.is_err());
}

/// The kernel's view of the proxy's sockets to `port`: `ss` lines with their timers.
fn sockets_to(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss (iproute2, tests/setup.sh installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// DestinationRule `tcp.tcpKeepalive` turns keep-alive on for the upstream sockets of relayed
/// connections and of HTTP requests alike, with the rule's idle time.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_keepalive_reaches_the_upstream_sockets() {
    let relayed = tcp_backend("relayed").await;
    let echo = support::Echo::start("web");
    let (tcp_port, http_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let keepalive = |host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: {host}, namespace: default}}\n\
             spec: {{host: {host}, trafficPolicy: {{connectionPool: {{tcp: \
             {{tcpKeepalive: {{time: 45s, interval: 5s, probes: 3}}}}}}}}}}\n"
        )
    };
    let manifests = [
        gateway_with(&format!(
            "    - {{name: tcp, port: {tcp_port}, protocol: TCP}}\n\
             \x20   - {{name: http, port: {http_port}, protocol: HTTP}}\n"
        )),
        service("relayed", relayed),
        service("web", echo.addr),
        route("TCPRoute", "relayed", "", "[{name: relayed, port: 443}]"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: web, namespace: default}\n\
         spec: {parentRefs: [{name: edge}], rules: [{backendRefs: [{name: web, port: 443}]}]}\n"
            .to_string(),
        keepalive("relayed"),
        keepalive("web"),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let _gw = Gateway::start(dir.path()).await;

    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    assert_eq!(greeting(&mut tcp).await, "relayed");
    let http = support::Http::new(support::Proto::H1);
    let reply = http
        .get(&format!("http://127.0.0.1:{http_port}/"), None, &[])
        .await
        .expect("answered");
    assert_eq!(reply.status, 200);
    for backend in [relayed.port(), echo.addr.port()] {
        let sockets = sockets_to(backend);
        assert!(!sockets.is_empty(), "no connection to {backend}");
        // `timer:(keepalive,45sec,0)` (counting down from the rule's 45 s).
        assert!(
            sockets.iter().all(|s| s.contains("timer:(keepalive,4")),
            "{backend}: {sockets:?}"
        );
    }
}

/// A backend that answers with the first line it reads (a PROXY v1 header, here).
async fn first_line_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let line = greeting(&mut stream).await;
                let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_rule_sends_the_client_address_in_a_proxy_protocol_header() {
    let backend = first_line_backend().await;
    let port = free_port();
    let dir = ConfigDir::new();
    let manifests = [
        gateway_with(&format!(
            "    - {{name: tcp, port: {port}, protocol: TCP}}\n"
        )),
        service("legacy", backend),
        route("TCPRoute", "legacy", "", "[{name: legacy, port: 443}]"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: legacy, namespace: default}\n\
         spec: {host: legacy, trafficPolicy: {proxyProtocol: {version: V1}}}\n"
            .to_string(),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let _gw = Gateway::start(dir.path()).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let client = tcp.local_addr().unwrap();
    let line = greeting(&mut tcp).await;
    assert_eq!(
        line,
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r", client.port())
    );
}

/// AuthorizationPolicy applies to connections too: a DENY by source address closes them before
/// any backend is dialled, and an ALLOW that needs HTTP attributes lets no connection through.
#[tokio::test(flavor = "multi_thread")]
async fn authorization_policies_decide_on_connections() {
    let blue = tcp_backend("blue").await;
    let (denied_port, http_only_port, open_port) = (free_port(), free_port(), free_port());
    let dir = ConfigDir::new();
    let policy = |name: &str, action: &str, rules: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: default}}\n\
             spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]\n\
             \x20 action: {action}\n  rules: {rules}\n"
        )
    };
    let manifests = [
        gateway_with(&format!(
            "    - {{name: denied, port: {denied_port}, protocol: TCP}}\n\
             \x20   - {{name: http-only, port: {http_only_port}, protocol: TCP}}\n\
             \x20   - {{name: open, port: {open_port}, protocol: TCP}}\n"
        )),
        service("blue", blue),
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
         metadata: {name: all, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}]\n  rules: [{backendRefs: [{name: blue, port: 443}]}]\n"
            .to_string(),
        policy(
            "deny-local",
            "DENY",
            &format!(
                "[{{from: [{{source: {{ipBlocks: [127.0.0.0/8]}}}}], to: [{{operation: {{ports: [\"{denied_port}\"]}}}}]}}]"
            ),
        ),
        policy(
            "allow-paths",
            "ALLOW",
            &format!(
                "[{{to: [{{operation: {{ports: [\"{http_only_port}\"], paths: [/api]}}}}]}}, \
                 {{to: [{{operation: {{ports: [\"{open_port}\"]}}}}]}}]"
            ),
        ),
    ];
    dir.write("all.yaml", &manifests.join("---\n"));
    let gw = Gateway::start(dir.path()).await;
    for refused in [denied_port, http_only_port] {
        let mut tcp = TcpStream::connect(("127.0.0.1", refused)).await.unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
        assert!(
            rest.is_empty(),
            "port {refused}: a denied connection reached the backend"
        );
    }
    let mut tcp = TcpStream::connect(("127.0.0.1", open_port)).await.unwrap();
    assert_eq!(greeting(&mut tcp).await, "blue");
    let metrics = gw.admin_get("/metrics").await;
    let denied = metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_closed_total"))
        .filter(|l| l.contains("response_flags=\"RBAC\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert_eq!(denied, 2.0, "{metrics}");
}

/// VirtualService `tcp` matches with `destinationSubnets`: the address the client reached
/// (the gateway's own, 127.0.0.1 here) decides which route applies.
#[tokio::test(flavor = "multi_thread")]
async fn destination_subnets_choose_by_the_address_reached() {
    let (inner, outer) = (tcp_backend("inner").await, tcp_backend("outer").await);
    let port = free_port();
    let dir = ConfigDir::new();
    let istio = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: default}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20   - port: {{number: {port}, name: db, protocol: TCP}}\n      hosts: [\"*\"]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db, namespace: default}}\n\
         spec:\n  hosts: [\"*\"]\n  gateways: [edge]\n  tcp:\n\
         \x20   - match: [{{destinationSubnets: [10.0.0.0/8]}}]\n      route: [{{destination: {{host: outer, port: {{number: 443}}}}}}]\n\
         \x20   - match: [{{destinationSubnets: [127.0.0.0/8]}}]\n      route: [{{destination: {{host: inner, port: {{number: 443}}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: typo, namespace: default}}\n\
         spec:\n  hosts: [\"*\"]\n  gateways: [edge]\n  tcp:\n\
         \x20   - match: [{{destinationSubnets: [not-a-subnet]}}]\n      route: [{{destination: {{host: inner, port: {{number: 443}}}}}}]\n"
    );
    let manifests = [istio, service("inner", inner), service("outer", outer)];
    dir.write("all.yaml", &manifests.join("---\n"));
    let gw = Gateway::start(dir.path()).await;
    // The first route wants 10.0.0.0/8: a connection to 127.0.0.1 takes the second.
    let mut reached = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(greeting(&mut reached).await, "inner");
    let reports = gw.config_dump().await["reports"].to_string();
    assert!(reports.contains("destinationSubnets"), "{reports}");
}
