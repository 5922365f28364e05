//! LocalRateLimitPolicy through the real binary: attached to an HTTPRoute, a bucket per
//! header value, 429 with the RateLimit fields; a second policy on the same route is
//! Conflicted and does not apply; a policy on a Gateway limits all of its routes; what
//! cannot be attached is reported by `ferry analyze`.

mod support;

use support::manifests::{ep, gateway, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, BOTH};

fn route(name: &str, gateway: &str, host: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  parentRefs: [{{name: {gateway}}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n"
    )
}

/// A policy created at `created` (older policies win a shared target).
fn policy(name: &str, created: &str, target: (&str, &str), spec: &str) -> String {
    let (kind, target_name) = target;
    format!(
        "apiVersion: policy.ferry.dev/v1alpha1\nkind: LocalRateLimitPolicy\n\
         metadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: {kind}, name: {target_name}}}]\n{spec}"
    )
}

fn manifests(app: &Echo, port: u16, public_port: u16) -> String {
    join(&[
        &gateway("shop", "edge", &[("http", port, None)]),
        &gateway("shop", "public", &[("http", public_port, None)]),
        &route("api", "edge", "api.example"),
        &route("web", "public", "web.example"),
        &policy(
            "per-key",
            "2026-01-01T00:00:00Z",
            ("HTTPRoute", "api"),
            "  limit: {requests: 3, unit: Minute}\n  key: {type: Header, header: X-Api-Key}\n",
        ),
        &policy(
            "stricter",
            "2026-02-01T00:00:00Z",
            ("HTTPRoute", "api"),
            "  limit: {requests: 1, unit: Hour}\n",
        ),
        &policy(
            "whole-gateway",
            "2026-01-01T00:00:00Z",
            ("Gateway", "public"),
            "  limit: {requests: 100, unit: Second}\n  burst: 5\n  statusCode: 503\n",
        ),
        &policy(
            "lost",
            "2026-01-01T00:00:00Z",
            ("HTTPRoute", "missing"),
            "  limit: {requests: 1, unit: Second}\n",
        ),
        &service("shop", "app", 80, &[ep(app, &[])]),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_limit_their_targets_routes() {
    let app = Echo::start("app");
    let (port, public_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    dir.write("all.yaml", &manifests(&app, port, public_port));
    let gw = Gateway::spawn(dir.path(), &["--cause-detail", "full"]);
    gw.wait_ready().await;
    let url = format!("http://127.0.0.1:{port}/");
    for (proto, keys) in BOTH.into_iter().zip([["a", "b"], ["c", "d"]]) {
        let http = Http::new(proto);
        let get = |host: &'static str, key: &'static str| {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url, Some(host), &[("x-api-key", key)])
                    .await
                    .unwrap()
            }
        };
        // Three a minute per key (the per-key policy); the newer, stricter one conflicts.
        for _ in 0..3 {
            assert_eq!(get("api.example", keys[0]).await.status, 200, "{proto:?}");
        }
        let refused = get("api.example", keys[0]).await;
        assert_eq!(refused.status, 429, "{proto:?} {refused:?}");
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"LocalRateLimitPolicy/shop/per-key\";q=3;w=60")
        );
        assert!(refused
            .header("ratelimit")
            .unwrap()
            .starts_with("\"LocalRateLimitPolicy/shop/per-key\";r=0;t="));
        let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        assert_eq!(
            get("api.example", keys[1]).await.status,
            200,
            "another key, another bucket"
        );
        assert_eq!(
            get("api.example", keys[1]).await.status,
            200,
            "the conflicting 1/hour policy does not apply"
        );
    }
    // The Gateway's policy: 5 at once for every route of the Gateway, answered 503.
    let http = Http::new(support::Proto::H1);
    let public = format!("http://127.0.0.1:{public_port}/");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            http.get(&public, Some("web.example"), &[])
                .await
                .unwrap()
                .status,
        );
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 3,
        "{statuses:?}"
    );
}

#[test]
fn analyze_reports_conflicted_and_unattached_policies() {
    let app = Echo::start("app");
    let dir = ConfigDir::new();
    dir.write("all.yaml", &manifests(&app, 8080, 8081));
    let out = support::ferry()
        .args(["analyze", "-f", &dir.path().display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |object: &str| {
        text.lines()
            .find(|l| l.contains(object))
            .unwrap_or_else(|| panic!("no {object} line in:\n{text}"))
            .to_string()
    };
    let stricter = line("LocalRateLimitPolicy shop/stricter");
    assert!(
        stricter.contains("FRY0404") && stricter.contains("spec.targetRefs[0]"),
        "{stricter}"
    );
    let lost = line("LocalRateLimitPolicy shop/lost");
    assert!(lost.contains("FRY0309"), "{lost}");
    assert!(
        !text.contains("(LocalRateLimitPolicy shop/per-key)"),
        "{text}"
    );
}
