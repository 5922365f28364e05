//! Gateway API's `ExternalAuth` filter (protocol HTTP, Envoy's HTTP ext_authz) through the
//! real binary, both client protocols: a real auth service decides each request, its
//! denials reach the client whole, its allowing headers reach the backend, and an auth
//! service that cannot be reached refuses (fails closed).

mod support;

use std::sync::{Arc, Mutex};

use support::manifests::{ep, gateway, join, loopback_service, service};
use support::{dead_port, free_port, ConfigDir, Echo, Gateway, Http, BOTH};

/// What one check carried: method, path and query, and its headers.
type Seen = Arc<Mutex<Vec<(String, String, http::HeaderMap)>>>;

/// An Envoy-style auth service: `Bearer good` is allowed (200 with `X-User: alice` and
/// `X-Internal`), `Bearer forbidden` denied with 403, a body and `X-Reason`; anything
/// else gets 401 with a Bearer challenge.
async fn auth_service() -> (u16, Seen) {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let target = request.uri().path_and_query().unwrap().to_string();
                        let method = request.method().to_string();
                        log.lock()
                            .unwrap()
                            .push((method, target, request.headers().clone()));
                        let authorization = request
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string());
                        let (response, body) = match authorization.as_deref() {
                            Some("Bearer good") => (
                                http::Response::builder()
                                    .status(200)
                                    .header("x-user", "alice")
                                    .header("x-internal", "not for the backend"),
                                "",
                            ),
                            Some("Bearer forbidden") => (
                                http::Response::builder()
                                    .status(403)
                                    .header("x-reason", "policy"),
                                "not for you",
                            ),
                            _ => (
                                http::Response::builder()
                                    .status(401)
                                    .header("www-authenticate", "Bearer realm=\"shop\""),
                                "who are you?",
                            ),
                        };
                        let body = Full::new(bytes::Bytes::from(body));
                        async move { Ok::<_, std::convert::Infallible>(response.body(body).unwrap()) }
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

fn routes() -> String {
    let filter = |service: &str| {
        format!(
            "      filters:\n        - type: ExternalAuth\n          externalAuth:\n            protocol: HTTP\n\
             \x20           backendRef: {{name: {service}, port: 80}}\n\
             \x20           http: {{path: /verify, allowedHeaders: [X-Tenant], allowedResponseHeaders: [X-User]}}\n"
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n\
         \x20   - matches: [{{path: {{type: PathPrefix, value: /app}}}}]\n{}\
         \x20     backendRefs: [{{name: app, port: 80}}]\n\
         \x20   - matches: [{{path: {{type: PathPrefix, value: /down}}}}]\n{}\
         \x20     backendRefs: [{{name: app, port: 80}}]\n\
         \x20   - matches: [{{path: {{type: PathPrefix, value: /open}}}}]\n\
         \x20     backendRefs: [{{name: app, port: 80}}]\n",
        filter("auth"),
        filter("gone")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn external_auth_decides_each_request() {
    let app = Echo::start("app");
    let (auth_port, seen) = auth_service().await;
    let (_held, gone_port) = dead_port();
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "app", 80, &[ep(&app, &[])]),
            &loopback_service("default", "auth", "http", auth_port),
            &loopback_service("default", "gone", "http", gone_port),
            &routes(),
        ]),
    );
    let _gw = Gateway::spawn(dir.path(), &["--cause-detail", "full"]);
    _gw.wait_ready().await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for proto in BOTH {
        let http = Http::new(proto);
        let what = format!("{proto:?}");
        let asked = || seen.lock().unwrap().len();

        let anonymous = http
            .get(&url("/app/cart"), Some("shop.example"), &[])
            .await
            .unwrap();
        assert_eq!(anonymous.status, 401, "{what}: {anonymous:?}");
        assert_eq!(
            anonymous.header("www-authenticate"),
            Some("Bearer realm=\"shop\"")
        );
        assert_eq!(anonymous.text, "who are you?", "{what}: the denial's body");

        let forbidden = [("authorization", "Bearer forbidden")];
        let denied = http
            .get(&url("/app/cart"), Some("shop.example"), &forbidden)
            .await
            .unwrap();
        assert_eq!(denied.status, 403, "{what}: {denied:?}");
        assert_eq!(denied.header("x-reason"), Some("policy"));
        assert_eq!(denied.text, "not for you");
        assert!(denied
            .header("x-ferry-cause")
            .unwrap_or_default()
            .starts_with("UAEX"));

        let before = app.settled_request_count();
        let good = [
            ("authorization", "Bearer good"),
            ("x-tenant", "acme"),
            ("cookie", "session=private"),
        ];
        let body = bytes::Bytes::from_static(b"{\"item\":1}");
        let allowed = http
            .send(
                "POST",
                &url("/app/cart?step=2"),
                Some("shop.example"),
                &good,
                body,
            )
            .await
            .unwrap();
        assert_eq!(allowed.status, 200, "{what}: {allowed:?}");
        assert_eq!(
            allowed.echo()["headers"]["x-user"],
            "alice",
            "{what}: allowed header copied"
        );
        assert!(
            allowed.echo()["headers"]["x-internal"].is_null(),
            "{what}: only the allowed ones"
        );
        assert_eq!(
            app.settled_request_count(),
            before + 1,
            "{what}: only the allowed request reached the app"
        );

        let (method, target, headers) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(method, "POST", "{what}: the check has the request's method");
        assert_eq!(
            target, "/verify/app/cart?step=2",
            "{what}: path under the prefix"
        );
        assert_eq!(headers["host"], "shop.example");
        assert_eq!(
            headers["x-tenant"], "acme",
            "{what}: allowed request header sent"
        );
        assert!(
            headers.get("cookie").is_none(),
            "{what}: unlisted headers stay"
        );
        assert_eq!(headers["content-length"], "0");

        let checks = asked();
        let open = http
            .get(&url("/open"), Some("shop.example"), &[])
            .await
            .unwrap();
        assert_eq!(open.status, 200, "{what}");
        assert_eq!(
            asked(),
            checks,
            "{what}: a rule without the filter asks nobody"
        );

        let down = http
            .get(&url("/down"), Some("shop.example"), &good)
            .await
            .unwrap();
        assert_eq!(
            down.status, 403,
            "{what}: an unreachable auth service refuses: {down:?}"
        );
    }
}

