use crate::support::manifests::nginx_ingress as ingress;
use crate::support::manifests::{ep, join, service};
use crate::support::{free_port, ConfigDir, Echo, Gateway, Http, BOTH};

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
        // satisfy any: the office range or a password (the client, 127.0.0.1, is outside
        // 10.0.0.0/8 and inside 127.0.0.0/8).
        &ingress(
            "either-away",
            "away.example",
            "/",
            "main",
            &[("auth-type", "basic"), ("auth-secret", "users"), ("whitelist-source-range", "10.0.0.0/8"), ("satisfy", "any")],
        ),
        &ingress(
            "either-office",
            "office.example",
            "/",
            "main",
            &[("auth-type", "basic"), ("auth-secret", "users"), ("whitelist-source-range", "127.0.0.0/8"), ("satisfy", "any")],
        ),
        // htpasswd -m (Apache MD5) and -s (SHA-1) for "password"; carol's DES hash is not
        // verified (reported).
        &crate::support::tls::secret_with(
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
        &ingress(
            "regex-api",
            "regex.example",
            "/api/v[0-9]+",
            "main",
            &[("use-regex", "true")],
        ),
        // No use-regex of its own: its host's other Ingress makes its path a regex too.
        &ingress("regex-static", "regex.example", "/static", "canary", &[]),
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
        case(
            "regex.example",
            "/api/v2/users",
            200,
            Check::Backend("main"),
        ),
        // `^/static` case-insensitive, as nginx reads every path of a regex host.
        case(
            "regex.example",
            "/Staticfiles/a.css",
            200,
            Check::Backend("canary"),
        ),
        case("office.example", "/", 200, Check::Backend("main")),
        case(
            "away.example",
            "/",
            401,
            Check::Header("www-authenticate", "Basic realm="),
        ),
        Case {
            host: "away.example",
            path: "/",
            headers: &[("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")], // alice:password
            status: 200,
            check: Check::Backend("main"),
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
    let out = crate::support::ferry()
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
