//! Client certificates at the edge: an Istio Gateway server with `tls.mode` MUTUAL and
//! OPTIONAL_MUTUAL (client CA from the credentialName Secret), through the real binary: a
//! good certificate is served and described to the backend in x-forwarded-client-cert (a
//! client-sent one is replaced), a certificate from another CA and a missing one are refused
//! at the handshake (MUTUAL), and the certificate's SPIFFE ID is the principal
//! AuthorizationPolicy sees.

mod support;

use std::time::Duration;
use support::manifests::{ep, join, service};
use support::tls::{https_get_as, secret_with, TestCa};
use support::{free_port, ConfigDir, Echo, Gateway};

const HOST: &str = "shop.example.com";

fn istio_gateway(port: u16, mode: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: shop-gw, namespace: shop}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20   - port: {{number: {port}, name: https, protocol: HTTPS}}\n      hosts: [\"{HOST}\"]\n      \
         tls: {{mode: {mode}, credentialName: shop-cert}}\n"
    )
}

const VIRTUAL_SERVICE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop, namespace: shop}\n\
     spec:\n  hosts: [\"shop.example.com\"]\n  gateways: [shop-gw]\n  http: [{route: [{destination: {host: web}}]}]\n";

struct Edge {
    _gw: Gateway,
    _dir: ConfigDir,
    port: u16,
    server_ca: TestCa,
    client_ca: TestCa,
}

async fn edge(echo: &Echo, mode: &str, extra: &[String]) -> Edge {
    let (server_ca, client_ca) = (TestCa::new("server CA"), TestCa::new("client CA"));
    let server = server_ca.issue(&[HOST]);
    let port = free_port();
    let dir = ConfigDir::new();
    let secret = secret_with(
        "shop",
        "shop-cert",
        &[
            ("tls.crt", &server.cert_pem),
            ("tls.key", &server.key_pem),
            ("ca.crt", &client_ca.cert_pem),
        ],
    );
    let mut docs = vec![
        istio_gateway(port, mode),
        VIRTUAL_SERVICE.to_string(),
        secret,
        service("shop", "web", 80, &[ep(echo, &[])]),
    ];
    docs.extend(extra.iter().cloned());
    dir.write(
        "all.yaml",
        &join(&docs.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    let gw = Gateway::start(dir.path()).await;
    Edge {
        _gw: gw,
        _dir: dir,
        port,
        server_ca,
        client_ca,
    }
}

const CLIENT_ID: &str = "spiffe://cluster.local/ns/partners/sa/acme";

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_at_the_edge_verifies_and_forwards_the_client_certificate() {
    let echo = Echo::start("web");
    let edge = edge(&echo, "MUTUAL", &[]).await;
    let good = edge
        .client_ca
        .issue_svid(CLIENT_ID, Duration::from_secs(3600));
    let stranger = TestCa::new("stranger").issue_svid(CLIENT_ID, Duration::from_secs(3600));
    let ca = edge.server_ca.cert_pem.clone();
    let reply = https_get_as(
        edge.port,
        HOST,
        &ca,
        Some(&good),
        "/",
        &[("x-forwarded-client-cert", "By=forged")],
    )
    .await
    .expect("a good client certificate is served");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let xfcc = reply.echo()["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        xfcc.starts_with("Hash=") && xfcc.ends_with(&format!(";URI={CLIENT_ID}")),
        "{xfcc}"
    );
    assert!(!xfcc.contains("forged"), "{xfcc}");
    let wrong_ca = https_get_as(edge.port, HOST, &ca, Some(&stranger), "/", &[]).await;
    assert!(
        wrong_ca.is_err(),
        "a certificate from another CA must be refused: {:?}",
        wrong_ca.map(|r| r.status)
    );
    let missing = https_get_as(edge.port, HOST, &ca, None, "/", &[]).await;
    assert!(
        missing.is_err(),
        "MUTUAL requires a certificate: {:?}",
        missing.map(|r| r.status)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_mutual_serves_anonymous_clients_and_strips_their_forwarded_certificate() {
    let echo = Echo::start("web");
    let edge = edge(&echo, "OPTIONAL_MUTUAL", &[]).await;
    let ca = edge.server_ca.cert_pem.clone();
    let reply = https_get_as(
        edge.port,
        HOST,
        &ca,
        None,
        "/",
        &[("x-forwarded-client-cert", "By=forged")],
    )
    .await
    .expect("OPTIONAL_MUTUAL serves a client without a certificate");
    assert_eq!(reply.status, 200);
    assert!(
        reply.echo()["headers"]
            .get("x-forwarded-client-cert")
            .is_none(),
        "{}",
        reply.text
    );
    let stranger = TestCa::new("stranger").issue(&["client.test"]);
    assert!(
        https_get_as(edge.port, HOST, &ca, Some(&stranger), "/", &[])
            .await
            .is_err(),
        "a bad certificate is still refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_certificate_is_the_principal_authorization_policy_sees() {
    let echo = Echo::start("web");
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: partners, namespace: istio-system}\n\
         spec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  rules: [{from: [{source: {principals: [\"cluster.local/ns/partners/sa/acme\"]}}]}]\n"
        .to_string();
    let edge = edge(&echo, "MUTUAL", &[policy]).await;
    let ca = edge.server_ca.cert_pem.clone();
    let acme = edge
        .client_ca
        .issue_svid(CLIENT_ID, Duration::from_secs(3600));
    let other = edge.client_ca.issue_svid(
        "spiffe://cluster.local/ns/partners/sa/other",
        Duration::from_secs(3600),
    );
    let status = |leaf| {
        let ca = ca.clone();
        async move {
            https_get_as(edge.port, HOST, &ca, Some(leaf), "/", &[])
                .await
                .map(|r| r.status)
        }
    };
    assert_eq!(status(&acme).await, Ok(200));
    assert_eq!(status(&other).await, Ok(403));
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_frontend_validation_requires_a_certificate_from_its_ca_config_map() {
    let echo = Echo::start("web");
    let (server_ca, client_ca) = (TestCa::new("server CA"), TestCa::new("client CA"));
    let port = free_port();
    let dir = ConfigDir::new();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: default}}\n\
         spec:\n  gatewayClassName: ferry\n  tls:\n    frontend:\n      default:\n        validation:\n          \
         caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: client-ca}}]\n  listeners:\n  \
         - {{name: https, port: {port}, protocol: HTTPS, hostname: {HOST}, tls: {{certificateRefs: [{{name: edge-cert}}]}}}}\n"
    );
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\n\
         spec: {parentRefs: [{name: edge}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n";
    let indented: String = client_ca
        .cert_pem
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    let config_map = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: client-ca, namespace: default}}\ndata:\n  ca.crt: |\n{indented}");
    dir.write(
        "all.yaml",
        &join(&[
            &gateway,
            route,
            &config_map,
            &support::tls::tls_secret("default", "edge-cert", &server_ca.issue(&[HOST])),
            &service("default", "web", 80, &[ep(&echo, &[])]),
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    let ca = server_ca.cert_pem.clone();
    let client = client_ca.issue_svid(CLIENT_ID, Duration::from_secs(3600));
    let served = https_get_as(port, HOST, &ca, Some(&client), "/", &[])
        .await
        .map(|r| r.status);
    assert_eq!(served, Ok(200));
    assert!(
        https_get_as(port, HOST, &ca, None, "/", &[]).await.is_err(),
        "AllowValidOnly requires a certificate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_sni_is_the_server_name_the_client_asked_for() {
    let echo = Echo::start("web");
    let ca = TestCa::new("server CA");
    let leaf = ca.issue(&["shop.example.com", "admin.example.com"]);
    let port = free_port();
    let dir = ConfigDir::new();
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: shop-gw, namespace: shop}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20   - port: {{number: {port}, name: https, protocol: HTTPS}}\n      hosts: [\"*.example.com\"]\n      \
         tls: {{mode: SIMPLE, credentialName: shop-cert}}\n"
    );
    let virtual_service = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shop, namespace: shop}\n\
         spec:\n  hosts: [\"*.example.com\"]\n  gateways: [shop-gw]\n  http: [{route: [{destination: {host: web}}]}]\n";
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: istio-system}\n\
         spec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n\
         \x20 rules: [{when: [{key: connection.sni, values: [admin.example.com]}]}]\n";
    dir.write(
        "all.yaml",
        &join(&[
            &gateway,
            virtual_service,
            policy,
            &support::tls::tls_secret("shop", "shop-cert", &leaf),
            &service("shop", "web", 80, &[ep(&echo, &[])]),
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    let status = |sni: &'static str| {
        let ca = ca.cert_pem.clone();
        async move {
            https_get_as(port, sni, &ca, None, "/", &[])
                .await
                .map(|r| r.status)
        }
    };
    assert_eq!(status("shop.example.com").await, Ok(200));
    assert_eq!(status("admin.example.com").await, Ok(403));
}
