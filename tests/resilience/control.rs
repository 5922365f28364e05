//! The control path under faults: the controller unreachable without a word (packets
//! dropped, nothing closed) for 20 s, and a snapshot of 10,000 routes replacing one of 100
//! while traffic flows. Serving never depends on the controller being there.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use support::apiserver::{pod_echo, ApiServer};
use support::manifests::{ep, gateway, service};
use support::Controller;
use tokio::net::TcpListener;

/// A TCP relay that can go silent, as a link that goes down does: while cut it forwards
/// nothing and closes nothing. Connections that lived through a cut stay silent afterwards,
/// as they would if the controller had restarted behind the partition: only a proxy that
/// notices and reconnects gets through again.
struct Link {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Link {
    async fn to(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (flag, current) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let born = current.load(Ordering::SeqCst);
                let (flag, current) = (flag.clone(), current.clone());
                tokio::spawn(async move {
                    let alive = move || {
                        !flag.load(Ordering::SeqCst) && current.load(Ordering::SeqCst) == born
                    };
                    relay(client, target, alive).await;
                });
            }
        });
        Link {
            addr,
            cut,
            generation,
        }
    }

    fn down(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn up(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies both ways while `alive` holds; afterwards holds both sockets open and silent.
async fn relay<F>(client: TcpStream, target: SocketAddr, alive: F)
where
    F: Fn() -> bool + Clone + Send + Sync + 'static,
{
    if !alive() {
        return std::future::pending().await; // a SYN into the void
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(copy_while(client_read, server_write, alive.clone()));
    copy_while(server_read, client_write, alive).await;
    let _ = up.await;
}

async fn copy_while<F: Fn() -> bool>(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    alive: F,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        if !alive() {
            return std::future::pending().await; // dropped on the floor, forever
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn route(host: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: shop, namespace: shop}}\n\
         spec:\n  parentRefs: [{{name: public}}]\n  hostnames: [\"{host}\"]\n\
         \x20 rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

/// Which echo answers `GET /` for `shop.example.com` at the gateway, if any.
async fn served_by(port: u16) -> Option<String> {
    let http = support::Http::new(support::Proto::H1);
    let reply = http
        .get(
            &format!("http://127.0.0.1:{port}/"),
            Some("shop.example.com"),
            &[],
        )
        .await?;
    (reply.status == 200).then(|| reply.echo()["name"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_controller_is_noticed_and_the_proxy_resyncs_after_the_outage() {
    let api = ApiServer::start();
    api.install_crds();
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    let (v1, v2) = (pod_echo("v1"), pod_echo("v2"));
    let port = free_port();
    api.apply(&join(&[
        &gateway("shop", "public", &[("http", port, None)]),
        &service("shop", "shop-v1", 80, &[ep(&v1, &[("app", "shop")])]),
        &service("shop", "shop-v2", 80, &[ep(&v2, &[("app", "shop")])]),
        &route("shop.example.com", "shop-v1"),
    ]));
    let push = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let controller = Controller::start(&api.kubeconfig, push).await;
    let link = Link::to(push).await;
    let credentials = api.proxy_credentials("shop", "public");
    let args = ["--scope", "shop/public", "--proxy-name", "gw-1.shop"];
    let gw = Gateway::following(link.addr, credentials, &args);
    gw.wait_ready().await;
    support::eventually(|| async { served_by(port).await.as_deref() == Some("v1") }).await;

    // 20 s without a word from the controller (FERRY_OUTAGE_SECONDS: bench/controller-outage.sh
    // runs 300); a change made meanwhile.
    let outage: u64 = std::env::var("FERRY_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    link.down();
    api.apply(&route("shop.example.com", "shop-v2"));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let outage_end = Instant::now() + Duration::from_secs(outage);
    while Instant::now() < outage_end {
        match served_by(port).await.as_deref() {
            Some("v1") => served.fetch_add(1, Ordering::Relaxed),
            _ => failed.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the last snapshot kept serving"
    );
    assert!(served.load(Ordering::Relaxed) as u64 > outage * 2);
    println!(
        "{outage} s outage: {} requests served from the last snapshot, none failed",
        served.load(Ordering::Relaxed)
    );

    // Back: the proxy, which noticed the silence and keeps redialling, gets the change.
    link.up();
    let took = support::eventually_within(
        "resync after the outage",
        Duration::from_secs(30),
        || async { served_by(port).await.as_deref() == Some("v2") },
    )
    .await;
    println!("resynced {took:?} after the link came back");
    assert!(
        gw.logs().contains("controller unreachable") || gw.logs().contains("reconnect"),
        "{}",
        gw.logs()
    );
    drop(controller);
}

/// `count` VirtualServices, each its own host `r{i}.example.com`, all to the Service `web`.
fn routes(count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: r{i}, namespace: shop}}\n\
                 spec: {{hosts: [r{i}.example.com], gateways: [gw], http: [{{route: [{{destination: {{host: web}}}}]}}]}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_10000_routes_replaces_one_of_100_without_a_failed_request() {
    let echo = Echo::start("web");
    let port = free_port();
    let dir = ConfigDir::new();
    let base = join(&[
        &istio_gateway("shop", "gw", port, &["*"]),
        &support::manifests::service("shop", "web", 80, &[ep(&echo, &[])]),
    ]);
    dir.write("base.yaml", &base);
    dir.write("routes.yaml", &routes(100));
    let gw = Gateway::spawn(dir.path(), &[]);
    gw.wait_ready().await;
    let http = support::Http::new(support::Proto::H1);
    let url = format!("http://127.0.0.1:{port}/");
    let get = |host: &'static str| {
        let (http, url) = (&http, &url);
        async move { http.get(url, Some(host), &[]).await.map(|r| r.status) }
    };
    assert_eq!(get("r7.example.com").await, Some(200));
    let before = gw.version().await;
    dir.write("routes.yaml", &routes(10_000));
    let (mut ok, mut failed) = (0usize, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.version().await == before {
        assert!(
            Instant::now() < deadline,
            "the 10,000-route snapshot was not applied"
        );
        for host in ["r7.example.com", "r99.example.com"] {
            match get(host).await {
                Some(200) => ok += 1,
                other => failed.push(other),
            }
        }
    }
    // A few more after the swap, and a route only the new snapshot has.
    for _ in 0..20 {
        match get("r7.example.com").await {
            Some(200) => ok += 1,
            other => failed.push(other),
        }
    }
    println!(
        "10,000-route swap: {ok} requests on unchanged routes, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed across the swap: {failed:?}"
    );
    assert_eq!(get("r9999.example.com").await, Some(200));
}
