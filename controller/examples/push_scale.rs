//! Push-scale benchmark: N simulated proxies (default 1,000; lightweight HTTP/2 clients in
//! this process) subscribed to the controller's push server on loopback, 10 gateway scopes
//! of N/10 proxies each. Every round changes one EndpointSlice that all scopes use and times
//! how long until the controller has every proxy's ACK for the new version.
//!
//!   cargo run --release -p ferry-controller --example push_scale -- [PROXIES] [ROUNDS]
//!
//! Prints JSON: per-round time to all-ACKed (p50/p99 over rounds), per-proxy ACK latency
//! (p50/p99 over all proxies and rounds) and the process RSS (controller + clients).
//!
//! The push port is the real one: TLS with a certificate from an in-process mesh CA, and each
//! proxy's bearer token checked by an authenticator (a table here, where the controller asks
//! the API server's TokenReview) before its scope is granted.

use bytes::Bytes;
use ferry_controller::ca::tokens::Caller;
use ferry_controller::ca::{Authority, CurrentAuthority};
use ferry_controller::inputs::parse_manifests;
use ferry_controller::push::access::Authenticate;
use ferry_controller::push::server::{serve, PushState};
use ferry_controller::push::Publisher;
use ferry_controller::Inputs;
use ferry_model::push::{
    encode_line, ControllerFrame, LineDecoder, ProxyFrame, Scope, SUBSCRIBE_PATH,
};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const SCOPES: usize = 10;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let proxies: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);

    let registry = prometheus::Registry::new();
    let publisher = Arc::new(Publisher::default());
    publisher.update(Arc::new(inputs(0)));
    let material = Authority::generate_root("cluster.local").unwrap();
    let root_pem = material.root_cert_pem.clone();
    let authority = Authority::new(material, "cluster.local", Duration::from_secs(3600)).unwrap();
    let tls = ferry_controller::ca::serving_tls(&authority, "bench", &[]).unwrap();
    let state = Arc::new(PushState::new(
        publisher.clone(),
        registry,
        tokio::sync::watch::channel(true).1,
        Arc::new(GatewayTokens),
        Arc::new(CurrentAuthority::new(authority)),
        "bench",
    ));
    let listener =
        ferry_controller::push::server::listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, tls, state.clone()));
    let rss_before = rss_kib();

    let client_tls = client_tls(&root_pem);
    let connect_started = Instant::now();
    for id in 0..proxies {
        tokio::spawn(proxy(addr, client_tls.clone(), id));
    }
    let first = wait_all_acked(&state, proxies, 0).await;
    let connect_time = connect_started.elapsed();
    let rss_connected = rss_kib();

    let mut round_times = Vec::new();
    let mut per_proxy = Vec::new();
    let mut version = first;
    for round in 1..=rounds {
        let changed = Instant::now();
        publisher.update(Arc::new(inputs(round)));
        let (next, latencies) = track_acks(&state, proxies, version, changed).await;
        round_times.push(changed.elapsed());
        per_proxy.extend(latencies);
        version = next;
    }
    let report = serde_json::json!({
        "proxies": proxies,
        "connection_retries": RETRIES.load(std::sync::atomic::Ordering::Relaxed),
        "scopes": SCOPES,
        "rounds": rounds,
        "connect_all_acked_ms": ms(connect_time),
        "all_acked_ms": {"p50": ms(percentile(&mut round_times, 50)), "p99": ms(percentile(&mut round_times, 99))},
        "per_proxy_ack_ms": {"p50": ms(percentile(&mut per_proxy, 50)), "p99": ms(percentile(&mut per_proxy, 99))},
        "rss_kib": {"before_proxies": rss_before, "connected": rss_connected, "after_rounds": rss_kib()},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// Ten Gateways (one per scope), each with ten HTTPRoutes to one Service whose
/// EndpointSlice port changes with `round` — the object change every proxy must receive.
fn inputs(round: usize) -> Inputs {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: bench}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web, namespace: bench, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\n\
         endpoints: [{{addresses: [10.0.0.1, 10.0.0.2, 10.0.0.3]}}]\n",
        9000 + round
    );
    for g in 0..SCOPES {
        yaml.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: gw-{g}, namespace: bench}}\n\
             spec: {{gatewayClassName: ferry, listeners: [{{name: http, port: {}, protocol: HTTP}}]}}\n",
            8000 + g
        ));
        for r in 0..10 {
            yaml.push_str(&format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: r-{g}-{r}, namespace: bench}}\n\
                 spec: {{parentRefs: [{{name: gw-{g}}}], hostnames: [\"h{r}.example.com\"],\n\
                 \x20 rules: [{{matches: [{{path: {{type: PathPrefix, value: /p{r}}}}}], backendRefs: [{{name: web, port: 80}}]}}]}}\n"
            ));
        }
    }
    Inputs::from_objects(parse_manifests(&yaml, "push-scale").expect("valid manifests"))
}

