//! Mutual TLS between sidecars as PeerAuthentication says, certificate rotation, and
//! authorization on peer identity and request principals.

use crate::identity::IdentityDir;
use crate::pods::*;
use crate::support::netns::{Network, Pod};
use crate::support::{self, eventually_within, ConfigDir, Proc};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

/// The edge gateway's port in the outsider pod.
const EDGE_PORT: u16 = 8000;

/// The weather Service on one injected pod running as ServiceAccount `weather`, an edge
/// Gateway routing to it, a
/// PeerAuthentication for the namespace with `mode`, and one request per upstream connection
/// (each request makes its own mTLS handshake, with the certificates current at that time).
fn meshed_manifests(server: &Pod, mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: weather-v1, namespace: weather, labels: {{app: weather, version: v1}},\n\
         \x20 annotations: {{sidecar.ferry.dev/status: injected ferry-proxy}}}}\n\
         spec: {{serviceAccountName: weather, containers: [{{name: app, image: ferry}}]}}\nstatus: {{podIP: {ip}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: weather, namespace: weather}}\n\
         spec: {{clusterIP: {CLUSTER_IP}, selector: {{app: weather}}, ports: [{{name: http, port: 80, targetPort: 8080}},\n\
         \x20 {{name: grpc, port: 81, targetPort: 8080, appProtocol: kubernetes.io/h2c}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: weather-1, namespace: weather, labels: {{kubernetes.io/service-name: weather}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: grpc, port: 8080}}]\n\
         endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: weather-v1, namespace: weather}}}}]\n---\n\
         apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: weather}}\n\
         spec: {{mtls: {{mode: {mode}}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: weather, namespace: weather}}\n\
         spec: {{host: weather, trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}}}}}\n---\n{}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: weather, namespace: weather}}\n\
         spec: {{parentRefs: [{{name: edge}}], rules: [{{backendRefs: [{{name: weather, port: 80}}]}}]}}\n",
        support::manifests::gateway("weather", "edge", &[("http", EDGE_PORT, None)]),
        ip = server.address
    )
}

/// `requests` GETs of the weather Service from `pod`, each on its own connection (so each
/// makes a new mTLS handshake); returns how many did not answer 200.
fn failures(pod: &Pod, requests: usize) -> usize {
    let url = format!("http://{CLUSTER_IP}/");
    let script = format!(
        "for i in $(seq {requests}); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 5 -H 'Host: weather' {url}; done"
    );
    let out = pod.run("bash", &["-c", &script]).unwrap_or_default();
    let ok = out.lines().filter(|l| l.trim() == "200").count();
    requests - ok
}

