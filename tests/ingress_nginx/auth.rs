use crate::nginx_gateway;
use crate::support::manifests::nginx_ingress as ingress;
use crate::support::manifests::{ep, join, service};
use crate::support::{free_port, ConfigDir, Echo, Http, BOTH};

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
    let (dead, _) = crate::support::dead_port();
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
