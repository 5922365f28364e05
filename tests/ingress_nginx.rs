//! ingress-nginx's annotations on Ingresses, through the real binary and a real HTTP
//! client (both protocols): one table of requests and what each must get, plus what is
//! refused and reported.

mod support;

use support::manifests::{ep, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, BOTH};

use support::manifests::nginx_ingress as ingress;

/// A gateway serving `dir` with class nginx on `port`, ready.
async fn nginx_gateway(dir: &ConfigDir, port: u16, extra: &[&str]) -> Gateway {
    let port = port.to_string();
    let mut args = vec!["--ingress-port", &port, "--ingress-class", "nginx"];
    args.extend_from_slice(extra);
    let gw = Gateway::spawn(dir.path(), &args);
    gw.wait_ready().await;
    gw
}

fn manifests(main: &Echo, canary: &Echo) -> String {
    join(&[
        &ingress(
            "rewrite",
            "rewrite.example",
            "/something(/|$)(.*)",
            "main",
            &[("rewrite-target", "/$2")],
        ),
        &ingress(
            "headers",
            "headers.example",
            "/",
            "main",
            &[
                ("x-forwarded-prefix", "/shop"),
                ("upstream-vhost", "internal.example"),
            ],
        ),
        &ingress("root", "root.example", "/", "main", &[("app-root", "/app")]),
        &ingress(
            "moved",
            "moved.example",
            "/",
            "main",
            &[("permanent-redirect", "https://example.org/new")],
        ),
        &ingress(
            "secure",
            "secure.example",
            "/",
            "main",
            &[("force-ssl-redirect", "true")],
        ),
        &ingress(
            "closed",
            "closed.example",
            "/",
            "main",
            &[("whitelist-source-range", "10.0.0.0/8")],
        ),
        &ingress(
            "open",
            "open.example",
            "/",
            "main",
            &[("whitelist-source-range", "127.0.0.1, 10.0.0.0/8")],
        ),
        &ingress(
            "denied",
            "denied.example",
            "/",
            "main",
            &[("denylist-source-range", "127.0.0.0/8")],
        ),
        &ingress(
            "cors",
            "cors.example",
            "/",
            "main",
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.example"),
            ],
        ),
        &ingress("shop", "shop.example", "/", "main", &[]),
        &ingress(
            "shop-canary",
            "shop.example",
            "/",
            "canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("canary-by-cookie", "beta"),
                ("canary-weight", "0"),
            ],
        ),
        &ingress("heavy", "heavy.example", "/", "main", &[]),
        &ingress(
            "heavy-canary",
            "heavy.example",
            "/",
            "canary",
            &[("canary", "true"), ("canary-weight", "100")],
        ),
        &ingress(
            "snippet",
            "snippet.example",
            "/",
            "main",
            &[("configuration-snippet", "more_set_headers \"X: y\";")],
        ),
        &ingress(
            "auth",
            "auth.example",
            "/",
            "main",
            &[("auth-tls-verify-client", "on")],
        ),
        &ingress(
            "buffered",
            "buffered.example",
            "/",
            "main",
            &[("proxy-buffering", "on")],
        ),
        &ingress(
            "small",
            "small.example",
            "/",
            "main",
            &[("proxy-body-size", "10")],
        ),
        &ingress(
            "private",
            "private.example",
            "/",
            "main",
            &[("auth-type", "basic"), ("auth-secret", "users"), ("auth-realm", "Staff only")],
        ),
        &ingress("digest", "digest.example", "/", "main", &[("auth-type", "digest"), ("auth-secret", "users")]),
        // htpasswd -m (Apache MD5) and -s (SHA-1) for "password"; carol's DES hash is not
        // verified (reported).
        &support::tls::secret_with(
            "web",
            "users",
            &[("auth", "alice:$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\ncarol:rl5ZcT9xhkAkE\n")],
        ),
        &ingress(
            "large",
            "large.example",
            "/",
            "main",
            &[("proxy-body-size", "0")],
        ),
        &service("web", "main", 80, &[ep(main, &[])]),
        &service("web", "canary", 80, &[ep(canary, &[])]),
    ])
}

/// What one request must get: a status, and for 200 the backend, or a header's value.
struct Case {
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    check: Check,
}

