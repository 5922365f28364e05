//! Admin endpoints, readiness, and keeping the last good snapshot when a change is invalid.

mod support;

use support::manifests::{ep, gateway, join, service};
use support::{eventually, free_port, ConfigDir, Echo, Gateway, Http, Proto};

fn route(rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n    - {rule}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_only_after_first_valid_snapshot() {
    let dir = ConfigDir::new();
    dir.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    );
    let gw = Gateway::spawn(dir.path(), &[]);
    let ready = format!("http://{}/ready", gw.admin);
    let http = Http::new(Proto::H1);
    eventually(|| async { http.get(&ready, None, &[]).await.is_some() }).await;
    // The admin endpoint answers before the first load has run: wait for the rejection.
    eventually(|| async { !gw.config_dump().await["last_rejected"].is_null() }).await;
    let status = http.get(&ready, None, &[]).await.map(|r| r.status);
    assert_eq!(status, Some(503), "not ready on a rejected first config");
    let dump = gw.config_dump().await;
    assert!(dump["version"].is_null());
    assert!(
        dump["last_rejected"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("broken.yaml"),
        "{dump}"
    );

    let echo = Echo::start("web");
    let port = free_port();
    dir.remove("broken.yaml");
    dir.write(
        "ok.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "web", 80, &[ep(&echo, &[])]),
            &route("backendRefs: [{name: web, port: 80}]"),
        ]),
    );
    gw.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_change_is_rejected_and_last_good_keeps_serving() {
    let echo = Echo::start("web");
    let port = free_port();
    let dir = ConfigDir::new();
    let base = join(&[
        &gateway("default", "gw", &[("http", port, None)]),
        &service("default", "web", 80, &[ep(&echo, &[])]),
    ]);
    dir.write("base.yaml", &base);
    dir.write("route.yaml", &route("backendRefs: [{name: web, port: 80}]"));
    let gw = Gateway::start(dir.path()).await;
    let version = gw.version().await;
    let http = Http::new(Proto::H1);
    let url = format!("http://127.0.0.1:{port}/");

    // A regex that does not compile: the whole change is rejected, naming object and field.
    dir.write("route.yaml", &route("{matches: [{path: {type: RegularExpression, value: \"/(\"}}], backendRefs: [{name: web, port: 80}]}"));
    eventually(|| async { !gw.config_dump().await["last_rejected"].is_null() }).await;
    let dump = gw.config_dump().await;
    let reason = dump["last_rejected"]["reasons"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("HTTPRoute/default/web")
            && reason.contains("spec.rules[0].matches[0].path"),
        "{reason}"
    );
    assert_eq!(
        dump["version"].as_u64(),
        Some(version),
        "active version unchanged"
    );
    assert_eq!(
        http.get(&url, None, &[]).await.unwrap().backend(),
        "web",
        "last good snapshot still serves"
    );
    assert!(
        gw.logs().contains("configuration rejected"),
        "rejection is logged"
    );

    // A schema error (unknown enum value) is rejected the same way.
    dir.write(
        "route.yaml",
        &route(
            "{matches: [{path: {type: Prefix, value: /}}], backendRefs: [{name: web, port: 80}]}",
        ),
    );
    eventually(|| async {
        let dump = gw.config_dump().await;
        dump["last_rejected"]["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("field `spec.rules[0].matches[0].path.type`"))
    })
    .await;
    assert_eq!(http.get(&url, None, &[]).await.unwrap().status, 200);

    let metrics = gw.admin_get("/metrics").await;
    let rejections = metric_value(&metrics, "ferry_snapshot_rejections_total").unwrap();
    assert!(rejections >= 2.0, "{metrics}");

    // Fixing the file (to a different valid route) applies a new version.
    dir.write("route.yaml", &route("{matches: [{path: {type: PathPrefix, value: /v2}}], backendRefs: [{name: web, port: 80}]}"));
    eventually(|| async { gw.version().await > version }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_backend_and_code() {
    let echo = Echo::start("web");
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &join(&[&gateway("default", "gw", &[("http", port, None)]), &service("default", "web", 80, &[ep(&echo, &[])]), &route("{matches: [{path: {type: PathPrefix, value: /app}}], backendRefs: [{name: web, port: 80}]}")]));
    let gw = Gateway::start(dir.path()).await;
    let http = Http::new(Proto::H1);
    for _ in 0..5 {
        assert_eq!(
            http.get(&format!("http://127.0.0.1:{port}/app"), None, &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            http.get(&format!("http://127.0.0.1:{port}/nothing"), None, &[])
                .await
                .unwrap()
                .status,
            404
        );
    }
    let metrics = gw.admin_get("/metrics").await;
    let ok = format!("ferry_requests_total{{backend=\"default/web:80\",code=\"200\",listener=\"{port}\",route=\"default/web/rule/0/match/0\"}}");
    let missing = format!(
        "ferry_requests_total{{backend=\"none\",code=\"404\",listener=\"{port}\",route=\"none\"}}"
    );
    eventually(|| async {
        let m = gw.admin_get("/metrics").await;
        metric_value(&m, &ok) == Some(5.0) && metric_value(&m, &missing) == Some(3.0)
    })
    .await;
    assert!(metric_value(&metrics, "ferry_snapshot_version").unwrap() >= 1.0);
    assert_eq!(metric_value(&metrics, "ferry_listeners"), Some(1.0));
    assert_eq!(
        gw.admin_get("/stats/prometheus").await.lines().next(),
        metrics.lines().next()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn port_already_in_use_is_reported_and_other_listeners_serve() {
    let echo = Echo::start("web");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("ok", port, None), ("busy", busy, None)]),
            &service("default", "web", 80, &[ep(&echo, &[])]),
            &route("backendRefs: [{name: web, port: 80}]"),
        ]),
    );
    let gw = Gateway::start(dir.path()).await;
    let dump = gw.config_dump().await;
    assert!(
        dump["listener_errors"][0]
            .as_str()
            .unwrap()
            .contains(&format!("port {busy}")),
        "{dump}"
    );
    assert_eq!(
        Http::new(Proto::H1)
            .get(&format!("http://127.0.0.1:{port}/"), None, &[])
            .await
            .unwrap()
            .status,
        200
    );
}

