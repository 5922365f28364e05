//! `ferry migrate` against the Ingresses it converts: the same gateway ports serve first the
//! Ingresses (class nginx, their annotations applied), then what `ferry migrate` wrote, and
//! every request of one table must get the same answer from both.

mod support;

use support::manifests::{ep, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http};

use support::manifests::nginx_ingress_tls as ingress;

fn ingresses() -> String {
    join(&[
        &ingress(
            "rewrite",
            "rewrite.example",
            "/something(/|$)(.*)",
            "main",
            &[("rewrite-target", "/$2")],
            false,
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
            false,
        ),
        &ingress(
            "root",
            "root.example",
            "/",
            "main",
            &[("app-root", "/app")],
            false,
        ),
        &ingress(
            "moved",
            "moved.example",
            "/",
            "main",
            &[("permanent-redirect", "https://example.org/new")],
            false,
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
            false,
        ),
        &ingress("shop", "shop.example", "/", "main", &[], false),
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
            false,
        ),
        &ingress("heavy", "heavy.example", "/", "main", &[], false),
        &ingress(
            "heavy-canary",
            "heavy.example",
            "/",
            "canary",
            &[("canary", "true"), ("canary-weight", "100")],
            false,
        ),
        &ingress("secure", "secure.example", "/", "main", &[], true),
        &ingress(
            "limited",
            "limited.example",
            "/",
            "main",
            &[("limit-rps", "5"), ("limit-burst-multiplier", "1")],
            false,
        ),
    ])
}

/// Everything an answer is compared on.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    backend: String,
    path: serde_json::Value,
    host: serde_json::Value,
    prefix: serde_json::Value,
    location: Option<String>,
    allow_origin: Option<String>,
}

/// Host, path and request headers.
type Request = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const REQUESTS: &[Request] = &[
    ("rewrite.example", "/something/new/path", &[]),
    ("rewrite.example", "/something", &[]),
    ("rewrite.example", "/other", &[]),
    ("headers.example", "/x", &[]),
    ("root.example", "/", &[]),
    ("root.example", "/app", &[]),
    ("moved.example", "/old", &[]),
    ("cors.example", "/", &[("origin", "https://app.example")]),
    ("cors.example", "/", &[("origin", "https://evil.example")]),
    ("shop.example", "/", &[]),
    ("shop.example", "/", &[("x-canary", "always")]),
    (
        "shop.example",
        "/",
        &[("x-canary", "never"), ("cookie", "beta=always")],
    ),
    ("shop.example", "/", &[("cookie", "a=1; beta=always")]),
    ("heavy.example", "/", &[]),
    ("secure.example", "/pay", &[]),
];

async fn answers(port: u16) -> Vec<Answer> {
    let http = Http::new(support::Proto::H1);
    let mut out = Vec::new();
    for (host, path, headers) in REQUESTS {
        let url = format!("http://127.0.0.1:{port}{path}");
        let reply = http.get(&url, Some(host), headers).await.unwrap();
        let echo = reply.echo();
        out.push(Answer {
            status: reply.status,
            backend: reply.backend(),
            path: echo["path"].clone(),
            host: echo["host"].clone(),
            prefix: echo["headers"]["x-forwarded-prefix"].clone(),
            // A redirect without its own port keeps the request's (ingress-nginx:
            // `$http_host`) or takes the listener's (Gateway API); on port 80 both are none,
            // so the test's own port is left out of the comparison.
            location: reply
                .header("location")
                .map(|l| l.replace(&format!(":{port}/"), "/")),
            allow_origin: reply
                .header("access-control-allow-origin")
                .map(str::to_string),
        });
    }
    out
}

/// How many of 12 quick requests to limited.example get through (limit 5 at once).
async fn limited_passes(port: u16) -> usize {
    let http = Http::new(support::Proto::H1);
    let url = format!("http://127.0.0.1:{port}/");
    let mut passed = 0;
    for _ in 0..12 {
        if http
            .get(&url, Some("limited.example"), &[])
            .await
            .unwrap()
            .status
            == 200
        {
            passed += 1;
        }
    }
    passed
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migrated_gateway_api_objects_answer_as_the_ingresses_did() {
    let (main, canary) = (Echo::start("main"), Echo::start("canary"));
    let (port, tls_port) = (free_port(), free_port());
    let ca = support::tls::TestCa::new("migrate-ca");
    let leaf = ca.issue(&["secure.example"]);
    let backends = join(&[
        &service("web", "main", 80, &[ep(&main, &[])]),
        &service("web", "canary", 80, &[ep(&canary, &[])]),
        &support::tls::tls_secret("web", "secure-tls", &leaf),
    ]);
    let before = ConfigDir::new();
    before.write("ingresses.yaml", &ingresses());
    before.write("backends.yaml", &backends);
    let (served_before, limited_before) = {
        let gw = Gateway::spawn(
            before.path(),
            &[
                "--ingress-port",
                &port.to_string(),
                "--ingress-tls-port",
                &tls_port.to_string(),
                "--ingress-class",
                "nginx",
            ],
        );
        gw.wait_ready().await;
        (answers(port).await, limited_passes(port).await)
    };

    let out = support::ferry()
        .args([
            "migrate",
            "-f",
            &before.path().join("ingresses.yaml").display().to_string(),
        ])
        .args([
            "--http-port",
            &port.to_string(),
            "--https-port",
            &tls_port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = String::from_utf8(out.stdout).unwrap();
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("1 MiB request body limit"), "{notes}");
    assert!(
        converted.contains("kind: LocalRateLimitPolicy"),
        "{converted}"
    );
    assert!(!converted.contains("kind: Ingress\n"), "{converted}");
    let after = ConfigDir::new();
    after.write("converted.yaml", &converted);
    after.write("backends.yaml", &backends);
    let gw = Gateway::spawn(
        after.path(),
        &["--ingress-port", "0", "--ingress-tls-port", "0"],
    );
    gw.wait_ready().await;
    let served_after = answers(port).await;
    for (i, (before, after)) in served_before.iter().zip(&served_after).enumerate() {
        assert_eq!(before, after, "{:?}\n{converted}", REQUESTS[i]);
    }
    assert_eq!(
        limited_passes(port).await,
        limited_before,
        "the rate limit too"
    );
    assert!(
        served_before.iter().any(|a| a.status == 308),
        "the HTTPS redirect is in the table"
    );
}
