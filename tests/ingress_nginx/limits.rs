use crate::nginx_gateway;
use crate::support::manifests::nginx_ingress as ingress;
use crate::support::manifests::{ep, join, service};
use crate::support::{free_port, ConfigDir, Echo, Http};

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