/// The value of a sample line `name value` in Prometheus text format.
fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_binds_loopback_only_and_the_status_port_is_read_only() {
    let refused = support::ferry()
        .args([
            "gateway",
            "--config",
            "/nonexistent",
            "--admin",
            "0.0.0.0:15000",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("loopback only"), "{stderr}");

    let echo = Echo::start("web");
    let (port, status_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write(
        "ok.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "web", 80, &[ep(&echo, &[])]),
            &route("backendRefs: [{name: web, port: 80}]"),
        ]),
    );
    let status = format!("127.0.0.1:{status_port}");
    let gw = Gateway::spawn(dir.path(), &["--status", &status]);
    gw.wait_ready().await;
    let http = Http::new(Proto::H1);
    let get = |path: &str| {
        let url = format!("http://{status}{path}");
        let http = &http;
        async move { http.get(&url, None, &[]).await.map(|r| (r.status, r.text)) }
    };
    assert_eq!(get("/healthz/ready").await.map(|r| r.0), Some(200));
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    let metrics = get("/stats/prometheus").await.unwrap();
    assert!(metrics.1.contains("ferry_"), "{}", metrics.1);
    for path in ["/config_dump", "/logging", "/endpoints"] {
        assert_eq!(
            get(path).await.map(|r| r.0),
            Some(404),
            "{path} on the status port"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_security_policy_ferry_does_not_enforce_is_refused_and_the_last_good_keeps_serving() {
    let echo = Echo::start("web");
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "ok.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "web", 80, &[ep(&echo, &[])]),
            &route("backendRefs: [{name: web, port: 80}]"),
        ]),
    );
    let gw = Gateway::start(dir.path()).await;
    let version = gw.version().await;
    dir.write(
        "policy.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: default}\nspec: {jwtRules: [{issuer: x, jwks: \"not json\"}]}\n",
    );
    eventually(|| async { !gw.config_dump().await["last_rejected"].is_null() }).await;
    let dump = gw.config_dump().await;
    let reasons = dump["last_rejected"]["reasons"].to_string();
    assert!(
        reasons.contains("RequestAuthentication/default/jwt")
            && reasons.contains("spec.jwtRules[0].jwks"),
        "{reasons}"
    );
    assert_eq!(gw.version().await, version);
    let reply = Http::new(Proto::H1)
        .get(&format!("http://127.0.0.1:{port}/"), None, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}
