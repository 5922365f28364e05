//! Hostile clients and broken backends against a running `ferry gateway`, each with a healthy
//! client measured beside the attack: the proxy must live, the healthy client's success rate
//! stay at 99.9% or more, memory stay under a stated bound, and the attack show in the
//! metrics. These are the short versions (seconds each); bench/resilience.sh runs the long
//! ones (20,000-connection flood, 10 GiB body, 5-minute controller outage) with figures.

mod support;

#[path = "resilience/clients.rs"]
mod clients;
#[path = "resilience/control.rs"]
mod control;
#[path = "resilience/faults.rs"]
mod faults;
#[path = "resilience/h2_frames.rs"]
mod h2_frames;
#[path = "resilience/http2.rs"]
mod http2;

use clients::{Healthy, Verdict};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::manifests::{istio_gateway, join};
use support::{free_port, ConfigDir, Echo, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const MIB: u64 = 1 << 20;

/// A gateway on `port` routing everything to an echo backend, with `extra` flags.
async fn gateway(port: u16, extra: &[&str], echo: &Echo) -> (ConfigDir, Gateway) {
    gateway_to(port, extra, echo.addr).await
}

/// A gateway on `port` routing everything to the Service `shop/web` at `backend`.
async fn gateway_to(port: u16, extra: &[&str], backend: SocketAddr) -> (ConfigDir, Gateway) {
    let dir = ConfigDir::new();
    let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {name: web, namespace: shop}\n\
                 spec: {hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: web}}]}]}\n";
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
        backend.port(),
        backend.ip()
    );
    dir.write(
        "all.yaml",
        &join(&[&istio_gateway("shop", "gw", port, &["*"]), &service, route]),
    );
    let gw = Gateway::spawn(dir.path(), extra);
    gw.wait_ready().await;
    (dir, gw)
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A connection from `source` (any 127.x address: one address runs out of ports first).
async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// Waits for the proxy to close `stream`; what it wrote first.
async fn closed_by_proxy(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut reply = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut reply)).await {
        Ok(_) => Some(String::from_utf8_lossy(&reply).into_owned()),
        Err(_) => None,
    }
}

