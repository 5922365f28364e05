//! Sidecar injection: `ferry inject` on a manifest, and the admission webhook `ferry
//! controller` serves, called by the real API server when pods are created in namespaces
//! labelled `istio-injection=enabled` or `ferry-injection=enabled`.

mod support;

use base64::Engine;
use support::apiserver::ApiServer;
use support::tls::TestCa;
use support::{free_port, ConfigDir, Controller};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"}
    spec:
      containers: [{name: web, image: web:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
";

#[test]
fn inject_adds_the_sidecar_to_pod_templates_and_leaves_other_documents() {
    let dir = ConfigDir::new();
    dir.write("deploy.yaml", DEPLOYMENT);
    let out = support::ferry()
        .args([
            "inject",
            "-f",
            &dir.path().join("deploy.yaml").display().to_string(),
        ])
        .args(["--proxy-image", "registry.test/ferry:9"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = text
        .split("---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let template = &docs[0]["spec"]["template"];
    let inits = template["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits[0]["name"], "ferry-init");
    assert_eq!(inits[1]["name"], "ferry-proxy");
    assert_eq!(inits[1]["restartPolicy"], "Always");
    assert_eq!(inits[1]["image"], "registry.test/ferry:9");
    assert!(inits[0]["args"]
        .to_string()
        .contains("--exclude-outbound-ports=5432"));
    assert_eq!(docs[1]["kind"], "Service");
    assert!(docs[1].get("spec").unwrap().get("initContainers").is_none());
}

fn webhook_configuration(port: u16, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let webhook = |name: &str, label: &str| {
        format!(
            "  - name: {name}\n    clientConfig: {{url: \"https://127.0.0.1:{port}/inject\", caBundle: {ca}}}\n\
             \x20   rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}}]\n\
             \x20   namespaceSelector: {{matchLabels: {{{label}: enabled}}}}\n\
             \x20   objectSelector: {{matchExpressions: [{{key: sidecar.istio.io/inject, operator: NotIn, values: [\"false\"]}}]}}\n\
             \x20   sideEffects: None\n    admissionReviewVersions: [v1]\n    failurePolicy: Fail\n    timeoutSeconds: 10\n"
        )
    };
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: ferry-sidecar-injector}}\nwebhooks:\n{}{}",
        webhook("istio-injection.ferry.dev", "istio-injection"),
        webhook("ferry-injection.ferry.dev", "ferry-injection"),
    )
}

fn pod(namespace: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\n\
         spec: {{containers: [{{name: app, image: web:1}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_injects_pods_of_labelled_namespaces_through_the_controllers_webhook() {
    let api = ApiServer::start();
    let ca = TestCa::new("webhook CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let webhook_port = free_port();
    let push = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let webhook_listen = format!("127.0.0.1:{webhook_port}");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let _controller = Controller::start_with(
        &api.kubeconfig,
        push,
        &[
            "--webhook-listen",
            &webhook_listen,
            "--webhook-cert",
            &cert_arg,
            "--webhook-key",
            &key_arg,
        ],
    )
    .await;
    api.apply(&webhook_configuration(webhook_port, &ca.cert_pem));
    api.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-style, labels: {istio-injection: enabled}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: ferry-style, labels: {ferry-injection: enabled}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n",
    );
    api.apply(
        &[
            pod("istio-style", "a", "app: a"),
            pod("ferry-style", "b", "app: b"),
            pod(
                "istio-style",
                "opted-out",
                "app: c, sidecar.istio.io/inject: \"false\"",
            ),
            pod("plain", "d", "app: d"),
        ]
        .join("---\n"),
    );
    let inits = |ns: &str, name: &str| api.get("pod", ns, name, ".spec.initContainers[*].name");
    assert_eq!(inits("istio-style", "a"), "ferry-init ferry-proxy");
    assert_eq!(inits("ferry-style", "b"), "ferry-init ferry-proxy");
    assert_eq!(inits("istio-style", "opted-out"), "");
    assert_eq!(inits("plain", "d"), "");
    let restart = api.get(
        "pod",
        "istio-style",
        "a",
        r#".spec.initContainers[?(@.name=="ferry-proxy")].restartPolicy"#,
    );
    assert_eq!(restart, "Always", "a native sidecar");
    let status = api.get(
        "pod",
        "istio-style",
        "a",
        ".metadata.annotations.sidecar\\.ferry\\.dev/status",
    );
    assert_eq!(status, "injected ferry-proxy");
}
