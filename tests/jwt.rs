//! RequestAuthentication (JWT) at a gateway (standalone mode), through the real binary over
//! HTTP/1.1 and HTTP/2, with keys made here: RS256 (openssl), ES256 and EdDSA (rcgen); tokens
//! valid, expired, not yet valid, of a wrong issuer or audience, badly signed, missing, in a
//! header and in the query; AuthorizationPolicy on `requestPrincipals` and `request.auth.*`;
//! keys fetched from a `jwksUri` served on loopback.

mod support;

use std::time::Duration;
use support::jwt::{jwks, now, serve_jwks, Signer};
use support::manifests::{ep, gateway, join, service};
use support::{eventually_within, free_port, ConfigDir, Echo, Gateway, Http, Proto};

const ISSUER: &str = "https://auth.test";
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\n\
spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n";

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": "shop", "exp": now() + 600,
        "groups": ["dev"], "azp": "web-app"
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn request_authentication(keys: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  jwtRules:\n  \
         - issuer: {ISSUER}\n    audiences: [shop]\n    {keys}\n    fromHeaders: [{{name: Authorization, prefix: \"Bearer \"}}, {{name: x-token}}]\n    \
         fromParams: [access_token]\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders: [{{header: x-user, claim: sub}}]\n"
    )
}

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  action: {action}\n  rules: {rules}\n"
    )
}