enum Check {
    Backend(&'static str),
    /// The path the backend saw.
    UpstreamPath(&'static str),
    /// A request header as the backend saw it.
    UpstreamHeader(&'static str, &'static str),
    /// A response header.
    Header(&'static str, &'static str),
}

fn case(host: &'static str, path: &'static str, status: u16, check: Check) -> Case {
    Case {
        host,
        path,
        headers: &[],
        status,
        check,
    }
}

fn cases(tls_port: u16) -> Vec<Case> {
    let secure = Box::leak(format!("https://secure.example:{tls_port}/pay").into_boxed_str());
    vec![
        case(
            "rewrite.example",
            "/something/new/path",
            200,
            Check::UpstreamPath("/new/path"),
        ),
        case(
            "rewrite.example",
            "/SOMETHING",
            200,
            Check::UpstreamPath("/"),
        ),
        case(
            "rewrite.example",
            "/other",
            404,
            Check::Header("x-ferry-cause", "NR"),
        ),
        case(
            "headers.example",
            "/",
            200,
            Check::UpstreamHeader("x-forwarded-prefix", "/shop"),
        ),
        case(
            "headers.example",
            "/",
            200,
            Check::UpstreamHeader("host", "internal.example"),
        ),
        case(
            "root.example",
            "/",
            302,
            Check::Header("location", "http://root.example/app"),
        ),
        case("root.example", "/app", 200, Check::Backend("main")),
        case(
            "moved.example",
            "/old",
            301,
            Check::Header("location", "https://example.org/new"),
        ),
        case(
            "secure.example",
            "/pay",
            308,
            Check::Header("location", secure),
        ),
        case(
            "closed.example",
            "/",
            403,
            Check::Header("x-ferry-cause", "RBAC"),
        ),
        case("open.example", "/", 200, Check::Backend("main")),
        case(
            "denied.example",
            "/",
            403,
            Check::Header("x-ferry-cause", "RBAC"),
        ),
        Case {
            host: "cors.example",
            path: "/",
            headers: &[("origin", "https://app.example")],
            status: 200,
            check: Check::Header("access-control-allow-origin", "https://app.example"),
        },
        case("shop.example", "/", 200, Check::Backend("main")),
        Case {
            host: "shop.example",
            path: "/",
            headers: &[("x-canary", "always")],
            status: 200,
            check: Check::Backend("canary"),
        },
        Case {
            host: "shop.example",
            path: "/",
            headers: &[("x-canary", "never"), ("cookie", "beta=always")],
            status: 200,
            check: Check::Backend("main"),
        },
        Case {
            host: "shop.example",
            path: "/",
            headers: &[("cookie", "a=1; beta=always")],
            status: 200,
            check: Check::Backend("canary"),
        },
        case("heavy.example", "/", 200, Check::Backend("canary")),
        // Refused and unenforced annotations: the Ingress is not served at all.
        case(
            "snippet.example",
            "/",
            404,
            Check::Header("x-ferry-cause", "NR"),
        ),
        case(
            "auth.example",
            "/",
            404,
            Check::Header("x-ferry-cause", "NR"),
        ),
        // Reported, not applied: served without it.
        case("buffered.example", "/", 200, Check::Backend("main")),
        case(
            "private.example",
            "/",
            401,
            Check::Header("www-authenticate", "Basic realm=\"Staff only\""),
        ),
        Case {
            host: "private.example",
            path: "/",
            headers: &[("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")], // alice:password
            status: 200,
            check: Check::Backend("main"),
        },
        Case {
            host: "private.example",
            path: "/",
            headers: &[("authorization", "Basic YWxpY2U6d3Jvbmc=")], // alice:wrong
            status: 401,
            check: Check::Header("x-ferry-cause", "BASIC"),
        },
        Case {
            host: "private.example",
            path: "/",
            headers: &[("authorization", "Basic Ym9iOnBhc3N3b3Jk")], // bob:password
            status: 200,
            check: Check::Backend("main"),
        },
        Case {
            host: "private.example",
            path: "/",
            headers: &[("authorization", "Basic Y2Fyb2w6cGFzc3dvcmQ=")], // carol:password
            status: 401,
            check: Check::Header("x-ferry-cause", "BASIC"),
        },
        case(
            "digest.example",
            "/",
            404,
            Check::Header("x-ferry-cause", "NR"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_nginx_annotations_are_applied_refused_or_reported() {
    let (main, canary) = (Echo::start("main"), Echo::start("canary"));
    let (port, tls_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write("all.yaml", &manifests(&main, &canary));
    let gw = Gateway::spawn(
        dir.path(),
        &[
            "--ingress-port",
            &port.to_string(),
            "--ingress-tls-port",
            &tls_port.to_string(),
            "--ingress-class",
            "ferry,nginx",
            "--cause-detail",
            "full",
        ],
    );
    gw.wait_ready().await;
    for proto in BOTH {
        let http = Http::new(proto);
        for case in cases(tls_port) {
            let url = format!("http://127.0.0.1:{port}{}", case.path);
            let reply = http.get(&url, Some(case.host), case.headers).await.unwrap();
            let what = format!(
                "{proto:?} {}{} {:?}: {reply:?}",
                case.host, case.path, case.headers
            );
            assert_eq!(reply.status, case.status, "{what}");
            match case.check {
                Check::Backend(name) => assert_eq!(reply.backend(), name, "{what}"),
                Check::UpstreamPath(path) => assert_eq!(reply.echo()["path"], path, "{what}"),
                Check::UpstreamHeader(name, value) => {
                    let seen = if name == "host" {
                        &reply.echo()["host"]
                    } else {
                        &reply.echo()["headers"][name]
                    };
                    assert_eq!(seen, value, "{what}")
                }
                Check::Header(name, prefix) => {
                    let value = reply.header(name).unwrap_or_default();
                    assert!(value.starts_with(prefix), "{name}: {value:?} — {what}")
                }
            }
        }
        // proxy-body-size, and ingress-nginx's 1 MiB default for its class; 0 lifts it.
        let body = |n: usize| bytes::Bytes::from(vec![b'x'; n]);
        let url = format!("http://127.0.0.1:{port}/");
        let post = |host: &'static str, n: usize| http.send("POST", &url, Some(host), &[], body(n));
        assert_eq!(
            post("small.example", 10).await.unwrap().status,
            200,
            "{proto:?}"
        );
        assert_eq!(
            post("small.example", 11).await.unwrap().status,
            413,
            "{proto:?}"
        );
        assert_eq!(
            post("shop.example", 2 << 20).await.unwrap().status,
            413,
            "{proto:?}"
        );
        assert_eq!(
            post("large.example", 2 << 20).await.unwrap().status,
            200,
            "{proto:?}"
        );
    }
    let dump = gw.config_dump().await.to_string();
    assert!(dump.contains("private.example"), "the route is in the dump");
    assert!(
        !dump.contains("PgCXHRrkpSt4cbyC2C6bm/") && !dump.contains("W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
        "password hashes are not"
    );
}

#[test]
fn analyze_names_each_annotation_not_applied() {
    let (main, canary) = (Echo::start("main"), Echo::start("canary"));
    let dir = ConfigDir::new();
    dir.write("all.yaml", &manifests(&main, &canary));
    let out = support::ferry()
        .args(["analyze", "-f", &dir.path().display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |object: &str, annotation: &str| {
        text.lines()
            .find(|l| l.contains(object) && l.contains(&format!("{annotation}']")))
            .unwrap_or_else(|| panic!("no {object} {annotation} line in:\n{text}"))
            .to_string()
    };
    assert!(line("Ingress web/snippet", "configuration-snippet").contains("FRY0108"));
    assert!(line("Ingress web/auth", "auth-tls-verify-client").contains("FRY0105"));
    assert!(line("Ingress web/buffered", "proxy-buffering").contains("FRY0107"));
}

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
    let http = Http::new(support::Proto::H1);
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

/// `backend-protocol: HTTPS` with `proxy-ssl-*`: unverified as ingress-nginx by default,
/// verified against the Secret's CA with `proxy-ssl-verify: on` (a backend the CA did not
/// sign gets no request), and `on` without a Secret is not served.
#[tokio::test(flavor = "multi_thread")]
async fn https_backends_with_proxy_ssl_settings() {
    use support::tls::{secret_with, TestCa, TlsBackend};
    let (backend_ca, stranger) = (TestCa::new("backend-ca"), TestCa::new("stranger"));
    let backend = TlsBackend::start(&backend_ca.issue(&["backend.test"]), None).await;
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: main, namespace: web}}\n\
         spec: {{ports: [{{name: https, port: 80, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: main-1, namespace: web, labels: {{kubernetes.io/service-name: main}}}}\n\
         addressType: IPv4\nports: [{{name: https, port: {port}}}]\n\
         endpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n",
        port = backend.port
    );
    let verified = |ca: &'static str| {
        [
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-secret", ca),
            ("proxy-ssl-name", "backend.test"),
        ]
    };
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &ingress(
                "plain",
                "plain.example",
                "/",
                "main",
                &[("backend-protocol", "HTTPS")],
            ),
            &ingress(
                "verified",
                "verified.example",
                "/",
                "main",
                &verified("web/backend-ca"),
            ),
            &ingress(
                "stranger",
                "stranger.example",
                "/",
                "main",
                &verified("web/stranger-ca"),
            ),
            &ingress(
                "no-ca",
                "no-ca.example",
                "/",
                "main",
                &[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "on")],
            ),
            &service,
            &secret_with("web", "backend-ca", &[("ca.crt", &backend_ca.cert_pem)]),
            &secret_with("web", "stranger-ca", &[("ca.crt", &stranger.cert_pem)]),
        ]),
    );
    let gw = nginx_gateway(&dir, port, &[]).await;
    let http = Http::new(support::Proto::H1);
    let get = |host: &'static str| {
        let http = http.clone();
        let url = format!("http://127.0.0.1:{port}/hello");
        async move { http.get(&url, Some(host), &[]).await.unwrap() }
    };
    let plain = get("plain.example").await;
    assert_eq!(plain.status, 200, "{plain:?}");
    let verified = get("verified.example").await;
    assert_eq!(verified.status, 200, "{verified:?}");
    assert_eq!(verified.echo()["sni"], "backend.test");
    let stranger = get("stranger.example").await;
    assert_eq!(stranger.status, 503, "{stranger:?}");
    let cause = stranger.header("x-ferry-cause").unwrap_or_default();
    assert!(cause.contains("TLSHandshakeFailure"), "{stranger:?}");
    assert_eq!(get("no-ca.example").await.status, 404, "not served");
    let reports = gw.config_dump().await["reports"].to_string();
    assert!(reports.contains("NotVerified"), "{reports}");
}

/// A plain-HTTP auth service: `Bearer good` is alice (200 with `X-Auth-User`),
/// `Bearer forbidden` gets 403, anything else 401 with a Bearer challenge. It keeps the
/// `X-Original-URL` of each subrequest.
async fn auth_service() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        log.lock().unwrap().push(header("x-original-url"));
                        let response = match header("authorization").as_str() {
                            "Bearer good" => http::Response::builder()
                                .status(200)
                                .header("x-auth-user", "alice"),
                            "Bearer forbidden" => http::Response::builder().status(403),
                            _ => http::Response::builder()
                                .status(401)
                                .header("www-authenticate", "Bearer realm=\"shop\""),
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(bytes::Bytes::new())).unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (port, seen)
}

/// `auth-url`: every request is asked about first; the service's verdict is the client's.
#[tokio::test(flavor = "multi_thread")]
async fn auth_url_asks_the_auth_service_first() {
    let main = Echo::start("main");
    let (auth_port, seen) = auth_service().await;
    let (dead, _) = support::dead_port();
    let check = Box::leak(format!("http://127.0.0.1:{auth_port}/check").into_boxed_str());
    let nowhere = Box::leak(
        format!(
            "http://127.0.0.1:{}/check",
            dead.local_addr().unwrap().port()
        )
        .into_boxed_str(),
    );
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &ingress(
                "guarded",
                "guarded.example",
                "/",
                "main",
                &[
                    ("auth-url", check),
                    ("auth-response-headers", "X-Auth-User"),
                ],
            ),
            &ingress(
                "signin",
                "signin.example",
                "/",
                "main",
                &[
                    ("auth-url", check),
                    ("auth-signin", "https://login.example/start"),
                ],
            ),
            &ingress(
                "broken",
                "broken.example",
                "/",
                "main",
                &[("auth-url", nowhere)],
            ),
            &ingress(
                "tls-auth",
                "tls-auth.example",
                "/",
                "main",
                &[("auth-url", "https://auth.example/check")],
            ),
            &service("web", "main", 80, &[ep(&main, &[])]),
        ]),
    );
    let _gw = nginx_gateway(&dir, port, &[]).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let get = |host: &'static str, token: &'static str| {
            let http = http.clone();
            let url = format!("http://127.0.0.1:{port}/page?q=1");
            async move {
                http.get(&url, Some(host), &[("authorization", token)])
                    .await
                    .unwrap()
            }
        };
        let allowed = get("guarded.example", "Bearer good").await;
        assert_eq!(allowed.status, 200, "{proto:?} {allowed:?}");
        assert_eq!(
            allowed.echo()["headers"]["x-auth-user"],
            "alice",
            "copied from the answer"
        );
        let refused = get("guarded.example", "Bearer nobody").await;
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"shop\"")
        );
        assert_eq!(get("guarded.example", "Bearer forbidden").await.status, 403);
        let redirected = get("signin.example", "Bearer nobody").await;
        assert_eq!(redirected.status, 302, "{redirected:?}");
        assert_eq!(
            redirected.header("location"),
            Some("https://login.example/start?rd=http%3A%2F%2Fsignin.example%2Fpage%3Fq%3D1")
        );
        let failed = get("broken.example", "Bearer good").await;
        assert_eq!(failed.status, 500, "no answer: never forwarded unchecked");
        assert_eq!(
            get("tls-auth.example", "Bearer good").await.status,
            404,
            "not served"
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"http://guarded.example/page?q=1".to_string()),
        "{seen:?}"
    );
}
