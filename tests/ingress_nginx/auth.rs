use crate::support::manifests::nginx_ingress as ingress;
use crate::support::manifests::{ep, join, service};
use crate::support::{free_port, ConfigDir, Echo, Http, BOTH};

/// What the auth service saw of each check: its method and `X-Original-URL`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// An auth service (HTTPS with `tls`): `Bearer good` is alice (200 with `X-Auth-User`),
/// `Bearer forbidden` gets 403, anything else 401 with a Bearer challenge.
async fn auth_service(tls: Option<rustls::ServerConfig>) -> (u16, Seen) {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = seen.clone();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(c)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (log, acceptor) = (log.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            answer(tls, log).await
                        }
                    }
                    None => answer(tcp, log).await,
                }
            });
        }
    });
    (port, seen)
}

async fn answer<I>(io: I, log: Seen)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Full;
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let method = request.method().to_string();
            log.lock().unwrap().push((method, header("x-original-url")));
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
        });
    let io = hyper_util::rt::TokioIo::new(io);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// `auth-url`: every request is asked about first; the service's verdict is the client's.
#[tokio::test(flavor = "multi_thread")]
async fn auth_url_asks_the_auth_service_first() {
    let main = Echo::start("main");
    use crate::support::tls::{server_config, TestCa};
    let (auth_port, seen) = auth_service(None).await;
    // HTTPS auth services: one whose CA the gateway trusts (SSL_CERT_FILE), one it does not.
    let (trusted, stranger) = (TestCa::new("auth-ca"), TestCa::new("stranger"));
    let tls_config = |ca: &TestCa| Some(server_config(&ca.issue(&["localhost"])));
    let (tls_port, tls_seen) = auth_service(tls_config(&trusted)).await;
    let (stranger_port, _) = auth_service(tls_config(&stranger)).await;
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &trusted.cert_pem).unwrap();
    let https =
        |port: u16| Box::leak(format!("https://localhost:{port}/check").into_boxed_str()) as &str;
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
                &[("auth-url", https(tls_port)), ("auth-method", "POST")],
            ),
            &ingress(
                "untrusted",
                "untrusted.example",
                "/",
                "main",
                &[("auth-url", https(stranger_port))],
            ),
            &service("web", "main", 80, &[ep(&main, &[])]),
        ]),
    );
    let ports = ["--ingress-port".to_string(), port.to_string()];
    let mut args: Vec<&str> = ports.iter().map(String::as_str).collect();
    args.extend(["--ingress-class", "nginx"]);
    let ca_path = ca_file.path().display().to_string();
    let gw = crate::support::Gateway::spawn_env(dir.path(), &args, &[("SSL_CERT_FILE", &ca_path)]);
    gw.wait_ready().await;
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
        let over_tls = get("tls-auth.example", "Bearer good").await;
        assert_eq!(
            over_tls.status, 200,
            "an https:// auth service: {over_tls:?}"
        );
        assert_eq!(get("tls-auth.example", "Bearer nobody").await.status, 401);
        let untrusted = get("untrusted.example", "Bearer good").await;
        assert_eq!(
            untrusted.status, 500,
            "an auth service not verified refuses: {untrusted:?}"
        );
    }
    let seen = seen.lock().unwrap().clone();
    let guarded = (
        "GET".to_string(),
        "http://guarded.example/page?q=1".to_string(),
    );
    assert!(seen.contains(&guarded), "{seen:?}");
    let tls_seen = tls_seen.lock().unwrap().clone();
    assert!(
        tls_seen.iter().all(|(method, _)| method == "POST"),
        "auth-method: {tls_seen:?}"
    );
    assert!(!tls_seen.is_empty());
}