async fn start(echo: &Echo, docs: &[String]) -> (Gateway, u16, ConfigDir) {
    let port = free_port();
    let dir = ConfigDir::new();
    let mut all = vec![
        gateway("default", "gw", &[("http", port, None)]),
        service("default", "web", 80, &[ep(echo, &[])]),
        ROUTE.to_string(),
    ];
    all.extend(docs.iter().cloned());
    dir.write(
        "all.yaml",
        &join(&all.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let gw = Gateway::start(dir.path()).await;
    (gw, port, dir)
}

async fn status_of(http: &Http, port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = http
        .get(&format!("http://127.0.0.1:{port}{path}"), None, headers)
        .await
        .expect("an answer");
    (reply.status, reply.text)
}

/// (what, path, headers, expected status, expected 401 body)
type TokenCase = (
    &'static str,
    String,
    Vec<(&'static str, String)>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_verified_with_istios_semantics_on_both_protocols() {
    let (rsa, ec, ed) = (Signer::rsa("r1"), Signer::ec("e1"), Signer::ed("o1"));
    let stranger = Signer::rsa("r1"); // same kid, other key: a forged signature
    let keys = format!("jwks: '{}'", jwks(&[&rsa, &ec, &ed]));
    let echo = Echo::start("web");
    let (_gw, port, _dir) = start(&echo, &[request_authentication(&keys)]).await;
    let good = rsa.sign(claims(serde_json::json!({})));
    let bearer = format!("Bearer {good}");
    let cases: Vec<TokenCase> = vec![
        (
            "no token passes (no policy requires one)",
            "/".into(),
            vec![],
            200,
            "",
        ),
        (
            "RS256 in Authorization",
            "/".into(),
            vec![("authorization", bearer.clone())],
            200,
            "",
        ),
        (
            "ES256",
            "/".into(),
            vec![(
                "authorization",
                format!("Bearer {}", ec.sign(claims(serde_json::json!({})))),
            )],
            200,
            "",
        ),
        (
            "EdDSA",
            "/".into(),
            vec![(
                "authorization",
                format!("Bearer {}", ed.sign(claims(serde_json::json!({})))),
            )],
            200,
            "",
        ),
        (
            "from a second header without prefix",
            "/".into(),
            vec![("x-token", good.clone())],
            200,
            "",
        ),
        (
            "from the query",
            format!("/?access_token={good}"),
            vec![],
            200,
            "",
        ),
        (
            "expired",
            "/".into(),
            vec![(
                "authorization",
                format!(
                    "Bearer {}",
                    rsa.sign(claims(serde_json::json!({"exp": now() - 120})))
                ),
            )],
            401,
            "Jwt is expired",
        ),
        (
            "expired within the 60 s clock skew",
            "/".into(),
            vec![(
                "authorization",
                format!(
                    "Bearer {}",
                    rsa.sign(claims(serde_json::json!({"exp": now() - 20})))
                ),
            )],
            200,
            "",
        ),
        (
            "not yet valid",
            "/".into(),
            vec![(
                "authorization",
                format!(
                    "Bearer {}",
                    rsa.sign(claims(serde_json::json!({"nbf": now() + 600})))
                ),
            )],
            401,
            "Jwt not yet valid",
        ),
        (
            "wrong issuer",
            "/".into(),
            vec![(
                "authorization",
                format!(
                    "Bearer {}",
                    rsa.sign(claims(serde_json::json!({"iss": "https://evil.test"})))
                ),
            )],
            401,
            "Jwt issuer is not configured",
        ),
        (
            "wrong audience",
            "/".into(),
            vec![(
                "authorization",
                format!(
                    "Bearer {}",
                    rsa.sign(claims(serde_json::json!({"aud": "billing"})))
                ),
            )],
            401,
            "Audiences in Jwt are not allowed",
        ),
        (
            "forged signature",
            "/".into(),
            vec![(
                "authorization",
                format!("Bearer {}", stranger.sign(claims(serde_json::json!({})))),
            )],
            401,
            "Jwt verification fails",
        ),
        (
            "not a JWT",
            "/".into(),
            vec![("authorization", "Bearer abc".into())],
            401,
            "Jwt is not in the form of Header.Payload.Signature",
        ),
    ];
    for proto in [Proto::H1, Proto::H2c] {
        let http = Http::new(proto);
        for (what, path, headers, want, body) in &cases {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (status, text) = status_of(&http, port, path, &headers).await;
            assert_eq!(status, *want, "{what} ({proto:?}): {text}");
            if *want == 401 {
                assert_eq!(text.trim(), *body, "{what} ({proto:?})");
            }
        }
    }
    // What the backend sees: the token removed, payload and claim copied out; a client's own
    // x-user is never passed on.
    let http = Http::new(Proto::H1);
    let reply = http
        .get(
            &format!("http://127.0.0.1:{port}/"),
            None,
            &[("authorization", &bearer), ("x-user", "mallory")],
        )
        .await
        .unwrap();
    let seen = &reply.echo()["headers"];
    assert!(
        seen.get("authorization").is_none(),
        "token forwarded: {seen}"
    );
    assert_eq!(seen["x-user"], "alice", "{seen}");
    assert_eq!(
        seen["x-jwt-payload"],
        good.split('.').nth(1).unwrap(),
        "{seen}"
    );
    let anonymous = http
        .get(
            &format!("http://127.0.0.1:{port}/"),
            None,
            &[("x-user", "mallory"), ("x-jwt-payload", "forged")],
        )
        .await
        .unwrap();
    let seen = &anonymous.echo()["headers"];
    assert!(
        seen.get("x-user").is_none() && seen.get("x-jwt-payload").is_none(),
        "spoofed: {seen}"
    );
    let refused = http
        .get(
            &format!("http://127.0.0.1:{port}/forecast"),
            None,
            &[("authorization", "Bearer abc")],
        )
        .await
        .unwrap();
    let challenge = refused.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=") && challenge.contains("invalid_token"),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_policy_reads_the_verified_token() {
    let rsa = Signer::rsa("r1");
    let keys = format!("jwks: '{}'", jwks(&[&rsa]));
    let echo = Echo::start("web");
    let docs = vec![
        request_authentication(&keys),
        // Istio's "require a JWT" idiom, and per-claim rules.
        policy("require-jwt", "DENY", "[{from: [{source: {notRequestPrincipals: [\"*\"]}}], to: [{operation: {paths: [\"/api/*\"]}}]}]"),
        policy("admins", "DENY", "[{to: [{operation: {paths: [\"/admin*\"]}}], when: [{key: \"request.auth.claims[groups]\", notValues: [admins]}]}]"),
        policy("presenter", "DENY", "[{when: [{key: request.auth.presenter, values: [blocked-app]}]}]"),
        policy("scoped", "DENY", "[{to: [{operation: {paths: [\"/write\"]}}], when: [{key: \"request.auth.claims[scope]\", notValues: [write]}]}]"),
    ];
    let (_gw, port, _dir) = start(&echo, &docs).await;
    let token = |extra: serde_json::Value| format!("Bearer {}", rsa.sign(claims(extra)));
    let alice = token(serde_json::json!({}));
    let admin = token(serde_json::json!({"groups": ["dev", "admins"], "scope": "read write"}));
    let blocked = token(serde_json::json!({"azp": "blocked-app"}));
    let cases: Vec<(&str, &str, Option<&String>, u16)> = vec![
        ("anonymous outside /api", "/", None, 200),
        (
            "anonymous on /api: no request principal",
            "/api/x",
            None,
            403,
        ),
        ("a token on /api", "/api/x", Some(&alice), 200),
        ("not in group admins", "/admin", Some(&alice), 403),
        ("in group admins", "/admin", Some(&admin), 200),
        ("presenter blocked", "/", Some(&blocked), 403),
        (
            "scope without write (space-delimited claim)",
            "/write",
            Some(&alice),
            403,
        ),
        ("scope with write", "/write", Some(&admin), 200),
    ];
    for proto in [Proto::H1, Proto::H2c] {
        let http = Http::new(proto);
        for (what, path, token, want) in &cases {
            let headers: Vec<(&str, &str)> = token
                .iter()
                .map(|t| ("authorization", t.as_str()))
                .collect();
            let (status, text) = status_of(&http, port, path, &headers).await;
            assert_eq!(status, *want, "{what} ({proto:?}): {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_a_jwks_uri_are_fetched_by_the_standalone_gateway_and_refused_until_then() {
    let rsa = Signer::rsa("r1");
    let jwks_port = free_port();
    let keys = format!("jwksUri: http://127.0.0.1:{jwks_port}/jwks");
    let echo = Echo::start("web");
    let (gw, port, _dir) = start(&echo, &[request_authentication(&keys)]).await;
    let http = Http::new(Proto::H1);
    let bearer = format!("Bearer {}", rsa.sign(claims(serde_json::json!({}))));
    let headers = [("authorization", bearer.as_str())];
    // Nothing answers at the jwksUri yet: no keys, so tokens are refused (anonymous passes).
    assert_eq!(status_of(&http, port, "/", &headers).await.0, 401);
    assert_eq!(status_of(&http, port, "/", &[]).await.0, 200);
    let reports = gw.config_dump().await["reports"].to_string();
    assert!(
        reports.contains("JwksFetchFailed") || reports.contains("JwksNotFetched"),
        "{reports}"
    );
    let server = serve_jwks(jwks_port, jwks(&[&rsa]));
    eventually_within(
        "the keys are fetched on retry",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move { status_of(&http, port, "/", &headers).await.0 == 200 }
        },
    )
    .await;
    server.abort();
}
