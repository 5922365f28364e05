//! Ferry's HTTP/1 request loop against raw bytes: a smuggling corpus (one request per case:
//! the status the client gets and the exact request the upstream receives), and the same
//! requests through Pingora's path (`--http1-fallback`) to show where the two differ.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::manifests::{istio_gateway, join};
use support::{free_port, ConfigDir, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that records every request it receives, byte for byte, and answers each with
/// `200 ok`.
struct RawUpstream {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_raw(stream, sink.clone()));
            }
        });
        RawUpstream { address, requests }
    }

    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.requests.lock().unwrap())
    }
}

async fn serve_raw(mut stream: TcpStream, sink: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    loop {
        while let Some(len) = whole_request(&buf) {
            let request: Vec<u8> = buf.drain(..len).collect();
            let head_request = request.starts_with(b"HEAD ");
            let chunked = request.starts_with(b"GET /chunked ");
            sink.lock().unwrap().push(request);
            let reply: &[u8] = if head_request {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
            } else if chunked {
                CHUNKED_REPLY
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            };
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

/// What the upstream answers `GET /chunked`: the body `ok!!!` in two chunks (one with an
/// extension), then a trailer.
const CHUNKED_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
    2;ext=1\r\nok\r\n3\r\n!!!\r\n0\r\ntrailer: x\r\n\r\n";

/// The length of the first complete request in `buf` (Content-Length bodies only).
fn whole_request(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    (buf.len() >= end + length).then_some(end + length)
}

fn config(port: u16, upstream: SocketAddr) -> String {
    let rest = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: raw, namespace: shop}}\n\
         spec: {{hosts: ['*'], gateways: [gw], http: [{{route: [{{destination: {{host: raw}}}}]}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: raw, namespace: shop}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: raw, namespace: shop, labels: {{kubernetes.io/service-name: raw}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
        upstream.port(),
        upstream.ip()
    );
    join(&[&istio_gateway("shop", "gw", port, &["*"]), &rest])
}

/// Sends `request` on a fresh connection and reads until the gateway closes it (each case
/// ends with a `Connection: close` request, or is refused and closed).
async fn exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply));
    let _ = read.await;
    String::from_utf8_lossy(&reply).into_owned()
}

fn statuses(reply: &str) -> Vec<u16> {
    reply
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| reply[at + 9..at + 12].parse().ok())
        .collect()
}

/// A request as the upstream saw it, compared as the request line, the headers (lower-case
/// names; the request id, which is random, left out) and the body.
fn normalized(request: &[u8]) -> (String, BTreeSet<String>, Vec<u8>) {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&request[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            format!("{}: {}", name.to_ascii_lowercase(), value.trim())
        })
        .filter(|h| !h.starts_with("x-request-id:"))
        .collect();
    (line, headers, request[end + 4..].to_vec())
}

struct Case {
    name: &'static str,
    request: &'static [u8],
    /// Statuses the client gets from Ferry's loop, in order.
    statuses: &'static [u16],
    /// Requests the upstream receives.
    forwarded: usize,
}

