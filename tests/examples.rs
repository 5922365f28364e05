//! The examples work as their READMEs say: same manifests, same backends, same requests.

mod support;

use support::{example, start_example, Gateway, Http, Proto, BOTH};

#[tokio::test(flavor = "multi_thread")]
async fn weather_canary_splits_about_ninety_ten() {
    let (_backends, _gw) = start_example("weather-canary", &[]).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let mut v2 = 0;
        for _ in 0..400 {
            let r = support::weather_forecast(&http, &[]).await;
            if r.backend() == "weather-v2" {
                v2 += 1;
            }
        }
        // 400 draws at p=0.1: sd 15; 40 +- 25 is beyond 4 sd.
        assert!((15..=65).contains(&v2), "{proto:?}: {v2} of 400 went to v2");
        let pinned = http
            .get(
                "http://127.0.0.1:18080/",
                Some("weather.example.com"),
                &[("x-canary", "always")],
            )
            .await
            .unwrap();
        assert_eq!(pinned.backend(), "weather-v2");
        let miss = http
            .get("http://127.0.0.1:18080/", Some("localhost"), &[])
            .await
            .unwrap();
        assert_eq!(miss.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_basic_routes_by_host_path_and_header() {
    let (_backends, gw) = start_example("gateway-api-basic", &[]).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let get = |host: &'static str,
                   path: &'static str,
                   headers: &'static [(&'static str, &'static str)]| {
            let http = http.clone();
            async move {
                http.get(
                    &format!("http://127.0.0.1:18081{path}"),
                    Some(host),
                    headers,
                )
                .await
                .unwrap()
            }
        };
        let r = get("store.demo.example", "/cart", &[]).await.echo();
        assert_eq!(
            (r["name"].as_str(), r["path"].as_str()),
            (Some("store"), Some("/cart"))
        );
        let r = get("api.demo.example", "/api/users", &[]).await.echo();
        assert_eq!(
            (r["name"].as_str(), r["path"].as_str()),
            (Some("api"), Some("/v2/users"))
        );
        let r = get("api.demo.example", "/home", &[]).await.echo();
        assert_eq!(r["name"], "store");
        let r = get("api.demo.example", "/api/users", &[("x-beta", "true")]).await;
        assert_eq!(
            (r.backend().as_str(), r.header("x-served-by")),
            ("api-beta", Some("beta"))
        );
        assert_eq!(get("other.example", "/", &[]).await.status, 404);
    }
    let reports = gw.config_dump().await["reports"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        reports.iter().all(|r| r["status"] == true),
        "all conditions true: {reports:?}"
    );
}

