use crate::nginx_gateway;
use crate::support::manifests::nginx_ingress as ingress;
use crate::support::manifests::{join, loopback_service};
use crate::support::{free_port, ConfigDir, Http, Proto, BOTH};

/// `backend-protocol: HTTPS` with `proxy-ssl-*`: unverified as ingress-nginx by default,
/// verified against the Secret's CA with `proxy-ssl-verify: on` (a backend the CA did not
/// sign gets no request), and `on` without a Secret is not served.
#[tokio::test(flavor = "multi_thread")]
async fn https_backends_with_proxy_ssl_settings() {
    use crate::support::tls::{secret_with, TestCa, TlsBackend};
    let (backend_ca, stranger) = (TestCa::new("backend-ca"), TestCa::new("stranger"));
    let backend = TlsBackend::start(&backend_ca.issue(&["backend.test"]), None).await;
    let service = loopback_service("web", "main", "https", backend.port);
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
    let http = Http::new(crate::support::Proto::H1);
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

/// A backend run by the test, by path: `/stall` answers after 2.5 s, `/trickle` sends its
/// head at once and five chunks 400 ms apart (2 s in all), `/deaf` reads the request head
/// and then nothing more, holding the connection.
async fn slow_backend() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let pause = std::time::Duration::from_millis(400);
                if head.contains(" /stall ") {
                    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nstalled")
                        .await;
                } else if head.contains(" /trickle ") {
                    let start = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                    let _ = tcp.write_all(start.as_bytes()).await;
                    for _ in 0..5 {
                        tokio::time::sleep(pause).await;
                        let _ = tcp.write_all(b"1\r\nx\r\n").await;
                    }
                    let _ = tcp.write_all(b"0\r\n\r\n").await;
                } else {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    port
}

/// `proxy-read-timeout` bounds the gap between two reads of the response, not the whole
/// response (a body trickling for longer than it gets through); `proxy-send-timeout` the
/// gap between two writes of the request (a backend that stops reading gets 504).
#[tokio::test(flavor = "multi_thread")]
async fn proxy_read_and_send_timeouts_bound_each_gap() {
    let backend = slow_backend().await;
    let port = free_port();
    let dir = ConfigDir::new();
    let send = [
        ("proxy-send-timeout", "1"),
        // Pingora's path waits for a response after a failed send, up to the read timeout.
        ("proxy-read-timeout", "3"),
        ("proxy-body-size", "0"),
    ];
    dir.write(
        "all.yaml",
        &join(&[
            &ingress(
                "read",
                "read.example",
                "/",
                "main",
                &[("proxy-read-timeout", "1")],
            ),
            &ingress("send", "send.example", "/", "main", &send),
            &loopback_service("web", "main", "http", backend),
        ]),
    );
    let gw = nginx_gateway(&dir, port, &["--cause-detail", "full"]).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        let started = std::time::Instant::now();
        let stalled = http.get(&url("/stall"), Some("read.example"), &[]).await;
        let stalled = stalled.unwrap();
        assert_eq!(stalled.status, 504, "{proto:?} {stalled:?}");
        assert!(started.elapsed() < std::time::Duration::from_millis(2400));
        let trickled = http.get(&url("/trickle"), Some("read.example"), &[]).await;
        let trickled = trickled.unwrap();
        assert_eq!(trickled.status, 200, "{proto:?} {trickled:?}");
        assert_eq!(trickled.text, "xxxxx", "{proto:?}: the whole body");
    }
    // 64 MiB to a backend that reads none of it: the socket buffers fill, the write waits.
    let body = bytes::Bytes::from(vec![b'x'; 64 << 20]);
    let http = Http::new(Proto::H1);
    let deaf = format!("http://127.0.0.1:{port}/deaf");
    let sent = http.send("POST", &deaf, Some("send.example"), &[], body);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sent).await;
    let gave_up = |line: &String| {
        line.contains("send.example") && line.contains("504") && line.contains("WriteTimedout")
    };
    crate::support::eventually_within(
        "a 504 for the request the backend did not read",
        std::time::Duration::from_secs(10),
        || async { gw.access_log().iter().any(gave_up) },
    )
    .await;
}

