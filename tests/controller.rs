//! `ferry controller` against a real kube-apiserver (built by tests/k8s-tools/build.sh):
//! manifests applied with kubectl, gateways in controller mode serving what they say.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::apiserver::{pod_echo, ApiServer};
use support::manifests::{ep, gateway, join, service};
use support::{free_port, Controller, Echo, Gateway, Http, Proto};

const NS: &str = "shop";

/// An API server with Ferry's CRDs established and the test namespace.
fn cluster() -> ApiServer {
    let api = ApiServer::start();
    api.install_crds();
    api.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
    ));
    api
}

/// The Gateway `public` on `port`, Service `shop-v1` on `v1` and HTTPRoute `shop` to it,
/// followed by `extra` documents.
fn shop(port: u16, v1: &Echo, extra: &[&str]) -> String {
    let mut docs = vec![
        gateway(NS, "public", &[("http", port, None)]),
        service(NS, "shop-v1", 80, &[ep(v1, &[("app", "shop")])]),
        route("shop", "shop.example.com", "shop-v1"),
    ];
    docs.extend(extra.iter().map(|d| d.to_string()));
    join(&docs.iter().map(String::as_str).collect::<Vec<_>>())
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn route(name: &str, host: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  parentRefs: [{{name: public}}]\n  hostnames: [\"{host}\"]\n\
         \x20 rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
    )
}

async fn backend_of(port: u16, host: &str) -> Option<(u16, String)> {
    let reply = Http::new(Proto::H1)
        .get(&format!("http://127.0.0.1:{port}/"), Some(host), &[])
        .await?;
    let backend = if reply.status == 200 {
        reply.backend()
    } else {
        String::new()
    };
    Some((reply.status, backend))
}

/// A gateway following `controller` for `shop/public`, running as ServiceAccount
/// `shop/public` (the Gateway's own, which the controller entitles to that scope).
fn gateway_in_controller_mode(api: &ApiServer, controller: SocketAddr, name: &str) -> Gateway {
    let credentials = api.proxy_credentials(NS, "public");
    Gateway::following(
        controller,
        credentials,
        &["--scope", &format!("{NS}/public"), "--proxy-name", name],
    )
}

/// A controller on a free port and a gateway following it for `shop/public`, serving v1.
async fn controller_and_gateway(api: &ApiServer, port: u16) -> (SocketAddr, Controller, Gateway) {
    let push = free_addr();
    let controller = Controller::start(&api.kubeconfig, push).await;
    let gw = gateway_in_controller_mode(api, push, "gw-1.shop");
    gw.wait_ready().await;
    support::eventually(|| async {
        backend_of(port, "shop.example.com").await == Some((200, "v1".into()))
    })
    .await;
    (push, controller, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_from_the_api_server_are_served_and_edits_apply_without_failures() {
    let api = cluster();
    let (v1, v2) = (pod_echo("v1"), pod_echo("v2"));
    let port = free_port();
    api.apply(&shop(
        port,
        &v1,
        &[&service(NS, "shop-v2", 80, &[ep(&v2, &[("app", "shop")])])],
    ));
    let (_push, controller, gw) = controller_and_gateway(&api, port).await;
    // The gateway got its workload certificate from the controller's CA (for mTLS to meshed
    // backends): its ServiceAccount's identity, the key nowhere in the dump.
    support::eventually(|| async { !gw.config_dump().await["identity"].is_null() }).await;
    let dump = gw.config_dump().await;
    assert_eq!(
        dump["identity"]["spiffe_id"],
        "spiffe://cluster.local/ns/shop/sa/public"
    );
    assert!(!dump.to_string().contains("PRIVATE KEY"));

    // Traffic runs all along; the edit must show within 1 s and no request may fail.
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn({
        let (failures, sent, running) = (failures.clone(), sent.clone(), running.clone());
        async move {
            while running.load(Ordering::SeqCst) {
                let ok = matches!(backend_of(port, "shop.example.com").await, Some((200, _)));
                sent.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    api.apply(&route("shop", "shop.example.com", "shop-v2"));
    let took = support::eventually_within("edit served", Duration::from_secs(1), || async {
        backend_of(port, "shop.example.com").await == Some((200, "v2".into()))
    })
    .await;
    running.store(false, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "failed requests during the edit"
    );
    assert!(sent.load(Ordering::SeqCst) > 10);
    println!("route edit served after {took:?}");

    // The controller knows the proxy is in sync with what it sent.
    support::eventually(|| async {
        let proxies = controller.proxies().await;
        let proxy = &proxies["proxies"][0];
        proxy["proxy"] == "gw-1.shop"
            && proxy["sentVersion"] == proxy["ackedVersion"]
            && proxy["sentVersion"].as_u64() == Some(gw.version().await)
    })
    .await;

    // A route whose backend Service disappears answers 500 (Gateway API: invalid backend).
    api.kubectl(&["delete", "service", "-n", NS, "shop-v2"]);
    support::eventually(|| async {
        backend_of(port, "shop.example.com").await.map(|r| r.0) == Some(500)
    })
    .await;
    let reason = r#".status.parents[0].conditions[?(@.type=="ResolvedRefs")].reason"#;
    eventually_equals(&api, "httproute", "shop", reason, "BackendNotFound").await;
}

/// Polls a field of an object through the API until it has the wanted value.
/// The controller deployed a gateway for Gateway `public` (owned by it, labelled with its
/// name; its Service's cluster IP is the Gateway's address) and left the ServiceAccount it
/// did not make alone.
async fn gateway_deployed_and_owned(api: &ApiServer) {
    let owner = ".metadata.ownerReferences[0].name";
    for kind in ["deployment", "service", "poddisruptionbudget"] {
        eventually_equals(api, kind, "public-ferry", owner, "public").await;
    }
    let scope = ".spec.template.spec.containers[0].args[2]";
    eventually_equals(
        api,
        "deployment",
        "public-ferry",
        scope,
        "--scope=shop/public",
    )
    .await;
    let cluster_ip = api.get("service", NS, "public-ferry", ".spec.clusterIP");
    let address = ".status.addresses[0].value";
    eventually_equals(api, "gateway", "public", address, &cluster_ip).await;
    assert_eq!(
        api.get("serviceaccount", NS, "public-ferry", owner),
        "",
        "a ServiceAccount made by someone else is not taken over"
    );
}

async fn eventually_equals(api: &ApiServer, resource: &str, name: &str, path: &str, want: &str) {
    api.eventually_get(resource, NS, name, path, want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_are_written_with_the_spec_conditions() {
    let api = cluster();
    let v1 = pod_echo("v1");
    let port = free_port();
    api.apply(&shop(port, &v1, &[
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: ferry}\nspec: {controllerName: ferry.dev/gateway-controller}\n",
        &route("lost", "lost.example.com", "missing"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: shop}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: shop-v1}}]}]}\n",
        // Someone else's object under the name of the Gateway's deployed ServiceAccount.
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: public-ferry, namespace: shop, labels: {app.kubernetes.io/managed-by: team-a}}\n",
    ]));
    let (_push, _controller, _gw) = controller_and_gateway(&api, port).await;
    gateway_deployed_and_owned(&api).await;
    let condition =
        |kind: &str, field: &str| format!(r#".status.conditions[?(@.type=="{kind}")].{field}"#);
    eventually_equals(
        &api,
        "gateway",
        "public",
        &condition("Programmed", "status"),
        "True",
    )
    .await;
    assert_eq!(
        api.get("gateway", NS, "public", &condition("Accepted", "status")),
        "True"
    );
    assert_eq!(
        api.get(
            "gateway",
            NS,
            "public",
            ".status.listeners[0].attachedRoutes"
        ),
        "2"
    );
    let table = api.kubectl(&["get", "gateway", "-n", NS, "public"]);
    assert!(
        table.lines().next().unwrap().contains("PROGRAMMED"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().contains("True"), "{table}");
    let class = api.kubectl(&[
        "get",
        "gatewayclass",
        "ferry",
        "-o",
        &format!("jsonpath={{{}}}", condition("Accepted", "status")),
    ]);
    assert_eq!(class, "True");
    let parent = |kind: &str, field: &str| {
        format!(r#".status.parents[0].conditions[?(@.type=="{kind}")].{field}"#)
    };
    assert_eq!(
        api.get("httproute", NS, "shop", &parent("Accepted", "status")),
        "True"
    );
    assert_eq!(
        api.get("httproute", NS, "shop", ".status.parents[0].controllerName"),
        "ferry.dev/gateway-controller"
    );
    eventually_equals(
        &api,
        "httproute",
        "lost",
        &parent("ResolvedRefs", "reason"),
        "BackendNotFound",
    )
    .await;

    // An invalid route is left out and reported; a valid change made with it is served.
    api.apply(&join(&[
        &route("fresh", "fresh.example.com", "shop-v1"),
        &route("bad", "bad.example.com", "shop-v1").replace(
            "rules: [{",
            "rules: [{matches: [{path: {type: RegularExpression, value: \"((\"}}], ",
        ),
    ]));
    support::eventually(|| async {
        backend_of(port, "fresh.example.com").await == Some((200, "v1".into()))
    })
    .await;
    let accepted = parent("Accepted", "reason");
    eventually_equals(&api, "httproute", "bad", &accepted, "UnsupportedValue").await;

    // GRPCRoute: an h2c call to /shop.Cart/Add reaches the gRPC backend over HTTP/2.
    let grpc_backend = pod_echo("cart");
    api.apply(&join(&[
        &support::manifests::service_with(NS, "cart", 50051, Some("kubernetes.io/h2c"), &[ep(&grpc_backend, &[("app", "cart")])]),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: cart, namespace: shop}\n\
         spec:\n  parentRefs: [{name: public}]\n  hostnames: [grpc.example.com]\n\
         \x20 rules: [{matches: [{method: {service: shop.Cart, method: Add}}], backendRefs: [{name: cart, port: 50051}]}]\n",
    ]));
    let call = || async {
        Http::new(Proto::H2c)
            .send(
                "POST",
                &format!("http://127.0.0.1:{port}/shop.Cart/Add"),
                Some("grpc.example.com"),
                &[("content-type", "application/grpc")],
                bytes::Bytes::from_static(b"\0\0\0\0\0"),
            )
            .await
    };
    support::eventually(|| async {
        call()
            .await
            .is_some_and(|r| r.status == 200 && r.backend() == "cart")
    })
    .await;
    let reply = call().await.unwrap();
    assert_eq!(reply.echo()["protocol"], "HTTP/2.0", "{}", reply.text);
    eventually_equals(
        &api,
        "grpcroute",
        "cart",
        &parent("Accepted", "status"),
        "True",
    )
    .await;

    // Istio objects get istiod-style validation messages (none here) for their generation.
    eventually_equals(
        &api,
        "virtualservice",
        "reviews",
        ".status.observedGeneration",
        "1",
    )
    .await;

    // security.istio.io kinds are watched and enforced by the Gateway's proxy: the
    // controller fetches the RequestAuthentication's jwksUri (the proxy never reaches out)
    // and pushes the keys; the AuthorizationPolicy denies DELETE, GET is still served.
    let signer = support::jwt::Signer::ec("k1");
    let jwks_port = free_port();
    let jwks_server = support::jwt::serve_jwks(jwks_port, support::jwt::jwks(&[&signer]));
    api.apply(&format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: shop}}\n\
         spec: {{targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: public}}], jwtRules: [{{issuer: https://auth.test, jwksUri: \"http://127.0.0.1:{jwks_port}/jwks\"}}]}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: no-delete, namespace: shop}}\n\
         spec: {{targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: public}}], action: DENY, rules: [{{to: [{{operation: {{methods: [DELETE]}}}}]}}]}}\n",
    ));
    let token = format!(
        "Bearer {}",
        signer.sign(serde_json::json!({"iss": "https://auth.test", "sub": "alice", "exp": support::jwt::now() + 600}))
    );
    let forged = format!(
        "Bearer {}",
        support::jwt::Signer::ec("k1")
            .sign(serde_json::json!({"iss": "https://auth.test", "sub": "eve"}))
    );
    let with_token = |token: String| async move {
        Http::new(Proto::H1)
            .get(
                &format!("http://127.0.0.1:{port}/"),
                Some("fresh.example.com"),
                &[("authorization", token.as_str())],
            )
            .await
            .map(|r| r.status)
    };
    // Applied once a forged token is refused; the fetched keys then verify the real one.
    support::eventually_within(
        "the RequestAuthentication applies",
        Duration::from_secs(20),
        || {
            let forged = forged.clone();
            async move { with_token(forged).await == Some(401) }
        },
    )
    .await;
    support::eventually_within(
        "the pushed keys verify the token",
        Duration::from_secs(20),
        || {
            let token = token.clone();
            async move { with_token(token).await == Some(200) }
        },
    )
    .await;
    jwks_server.abort();
    let delete = || async {
        Http::new(Proto::H1)
            .send(
                "DELETE",
                &format!("http://127.0.0.1:{port}/"),
                Some("fresh.example.com"),
                &[],
                bytes::Bytes::new(),
            )
            .await
            .map(|r| r.status)
    };
    support::eventually(|| async { delete().await == Some(403) }).await;
    eventually_equals(
        &api,
        "authorizationpolicy",
        "no-delete",
        ".status.observedGeneration",
        "1",
    )
    .await;
    assert_eq!(
        backend_of(port, "fresh.example.com").await,
        Some((200, "v1".into()))
    );

    // Written only on change: the resourceVersion stays put while nothing changes.
    let version = api.get("httproute", NS, "shop", ".metadata.resourceVersion");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.get("httproute", NS, "shop", ".metadata.resourceVersion"),
        version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateways_keep_serving_while_the_controller_is_away_and_resync_when_it_returns() {
    let api = cluster();
    let v1 = pod_echo("v1");
    let port = free_port();
    api.apply(&shop(port, &v1, &[]));
    let (push, controller, gw) = controller_and_gateway(&api, port).await;

    drop(controller);
    for _ in 0..20 {
        assert_eq!(
            backend_of(port, "shop.example.com").await,
            Some((200, "v1".into())),
            "the gateway must serve its last snapshot without a controller"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A change made while the controller was down arrives once it is back.
    let v2 = pod_echo("v2");
    api.apply(&join(&[
        &service(NS, "shop-v2", 80, &[ep(&v2, &[("app", "shop")])]),
        &route("shop", "shop.example.com", "shop-v2"),
    ]));
    let controller = Controller::start(&api.kubeconfig, push).await;
    support::eventually(|| async {
        backend_of(port, "shop.example.com").await == Some((200, "v2".into()))
    })
    .await;
    support::eventually(|| async {
        controller.proxies().await["proxies"][0]["proxy"] == "gw-1.shop"
    })
    .await;
    assert!(
        gw.logs().contains("serving the last snapshot") || gw.logs().contains("reconnecting"),
        "the gateway should log the lost controller: {}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_elect_one_status_writer_and_all_serve_snapshots() {
    let api = cluster();
    let v1 = pod_echo("v1");
    let port = free_port();
    api.apply(&shop(port, &v1, &[]));
    let (a, b) = (free_addr(), free_addr());
    let replica_a = Controller::start_named(&api.kubeconfig, a, "replica-a").await;
    let replica_b = Controller::start_named(&api.kubeconfig, b, "replica-b").await;
    let holder = || {
        api.get(
            "lease",
            "default",
            "ferry-controller",
            ".spec.holderIdentity",
        )
    };
    support::eventually(|| async { !holder().is_empty() }).await;
    let leader = holder();
    assert!(leader == "replica-a" || leader == "replica-b", "{leader}");

    // A gateway following the replica that does not lead is served all the same.
    let follower = if leader == "replica-a" { b } else { a };
    let gw = gateway_in_controller_mode(&api, follower, "gw-1.shop");
    gw.wait_ready().await;
    support::eventually(|| async {
        backend_of(port, "shop.example.com").await == Some((200, "v1".into()))
    })
    .await;
    let programmed = r#".status.conditions[?(@.type=="Programmed")].status"#;
    eventually_equals(&api, "gateway", "public", programmed, "True").await;

    // The leader goes away: the other replica takes the Lease once it expires (15 s).
    let (gone, stays) = if leader == "replica-a" {
        (replica_a, replica_b)
    } else {
        (replica_b, replica_a)
    };
    drop(gone);
    let next = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    support::eventually_within("lease taken over", Duration::from_secs(25), || async {
        holder() == next
    })
    .await;
    assert!(
        stays.logs().contains("leadership changed"),
        "{}",
        stays.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listeners_take_certificates_from_tls_secrets_and_follow_their_rotation() {
    use support::tls::{https_get, TestCa};
    let api = cluster();
    let v1 = pod_echo("v1");
    let (port, tls_port) = (free_port(), free_port());
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: public, namespace: {NS}}}\n\
         spec:\n  gatewayClassName: ferry\n  listeners:\n\
         \x20   - {{name: http, port: {port}, protocol: HTTP}}\n\
         \x20   - {{name: https, port: {tls_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: shop-tls}}]}}}}\n"
    );
    api.apply(&join(&[
        &gateway,
        &service(NS, "shop-v1", 80, &[ep(&v1, &[("app", "shop")])]),
        &route("shop", "shop.example.com", "shop-v1"),
    ]));
    let (_push, _controller, _gw) = controller_and_gateway(&api, port).await;
    let listener = |field: &str| {
        format!(
            r#".status.listeners[?(@.name=="https")].conditions[?(@.type=="ResolvedRefs")].{field}"#
        )
    };
    // The Secret does not exist yet: the listener says why it is not served.
    eventually_equals(
        &api,
        "gateway",
        "public",
        &listener("reason"),
        "InvalidCertificateRef",
    )
    .await;

    let files = tempfile::tempdir().unwrap();
    let secret_yaml = |ca: &TestCa| {
        let leaf = ca.issue(&["shop.example.com"]);
        let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        api.kubectl(&[
            "create",
            "secret",
            "tls",
            "shop-tls",
            "-n",
            NS,
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
    };
    let served_with = |ca: String| async move {
        https_get(tls_port, "shop.example.com", &ca, &["h2"], "/")
            .await
            .is_ok_and(|got| got.reply.backend() == "v1")
    };
    let (first, second) = (TestCa::new("first CA"), TestCa::new("second CA"));
    api.apply(&secret_yaml(&first));
    support::eventually(|| served_with(first.cert_pem.clone())).await;
    eventually_equals(&api, "gateway", "public", &listener("status"), "True").await;

    // Rotation: the same Secret gets a certificate from another CA.
    api.apply(&secret_yaml(&second));
    support::eventually(|| served_with(second.cert_pem.clone())).await;
    assert!(
        !served_with(first.cert_pem.clone()).await,
        "old certificate still served"
    );
}

/// Refused calls on the controller's port: each reason counted.
async fn refused(controller: &Controller, reason: &str) -> f64 {
    let reply = Http::new(Proto::H1)
        .get(
            &format!("http://{}/metrics", controller.monitoring),
            None,
            &[],
        )
        .await
        .expect("monitoring port answered");
    reply
        .text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "ferry_controller_refused_total{{reason=\"{reason}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn channel(
    controller: &Controller,
    credentials: &support::apiserver::ProxyCredentials,
) -> ferry_gateway::control_channel::ControlChannel {
    ferry_gateway::control_channel::ControlChannel {
        address: controller.addr.to_string(),
        root_file: credentials.root_file.clone(),
        token_file: credentials.token_file.clone(),
    }
}

/// A CSR asking for someone else's identity.
fn csr_for_admin() -> ferry_model::identity::CertificateRequest {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    )];
    ferry_model::identity::CertificateRequest {
        csr_pem: params.serialize_request(&key).unwrap().pem().unwrap(),
    }
}

