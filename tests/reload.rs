//! Hot reload: 200 configuration swaps under continuous traffic, zero failed requests, each
//! change in effect within 1 s; listeners added and removed at run time.
//! `FERRY_SWAPS=1000` turns it into the swap-storm benchmark (bench/swap-storm.sh).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::manifests::{ep, gateway, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, Proto};

/// Swaps per run: 200 in the test suite, more when FERRY_SWAPS asks.
fn swaps() -> u64 {
    std::env::var("FERRY_SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
const IN_EFFECT_WITHIN: Duration = Duration::from_secs(1);

fn config(generation: u64, main: u16, extra: Option<u16>, a: &Echo, b: &Echo) -> String {
    let mut listeners = vec![("main", main, None)];
    if let Some(port) = extra {
        listeners.push(("extra", port, None));
    }
    // Alternate backends, and stamp the generation on responses so a client can tell
    // which snapshot served it.
    let backend = if generation.is_multiple_of(2) {
        "a"
    } else {
        "b"
    };
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: live, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n    - matches: [{{path: {{type: PathPrefix, value: /gen{}}}}}, {{path: {{type: PathPrefix, value: /}}}}]\n\
         \x20     filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-generation, value: \"{generation}\"}}]}}}}]\n\
         \x20     backendRefs: [{{name: {backend}, port: 80}}]\n",
        generation
    );
    join(&[
        &gateway("default", "gw", &listeners),
        &service("default", "a", 80, &[ep(a, &[])]),
        &service("default", "b", 80, &[ep(b, &[])]),
        &route,
    ])
}

/// Sends requests back to back until `stop`, counting successes and failures.
fn spawn_client(
    proto: Proto,
    port: u16,
    delay_ms: &'static str,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let http = Http::new(proto);
        let mut errors = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let reply = http
                .get(
                    &format!("http://127.0.0.1:{port}/load"),
                    None,
                    &[("x-echo-delay-ms", delay_ms)],
                )
                .await;
            match reply {
                Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                other => {
                    errors.push(format!(
                        "{proto:?}: {:?}",
                        other.map(|r| (r.status, r.text))
                    ));
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        errors
    })
}

async fn generation_served(http: &Http, port: u16) -> Option<u64> {
    let r = http
        .get(&format!("http://127.0.0.1:{port}/probe"), None, &[])
        .await?;
    r.header("x-generation")?.parse().ok()
}

async fn port_answers(http: &Http, port: u16) -> bool {
    http.get(&format!("http://127.0.0.1:{port}/"), None, &[])
        .await
        .is_some_and(|r| r.status == 200)
}

async fn time_until<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    support::eventually_within(what, IN_EFFECT_WITHIN, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_swaps_under_load_lose_no_request() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let (main, extra) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write("config.yaml", &config(0, main, None, &a, &b));
    let _gw = Gateway::start(dir.path()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = [
        (Proto::H1, "0"),
        (Proto::H1, "20"),
        (Proto::H2c, "0"),
        (Proto::H2c, "20"),
    ]
    .into_iter()
    .map(|(proto, delay)| {
        spawn_client(proto, main, delay, stop.clone(), ok.clone(), failed.clone())
    })
    .collect();

    let probe = Http::new(Proto::H1);
    let mut latencies = Vec::new();
    for generation in 1..=swaps() {
        // Every 10th change adds the extra listener, the next one removes it again.
        let extra_on = generation % 10 == 0;
        dir.write(
            "config.yaml",
            &config(generation, main, extra_on.then_some(extra), &a, &b),
        );
        let took = time_until(&format!("generation {generation}"), || async {
            generation_served(&probe, main)
                .await
                .is_some_and(|g| g >= generation)
        })
        .await;
        if extra_on {
            time_until("extra listener added", || async {
                port_answers(&probe, extra).await
            })
            .await;
        } else if generation % 10 == 1 && generation > 1 {
            time_until("extra listener removed", || async {
                !port_answers(&Http::new(Proto::H1), extra).await
            })
            .await;
        }
        latencies.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for client in clients {
        errors.extend(client.await.unwrap());
    }
    latencies.sort();
    let (served, lost) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "reload: {} swaps, {served} requests served during them, {lost} failed; change in effect: median {:?}, p99 {:?}, max {:?}",
        swaps(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        lost,
        0,
        "failed requests: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        served > 1000,
        "too little traffic during the swaps to prove anything: {served}"
    );
}