/// `default-backend` with `custom-http-errors`: an upstream 404 or 503 is replaced by the
/// error backend's answer to `GET /` naming what happened (`X-Code`, `X-Original-URI`...),
/// other statuses pass; a path whose Service has no endpoints is served by the default
/// backend; `custom-http-errors` alone is reported, not applied.
#[tokio::test(flavor = "multi_thread")]
async fn custom_http_errors_show_the_default_backends_page() {
    use crate::support::manifests::{ep, service};
    use crate::support::Echo;
    let main = Echo::start("main");
    let pages = Echo::start_with("pages", &["--status", "404"]);
    let port = free_port();
    let dir = ConfigDir::new();
    let with_pages = [
        ("default-backend", "pages"),
        ("custom-http-errors", "404,503"),
    ];
    dir.write(
        "all.yaml",
        &join(&[
            &ingress("shop", "shop.example", "/", "main", &with_pages),
            &ingress("empty", "empty.example", "/", "nobody", &with_pages),
            &ingress(
                "alone",
                "alone.example",
                "/",
                "main",
                &[("custom-http-errors", "404")],
            ),
            &service("web", "main", 80, &[ep(&main, &[])]),
            &service("web", "pages", 80, &[ep(&pages, &[])]),
            &service("web", "nobody", 80, &[]),
        ]),
    );
    let _gw = nginx_gateway(&dir, port, &["--cause-detail", "full"]).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let url = format!("http://127.0.0.1:{port}/cart?step=2");
        let what = format!("{proto:?}");
        let missing = [("x-echo-status", "404"), ("accept", "application/json")];
        let page = http
            .get(&url, Some("shop.example"), &missing)
            .await
            .unwrap();
        assert_eq!(page.status, 404, "{what}: the page's own status: {page:?}");
        assert_eq!(
            page.backend(),
            "pages",
            "{what}: the error backend answered"
        );
        let seen = page.echo();
        assert_eq!(seen["path"], "/", "{what}");
        assert_eq!(seen["headers"]["x-code"], "404", "{what}");
        assert_eq!(seen["headers"]["x-format"], "application/json", "{what}");
        assert_eq!(seen["headers"]["x-original-uri"], "/cart?step=2", "{what}");
        assert_eq!(seen["headers"]["x-ingress-name"], "shop", "{what}");
        assert_eq!(seen["headers"]["x-service-name"], "main", "{what}");
        assert_eq!(seen["headers"]["x-service-port"], "80", "{what}");
        assert_eq!(
            page.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let teapot = [("x-echo-status", "418")];
        let passed = http.get(&url, Some("shop.example"), &teapot).await.unwrap();
        assert_eq!(passed.status, 418, "{what}: not listed: relayed");
        assert_eq!(passed.backend(), "main", "{what}");
        let ok = http.get(&url, Some("shop.example"), &[]).await.unwrap();
        assert_eq!(
            (ok.status, ok.backend()),
            (200, "main".to_string()),
            "{what}"
        );

        let fine = [("x-echo-status", "200")];
        let empty = http.get(&url, Some("empty.example"), &fine).await.unwrap();
        assert_eq!(
            empty.backend(),
            "pages",
            "{what}: no endpoints: the default backend"
        );
        assert_eq!(
            empty.echo()["path"],
            "/cart",
            "{what}: the request as it was"
        );

        let alone = http
            .get(&url, Some("alone.example"), &[("x-echo-status", "404")])
            .await
            .unwrap();
        assert_eq!(
            (alone.status, alone.backend()),
            (404, "main".to_string()),
            "{what}"
        );
    }
}

/// An HTTPS backend that speaks HTTP/2 only (ALPN h2), answering with the HTTP version it
/// was asked in.
async fn h2_tls_backend(leaf: &crate::support::tls::Leaf) -> u16 {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut config = crate::support::tls::server_config(leaf);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?} {}", request.version(), request.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// `backend-protocol: GRPCS`: HTTP/2 over TLS to the backend (ALPN h2), unverified as
/// ingress-nginx by default, for gRPC services that terminate TLS themselves.
#[tokio::test(flavor = "multi_thread")]
async fn grpcs_backends_get_http2_over_tls() {
    use crate::support::tls::TestCa;
    let ca = TestCa::new("backend-ca");
    let backend = h2_tls_backend(&ca.issue(&["grpc.internal"])).await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &ingress(
                "grpcs",
                "grpcs.example",
                "/",
                "main",
                &[("backend-protocol", "GRPCS")],
            ),
            &loopback_service("web", "main", "grpcs", backend),
        ]),
    );
    let _gw = nginx_gateway(&dir, port, &["--cause-detail", "full"]).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let url = format!("http://127.0.0.1:{port}/pkg.Service/Method");
        let reply = http.get(&url, Some("grpcs.example"), &[]).await.unwrap();
        assert_eq!(reply.status, 200, "{proto:?}: {reply:?}");
        assert_eq!(reply.text, "HTTP/2.0 /pkg.Service/Method", "{proto:?}");
    }
}
