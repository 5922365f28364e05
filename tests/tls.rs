//! TLS termination through the real `ferry` binary: HTTPS listeners of Gateway API and Istio
//! Gateways, certificates from Secrets picked by SNI, HTTP/2 and HTTP/1.1 by ALPN, rotation
//! without a restart. The client is rustls verifying against a per-test CA.

mod support;

use support::manifests::{ep, join, service};
use support::tls::{https_get, https_get_as, tls_secret, TestCa};
use support::{eventually, free_port, ConfigDir, Echo, Gateway, Http, Proto};

fn https_gateway(port: u16, listeners: &[(&str, &str, &str)]) -> String {
    let listeners: Vec<String> = listeners
        .iter()
        .map(|(name, host, secret)| {
            format!(
                "    - name: {name}\n      port: {port}\n      protocol: HTTPS\n      hostname: \"{host}\"\n      \
                 allowedRoutes: {{namespaces: {{from: All}}}}\n      tls: {{certificateRefs: [{{name: {secret}}}]}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: default}}\n\
         spec:\n  gatewayClassName: ferry\n  listeners:\n{}",
        listeners.concat()
    )
}

fn route_to(service: &str, hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {service}, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [{}]\n  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]\n",
        hosts.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listeners_pick_the_certificate_by_sni_and_serve_h2_and_http1() {
    let (shop, api) = (Echo::start("shop"), Echo::start("api"));
    let ca = TestCa::new("ferry test CA");
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &https_gateway(
                port,
                &[
                    ("shop", "shop.example.com", "shop-cert"),
                    ("api", "*.api.example.com", "api-cert"),
                ],
            ),
            &tls_secret("default", "shop-cert", &ca.issue(&["shop.example.com"])),
            &tls_secret("default", "api-cert", &ca.issue(&["*.api.example.com"])),
            &service("default", "shop", 80, &[ep(&shop, &[])]),
            &service("default", "api", 80, &[ep(&api, &[])]),
            &route_to("shop", &["shop.example.com"]),
            &route_to("api", &["*.api.example.com"]),
        ]),
    );
    let gateway = Gateway::start(dir.path()).await;

    for alpn in [&["h2", "http/1.1"][..], &["http/1.1"][..]] {
        let got = https_get(port, "shop.example.com", &ca.cert_pem, alpn, "/")
            .await
            .unwrap_or_else(|e| panic!("shop over {alpn:?}: {e}\n{}", gateway.logs()));
        assert_eq!(got.reply.status, 200);
        assert_eq!(got.reply.backend(), "shop");
        assert_eq!(
            got.alpn.as_deref(),
            Some(alpn[0]),
            "ALPN picks the client's first choice"
        );
        let seen = &got.reply.echo()["headers"];
        assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    }
    // The wildcard certificate answers any name under it; rustls checks it names the SNI.
    let got = https_get(port, "v2.api.example.com", &ca.cert_pem, &["h2"], "/").await;
    assert_eq!(got.expect("wildcard name").reply.backend(), "api");

    // A connection set up for one listener's name does not serve another listener's Host
    // (421 Misdirected Request: the client retries on a connection of its own).
    let misdirected = [("host", "v2.api.example.com")];
    let got = https_get_as(
        port,
        "shop.example.com",
        &ca.cert_pem,
        None,
        "/",
        &misdirected,
    );
    assert_eq!(
        got.await.expect("served over shop's connection").status,
        421
    );

    // No certificate for the name and no catch-all: the handshake fails.
    let unknown = https_get(port, "other.example.org", &ca.cert_pem, &["h2"], "/").await;
    assert!(
        unknown.is_err(),
        "a name without a certificate must not be served"
    );

    // Plain HTTP on the HTTPS port is not served as HTTP.
    let plain = Http::new(Proto::H1)
        .get(
            &format!("http://127.0.0.1:{port}/"),
            Some("shop.example.com"),
            &[],
        )
        .await;
    assert!(
        plain.is_none_or(|r| r.status != 200),
        "cleartext on a TLS port"
    );

    // The admin dump shows the certificates but never their keys.
    let dump = gateway.admin_get("/config_dump").await;
    assert!(dump.contains("BEGIN CERTIFICATE"));
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a private key leaked into /config_dump"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    let shop = Echo::start("shop");
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &https_gateway(port, &[("shop", "shop.example.com", "shop-cert")]),
            &service("default", "shop", 80, &[ep(&shop, &[])]),
            &route_to("shop", &["shop.example.com"]),
        ]),
    );
    let secret = |ca: &TestCa| tls_secret("default", "shop-cert", &ca.issue(&["shop.example.com"]));
    dir.write("secret.yaml", &secret(&old_ca));
    let gateway = Gateway::start(dir.path()).await;
    let get =
        |ca: String| async move { https_get(port, "shop.example.com", &ca, &["h2"], "/").await };
    assert_eq!(
        get(old_ca.cert_pem.clone())
            .await
            .expect("old cert")
            .reply
            .status,
        200
    );
    assert!(
        get(new_ca.cert_pem.clone()).await.is_err(),
        "not yet rotated"
    );

    dir.write("secret.yaml", &secret(&new_ca));
    eventually(|| async { get(new_ca.cert_pem.clone()).await.is_ok() }).await;
    assert!(
        get(old_ca.cert_pem.clone()).await.is_err(),
        "the old certificate is gone"
    );
    assert!(gateway.logs().contains("snapshot applied"));
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_simple_tls_server_and_https_redirect_on_the_plain_server() {
    let shop = Echo::start("shop");
    let ca = TestCa::new("istio CA");
    let (http_port, https_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let istio_gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: shop-gw, namespace: shop}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20   - port: {{number: {http_port}, name: http, protocol: HTTP}}\n      hosts: [\"shop.example.com\"]\n      tls: {{httpsRedirect: true}}\n\
         \x20   - port: {{number: {https_port}, name: https, protocol: HTTPS}}\n      hosts: [\"shop.example.com\"]\n      \
         tls: {{mode: SIMPLE, credentialName: shop-cert}}\n"
    );
    let virtual_service = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop, namespace: shop}\n\
         spec:\n  hosts: [\"shop.example.com\"]\n  gateways: [shop-gw]\n  http: [{route: [{destination: {host: web}}]}]\n";
    dir.write(
        "all.yaml",
        &join(&[
            &istio_gateway,
            virtual_service,
            &tls_secret("shop", "shop-cert", &ca.issue(&["shop.example.com"])),
            &service("shop", "web", 80, &[ep(&shop, &[])]),
        ]),
    );
    let _gateway = Gateway::start(dir.path()).await;

    let got = https_get(
        https_port,
        "shop.example.com",
        &ca.cert_pem,
        &["h2"],
        "/cart",
    )
    .await
    .expect("https");
    assert_eq!(got.reply.status, 200);
    assert_eq!(got.reply.echo()["path"], "/cart");

    let redirect = Http::new(Proto::H1)
        .get(
            &format!("http://127.0.0.1:{http_port}/cart"),
            Some("shop.example.com"),
            &[],
        )
        .await
        .expect("plain server answers");
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://shop.example.com/cart")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_tls_hosts_are_served_over_https_on_the_ingress_tls_port() {
    let shop = Echo::start("shop");
    let ca = TestCa::new("ingress CA");
    let (http_port, https_port) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop, namespace: default}\n\
         spec:\n  tls: [{hosts: [shop.example.com], secretName: shop-tls}]\n  rules:\n\
         \x20   - host: shop.example.com\n      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}\n";
    dir.write(
        "all.yaml",
        &join(&[
            ingress,
            &tls_secret("default", "shop-tls", &ca.issue(&["shop.example.com"])),
            &service("default", "shop", 80, &[ep(&shop, &[])]),
        ]),
    );
    let ports = [
        "--ingress-port".to_string(),
        http_port.to_string(),
        "--ingress-tls-port".to_string(),
        https_port.to_string(),
    ];
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let gateway = Gateway::spawn(dir.path(), &ports);
    gateway.wait_ready().await;
    let got = https_get(https_port, "shop.example.com", &ca.cert_pem, &["h2"], "/")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gateway.logs()));
    assert_eq!(got.reply.backend(), "shop");
    let plain = Http::new(Proto::H1)
        .get(
            &format!("http://127.0.0.1:{http_port}/"),
            Some("shop.example.com"),
            &[],
        )
        .await
        .expect("cleartext port still serves");
    assert_eq!(plain.backend(), "shop");
}