/// `istio_requests_total` lines of `pod` with this reporter.
async fn istio_series(pod: &Pod, reporter: &str) -> Vec<String> {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| l.contains(&format!("reporter=\"{reporter}\"")))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_speak_mutual_tls_as_peer_authentication_says_and_rotate_without_failures() {
    use support::tls::TestCa;
    let mut net = Network::new();
    let (client, server, outsider) = (net.pod(2), net.pod(3), net.pod(4));
    let dir = ConfigDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let write_config = |mode: &str, extra: &str| {
        dir.write(
            "weather.yaml",
            &format!("{}---\n{extra}", meshed_manifests(&server, mode)),
        );
        std::fs::set_permissions(
            dir.path().join("weather.yaml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    };
    write_config("STRICT", "");
    let root = TestCa::new("mesh root 1");
    let lifetime = Duration::from_secs(60);
    let client_id = IdentityDir::new("spiffe://cluster.local/ns/weather/sa/client");
    let server_id = IdentityDir::new("spiffe://cluster.local/ns/weather/sa/weather");
    client_id.issue(&root, &root.cert_pem, lifetime);
    server_id.issue(&root, &root.cert_pem, lifetime);

    let _app = app(&server, "weather-v1", 8080);
    init(&client, &[]);
    init(&server, &[]);
    // kubelet's probes, rewritten by the injector to the status port (never captured).
    let probes = r#"{"/app-health/app/readyz": {"httpGet": {"port": 8080, "path": "/ready"}},
                     "/app-health/app/livez": {"httpGet": {"port": 9999}}}"#;
    let mut server_args = server_id.arg().to_vec();
    server_args.extend(["--app-probes".to_string(), probes.to_string()]);
    server_args.extend(["--label".to_string(), "app=weather".to_string()]);
    server_args.extend(["--access-log".to_string(), "json".to_string()]);
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let _sidecars = [
        sidecar_with(
            &client,
            dir.path(),
            &client_id.arg().each_ref().map(String::as_str),
        ),
        sidecar_with(&server, dir.path(), &server_args),
    ];
    ready(&client).await;
    ready(&server).await;

    // STRICT: the meshed client is served over mTLS; a plaintext client is refused.
    assert_eq!(failures(&client, 5), 0);
    let direct = format!("http://{}:8080/", server.address);
    let plain = fetch_code_and_body(&outsider, &direct);
    assert!(
        !plain.starts_with("200"),
        "STRICT served plaintext: {plain}"
    );
    let refused = metric_value(
        &server,
        "ferry_mtls_inbound_refused_total{reason=\"plaintext_under_strict\"}",
    )
    .await;
    assert!(refused >= 1.0, "refusal not counted");

    // A gateway (no sidecar) with a workload identity originates mTLS to the meshed
    // backend, so the STRICT namespace stays reachable from the edge; its access log names
    // the identity the backend presented.
    let gateway_id = IdentityDir::new("spiffe://cluster.local/ns/ingress/sa/edge");
    gateway_id.issue(&root, &root.cert_pem, lifetime);
    let edge_log = dir.path().join("edge-access.log");
    let _edge = Proc(
        outsider
            .command(ferry_bin())
            .args(["gateway", "--config", &dir.path().display().to_string()])
            .args(gateway_id.arg())
            .args(["--access-log", "json", "--admin", "127.0.0.1:15000"])
            .stdout(std::fs::File::create(&edge_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let edge = format!("http://127.0.0.1:{EDGE_PORT}/");
    eventually_within("edge gateway serves", Duration::from_secs(10), || async {
        fetch_code_and_body(&outsider, &edge).starts_with("200")
    })
    .await;
    // The access log is written in batches: wait for the line.
    let wanted = r#""upstream_peer_uri_san":"spiffe://cluster.local/ns/weather/sa/weather""#;
    eventually_within("edge access log", Duration::from_secs(5), || async {
        std::fs::read_to_string(&edge_log).is_ok_and(|log| log.contains(wanted))
    })
    .await;

    // HTTP/2 to an h2c Service port: the sidecars speak HTTP/2 inside mTLS (ALPN
    // ferry-mesh-h2).
    let h2 = client
        .run(
            "curl",
            &[
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Host: weather",
                &format!("http://{CLUSTER_IP}:81/"),
            ],
        )
        .unwrap_or_default();
    assert_eq!(h2, "200", "h2 over mesh mTLS");

    // The server sidecar's access log names the client's identity.
    let wanted = r#""downstream_peer_uri_san":"spiffe://cluster.local/ns/weather/sa/client""#;
    eventually_within("server access log", Duration::from_secs(5), || async {
        std::fs::read_to_string(access_log_path(&server)).is_ok_and(|log| log.contains(wanted))
    })
    .await;

    // The app's probes still work under STRICT, through the status port: the app answers
    // (200), a probe of a port nothing listens on fails (503).
    let probe = |path: &str| {
        fetch_code_and_body(&outsider, &format!("http://{}:15020{path}", server.address))
    };
    let ready_probe = probe("/app-health/app/readyz");
    assert!(ready_probe.starts_with("200"), "{ready_probe}");
    let dead_probe = probe("/app-health/app/livez");
    assert!(dead_probe.starts_with("503"), "{dead_probe}");

    // Both principals reach Istio's metrics, as Istio's sidecars report them.
    let inbound = istio_series(&server, "destination").await;
    assert!(
        inbound
            .iter()
            .any(|l| l.contains("connection_security_policy=\"mutual_tls\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/weather/sa/client\"")
                && l.contains(
                    "destination_principal=\"spiffe://cluster.local/ns/weather/sa/weather\""
                )),
        "{inbound:#?}"
    );
    assert_served_by_http1_loop(&server).await; // mTLS inbound too
    let outbound = istio_series(&client, "source").await;
    assert!(
        outbound.iter().any(|l| l
            .contains("source_principal=\"spiffe://cluster.local/ns/weather/sa/client\"")
            && l.contains(
                "destination_principal=\"spiffe://cluster.local/ns/weather/sa/weather\""
            )),
        "{outbound:#?}"
    );

    // The server presenting another identity than its Pod's ServiceAccount: refused by the
    // client (503), until the right certificate is back.
    let impostor = IdentityDir {
        dir: tempfile::tempdir().unwrap(),
        spiffe_id: "spiffe://cluster.local/ns/weather/sa/impostor".into(),
    };
    let leaf = root.issue_svid(&impostor.spiffe_id, lifetime);
    server_id.write("key.pem", &leaf.key_pem);
    server_id.write("cert-chain.pem", &leaf.cert_pem);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        failures(&client, 3),
        3,
        "an unexpected identity was trusted"
    );
    server_id.issue(&root, &root.cert_pem, lifetime);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(failures(&client, 3), 0);

    // Certificates rotate (1-minute lifetime) and the root rotates with an overlapping
    // bundle, under steady load, without a failed request.
    let load = std::thread::spawn({
        let pod = Pod {
            name: client.name.clone(),
            address: client.address,
        };
        move || failures(&pod, 150)
    });
    let root2 = TestCa::new("mesh root 2");
    let both = format!("{}{}", root.cert_pem, root2.cert_pem);
    let pause = || std::thread::sleep(Duration::from_millis(700));
    for _ in 0..2 {
        client_id.issue(&root, &root.cert_pem, lifetime);
        pause();
        server_id.issue(&root, &root.cert_pem, lifetime);
        pause();
    }
    client_id.issue(&root, &both, lifetime); // trust both roots first
    server_id.issue(&root, &both, lifetime);
    pause();
    server_id.issue(&root2, &both, lifetime); // then sign with the new one
    pause();
    client_id.issue(&root2, &both, lifetime);
    pause();
    client_id.issue(&root2, &root2.cert_pem, lifetime); // and retire the old root
    server_id.issue(&root2, &root2.cert_pem, lifetime);
    pause();
    assert_eq!(load.join().unwrap(), 0, "requests failed during rotation");
    // The edge gateway's certificate came from the retired root: refused now, until it gets
    // one from the new root.
    assert_eq!(&fetch_code_and_body(&outsider, &edge)[..3], "503");
    gateway_id.issue(&root2, &root2.cert_pem, lifetime);
    eventually_within("edge re-issued", Duration::from_secs(5), || async {
        fetch_code_and_body(&outsider, &edge).starts_with("200")
    })
    .await;
    assert_eq!(failures(&client, 3), 0);

    // PERMISSIVE: plaintext is served too, and mesh clients still use mTLS.
    write_config("PERMISSIVE", "");
    eventually_within("PERMISSIVE applied", Duration::from_secs(10), || async {
        fetch_code_and_body(&outsider, &direct).starts_with("200")
    })
    .await;
    assert_eq!(failures(&client, 3), 0);
    let before = istio_series(&server, "destination").await;
    let plaintext_served = before
        .iter()
        .any(|l| l.contains("connection_security_policy=\"none\""));
    assert!(plaintext_served, "{before:#?}");

    // Opaque TCP (not HTTP) from a plaintext pod reaches the app under PERMISSIVE...
    let raw_tcp = || {
        let script = format!(
            "exec 3<>/dev/tcp/{}/8080; printf 'PING\\r\\n\\r\\n' >&3; timeout 2 cat <&3; echo '[end]'",
            server.address
        );
        outsider.run("bash", &["-c", &script]).unwrap_or_default()
    };
    let answered = raw_tcp();
    assert!(
        answered.len() > "[end]\n".len(),
        "the app did not answer: {answered:?}"
    );

    // AuthorizationPolicy at the server's inbound, by the mTLS peer's principal: the client
    // may read /forecast*, nothing else; plaintext peers and other identities are denied.
    write_config(
        "PERMISSIVE",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: weather, namespace: weather}\n\
         spec:\n  selector: {matchLabels: {app: weather}}\n  rules:\n\
         \x20   - from: [{source: {principals: [cluster.local/ns/weather/sa/client]}}]\n\
         \x20     to: [{operation: {paths: [\"/forecast*\"]}}]\n",
    );
    let code = |pod: &Pod, url: &str| fetch_code_and_body(pod, url)[..3].to_string();
    let forecast = format!("http://{CLUSTER_IP}/forecast");
    eventually_within("policy applied", Duration::from_secs(10), || async {
        code(&outsider, &direct) == "403"
    })
    .await;
    let via_client = |path: &str| {
        client
            .run(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Host: weather",
                    &format!("http://{CLUSTER_IP}{path}"),
                ],
            )
            .unwrap_or_default()
    };
    assert_eq!(via_client("/forecast"), "200");
    assert_eq!(via_client("/"), "403", "a path the policy does not allow");
    assert_eq!(
        code(&outsider, &edge),
        "403",
        "the edge gateway's identity is not allowed"
    );
    // ...and the policy closes it: it has no principal.
    assert_eq!(
        raw_tcp().trim(),
        "[end]",
        "a denied TCP connection must be closed"
    );
    let _ = forecast;

    // RequestAuthentication at the server's sidecar: a bad token is refused with 401, a good
    // one is the request principal the policy asks for, none is not enough.
    let signer = support::jwt::Signer::ec("mesh");
    let jwks = support::jwt::jwks(&[&signer]);
    write_config(
        "PERMISSIVE",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: weather, namespace: weather}}\n\
             spec:\n  selector: {{matchLabels: {{app: weather}}}}\n  jwtRules: [{{issuer: https://auth.test, jwks: '{jwks}'}}]\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: weather, namespace: weather}}\n\
             spec:\n  selector: {{matchLabels: {{app: weather}}}}\n  rules: [{{from: [{{source: {{requestPrincipals: [\"https://auth.test/*\"]}}}}]}}]\n"
        ),
    );
    let token = signer.sign(serde_json::json!({"iss": "https://auth.test", "sub": "client", "exp": support::jwt::now() + 600}));
    let with_token = |token: &str| {
        client
            .run(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Host: weather",
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    &format!("http://{CLUSTER_IP}/forecast"),
                ],
            )
            .unwrap_or_default()
    };
    eventually_within(
        "RequestAuthentication applied",
        Duration::from_secs(10),
        || async { with_token("not.a.token") == "401" },
    )
    .await;
    assert_eq!(
        with_token(&token),
        "200",
        "a verified token is the request principal"
    );
    assert_eq!(
        via_client("/forecast"),
        "403",
        "no token: no request principal"
    );
}