/// Tokens `bench/gw-N` stand for the ServiceAccount of Gateway `bench/gw-N`.
struct GatewayTokens;

impl Authenticate for GatewayTokens {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Caller, String>> {
        Box::pin(async move {
            let (namespace, service_account) = token.split_once('/').ok_or("unknown token")?;
            Ok(Caller {
                namespace: namespace.into(),
                service_account: service_account.into(),
            })
        })
    }
}

fn client_tls(root_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Reconnect policy of the real proxies (ferry_gateway::sync): exponential from 100 ms to 5 s,
/// each wait between half and all of the step, so a herd that was refused spreads out.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connection attempts that failed (refused, reset, timed out) and were retried.
static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One simulated proxy: subscribes, ACKs every snapshot, reconnects with backoff when the
/// connection fails or ends.
async fn proxy(addr: SocketAddr, tls: tokio_rustls::TlsConnector, id: usize) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0u64.. {
        match subscribe(addr, &tls, id).await {
            Ok(()) => backoff = FIRST_BACKOFF, // it worked: the next failure starts small
            Err(_) => drop(RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        }
        // A pseudo-random share of the step (no RNG needed for a spread).
        let share = ((id as u64).wrapping_mul(2_654_435_761) ^ attempt.wrapping_mul(40_503)) % 1000;
        let half = backoff / 2;
        tokio::time::sleep(half + half.mul_f64(share as f64 / 1000.0)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// TLS, hello with its token, then ACK every snapshot until the stream ends.
async fn subscribe(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    id: usize,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(connection);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let hello = ProxyFrame::Hello {
        proxy: format!("proxy-{id}").into(),
        scope: Scope {
            gateway: format!("bench/gw-{}", id % SCOPES).into(),
            labels: vec![],
            ..Scope::default()
        },
    };
    tx.send(Bytes::from(encode_line(&hello))).unwrap();
    let body = StreamBody::new(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    })));
    let request = http::Request::post(format!("https://{addr}{SUBSCRIBE_PATH}"))
        .header("authorization", format!("Bearer bench/gw-{}", id % SCOPES))
        .body(body)
        .unwrap();
    let mut body = sender
        .send_request(request)
        .await
        .map_err(|e| format!("subscribe: {e}"))?
        .into_body();
    let mut decoder = LineDecoder::default();
    while let Some(Ok(frame)) = body.frame().await {
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for message in decoder.push::<ControllerFrame>(data)? {
            if let ControllerFrame::Snapshot { snapshot, .. } = message {
                let ack = ProxyFrame::Ack {
                    version: snapshot.version,
                };
                let _ = tx.send(Bytes::from(encode_line(&ack)));
            }
        }
    }
    Ok(())
}

/// Waits until `count` proxies have ACKed a version newer than `after`; returns it.
async fn wait_all_acked(state: &PushState, count: usize, after: u64) -> u64 {
    track_acks(state, count, after, Instant::now()).await.0
}

/// Polls the controller's own record (what `ferry proxy-status` shows) every 200 µs until
/// every proxy ACKed something newer than `after`; returns the version and, per proxy, the
/// time from `since` to the poll that first saw its ACK.
async fn track_acks(
    state: &PushState,
    count: usize,
    after: u64,
    since: Instant,
) -> (u64, Vec<Duration>) {
    let mut seen = std::collections::HashMap::new();
    loop {
        for p in state.proxies.list() {
            if p.acked_version > after {
                seen.entry(p.proxy)
                    .or_insert_with(|| (p.acked_version, since.elapsed()));
            }
        }
        if seen.len() >= count {
            let version = seen.values().map(|(v, _)| *v).max().unwrap_or(after);
            return (version, seen.into_values().map(|(_, d)| d).collect());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort();
    let index = (values.len() * p).div_ceil(100).saturating_sub(1);
    values.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
