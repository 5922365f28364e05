//! Traffic policies through the real binary: timeouts, retries, faults, circuit breaking,
//! outlier detection, load balancing and CORS, against real `ferry echo` backends.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use support::manifests::{ep, gateway, istio_gateway, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, Reply, BOTH};

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// A VirtualService on `shop/gw` for host `t.example.com` with the given http[] entries.
fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: t, namespace: shop}}\n\
         spec:\n  hosts: [t.example.com]\n  gateways: [gw]\n  http:\n{http}"
    )
}

fn destination_rule(name: &str, policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  host: {name}\n  trafficPolicy:\n{policy}"
    )
}

async fn start(docs: &[&str], port: u16) -> (ConfigDir, Gateway) {
    let dir = ConfigDir::new();
    let gw_doc = istio_gateway("shop", "gw", port, &["*"]);
    let mut all = vec![gw_doc.as_str()];
    all.extend_from_slice(docs);
    dir.write("all.yaml", &join(&all));
    let gw = Gateway::start(dir.path()).await;
    (dir, gw)
}

async fn get(http: &Http, port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    http.get(&url(port, path), Some("t.example.com"), headers)
        .await
        .expect("gateway answered")
}

fn cause(r: &Reply) -> &str {
    r.header("x-ferry-cause").unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn route_timeout_answers_504_and_cancels_upstream() {
    let slow = Echo::start("slow");
    let port = free_port();
    let (_dir, _gw) = start(&[
        &service("shop", "slow", 80, &[ep(&slow, &[])]),
        &virtual_service("    - {timeout: 300ms, retries: {attempts: 0}, route: [{destination: {host: slow}}]}\n"),
    ], port).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let begun = Instant::now();
        let r = get(&http, port, "/", &[("x-echo-delay-ms", "1000")]).await;
        let took = begun.elapsed();
        assert_eq!(r.status, 504, "{proto:?}");
        assert!(cause(&r).starts_with("UT"), "{}", cause(&r));
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(900),
            "{proto:?}: took {took:?}"
        );
        // The echo logs a request only once it has answered: a cancelled one never shows up.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            slow.request_count(),
            0,
            "{proto:?}: the upstream request was cancelled"
        );
    }
    assert_eq!(
        get(
            &Http::new(support::Proto::H1),
            port,
            "/",
            &[("x-echo-delay-ms", "10")]
        )
        .await
        .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_request_timeout() {
    let slow = Echo::start("slow");
    let port = free_port();
    let dir = ConfigDir::new();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n    - {timeouts: {request: 250ms}, backendRefs: [{name: slow, port: 80}]}\n";
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "slow", 80, &[ep(&slow, &[])]),
            route,
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let r = Http::new(proto)
            .get(&url(port, "/"), None, &[("x-echo-delay-ms", "2000")])
            .await
            .unwrap();
        assert_eq!(r.status, 504, "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_move_to_another_endpoint() {
    let (good, bad) = (
        Echo::start("good"),
        Echo::start_with("bad", &["--status", "503"]),
    );
    let port = free_port();
    let (_dir, _gw) = start(&[
        &service("shop", "app", 80, &[ep(&good, &[]), ep(&bad, &[])]),
        &virtual_service("    - {retries: {attempts: 2, retryOn: 5xx}, route: [{destination: {host: app}}]}\n"),
    ], port).await;
    for proto in BOTH {
        let http = Http::new(proto);
        for _ in 0..20 {
            let r = get(&http, port, "/", &[]).await;
            assert_eq!(
                (r.status, r.backend().as_str()),
                (200, "good"),
                "{proto:?}: {}",
                cause(&r)
            );
        }
    }
    assert!(
        bad.settled_request_count() > 0,
        "the failing endpoint was tried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_default_retry_covers_a_dead_endpoint() {
    let good = Echo::start("good");
    let (_reserved, dead_port) = support::dead_port();
    let port = free_port();
    let dead = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: app-dead, namespace: shop, labels: {{kubernetes.io/service-name: app}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {dead_port}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    );
    // No `retries`: Istio's default policy (2 attempts on connect failure) applies.
    let (_dir, _gw) = start(
        &[
            &service("shop", "app", 80, &[ep(&good, &[])]),
            &dead,
            &virtual_service("    - route: [{destination: {host: app}}]\n"),
        ],
        port,
    )
    .await;
    for proto in BOTH {
        let http = Http::new(proto);
        for _ in 0..20 {
            assert_eq!(
                get(&http, port, "/", &[]).await.backend(),
                "good",
                "{proto:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_streamed_bodies_are_not_retried() {
    let (good, bad) = (
        Echo::start("good"),
        Echo::start_with("bad", &["--status", "503"]),
    );
    let port = free_port();
    let (_dir, _gw) = start(&[
        &service("shop", "app", 80, &[ep(&good, &[]), ep(&bad, &[])]),
        &virtual_service("    - {retries: {attempts: 3, retryOn: 5xx}, route: [{destination: {host: app}}]}\n"),
    ], port).await;
    let http = Http::new(support::Proto::H1);
    let body = bytes::Bytes::from(vec![b'x'; 512 * 1024]);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = http
            .send(
                "POST",
                &url(port, "/upload"),
                Some("t.example.com"),
                &[],
                body.clone(),
            )
            .await
            .unwrap();
        statuses.push(r.status);
    }
    // Round robin sends half the first tries to the failing endpoint; those bodies were
    // streamed past the retry buffer, so they are answered as the endpoint answered.
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
    let small = http
        .send(
            "POST",
            &url(port, "/upload"),
            Some("t.example.com"),
            &[],
            "small".into(),
        )
        .await
        .unwrap();
    assert_eq!(small.status, 200, "a small buffered body is retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_injection_aborts_and_delays() {
    let app = Echo::start("app");
    let port = free_port();
    let (_dir, _gw) = start(&[
        &service("shop", "app", 80, &[ep(&app, &[])]),
        &virtual_service(concat!(
            "    - {match: [{uri: {prefix: /abort}}], fault: {abort: {httpStatus: 418, percentage: {value: 100}}}, route: [{destination: {host: app}}]}\n",
            "    - {match: [{uri: {prefix: /half}}], fault: {abort: {httpStatus: 503, percentage: {value: 50}}}, retries: {attempts: 0}, route: [{destination: {host: app}}]}\n",
            "    - {match: [{uri: {prefix: /delay}}], fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}, route: [{destination: {host: app}}]}\n")),
    ], port).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let r = get(&http, port, "/abort", &[]).await;
        assert_eq!(r.status, 418);
        assert!(
            cause(&r).starts_with("FI VirtualService/shop/t"),
            "{}",
            cause(&r)
        );
        let aborted = futures_count(&http, port, "/half", 200).await;
        assert!(
            (60..=140).contains(&aborted),
            "{proto:?}: {aborted} of 200 aborted at 50%"
        );
        let begun = Instant::now();
        assert_eq!(get(&http, port, "/delay", &[]).await.status, 200);
        assert!(begun.elapsed() >= Duration::from_millis(300));
    }
}

async fn futures_count(http: &Http, port: u16, path: &str, n: usize) -> usize {
    let mut aborted = 0;
    for _ in 0..n {
        if get(http, port, path, &[]).await.status == 503 {
            aborted += 1;
        }
    }
    aborted
}

#[tokio::test(flavor = "multi_thread")]
async fn circuit_breaker_fails_fast_under_concurrency() {
    let app = Echo::start_with("app", &["--delay-ms", "100"]);
    let port = free_port();
    let pool = "    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n";
    let (_dir, _gw) = start(
        &[
            &service("shop", "app", 80, &[ep(&app, &[])]),
            &destination_rule("app", pool),
            &virtual_service("    - route: [{destination: {host: app}}]\n"),
        ],
        port,
    )
    .await;
    let run = |clients: usize| async move {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            tasks.push(tokio::spawn(async move {
                let http = Http::new(support::Proto::H1);
                let mut results = Vec::new();
                for _ in 0..20 {
                    let begun = Instant::now();
                    let r = get(&http, port, "/", &[]).await;
                    results.push((r.status, cause(&r).to_string(), begun.elapsed()));
                }
                results
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    };
    let single = run(1).await;
    assert!(
        single.iter().all(|(s, _, _)| *s == 200),
        "one client passes 100%"
    );
    let crowded = run(3).await;
    let overflowed: Vec<_> = crowded.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(
        !overflowed.is_empty(),
        "3 concurrent clients overflow a 1+1 pool"
    );
    assert!(
        overflowed
            .iter()
            .all(|(_, c, took)| c.starts_with("UO Service/shop/app")
                && c.contains("http1MaxPendingRequests")
                && *took < Duration::from_millis(80)),
        "overflow fails fast with a cause: {overflowed:?}"
    );
    assert!(
        crowded.iter().filter(|(s, _, _)| *s == 200).count() >= 20,
        "the rest are served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outlier_detection_ejects_a_failing_endpoint() {
    let (good, bad) = (
        Echo::start("good"),
        Echo::start_with("bad", &["--status", "500"]),
    );
    let port = free_port();
    let outlier = "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";
    let (_dir, _gw) = start(
        &[
            &service("shop", "app", 80, &[ep(&good, &[]), ep(&bad, &[])]),
            &destination_rule("app", outlier),
            &virtual_service(
                "    - {retries: {attempts: 0}, route: [{destination: {host: app}}]}\n",
            ),
        ],
        port,
    )
    .await;
    let http = Http::new(support::Proto::H1);
    for _ in 0..10 {
        get(&http, port, "/", &[]).await;
    }
    let before = bad.settled_request_count();
    assert_eq!(before, 2, "ejected after 2 consecutive 5xx");
    for _ in 0..20 {
        assert_eq!(get(&http, port, "/", &[]).await.backend(), "good");
    }
    assert_eq!(
        bad.settled_request_count(),
        before,
        "no traffic while ejected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_backend_is_ejected_and_retried_around() {
    let good = Echo::start("good");
    let doomed = Echo::start("doomed");
    let port = free_port();
    let outlier = "    outlierDetection: {consecutiveGatewayErrors: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";
    let (_dir, _gw) = start(&[
        &service("shop", "app", 80, &[ep(&good, &[]), ep(&doomed, &[])]),
        &destination_rule("app", outlier),
        &virtual_service("    - {retries: {attempts: 2, retryOn: connect-failure}, route: [{destination: {host: app}}]}\n"),
    ], port).await;
    let http = Http::new(support::Proto::H1);
    for _ in 0..4 {
        assert_eq!(get(&http, port, "/", &[]).await.status, 200);
    }
    drop(doomed); // kill the process mid-run
    for _ in 0..30 {
        let r = get(&http, port, "/", &[]).await;
        assert_eq!(
            (r.status, r.backend().as_str()),
            (200, "good"),
            "{}",
            cause(&r)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancers_and_consistent_hashing() {
    let echos: Vec<Echo> = (0..4).map(|i| Echo::start(&format!("e{i}"))).collect();
    let endpoints: Vec<_> = echos.iter().map(|e| ep(e, &[])).collect();
    let port = free_port();
    let subsets = concat!(
        "  subsets:\n",
        "    - {name: header, labels: {}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}\n",
        "    - {name: cookie, labels: {}, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: sticky, ttl: 60s}}}}}\n",
        "    - {name: query, labels: {}, trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: u}}}}\n",
        "    - {name: source, labels: {}, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}}\n",
        "    - {name: least, labels: {}, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}\n",
        "    - {name: random, labels: {}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}\n",
    );
    let dr = format!(
        "{}{subsets}",
        destination_rule("app", "    loadBalancer: {simple: ROUND_ROBIN}\n")
    );
    let route = |prefix: &str, subset: &str| {
        format!("    - {{match: [{{uri: {{prefix: /{prefix}}}}}], route: [{{destination: {{host: app, subset: {subset}}}}}]}}\n")
    };
    let vs = virtual_service(
        &[
            route("header", "header"),
            route("cookie", "cookie"),
            route("query", "query"),
            route("source", "source"),
            route("least", "least"),
            route("random", "random"),
            "    - route: [{destination: {host: app}}]\n".into(),
        ]
        .concat(),
    );
    let (_dir, _gw) = start(&[&service("shop", "app", 80, &endpoints), &dr, &vs], port).await;
    let http = Http::new(support::Proto::H1);
    let spread = |names: Vec<String>| {
        let mut n = names;
        n.sort();
        n.dedup();
        n.len()
    };

    let mut rr = Vec::new();
    for _ in 0..8 {
        rr.push(get(&http, port, "/", &[]).await.backend());
    }
    assert_eq!(spread(rr), 4, "round robin visits every endpoint");
    for path in ["/least", "/random"] {
        let mut seen = Vec::new();
        for _ in 0..40 {
            seen.push(get(&http, port, path, &[]).await.backend());
        }
        assert!(spread(seen) >= 3, "{path} spreads load");
    }
    for user in ["alice", "bob", "carol"] {
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(
                get(&http, port, "/header", &[("x-user", user)])
                    .await
                    .backend(),
            );
        }
        assert_eq!(spread(seen), 1, "header hash is sticky for {user}");
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(
                get(&http, port, &format!("/query?u={user}"), &[])
                    .await
                    .backend(),
            );
        }
        assert_eq!(spread(seen), 1, "query hash is sticky for {user}");
    }
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(
            get(&http, port, "/header", &[("x-user", &format!("user-{i}"))])
                .await
                .backend(),
        );
    }
    assert!(spread(users) >= 3, "different keys spread over endpoints");
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(get(&http, port, "/source", &[]).await.backend());
    }
    assert_eq!(spread(seen), 1, "one client IP sticks to one endpoint");

    let first = get(&http, port, "/cookie", &[]).await;
    let set_cookie = first
        .header("set-cookie")
        .expect("cookie issued")
        .to_string();
    assert!(
        set_cookie.starts_with("sticky=") && set_cookie.contains("Max-Age=60"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let mut seen = vec![first.backend()];
    for _ in 0..10 {
        let r = get(&http, port, "/cookie", &[("cookie", &cookie)]).await;
        assert!(
            r.header("set-cookie").is_none(),
            "no new cookie once the client has one"
        );
        seen.push(r.backend());
    }
    assert_eq!(
        spread(seen),
        1,
        "the issued cookie keeps the client on one endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_and_actual_requests() {
    let app = Echo::start("app");
    let port = free_port();
    let cors = "      corsPolicy:\n        allowOrigins: [{exact: \"https://app.example.com\"}, {regex: \"https://.*\\\\.example\\\\.org\"}]\n        allowMethods: [GET, PUT]\n        allowHeaders: [x-token]\n        exposeHeaders: [x-trace]\n        maxAge: 10m\n        allowCredentials: true\n";
    let (_dir, _gw) = start(
        &[
            &service("shop", "app", 80, &[ep(&app, &[])]),
            &virtual_service(&format!(
                "    - route: [{{destination: {{host: app}}}}]\n{cors}"
            )),
        ],
        port,
    )
    .await;
    for proto in BOTH {
        let http = Http::new(proto);
        let before = app.settled_request_count();
        let pre = http
            .send(
                "OPTIONS",
                &url(port, "/x"),
                Some("t.example.com"),
                &[
                    ("origin", "https://a.example.org"),
                    ("access-control-request-method", "PUT"),
                ],
                bytes::Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(pre.status, 200);
        assert_eq!(
            pre.header("access-control-allow-origin"),
            Some("https://a.example.org")
        );
        assert_eq!(pre.header("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(pre.header("access-control-allow-headers"), Some("x-token"));
        assert_eq!(pre.header("access-control-max-age"), Some("600"));
        assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            app.settled_request_count(),
            before,
            "the proxy answered the preflight itself"
        );
        let r = get(&http, port, "/x", &[("origin", "https://app.example.com")]).await;
        assert_eq!(
            (r.status, r.header("access-control-allow-origin")),
            (200, Some("https://app.example.com"))
        );
        assert_eq!(r.header("access-control-expose-headers"), Some("x-trace"));
        let r = get(&http, port, "/x", &[("origin", "https://evil.example.net")]).await;
        assert_eq!(
            (r.status, r.header("access-control-allow-origin")),
            (200, None)
        );
        // As Envoy's CORS filter does, a VirtualService passes a preflight from an origin it
        // does not allow on to the backend, without CORS headers.
        let before = app.settled_request_count();
        let refused = preflight(&http, port, "https://evil.example.net").await;
        assert_eq!(refused.header("access-control-allow-origin"), None);
        assert_eq!(refused.backend(), "app", "forwarded");
        assert_eq!(app.settled_request_count(), before + 1);
    }
}

/// An OPTIONS preflight asking for GET from `origin`.
async fn preflight(http: &Http, port: u16, origin: &str) -> support::Reply {
    let headers = [("origin", origin), ("access-control-request-method", "GET")];
    let (url, empty) = (url(port, "/x"), bytes::Bytes::new());
    let reply = http.send("OPTIONS", &url, Some("t.example.com"), &headers, empty);
    reply.await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn max_requests_per_connection_rotates_upstream_connections() {
    let app = Echo::start("app");
    let port = free_port();
    let (_dir, _gw) = start(
        &[
            &service("shop", "app", 80, &[ep(&app, &[])]),
            &destination_rule(
                "app",
                "    connectionPool: {http: {maxRequestsPerConnection: 3}}\n",
            ),
            &virtual_service("    - route: [{destination: {host: app}}]\n"),
        ],
        port,
    )
    .await;
    let peers = upstream_peers_over_one_connection(port, 9).await;
    // Sequential requests: each upstream connection carries exactly three.
    for chunk in peers.chunks(3) {
        assert!(chunk.iter().all(|p| *p == chunk[0]), "{peers:?}");
    }
    assert_ne!(peers[0], peers[3], "{peers:?}");
    assert_ne!(peers[3], peers[6], "{peers:?}");
}

/// The upstream peer the echo backend saw for each of `count` sequential requests sent on one
/// HTTP/1.1 connection. One downstream connection keeps every request on one proxy worker:
/// upstream pools are per worker (as Envoy's are), and a pooling client may move to a second
/// connection that another worker serves from its own pool.
async fn upstream_peers_over_one_connection(port: u16, count: usize) -> Vec<String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("gateway accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(connection);
    let mut peers = Vec::new();
    for _ in 0..count {
        sender
            .ready()
            .await
            .expect("gateway kept the connection open");
        let request = http::Request::get("/")
            .header("host", "t.example.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .expect("gateway answered");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("echo's JSON");
        peers.push(
            echo["peer"]
                .as_str()
                .expect("echo names its peer")
                .to_string(),
        );
    }
    peers
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_share_and_a_slow_mirror_never_slows_the_primary() {
    let (app, shadow) = (
        Echo::start("app"),
        Echo::start_with("shadow", &["--delay-ms", "1500"]),
    );
    let port = free_port();
    let (_dir, _gw) = start(&[
        &service("shop", "app", 80, &[ep(&app, &[])]),
        &service("shop", "shadow", 80, &[ep(&shadow, &[])]),
        &virtual_service(concat!(
            "    - {match: [{uri: {prefix: /all}}], route: [{destination: {host: app}}], mirror: {host: shadow}}\n",
            "    - {match: [{uri: {prefix: /half}}], route: [{destination: {host: app}}], mirror: {host: shadow}, mirrorPercentage: {value: 50}}\n")),
    ], port).await;
    let http = Http::new(support::Proto::H1);
    let begun = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(&http, port, "/all", &[]).await.backend(), "app");
    }
    assert!(
        begun.elapsed() < Duration::from_millis(1000),
        "primary not held by a 1.5 s mirror: {:?}",
        begun.elapsed()
    );
    support::eventually(|| async { shadow.request_count() == 5 }).await;
    for _ in 0..200 {
        get(&http, port, "/half", &[]).await;
    }
    support::eventually(|| async { shadow.request_count() >= 5 + 60 }).await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let mirrored = shadow.settled_request_count() - 5;
    assert!(
        (60..=140).contains(&mirrored),
        "{mirrored} of 200 mirrored at 50%"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_retry_and_cors_filter() {
    let (good, bad) = (
        Echo::start("good"),
        Echo::start_with("bad", &["--status", "503"]),
    );
    let port = free_port();
    let dir = ConfigDir::new();
    let route = concat!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n",
        "    - matches: [{path: {type: PathPrefix, value: /}}]\n",
        "      retry: {attempts: 2, codes: [503]}\n",
        "      filters: [{type: CORS, cors: {allowOrigins: [\"https://*.example.com\"], allowMethods: [GET]}}]\n",
        "      backendRefs: [{name: app, port: 80}]\n");
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "app", 80, &[ep(&good, &[]), ep(&bad, &[])]),
            route,
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        for _ in 0..10 {
            let r = http
                .get(
                    &url(port, "/"),
                    None,
                    &[("origin", "https://shop.example.com")],
                )
                .await
                .unwrap();
            assert_eq!((r.status, r.backend().as_str()), (200, "good"), "{proto:?}");
            assert_eq!(
                r.header("access-control-allow-origin"),
                Some("https://shop.example.com")
            );
        }
        let r = http
            .get(
                &url(port, "/"),
                None,
                &[("origin", "https://shop.example.net")],
            )
            .await
            .unwrap();
        assert_eq!(r.header("access-control-allow-origin"), None);
        // Gateway API: the gateway answers a preflight from an origin it does not allow
        // itself, without CORS headers (the conformance suite's expectation).
        let refused = preflight(&http, port, "https://shop.example.net").await;
        assert_eq!(refused.status, 200);
        assert_eq!(refused.header("access-control-allow-origin"), None);
        assert!(refused
            .header("x-ferry-cause")
            .is_some_and(|c| c.contains("not allowed")));
    }
}

/// An h2c upstream that answers RST_STREAM(REFUSED_STREAM) to every other request and 200
/// to the rest; returns its address.
async fn start_refusing_h2_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    if seen
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                        .is_multiple_of(2)
                    {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let response = http::Response::builder().status(200).body(()).unwrap();
                    if let Ok(mut body) = respond.send_response(response, false) {
                        let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                    }
                }
            });
        }
    });
    addr
}

fn h2c_service_at(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec: {{ports: [{{name: http, port: 80, appProtocol: kubernetes.io/h2c}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        addr.port(),
        addr.ip()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_streams_are_retried_only_when_asked() {
    let upstream = start_refusing_h2_upstream().await;
    let port = free_port();
    let routes = "    - match: [{uri: {prefix: /retried}}]\n      retries: {attempts: 2, retryOn: refused-stream}\n      route: [{destination: {host: app}}]\n\
                  \x20   - retries: {attempts: 2, retryOn: retriable-4xx}\n      route: [{destination: {host: app}}]\n";
    let (_dir, _gw) = start(
        &[&h2c_service_at("app", upstream), &virtual_service(routes)],
        port,
    )
    .await;
    let http = Http::new(support::Proto::H1);
    for _ in 0..10 {
        let r = get(&http, port, "/retried", &[]).await;
        assert_eq!((r.status, r.text.as_str()), (200, "ok"), "{}", cause(&r));
    }
    let mut refused = 0;
    for _ in 0..10 {
        let r = get(&http, port, "/not-retried", &[]).await;
        if r.status != 200 {
            refused += 1;
            // Pingora closes the client connection after a failed attempt: say so.
            assert_eq!(r.header("connection"), Some("close"), "{}", cause(&r));
        }
    }
    assert!(
        refused >= 4,
        "every other stream is refused and not retried: {refused}/10 failed"
    );
}

/// A listener whose accept queue is full and never drained: the kernel drops further SYNs,
/// so a connect to it hangs until the client's connect timeout. The returned values must
/// live as long as the test needs that behaviour.
async fn start_unanswering_listener() -> (
    tokio::net::TcpListener,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let fillers = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        })
        .collect();
    (listener, fillers, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_timeout_from_destination_rule() {
    let (_listener, _fillers, addr) = start_unanswering_listener().await;
    let port = free_port();
    let slice = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: shop}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: app, namespace: shop, labels: {{kubernetes.io/service-name: app}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n",
        addr.port()
    );
    let (_dir, _gw) = start(
        &[
            &slice,
            &destination_rule(
                "app",
                "    connectionPool: {tcp: {connectTimeout: 300ms}}\n",
            ),
            &virtual_service(
                "    - {retries: {attempts: 0}, route: [{destination: {host: app}}]}\n",
            ),
        ],
        port,
    )
    .await;
    let http = Http::new(support::Proto::H1);
    let started = Instant::now();
    let r = get(&http, port, "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", cause(&r));
    assert!(
        cause(&r).starts_with("UF Service/shop/app"),
        "{}",
        cause(&r)
    );
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(3),
        "answered after {took:?}, expected about the 300 ms connect timeout (default is 10 s)"
    );
}
