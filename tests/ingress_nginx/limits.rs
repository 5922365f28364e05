use crate::nginx_gateway;
use crate::support::manifests::nginx_ingress as ingress;
use crate::support::manifests::{ep, join, service};
use crate::support::{free_port, ConfigDir, Echo, Http, BOTH};

/// `limit-rps` against the clock: requests sent as fast as one client can for a few
/// seconds get through at the configured rate plus one burst, within 10 %; the refused
/// ones carry the RateLimit fields; `limit-whitelist` exempts its addresses.
#[tokio::test(flavor = "multi_thread")]
async fn limit_rps_holds_the_rate_per_client() {
    const RPS: u32 = 20;
    let main = Echo::start("main");
    let port = free_port();
    let dir = ConfigDir::new();
    let limited = [("limit-rps", "20"), ("limit-burst-multiplier", "1")];
    let exempt = [("limit-rps", "1"), ("limit-whitelist", "127.0.0.0/8")];
    dir.write(
        "all.yaml",
        &join(&[
            &ingress("limited", "limited.example", "/", "main", &limited),
            &ingress("exempt", "exempt.example", "/", "main", &exempt),
            &service("web", "main", 80, &[ep(&main, &[])]),
        ]),
    );
    let _gw = nginx_gateway(&dir, port, &[]).await;
    let http = Http::new(crate::support::Proto::H1);
    let url = format!("http://127.0.0.1:{port}/");
    let duration = std::time::Duration::from_secs(3);
    let started = std::time::Instant::now();
    let (mut passed, mut refused) = (0u32, None);
    while started.elapsed() < duration {
        let reply = http.get(&url, Some("limited.example"), &[]).await.unwrap();
        match reply.status {
            200 => passed += 1,
            503 => refused = Some(reply),
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = f64::from(RPS) * (1.0 + elapsed); // the burst (RPS) plus the rate
    let error = (f64::from(passed) - expected).abs() / expected;
    println!(
        "limit-rps {RPS}: {passed} passed in {elapsed:.2} s, expected {expected:.0} ({:.1} % off)",
        error * 100.0
    );
    assert!(error < 0.10, "{passed} passed, expected {expected:.0}");
    let refused = refused.expect("some requests were refused");
    assert_eq!(refused.text, "local_rate_limited");
    assert!(refused
        .header("x-ferry-cause")
        .unwrap_or_default()
        .starts_with("RL Ingress/web/limited"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"Ingress/web/limited/rps\";q=20;w=1")
    );
    assert!(refused.header("retry-after").is_some());
    for _ in 0..30 {
        let reply = http.get(&url, Some("exempt.example"), &[]).await.unwrap();
        assert_eq!(reply.status, 200, "limit-whitelist exempts 127.0.0.1");
    }
}

/// `limit-connections: 2`: a client's third request in progress at once is refused (429,
/// as the class's parameters ConfigMap says with ingress-nginx's `limit-conn-status-code`),
/// and the places come back when requests end (also on HTTP/2, where each stream counts).
#[tokio::test(flavor = "multi_thread")]
async fn limit_connections_bounds_requests_in_progress() {
    let main = Echo::start("main");
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &ingress(
                "bounded",
                "bounded.example",
                "/",
                "main",
                &[("limit-connections", "2")],
            ),
            &service("web", "main", 80, &[ep(&main, &[])]),
            // ingress-nginx's ConfigMap, named by the class's parameters: its status key.
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\n\
             spec: {controller: k8s.io/ingress-nginx, parameters: {kind: ConfigMap, name: ingress-nginx-controller, namespace: ingress-nginx, scope: Namespace}}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ingress-nginx-controller, namespace: ingress-nginx}\n\
             data: {limit-conn-status-code: '429'}\n",
        ]),
    );
    let _gw = nginx_gateway(&dir, port, &["--cause-detail", "full"]).await;
    let url = format!("http://127.0.0.1:{port}/");
    for proto in BOTH {
        let http = Http::new(proto);
        let slow = [("x-echo-delay-ms", "1500")];
        let call = |delay_ms: u64| {
            let (http, url) = (&http, &url);
            async move {
                // Staggered so the third arrives while the first two are in progress.
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                http.get(url, Some("bounded.example"), &slow).await.unwrap()
            }
        };
        let (a, b, c) = tokio::join!(call(0), call(200), call(400));
        let replies = [a, b, c];
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 429], "{proto:?}: {replies:?}");
        assert_eq!(replies[2].text, "concurrency_limited");
        let cause = replies[2].header("x-ferry-cause").unwrap_or_default();
        assert!(cause.starts_with("RL Ingress/web/bounded"), "{cause}");
        for _ in 0..3 {
            let reply = http.get(&url, Some("bounded.example"), &[]).await.unwrap();
            assert_eq!(reply.status, 200, "{proto:?}: places given back");
        }
    }
}