fn uri_sans(chain_pem: &str) -> Vec<String> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_channel_refuses_strangers_and_signs_only_for_the_callers_service_account() {
    use ferry_model::identity::{CertificateResponse, CERTIFICATE_PATH};
    let api = cluster();
    let v1 = pod_echo("v1");
    let port = free_port();
    api.apply(&shop(port, &v1, &[]));
    let push = free_addr();
    let controller = Controller::start(&api.kubeconfig, push).await;
    let web = api.proxy_credentials(NS, "web");

    // Signed for the token's ServiceAccount (TokenReview), whatever the CSR asked for.
    let signed: CertificateResponse = channel(&controller, &web)
        .post_json(CERTIFICATE_PATH, &csr_for_admin())
        .await
        .expect("certificate for shop/web");
    assert_eq!(
        uri_sans(&signed.cert_chain_pem),
        ["spiffe://cluster.local/ns/shop/sa/web"]
    );
    assert!(signed.trust_bundle_pem.contains("BEGIN CERTIFICATE"));

    // No token: refused.
    let anonymous = support::apiserver::ProxyCredentials::write(
        "",
        &std::fs::read_to_string(&web.root_file).unwrap(),
    );
    let error = channel(&controller, &anonymous)
        .post_json::<CertificateResponse>(CERTIFICATE_PATH, &csr_for_admin())
        .await
        .unwrap_err();
    assert!(error.contains("401"), "{error}");
    assert!(refused(&controller, "no_token").await >= 1.0);

    // A token for another audience (the API server's own): refused by TokenReview.
    let api_token = api.kubectl(&["create", "token", "web", "-n", NS]);
    let wrong_audience = support::apiserver::ProxyCredentials::write(
        api_token.trim(),
        &std::fs::read_to_string(&web.root_file).unwrap(),
    );
    let error = channel(&controller, &wrong_audience)
        .post_json::<CertificateResponse>(CERTIFICATE_PATH, &csr_for_admin())
        .await
        .unwrap_err();
    assert!(error.contains("401"), "{error}");
    assert!(refused(&controller, "bad_token").await >= 1.0);

    // A workload's identity asking for the Gateway's scope: refused, logged, counted; the
    // gateway never becomes ready.
    let intruder = Gateway::following(
        push,
        web,
        &[
            "--scope",
            &format!("{NS}/public"),
            "--proxy-name",
            "intruder",
        ],
    );
    support::eventually(|| async { refused(&controller, "not_entitled").await >= 1.0 }).await;
    assert!(
        controller
            .logs()
            .contains("only ServiceAccount shop/public may serve it"),
        "{}",
        controller.logs()
    );
    // The gateway logs the refusal once the answer reaches it.
    support::eventually(|| async { intruder.logs().contains("controller refused the stream") })
        .await;
    assert_eq!(
        Http::new(Proto::H1)
            .get(&format!("http://{}/ready", intruder.admin), None, &[])
            .await
            .map(|r| r.status),
        Some(503)
    );
    assert!(controller.proxies().await["proxies"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// A WorkloadEntry CRD as Istio's base chart installs it (open schema is enough here).
const WORKLOAD_ENTRY_CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
metadata: {name: workloadentries.networking.istio.io}\n\
spec:\n  group: networking.istio.io\n  scope: Namespaced\n\
\x20 names: {kind: WorkloadEntry, plural: workloadentries, singular: workloadentry, listKind: WorkloadEntryList}\n\
\x20 versions:\n  - name: v1\n    served: true\n    storage: true\n    subresources: {status: {}}\n\
\x20   schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n";

#[tokio::test(flavor = "multi_thread")]
async fn objects_ferry_cannot_read_are_told_so_on_their_status() {
    let api = cluster();
    api.apply(WORKLOAD_ENTRY_CRD);
    api.wait_crds_established();
    let v1 = pod_echo("v1");
    let port = free_port();
    api.apply(&shop(port, &v1, &[
        // A kind of networking.istio.io that Ferry does not serve...
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: payments, namespace: shop}\n\
         spec: {address: 192.0.2.5, labels: {app: payments}}\n",
        // ...and one it reads, with a field it does not know (the API server keeps it: the
        // CRD's schema is open).
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: typo, namespace: shop}\n\
         spec: {hosts: [reviews], htpp: [{route: [{destination: {host: shop-v1}}]}]}\n",
    ]));
    let (_push, _controller, _gw) = controller_and_gateway(&api, port).await;
    let message = ".status.validationMessages[0].type.name";
    eventually_equals(
        &api,
        "workloadentry",
        "payments",
        message,
        "UnsupportedKind",
    )
    .await;
    eventually_equals(&api, "virtualservice", "typo", message, "SchemaError").await;
    let said = api.get(
        "virtualservice",
        NS,
        "typo",
        ".status.validationMessages[0].message",
    );
    assert!(said.contains("htpp"), "the unknown field is named: {said}");
    // The rest is served meanwhile.
    assert_eq!(
        backend_of(port, "shop.example.com").await,
        Some((200, "v1".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_rule_tls_takes_its_ca_from_a_generic_secret_in_cluster_mode() {
    let api = cluster();
    let v1 = pod_echo("v1");
    let port = free_port();
    let ca = support::tls::TestCa::new("backend CA");
    let ip = support::apiserver::pod_ip();
    let backend = support::tls::TlsBackend::start_on(ip, &ca.issue(&["backend.test"]), None).await;
    let secure = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: secure, namespace: {NS}}}\n\
         spec: {{ports: [{{name: http, port: 80, targetPort: {p}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: secure-1, namespace: {NS}, labels: {{kubernetes.io/service-name: secure}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {p}}}]\n\
         endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: {NS}}}\n\
         spec: {{host: secure, trafficPolicy: {{tls: {{mode: SIMPLE, credentialName: backend-ca, sni: backend.test}}}}}}\n",
        p = backend.port
    );
    // `kubectl create secret generic backend-ca --from-file=ca.crt`: type Opaque.
    let secret = support::tls::secret_with(
        NS,
        "backend-ca",
        &[("ca.crt", &ca.cert_pem), ("unrelated", "not kept")],
    );
    api.apply(&shop(
        port,
        &v1,
        &[
            &secure,
            &secret,
            &route("secure", "secure.example.com", "secure"),
        ],
    ));
    let (_push, _controller, _gw) = controller_and_gateway(&api, port).await;
    let get = || async {
        Http::new(Proto::H1)
            .get(
                &format!("http://127.0.0.1:{port}/"),
                Some("secure.example.com"),
                &[],
            )
            .await
    };
    support::eventually_within(
        "TLS to the backend with the Secret's CA",
        Duration::from_secs(20),
        || async { get().await.is_some_and(|r| r.status == 200) },
    )
    .await;
    assert_eq!(get().await.unwrap().echo()["sni"], "backend.test");
}

/// Proxies send traffic summaries on their control stream; the controller's dashboard shows
/// the gateway's edge, the proxy's sync state and the Gateway with its written status.
#[tokio::test(flavor = "multi_thread")]
async fn the_controllers_dashboard_shows_what_its_proxies_served() {
    let api = cluster();
    let v1 = pod_echo("v1");
    let port = free_port();
    api.apply(&shop(port, &v1, &[]));
    let (_push, controller, _gw) = controller_and_gateway(&api, port).await;
    for _ in 0..30 {
        assert_eq!(
            backend_of(port, "shop.example.com").await,
            Some((200, "v1".into()))
        );
    }
    let edge = |graph: &serde_json::Value| -> Option<u64> {
        graph["edges"].as_array()?.iter().find_map(|e| {
            let into_shop = e["source"] == format!("gateway/{NS}/ferry-gateway")
                && e["target"] == format!("service/{NS}/shop-v1");
            into_shop.then(|| e["requests"].as_u64()).flatten()
        })
    };
    // Every request so far (the setup's probes too) arrives within a summary interval or two.
    support::eventually_within("summaries counted", Duration::from_secs(20), || async {
        edge(&controller.dashboard_api("/api/graph?window=1m").await).is_some_and(|n| n >= 30)
    })
    .await;
    let proxies = controller.dashboard_api("/api/proxies").await;
    let proxy = &proxies["proxies"][0];
    assert_eq!(proxy["proxy"], "gw-1.shop");
    assert_eq!(proxy["sync"], "SYNCED");
    assert!(proxy["lastSummaryUnixMs"].as_u64().is_some(), "{proxies:#}");
    support::eventually(|| async {
        let gateways = controller.dashboard_api("/api/gateways").await;
        let public = &gateways["gateways"][0];
        let programmed = public["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Programmed" && c["status"] == "True")
        });
        public["name"] == "public"
            && public["statusSource"] == "written"
            && programmed
            && public["routes"][0]["name"] == "shop"
    })
    .await;
    let overview = controller.dashboard_api("/api/overview").await;
    assert_eq!(overview["mode"], "cluster");
    assert!(overview["summariesReceived"].as_u64().unwrap() >= 1);
}

/// Each replica keeps the summaries of its own proxies; `ferry dashboard` asks every replica
/// and adds their windows up, so the graph has all the traffic.
#[tokio::test(flavor = "multi_thread")]
async fn ferry_dashboard_adds_up_the_replicas_traffic() {
    let api = cluster();
    let v1 = pod_echo("v1");
    let (port, private_port) = (free_port(), free_port());
    let private = join(&[
        &gateway(NS, "private", &[("http", private_port, None)]),
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: private, namespace: {NS}}}\n\
             spec:\n  parentRefs: [{{name: private}}]\n  hostnames: [\"private.example.com\"]\n\
             \x20 rules: [{{backendRefs: [{{name: shop-v1, port: 80}}]}}]\n"
        ),
    ]);
    api.apply(&shop(port, &v1, &[&private]));
    let (a, b) = (free_addr(), free_addr());
    let replica_a = Controller::start_named(&api.kubeconfig, a, "replica-a").await;
    let replica_b = Controller::start_named(&api.kubeconfig, b, "replica-b").await;
    let _gw_a = gateway_in_controller_mode(&api, a, "gw-a.shop");
    let _gw_b = Gateway::following(
        b,
        api.proxy_credentials(NS, "private"),
        &[
            "--scope",
            &format!("{NS}/private"),
            "--proxy-name",
            "gw-b.shop",
        ],
    );
    for (port, host) in [
        (port, "shop.example.com"),
        (private_port, "private.example.com"),
    ] {
        support::eventually(|| async { backend_of(port, host).await == Some((200, "v1".into())) })
            .await;
        for _ in 0..20 {
            assert_eq!(backend_of(port, host).await, Some((200, "v1".into())));
        }
    }
    let local = free_port();
    let _dashboard = support::Proc(
        support::ferry()
            .args([
                "dashboard",
                "--browser",
                "false",
                "--port",
                &local.to_string(),
            ])
            .args(["--replica", &replica_a.dashboard.to_string()])
            .args(["--replica", &replica_b.dashboard.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ferry dashboard"),
    );
    let into_shop = |graph: &serde_json::Value| -> u64 {
        let edges = graph["edges"].as_array().cloned().unwrap_or_default();
        edges
            .iter()
            .filter(|e| e["target"] == format!("service/{NS}/shop-v1"))
            .filter_map(|e| e["requests"].as_u64())
            .sum()
    };
    let merged = || async {
        let url = format!("http://127.0.0.1:{local}/api/graph?window=1m");
        let reply = Http::new(Proto::H1).get(&url, None, &[]).await?;
        serde_json::from_str::<serde_json::Value>(&reply.text).ok()
    };
    // Each replica alone has its own gateway's requests (20 and the probes); together, both.
    support::eventually_within(
        "both replicas' traffic",
        Duration::from_secs(20),
        || async {
            let (alone_a, alone_b) = (
                into_shop(&replica_a.dashboard_api("/api/graph").await),
                into_shop(&replica_b.dashboard_api("/api/graph").await),
            );
            let together = merged().await.map_or(0, |g| into_shop(&g));
            alone_a >= 20 && alone_b >= 20 && together == alone_a + alone_b
        },
    )
    .await;
    let url = format!("http://127.0.0.1:{local}/api/proxies");
    let proxies = Http::new(Proto::H1)
        .get(&url, None, &[])
        .await
        .unwrap()
        .text;
    assert!(
        proxies.contains("gw-a.shop") && proxies.contains("gw-b.shop"),
        "{proxies}"
    );
}
