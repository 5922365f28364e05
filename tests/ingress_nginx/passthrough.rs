use crate::support::manifests::nginx_ingress_tls;
use crate::support::manifests::{ep, join, loopback_service, service};
use crate::support::tls::{https_get, tls_secret, TestCa, TlsBackend};
use crate::support::{free_port, ConfigDir, Echo, Gateway, Http, Proto};

/// `ssl-passthrough`: on the Ingress TLS port, a ClientHello naming the Ingress's host is
/// relayed untouched to its backend (the client sees the backend's certificate), while the
/// port's other hosts are still terminated and served as HTTP; the cleartext port serves
/// the Ingress as usual (here: its HTTPS redirect).
#[tokio::test(flavor = "multi_thread")]
async fn ssl_passthrough_relays_the_hosts_tls_to_its_backend() {
    let (backend_ca, gateway_ca) = (TestCa::new("backend-ca"), TestCa::new("gateway-ca"));
    let backend = TlsBackend::start(&backend_ca.issue(&["argocd.example"]), None).await;
    let main = Echo::start("main");
    let (port, tls_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let passed = [("ssl-passthrough", "true"), ("force-ssl-redirect", "true")];
    dir.write(
        "all.yaml",
        &join(&[
            &nginx_ingress_tls("argocd", "argocd.example", "/", "argocd", &passed, false),
            &nginx_ingress_tls("shop", "shop.example", "/", "main", &[], true),
            &tls_secret("web", "shop-tls", &gateway_ca.issue(&["shop.example"])),
            &loopback_service("web", "argocd", "https", backend.port),
            &service("web", "main", 80, &[ep(&main, &[])]),
        ]),
    );
    let gw = Gateway::spawn(
        dir.path(),
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

    let relayed = https_get(
        tls_port,
        "argocd.example",
        &backend_ca.cert_pem,
        &["http/1.1"],
        "/app",
    )
    .await
    .expect("the backend's own TLS, passed through");
    assert_eq!(relayed.reply.status, 200);
    let seen: serde_json::Value = serde_json::from_str(&relayed.reply.text).unwrap();
    assert_eq!(
        seen["sni"], "argocd.example",
        "the backend ran the handshake"
    );
    assert_eq!(seen["path"], "/app");
    let terminated = https_get(
        tls_port,
        "argocd.example",
        &gateway_ca.cert_pem,
        &["http/1.1"],
        "/",
    )
    .await;
    assert!(terminated.is_err(), "never terminated by the gateway");

    let shop = https_get(
        tls_port,
        "shop.example",
        &gateway_ca.cert_pem,
        &["h2", "http/1.1"],
        "/",
    )
    .await
    .expect("the other host is still HTTPS");
    assert_eq!(shop.reply.status, 200);
    assert_eq!(shop.reply.backend(), "main");

    let http = Http::new(Proto::H1);
    let url = format!("http://127.0.0.1:{port}/app");
    let redirect = http.get(&url, Some("argocd.example"), &[]).await.unwrap();
    assert_eq!(redirect.status, 308, "{redirect:?}");
    let location = redirect.header("location").unwrap_or_default();
    assert!(location.starts_with("https://argocd.example"), "{location}");
}