async fn status_counts(
    http: &Http,
    url: &str,
    host: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = http.get(url, Some(host), headers).await.unwrap();
        *counts.entry(r.status).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn circuit_breaker_example_fails_fast_only_under_concurrency() {
    let (_backends, _gw) = start_example("circuit-breaker", &[]).await;
    let url = "http://127.0.0.1:18082/get";
    let one = status_counts(&Http::new(Proto::H1), url, "httpbin.example.com", &[], 20).await;
    assert_eq!(one.get(&200), Some(&20), "one client passes 100%: {one:?}");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                status_counts(&Http::new(Proto::H1), url, "httpbin.example.com", &[], 20).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for c in clients {
        let counts = c.await.unwrap();
        ok += counts.get(&200).copied().unwrap_or(0);
        overflow += counts.get(&503).copied().unwrap_or(0);
    }
    assert_eq!(ok + overflow, 60);
    assert!(
        overflow >= 5 && ok >= 20,
        "3 clients x 20: {ok} passed, {overflow} failed fast"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_injection_example_delays_jason_and_aborts_half() {
    let (_backends, _gw) = start_example("fault-injection", &[]).await;
    let http = Http::new(Proto::H1);
    let host = Some("ratings.example.com");
    let begun = std::time::Instant::now();
    assert_eq!(
        http.get(
            "http://127.0.0.1:18083/ratings/1",
            host,
            &[("end-user", "jason")]
        )
        .await
        .unwrap()
        .status,
        200
    );
    assert!(begun.elapsed() >= std::time::Duration::from_secs(2));
    let begun = std::time::Instant::now();
    assert_eq!(
        http.get("http://127.0.0.1:18083/ratings/1", host, &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert!(begun.elapsed() < std::time::Duration::from_millis(500));
    let counts = status_counts(
        &http,
        "http://127.0.0.1:18083/flaky",
        "ratings.example.com",
        &[],
        200,
    )
    .await;
    let aborted = counts.get(&503).copied().unwrap_or(0);
    // 200 draws at p=0.5: sd ~7; 100 +- 35 is 5 sd.
    assert!((65..=135).contains(&aborted), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_timeouts_example_hides_the_flaky_pod_and_times_out() {
    let (_backends, _gw) = start_example("retries-timeouts", &[]).await;
    let http = Http::new(Proto::H1);
    let with = status_counts(
        &http,
        "http://127.0.0.1:18084/orders",
        "orders.example.com",
        &[],
        100,
    )
    .await;
    assert_eq!(with.get(&200), Some(&100), "{with:?}");
    let without = status_counts(
        &http,
        "http://127.0.0.1:18084/no-retries",
        "orders.example.com",
        &[],
        100,
    )
    .await;
    let failed = without.get(&503).copied().unwrap_or(0);
    assert!((30..=70).contains(&failed), "{without:?}");
    let begun = std::time::Instant::now();
    let r = http
        .get(
            "http://127.0.0.1:18084/slow",
            Some("orders.example.com"),
            &[("x-echo-delay-ms", "2000")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert!(r
        .header("x-ferry-cause")
        .unwrap()
        .starts_with("UT Service/demo/orders"));
    assert!(begun.elapsed() < std::time::Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread")]
async fn https_gateway_example_serves_tls_with_its_ca_and_redirects_plain_http() {
    let (_backends, _gw) = start_example("https-gateway", &[]).await;
    let ca = std::fs::read_to_string(example("https-gateway").join("ca.crt")).unwrap();
    for alpn in ["h2", "http/1.1"] {
        let got = support::tls::https_get(18443, "shop.demo.example", &ca, &[alpn], "/cart")
            .await
            .unwrap_or_else(|e| panic!("{alpn}: {e}"));
        assert_eq!(got.alpn.as_deref(), Some(alpn));
        assert_eq!(got.reply.backend(), "shop");
        assert_eq!(got.reply.echo()["headers"]["x-forwarded-proto"], "https");
    }
    let redirect = Http::new(Proto::H1)
        .get(
            "http://127.0.0.1:18085/cart",
            Some("shop.demo.example"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://shop.demo.example:18443/cart")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_verifies_tokens_and_applies_per_service_rules() {
    let (_backends, _gw) = start_example("authorization", &[]).await;
    let token = |name: &str| {
        let text = std::fs::read_to_string(example("authorization").join(name)).unwrap();
        format!("Bearer {}", text.trim())
    };
    let (alice, bob, expired) = (token("alice.jwt"), token("bob.jwt"), token("expired.jwt"));
    for proto in BOTH {
        let http = Http::new(proto);
        let get = |path: &'static str, auth: Option<String>| {
            let http = http.clone();
            async move {
                let headers: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("authorization", a.as_str())).collect();
                http.get(&format!("http://127.0.0.1:18090{path}"), None, &headers)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            get("/orders", None).await.status,
            403,
            "{proto:?}: no token"
        );
        let orders = get("/orders", Some(bob.clone())).await;
        assert_eq!(orders.status, 200, "{proto:?}");
        assert_eq!(orders.echo()["headers"]["x-user"], "bob", "{proto:?}");
        assert!(orders.echo()["headers"].get("authorization").is_none());
        assert_eq!(
            get("/reports", Some(bob.clone())).await.status,
            403,
            "{proto:?}: bob is not in ops"
        );
        assert_eq!(
            get("/reports", Some(alice.clone())).await.backend(),
            "reports"
        );
        let refused = get("/orders", Some(expired.clone())).await;
        assert_eq!(
            (refused.status, refused.text.trim()),
            (401, "Jwt is expired"),
            "{proto:?}"
        );
        assert_eq!(
            get("/admin", Some(alice.clone())).await.status,
            403,
            "{proto:?}: no ALLOW rule"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_passthrough_example_reaches_backends_that_terminate_their_own_tls() {
    let (_backends, gw) = start_example("tls-passthrough", &[]).await;
    let ca = std::fs::read_to_string(example("tls-passthrough").join("ca.crt")).unwrap();
    for (name, backend) in [("db.example.com", "db"), ("mq.example.com", "mq")] {
        // The backend's own certificate (this example's CA) is what the client verifies.
        let got = support::tls::https_get(18453, name, &ca, &["http/1.1"], "/orders")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.reply.backend(), backend);
        assert_eq!(got.reply.echo()["tls_server_name"], name);
    }
    let unrouted = support::tls::https_get(18453, "web.example.com", &ca, &["http/1.1"], "/").await;
    assert!(unrouted.is_err(), "a name without a route was served");
    let legacy = Http::new(Proto::H1)
        .get("http://127.0.0.1:15432/anything", None, &[])
        .await
        .unwrap();
    assert_eq!(legacy.backend(), "legacy");
    let metrics = gw.admin_get("/metrics").await;
    assert!(metrics.contains("response_flags=\"NR\""), "{metrics}");
}

/// The ingress-nginx example answers the same served as it is and after `ferry migrate`
/// (run.sh and run.sh --migrated do the same with the same files).
#[tokio::test(flavor = "multi_thread")]
async fn ingress_nginx_migration_answers_alike_before_and_after() {
    let name = "ingress-nginx-migration";
    let flags = ["--ingress-port", "18090", "--ingress-class", "nginx"];
    let _backends = support::start_example_backends(name);
    let before = {
        let gw = Gateway::spawn(&example(name), &flags);
        gw.wait_ready().await;
        ingress_nginx_answers().await
    };
    let out = support::ferry()
        .args(["migrate", "--http-port", "18090", "-f"])
        .arg(example(name).join("ingresses.yaml"))
        .arg("-f")
        .arg(example(name).join("admin-ingress.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = support::ConfigDir::new();
    dir.write("migrated.yaml", &String::from_utf8(out.stdout).unwrap());
    for file in ["backends.yaml", "admin-ingress.yaml"] {
        dir.write(
            file,
            &std::fs::read_to_string(example(name).join(file)).unwrap(),
        );
    }
    let gw = Gateway::spawn(dir.path(), &flags);
    gw.wait_ready().await;
    let after = ingress_nginx_answers().await;
    assert_eq!(before, after);
    assert_eq!(before[0], (200, "api".into(), "/items".into()));
    assert_eq!(before[1].1, "web-v2");
    assert_eq!(
        (before[2].0, before[3].0, before[4].1.as_str()),
        (401, 200, "admin")
    );
    assert!(
        before[5..].iter().any(|a| a.0 == 503),
        "the rate limit: {before:?}"
    );
}

/// (status, backend, upstream path) of the example's requests, the last 15 for the limit.
async fn ingress_nginx_answers() -> Vec<(u16, String, String)> {
    let http = Http::new(Proto::H1);
    let get = |host: &'static str, path: &'static str, headers: &'static [(&str, &str)]| {
        let http = http.clone();
        async move {
            let url = format!("http://127.0.0.1:18090{path}");
            let r = http.get(&url, Some(host), headers).await.unwrap();
            let path = r.echo()["path"].as_str().unwrap_or("-").to_string();
            (r.status, r.backend(), path)
        }
    };
    let mut out = vec![
        get("shop.demo.example", "/api/items", &[]).await,
        get("shop.demo.example", "/", &[("x-canary", "always")]).await,
        get("admin.demo.example", "/", &[]).await,
        // alice:password
        get(
            "admin.demo.example",
            "/",
            &[("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")],
        )
        .await,
        get(
            "admin.demo.example",
            "/x",
            &[("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")],
        )
        .await,
    ];
    for _ in 0..15 {
        let (status, _, _) = get("shop.demo.example", "/", &[("x-canary", "never")]).await;
        out.push((status, String::new(), String::new()));
    }
    out
}