const CASES: &[Case] = &[
    Case { name: "plain GET", request: b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", statuses: &[200], forwarded: 1 },
    Case { name: "Content-Length body", request: b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", statuses: &[200], forwarded: 1 },
    Case { name: "pipelined, answered in order", request: b"POST /1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: t\r\n\r\nGET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", statuses: &[200, 200, 200], forwarded: 3 },
    Case { name: "hop-by-hop headers dropped", request: b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: basic x\r\nProxy-Connection: keep-alive\r\n\r\n", statuses: &[200], forwarded: 1 },
    Case { name: "HEAD has no body", request: b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", statuses: &[200], forwarded: 1 },
    Case { name: "Content-Length with Transfer-Encoding", request: b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "differing Content-Length", request: b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", statuses: &[400], forwarded: 0 },
    Case { name: "final coding not chunked", request: b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "obs-fold", request: b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "missing Host", request: b"GET / HTTP/1.1\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "repeated Host", request: b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "bare CR in a value", request: b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "NUL in a value", request: b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", statuses: &[400], forwarded: 0 },
    Case { name: "space before the colon", request: b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello", statuses: &[400], forwarded: 0 },
    Case { name: "invalid Content-Length", request: b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello", statuses: &[400], forwarded: 0 },
];

/// One upstream behind two gateways: Ferry's HTTP/1 loop, and Pingora's path for everything.
struct Pair {
    upstream: RawUpstream,
    fast: Gateway,
    fast_port: u16,
    pingora_port: u16,
    _pingora: Gateway,
    _dirs: [ConfigDir; 2],
}

async fn gateways() -> Pair {
    let upstream = RawUpstream::start().await;
    let (fast_port, pingora_port) = (free_port(), free_port());
    let dirs = [ConfigDir::new(), ConfigDir::new()];
    dirs[0].write("all.yaml", &config(fast_port, upstream.address));
    dirs[1].write("all.yaml", &config(pingora_port, upstream.address));
    let fast = Gateway::start(dirs[0].path()).await;
    let pingora = Gateway::spawn(dirs[1].path(), &["--http1-fallback"]);
    pingora.wait_ready().await;
    Pair {
        upstream,
        fast,
        fast_port,
        pingora_port,
        _pingora: pingora,
        _dirs: dirs,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_corpus_gets_the_expected_status_and_upstream_bytes() {
    let pair = gateways().await;
    let (upstream, fast_port, slow_port) = (&pair.upstream, pair.fast_port, pair.pingora_port);
    let mut differences = Vec::new();
    for case in CASES {
        let reply = exchange(fast_port, case.request).await;
        assert_eq!(statuses(&reply), case.statuses, "{}: {reply:?}", case.name);
        let fast_requests = upstream.take();
        assert_eq!(
            fast_requests.len(),
            case.forwarded,
            "{}: {fast_requests:?}",
            case.name
        );
        let pingora_reply = exchange(slow_port, case.request).await;
        let pingora_requests = upstream.take();
        if statuses(&pingora_reply) != case.statuses {
            differences.push(format!(
                "{}: pingora {:?}",
                case.name,
                statuses(&pingora_reply)
            ));
            continue;
        }
        let fast: Vec<_> = fast_requests.iter().map(|r| normalized(r)).collect();
        let pingora: Vec<_> = pingora_requests.iter().map(|r| normalized(r)).collect();
        assert_eq!(
            fast, pingora,
            "{}: the upstream saw different requests",
            case.name
        );
    }
    // Pingora's path (pipelining off) answers the first of pipelined requests and closes;
    // the client resends the rest on a new connection (RFC 9112 9.3.2).
    assert_eq!(differences, ["pipelined, answered in order: pingora [200]"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_requests_are_exact() {
    let pair = gateways().await;
    let (upstream, port) = (&pair.upstream, pair.fast_port);
    exchange(port, CASES[3].request).await;
    let seen = upstream.take();
    let (line, headers, body) = normalized(&seen[0]);
    assert_eq!(line, "GET / HTTP/1.1");
    let names: BTreeSet<&str> = headers
        .iter()
        .map(|h| h.split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["host", "x-forwarded-for", "x-forwarded-proto"].into(),
        "hop-by-hop headers (and those Connection names) never reach the upstream"
    );
    assert!(body.is_empty());
    exchange(port, CASES[1].request).await;
    let seen = upstream.take();
    assert!(
        seen[0].ends_with(b"\r\n\r\nhello"),
        "{:?}",
        String::from_utf8_lossy(&seen[0])
    );
    // Absolute form: origin form upstream, Host from the target (RFC 9112 3.2.2).
    exchange(
        port,
        b"GET http://Other.example?q=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (line, headers, _) = normalized(&upstream.take()[0]);
    assert_eq!(line, "GET /?q=1 HTTP/1.1");
    assert!(headers.contains("host: Other.example"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_answer_414_and_431_and_fallbacks_are_counted() {
    let pair = gateways().await;
    let (upstream, fast, port) = (&pair.upstream, &pair.fast, pair.fast_port);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(8 * 1024));
    assert_eq!(statuses(&exchange(port, long_line.as_bytes()).await), [414]);
    let headers: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
    assert_eq!(statuses(&exchange(port, many.as_bytes()).await), [431]);
    assert!(upstream.take().is_empty());
    // `OPTIONS *` goes to Pingora's path, then the connection comes back.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = stream.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut second = String::new();
    stream.read_to_string(&mut second).await.unwrap();
    assert_eq!(statuses(&second), [200]);
    let seen: Vec<String> = upstream.take().iter().map(|r| normalized(r).0).collect();
    assert_eq!(seen, ["OPTIONS * HTTP/1.1", "GET /after HTTP/1.1"]);
    let metrics = fast.admin_get("/metrics").await;
    assert!(
        metrics.contains("ferry_http1_fallback_total{reason=\"target_form\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_closes_after_its_request_limit() {
    let upstream = RawUpstream::start().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &config(port, upstream.address));
    let gateway = Gateway::spawn(dir.path(), &["--max-requests-per-connection", "2"]);
    gateway.wait_ready().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut reply = vec![0u8; 4096];
        let n = stream.read(&mut reply).await.unwrap();
        replies.push(String::from_utf8_lossy(&reply[..n]).to_ascii_lowercase());
    }
    assert!(!replies[0].contains("connection: close"), "{}", replies[0]);
    assert!(replies[1].contains("connection: close"), "{}", replies[1]);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the gateway closes after the second answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_1_0_clients_are_served_by_the_loop() {
    let pair = gateways().await;
    let (upstream, fast, port) = (&pair.upstream, &pair.fast, pair.fast_port);
    // No Host, no keep-alive: answered, then closed; the upstream gets HTTP/1.1 with the
    // address the client dialled as Host (RFC 9112 3.3).
    let reply = exchange(port, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(statuses(&reply), [200], "{reply}");
    assert!(reply.ends_with("\r\n\r\nok"), "{reply:?}");
    let (line, headers, _) = normalized(&upstream.take()[0]);
    assert_eq!(line, "GET / HTTP/1.1");
    assert!(
        headers.contains(&format!("host: 127.0.0.1:{port}")),
        "{headers:?}"
    );

    // Connection: keep-alive is honoured and announced; the next request ends it.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /a HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = stream.read(&mut first).await.unwrap();
    let first = String::from_utf8_lossy(&first[..n]).to_ascii_lowercase();
    assert!(first.contains("connection: keep-alive"), "{first}");
    stream
        .write_all(b"GET /b HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut second = String::new();
    stream.read_to_string(&mut second).await.unwrap();
    assert_eq!(statuses(&second), [200], "{second}");
    assert!(
        !second.to_ascii_lowercase().contains("keep-alive"),
        "{second}"
    );
    assert_eq!(upstream.take().len(), 2);

    // A chunked response reaches an HTTP/1.0 client decoded, ended by the close.
    let reply = exchange(port, b"GET /chunked HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert_eq!(statuses(head), [200], "{reply}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "ok!!!");

    let metrics = fast.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("ferry_http1_fallback_total{"))
            .all(|l| l.ends_with(" 0")),
        "{metrics}"
    );
}
