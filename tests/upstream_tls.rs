//! TLS to backends: DestinationRule `tls.mode` SIMPLE and MUTUAL originated by a gateway
//! (standalone mode) to real rustls HTTPS backends, through both request paths (HTTP/1.1 on
//! Ferry's loop, HTTP/2 on Pingora's): the CA and client certificate come from the
//! credentialName Secret, SNI and subjectAltNames are honoured, and whatever cannot be
//! verified is refused (503), never sent in cleartext.

mod support;

use support::manifests::gateway;
use support::tls::{secret_with, TestCa, TlsBackend};
use support::{free_port, ConfigDir, Gateway, Http, Proto};

/// A Service `secure` whose one endpoint is the backend at 127.0.0.1:`port`.
fn service_at(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: secure, namespace: default}}\n\
         spec: {{ports: [{{name: http, port: 443, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: secure-1, namespace: default, labels: {{kubernetes.io/service-name: secure}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
         endpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n"
    )
}

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\n\
spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: secure, port: 443}]}]}\n";

fn destination_rule(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\n\
         spec:\n  host: secure.default.svc.cluster.local\n  trafficPolicy:\n    tls: {tls}\n"
    )
}

struct Case {
    what: &'static str,
    /// The backend requires a client certificate from the client CA.
    backend_requires_client_cert: bool,
    /// Names on the backend's certificate.
    backend_names: Vec<&'static str>,
    tls: String,
    /// Expected status and, when 200, whether the backend saw a client certificate.
    want: (u16, bool),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "SIMPLE with the Secret's CA and an explicit SNI",
            backend_requires_client_cert: false,
            backend_names: vec!["backend.test"],
            tls: "{mode: SIMPLE, credentialName: backend-ca, sni: backend.test}".into(),
            want: (200, false),
        },
        Case {
            what: "SIMPLE: the certificate does not name the SNI",
            backend_requires_client_cert: false,
            backend_names: vec!["other.test"],
            tls: "{mode: SIMPLE, credentialName: backend-ca, sni: backend.test}".into(),
            want: (503, false),
        },
        Case {
            what: "SIMPLE: subjectAltNames replace the name check (a SPIFFE URI here)",
            backend_requires_client_cert: false,
            backend_names: vec!["spiffe://cluster.local/ns/default/sa/secure"],
            tls: "{mode: SIMPLE, credentialName: backend-ca, sni: backend.test, subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/secure\"]}".into(),
            want: (200, false),
        },
        Case {
            what: "SIMPLE: subjectAltNames the certificate does not carry",
            backend_requires_client_cert: false,
            backend_names: vec!["backend.test"],
            tls: "{mode: SIMPLE, credentialName: backend-ca, sni: backend.test, subjectAltNames: [elsewhere.test]}".into(),
            want: (503, false),
        },
        Case {
            what: "SIMPLE: a CA that did not sign the backend",
            backend_requires_client_cert: false,
            backend_names: vec!["backend.test"],
            tls: "{mode: SIMPLE, credentialName: stranger-ca, sni: backend.test}".into(),
            want: (503, false),
        },
        Case {
            what: "SIMPLE with the CA from a file on the proxy (caCertificates)",
            backend_requires_client_cert: false,
            backend_names: vec!["backend.test"],
            tls: "{mode: SIMPLE, caCertificates: CA_FILE, sni: backend.test}".into(),
            want: (200, false),
        },
        Case {
            what: "MUTUAL with the client certificate and key from files",
            backend_requires_client_cert: true,
            backend_names: vec!["backend.test"],
            tls: "{mode: MUTUAL, caCertificates: CA_FILE, clientCertificate: CERT_FILE, privateKey: KEY_FILE, sni: backend.test}".into(),
            want: (200, true),
        },
        Case {
            what: "a CA file the proxy cannot read",
            backend_requires_client_cert: false,
            backend_names: vec!["backend.test"],
            tls: "{mode: SIMPLE, caCertificates: /nonexistent/ca.pem, sni: backend.test}".into(),
            want: (503, false),
        },
        Case {
            what: "MUTUAL: the client certificate from the Secret",
            backend_requires_client_cert: true,
            backend_names: vec!["backend.test"],
            tls: "{mode: MUTUAL, credentialName: client-cert, sni: backend.test}".into(),
            want: (200, true),
        },
        Case {
            what: "SIMPLE to a backend that requires a client certificate",
            backend_requires_client_cert: true,
            backend_names: vec!["backend.test"],
            tls: "{mode: SIMPLE, credentialName: backend-ca, sni: backend.test}".into(),
            want: (503, false),
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_rule_tls_is_originated_verified_and_fails_closed() {
    let (backend_ca, client_ca, stranger) = (
        TestCa::new("backend-ca"),
        TestCa::new("client-ca"),
        TestCa::new("stranger"),
    );
    let client = client_ca.issue(&["gateway.test"]);
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        file("ca.pem", &backend_ca.cert_pem),
        file("cert.pem", &client.cert_pem),
        file("key.pem", &client.key_pem),
    );
    for mut case in cases() {
        case.tls = case
            .tls
            .replace("CA_FILE", &ca_file)
            .replace("CERT_FILE", &cert_file)
            .replace("KEY_FILE", &key_file);
        let leaf = if case.backend_names[0].starts_with("spiffe://") {
            backend_ca.issue_svid(case.backend_names[0], std::time::Duration::from_secs(3600))
        } else {
            backend_ca.issue(&case.backend_names)
        };
        let required = case
            .backend_requires_client_cert
            .then_some(client_ca.cert_pem.as_str());
        let backend = TlsBackend::start(&leaf, required).await;
        let port = free_port();
        let dir = ConfigDir::new();
        let docs = [
            gateway("default", "gw", &[("http", port, None)]),
            service_at(backend.port),
            ROUTE.to_string(),
            destination_rule(&case.tls),
            secret_with("default", "backend-ca", &[("ca.crt", &backend_ca.cert_pem)]),
            secret_with("default", "stranger-ca", &[("ca.crt", &stranger.cert_pem)]),
            secret_with(
                "default",
                "client-cert",
                &[
                    ("tls.crt", &client.cert_pem),
                    ("tls.key", &client.key_pem),
                    ("ca.crt", &backend_ca.cert_pem),
                ],
            ),
        ];
        dir.write("all.yaml", &docs.join("---\n"));
        let gw = Gateway::start(dir.path()).await;
        for proto in [Proto::H1, Proto::H2c] {
            let reply = Http::new(proto)
                .get(&format!("http://127.0.0.1:{port}/hello"), None, &[])
                .await
                .unwrap_or_else(|| panic!("{}: no answer", case.what));
            assert_eq!(
                reply.status, case.want.0,
                "{} ({proto:?}): {}",
                case.what, reply.text
            );
            if reply.status == 200 {
                let seen = reply.echo();
                assert_eq!(seen["client_cert"], case.want.1, "{}: {seen}", case.what);
                assert_eq!(seen["sni"], "backend.test", "{}: {seen}", case.what);
                assert_eq!(seen["path"], "/hello", "{}", case.what);
            }
        }
        let dump = gw.config_dump().await.to_string();
        assert!(
            !dump.contains("PRIVATE KEY"),
            "{}: a key in /config_dump",
            case.what
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origination_that_cannot_be_honoured_is_reported_and_refused() {
    let backend_ca = TestCa::new("backend-ca");
    let backend = TlsBackend::start(&backend_ca.issue(&["backend.test"]), None).await;
    let port = free_port();
    let dir = ConfigDir::new();
    let good = [
        gateway("default", "gw", &[("http", port, None)]),
        service_at(backend.port),
        ROUTE.to_string(),
        destination_rule("{mode: SIMPLE, credentialName: backend-ca, sni: backend.test}"),
        secret_with("default", "backend-ca", &[("ca.crt", &backend_ca.cert_pem)]),
    ];
    dir.write("all.yaml", &good.join("---\n"));
    let gw = Gateway::start(dir.path()).await;
    let get = || async {
        Http::new(Proto::H1)
            .get(&format!("http://127.0.0.1:{port}/"), None, &[])
            .await
            .map(|r| r.status)
    };
    assert_eq!(get().await, Some(200));
    // MUTUAL without a client certificate, and a revocation list: the change is refused with
    // the fields named, and the last good configuration keeps serving.
    let mut bad = good.clone();
    bad[3] = destination_rule("{mode: MUTUAL, caCrl: /etc/certs/crl.pem}");
    dir.write("all.yaml", &bad.join("---\n"));
    support::eventually(|| async { !gw.config_dump().await["last_rejected"].is_null() }).await;
    let reasons = gw.config_dump().await["last_rejected"]["reasons"].to_string();
    assert!(
        reasons.contains("spec.trafficPolicy.tls.caCrl"),
        "{reasons}"
    );
    assert!(
        reasons.contains("spec.trafficPolicy.tls.credentialName"),
        "{reasons}"
    );
    assert_eq!(get().await, Some(200));
}

fn backend_tls_policy(validation: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: secure, namespace: default}}\n\
         spec:\n  targetRefs: [{{group: \"\", kind: Service, name: secure}}]\n  validation: {validation}\n"
    )
}

fn config_map(name: &str, ca_pem: &str) -> String {
    let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n  ca.crt: |\n{indented}")
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_tls_policy_originates_tls_with_its_ca_and_hostname() {
    let backend_ca = TestCa::new("backend-ca");
    let backend = TlsBackend::start(&backend_ca.issue(&["backend.test"]), None).await;
    let stranger = TestCa::new("stranger");
    let cases = [
        ("the ConfigMap's CA and the hostname", "{hostname: backend.test, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]}", 200),
        ("another CA", "{hostname: backend.test, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: stranger-ca}]}", 503),
        ("a hostname the certificate does not name", "{hostname: other.test, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]}", 503),
        ("a missing ConfigMap", "{hostname: backend.test, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: missing}]}", 503),
    ];
    for (what, validation, want) in cases {
        let port = free_port();
        let dir = ConfigDir::new();
        let docs = [
            gateway("default", "gw", &[("http", port, None)]),
            service_at(backend.port),
            ROUTE.to_string(),
            backend_tls_policy(validation),
            config_map("backend-ca", &backend_ca.cert_pem),
            config_map("stranger-ca", &stranger.cert_pem),
        ];
        dir.write("all.yaml", &docs.join("---\n"));
        let gw = Gateway::start(dir.path()).await;
        for proto in [Proto::H1, Proto::H2c] {
            let reply = Http::new(proto)
                .get(&format!("http://127.0.0.1:{port}/p"), None, &[])
                .await
                .unwrap_or_else(|| panic!("{what}: no answer"));
            assert_eq!(reply.status, want, "{what} ({proto:?}): {}", reply.text);
            if want == 200 {
                assert_eq!(reply.echo()["sni"], "backend.test", "{what}");
            }
        }
        if what == "a missing ConfigMap" {
            let reports = gw.config_dump().await["reports"].to_string();
            assert!(reports.contains("InvalidCACertificateRef"), "{reports}");
        }
    }
}