/// The mesh config naming the `ext-authz` provider (Istio's `istio` ConfigMap).
fn mesh_config() -> &'static str {
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n\
     \x20   extensionProviders:\n\
     \x20   - name: ext-authz\n\
     \x20     envoyExtAuthzHttp:\n\
     \x20       service: auth.default.svc.cluster.local\n\
     \x20       port: 80\n\
     \x20       pathPrefix: /check\n\
     \x20       includeRequestHeadersInCheck: [x-tenant]\n\
     \x20       includeAdditionalHeadersInCheck: {x-gateway: ferry}\n\
     \x20       headersToUpstreamOnAllow: [x-user]\n\
     \x20       headersToDownstreamOnDeny: [x-reason]\n"
}

fn custom_policy(name: &str, provider: &str, paths: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  action: CUSTOM\n\
         \x20 provider: {{name: {provider}}}\n  rules: [{{to: [{{operation: {{paths: [\"{paths}\"]}}}}]}}]\n"
    )
}

/// Istio's CUSTOM AuthorizationPolicy with an `envoyExtAuthzHttp` provider from the mesh
/// config: requests its rules match are asked about first (the provider's headers settings
/// applied), others are not; a policy naming an unknown provider denies what it matches.
#[tokio::test(flavor = "multi_thread")]
async fn istio_custom_policies_ask_their_provider() {
    let app = Echo::start("app");
    let (auth_port, seen) = auth_service().await;
    let port = free_port();
    let dir = ConfigDir::new();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\n\
                 spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: app, port: 80}]}]}\n";
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &service("default", "app", 80, &[ep(&app, &[])]),
            &loopback_service("default", "auth", "http", auth_port),
            route,
            mesh_config(),
            &custom_policy("admin", "ext-authz", "/admin*"),
            &custom_policy("vault", "nobody-by-this-name", "/vault*"),
        ]),
    );
    let gw = Gateway::spawn(dir.path(), &["--cause-detail", "full"]);
    gw.wait_ready().await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for proto in BOTH {
        let http = Http::new(proto);
        let what = format!("{proto:?}");
        let asked = || seen.lock().unwrap().len();

        let checks = asked();
        let public = http
            .get(&url("/public"), Some("shop.example"), &[])
            .await
            .unwrap();
        assert_eq!(public.status, 200, "{what}: {public:?}");
        assert_eq!(
            asked(),
            checks,
            "{what}: a request no CUSTOM rule matches is not checked"
        );

        let anonymous = http
            .get(&url("/admin/users"), Some("shop.example"), &[])
            .await
            .unwrap();
        assert_eq!(anonymous.status, 401, "{what}: {anonymous:?}");
        assert_eq!(anonymous.text, "who are you?");
        assert!(
            anonymous.header("www-authenticate").is_none(),
            "{what}: only headersToDownstreamOnDeny"
        );
        let forbidden = [("authorization", "Bearer forbidden")];
        let denied = http
            .get(&url("/admin/users"), Some("shop.example"), &forbidden)
            .await
            .unwrap();
        assert_eq!(
            (denied.status, denied.header("x-reason")),
            (403, Some("policy")),
            "{what}"
        );

        let good = [("authorization", "Bearer good"), ("x-tenant", "acme")];
        let allowed = http
            .get(&url("/admin/users"), Some("shop.example"), &good)
            .await
            .unwrap();
        assert_eq!(allowed.status, 200, "{what}: {allowed:?}");
        assert_eq!(allowed.echo()["headers"]["x-user"], "alice", "{what}");
        assert!(
            allowed.echo()["headers"]["x-internal"].is_null(),
            "{what}: only headersToUpstreamOnAllow"
        );
        let (method, target, headers) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (method.as_str(), target.as_str()),
            ("GET", "/check/admin/users"),
            "{what}"
        );
        assert_eq!(headers["x-tenant"], "acme", "{what}");
        assert_eq!(
            headers["x-gateway"], "ferry",
            "{what}: includeAdditionalHeadersInCheck"
        );

        let vault = http
            .get(&url("/vault"), Some("shop.example"), &good)
            .await
            .unwrap();
        assert_eq!(
            vault.status, 403,
            "{what}: an unknown provider fails closed: {vault:?}"
        );
    }
}