fn assert_healthy(verdict: &Verdict, what: &str) {
    println!("{what}: {verdict}");
    assert!(
        verdict.requests >= 20,
        "{what}: too few healthy requests: {verdict}"
    );
    assert!(verdict.success_rate() >= 0.999, "{what}: {verdict}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_connections_are_cut_at_the_request_header_timeout() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, gw) = gateway(port, &["--request-header-timeout", "2s"], &echo).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let healthy = Healthy::start(target);
    let mut slow = Vec::new();
    for i in 0..300u32 {
        let source = loopback(2 + (i % 3) as u8);
        slow.push(tokio::spawn(async move {
            let mut stream = connect_from(source, target).await.unwrap();
            let started = Instant::now();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-")
                .await
                .unwrap();
            // One header byte a second, as slowloris sends, until the proxy hangs up.
            loop {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
                if let Some(reply) = closed_by_proxy(&mut stream, Duration::from_millis(1)).await {
                    return (reply, started.elapsed());
                }
            }
            let reply = closed_by_proxy(&mut stream, Duration::from_secs(2)).await;
            (reply.unwrap_or_default(), started.elapsed())
        }));
    }
    for task in slow {
        let (reply, lasted) = task.await.unwrap();
        assert!(
            lasted < Duration::from_secs(6),
            "slow client held {lasted:?}"
        );
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );
    }
    assert_healthy(&healthy.stop().await, "slowloris");
    assert!(gw.alive());
    let cut = gw
        .metric("ferry_downstream_timeouts_total{phase=\"request_header\"}")
        .await;
    assert!(cut >= 300.0, "timeouts counted: {cut}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_takes_only_idle_places_and_healthy_clients_keep_working() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, gw) = gateway(port, &["--max-connections", "500"], &echo).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let before = gw.rss_bytes();
    let healthy = Healthy::start(target);
    let mut flood = Vec::new();
    for i in 0..3000u32 {
        if let Ok(stream) = connect_from(loopback(2 + (i % 4) as u8), target).await {
            flood.push(stream);
        }
    }
    // Every flood connection was accepted, and the oldest idle ones were closed to make room.
    support::eventually(|| async {
        gw.metric("ferry_downstream_connections_reaped_total").await >= 2400.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let verdict = healthy.stop().await;
    assert_healthy(&verdict, "connection flood");
    let active = format!("ferry_downstream_connections_active{{listener=\"{port}\"}}");
    let held = gw.metric(&active).await;
    assert!(held <= 510.0, "{held} connections held");
    let dump = gw.config_dump().await;
    assert_eq!(dump["limits"]["connections"]["max_connections"], 500);
    let rss = gw.rss_bytes();
    println!(
        "connection flood: rss {} MiB (before {} MiB)",
        rss / MIB,
        before / MIB
    );
    assert!(rss < before + 64 * MIB, "rss grew from {before} to {rss}");
    assert!(gw.alive());
    drop(flood);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_more_than_its_share() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, gw) = gateway(port, &["--max-connections-per-client", "10"], &echo).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from(loopback(2), target).await.unwrap());
    }
    // Two workers accept from one queue: the eleventh must not be taken before the tenth.
    let active = format!("ferry_downstream_connections_active{{listener=\"{port}\"}}");
    support::eventually(|| async { gw.metric(&active).await == 10.0 }).await;
    let mut eleventh = connect_from(loopback(2), target).await.unwrap();
    let reply = closed_by_proxy(&mut eleventh, Duration::from_secs(5)).await;
    assert_eq!(reply.as_deref(), Some(""), "closed at once, without a word");
    // Another address is served.
    let verdict = clients::request_from(loopback(3), target).await;
    assert!(verdict.is_ok(), "{verdict:?}");
    let refused = gw
        .metric("ferry_downstream_connections_refused_total{reason=\"per_client\"}")
        .await;
    assert_eq!(refused, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_close_at_the_idle_timeout() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, gw) = gateway(port, &["--idle-timeout", "1s"], &echo).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    let rest = closed_by_proxy(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_some(), "closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let idle = gw
        .metric("ferry_downstream_timeouts_total{phase=\"idle\"}")
        .await;
    assert_eq!(idle, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_over_the_limit_get_413_on_both_paths() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, gw) = gateway(port, &["--max-request-body", "1Ki"], &echo).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let declared = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n";
    let reply = clients::exchange(target, declared, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // Chunked (Pingora's path): refused once the count passes the limit.
    let chunk = format!("800\r\n{}\r\n", "a".repeat(0x800));
    let chunked =
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n");
    let reply = clients::exchange(target, chunked.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let small =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let reply = clients::exchange(target, small, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(gw.metric("ferry_request_body_too_large_total").await, 2.0);
}

/// A client that keeps sending a body the proxy refused by its declared length still gets
/// the 413: the proxy closes lingering (reads and drops the rest) instead of closing on
/// unread bytes, which resets the connection — and a client such as hyper, failing to send,
/// never reads the reply. Repeated, as the reset loses it only some of the time.
#[tokio::test(flavor = "multi_thread")]
async fn an_early_413_reaches_a_client_still_sending_its_body() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, _gw) = gateway(port, &["--max-request-body", "1Ki"], &echo).await;
    let http = support::Http::new(support::Proto::H1);
    let url = format!("http://127.0.0.1:{port}/");
    for attempt in 0..20 {
        // A small refused one first: the large one then goes out on a fresh connection
        // while the proxy's answer races its body.
        let small = bytes::Bytes::from(vec![b'x'; 2 << 10]);
        let reply = http.send("POST", &url, Some("a"), &[], small).await;
        assert_eq!(reply.map(|r| r.status), Some(413), "attempt {attempt}");
        let large = bytes::Bytes::from(vec![b'x'; 2 << 20]);
        let reply = http.send("POST", &url, Some("a"), &[], large).await;
        assert_eq!(reply.map(|r| r.status), Some(413), "attempt {attempt}");
    }
}

/// `GET /` from `source` with `headers`: the whole reply as text.
async fn reply_from(source: IpAddr, target: SocketAddr, headers: &str) -> String {
    let mut stream = connect_from(source, target).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    closed_by_proxy(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_tells_external_clients_the_cause_code_alone() {
    let (_dead, dead_port) = support::dead_port();
    let port = free_port();
    let args = [
        "--cause-detail=code",
        "--full-cause-cidr",
        "127.0.0.3/32",
        "--full-cause-header",
        "x-ferry-debug=open-sesame",
    ];
    let dead = SocketAddr::from(([127, 0, 0, 1], dead_port));
    let (_dir, gw) = gateway_to(port, &args, dead).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let external = reply_from(loopback(2), target, "").await;
    assert!(external.starts_with("HTTP/1.1 503"), "{external}");
    // Istio's default retry makes the connect failure URX ("retries exhausted").
    assert!(external.contains("x-ferry-cause: URX\r\n"), "{external}");
    assert!(
        external.ends_with("\r\n\r\nupstream retries exhausted\n"),
        "{external}"
    );
    for secret in ["127.0.0.1", "shop", "web", &dead_port.to_string()] {
        assert!(
            !external.contains(secret),
            "{secret:?} revealed: {external}"
        );
    }
    assert!(
        !external.to_ascii_lowercase().contains("server:"),
        "{external}"
    );
    // Trusted: a listed range, or the header the gateway was given.
    let trusted = reply_from(loopback(3), target, "").await;
    assert!(
        trusted.contains(&format!("127.0.0.1:{dead_port}")),
        "{trusted}"
    );
    let debug = reply_from(loopback(2), target, "x-ferry-debug: open-sesame\r\n").await;
    assert!(
        debug.contains("x-ferry-cause: URX Service/shop/web"),
        "{debug}"
    );
    let guess = reply_from(loopback(2), target, "x-ferry-debug: guess\r\n").await;
    assert!(guess.contains("x-ferry-cause: URX\r\n"), "{guess}");
    // The access log keeps the whole cause of the external client's request, the dump
    // names the trusted header but not its value.
    let endpoint = format!("127.0.0.1:{dead_port}");
    support::eventually(|| async { gw.access_log().join("\n").contains(&endpoint) }).await;
    let dump = gw.admin_get("/config_dump").await;
    assert!(!dump.contains("open-sesame"));
    // Pingora's path (what Ferry's HTTP/1 loop hands over, and HTTP/2) tells the same.
    let port = free_port();
    let (_dir, pingora) =
        gateway_to(port, &["--cause-detail=code", "--http1-fallback"], dead).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let external = reply_from(loopback(2), target, "").await;
    assert!(external.contains("x-ferry-cause: URX\r\n"), "{external}");
    assert!(!external.contains("127.0.0.1"), "{external}");
    let endpoint = format!("127.0.0.1:{dead_port}");
    support::eventually(|| async { pingora.access_log().join("\n").contains(&endpoint) }).await;
}
