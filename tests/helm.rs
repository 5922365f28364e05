//! The Helm charts (charts/ferry-crds, charts/ferry) with a real helm: lint, rendered
//! profiles against golden files, and `helm install` into the real API server, where
//! `ferry controller` runs with the chart's ServiceAccount token, so the chart's RBAC is what
//! it gets.

mod support;

use std::path::Path;
use std::process::Command;
use support::apiserver::{tools_dir, ApiServer};
use support::{free_port, Controller};

const PROFILES: [&str; 3] = ["default", "demo", "minimal"];
const NS: &str = "ferry-system";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart(name: &str) -> String {
    root().join("charts").join(name).display().to_string()
}

fn profile(name: &str) -> String {
    root()
        .join("charts/ferry/profiles")
        .join(format!("{name}.yaml"))
        .display()
        .to_string()
}

/// helm without a cluster (lint, template).
fn helm(args: &[&str]) -> String {
    let out = Command::new(tools_dir().join("helm"))
        .args(args)
        .output()
        .expect("run helm");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "helm {}: {errors}{text}",
        args.join(" ")
    );
    text
}

#[test]
fn charts_lint_clean_with_every_profile() {
    for name in PROFILES {
        let out = helm(&["lint", "--strict", &chart("ferry"), "-f", &profile(name)]);
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{name}: {out}"
        );
    }
    let out = helm(&["lint", "--strict", &chart("ferry-crds")]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn rendered_profiles_match_their_golden_files() {
    let dir = root().join("tests/golden/helm");
    let update = std::env::var_os("FERRY_UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for name in PROFILES {
        let rendered = helm(&[
            "template",
            "ferry",
            &chart("ferry"),
            "--namespace",
            NS,
            "-f",
            &profile(name),
        ]);
        let rendered = mask_generated(&rendered);
        let path = dir.join(format!("{name}.yaml"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != rendered {
            mismatches.push(path.display().to_string());
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered chart differs from {mismatches:?} (FERRY_UPDATE_GOLDEN=1 to regenerate, then review the diff)"
    );
}

#[test]
fn a_load_balancer_speaking_proxy_protocol_is_one_value_away() {
    let args = |extra: &[&str]| {
        let path = chart("ferry");
        let mut all = vec!["template", "ferry", &path, "--namespace", NS];
        all.extend_from_slice(extra);
        helm(&all)
    };
    let default = args(&[]);
    assert!(!default.contains("--proxy-protocol") && !default.contains("--trusted-proxies"));
    let behind = args(&[
        "--set",
        "gateway.proxyProtocol=true",
        "--set",
        "gateway.trustedProxies=2",
    ]);
    assert!(
        behind.contains("            - --proxy-protocol\n"),
        "{behind}"
    );
    assert!(
        behind.contains("            - --trusted-proxies=2\n"),
        "{behind}"
    );
}

/// The webhook certificate is generated at each render: golden files hold a placeholder.
fn mask_generated(rendered: &str) -> String {
    rendered
        .lines()
        .map(|line| {
            let key = line.trim_start();
            let generated = ["ca.crt: ", "tls.crt: ", "tls.key: ", "caBundle: "]
                .iter()
                .any(|k| key.starts_with(k));
            match (generated, line.split_once(": ")) {
                (true, Some((field, _))) => format!("{field}: <generated>"),
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn the_crds_chart_holds_what_ferry_crds_prints_and_no_gateway_api_crd() {
    for set in ["istio", "ferry"] {
        let out = support::ferry()
            .args(["crds", "--only", set])
            .output()
            .unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        let path = root().join(format!("charts/ferry-crds/files/{set}.yaml"));
        let shipped = std::fs::read_to_string(&path).unwrap();
        assert!(
            printed == shipped,
            "{} is stale: regenerate with `ferry crds --only {set} > {}`",
            path.display(),
            path.display()
        );
    }
    let crds_chart = chart("ferry-crds");
    let kinds = |args: &[&str]| {
        let mut all = vec!["template", "crds", &crds_chart];
        all.extend_from_slice(args);
        let out = helm(&all);
        out.lines()
            .filter_map(|l| l.strip_prefix("    kind: "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // The Gateway API CRDs are the upstream release's (`ferry precheck` names them).
    assert_eq!(
        kinds(&[]),
        [
            "Gateway",
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "Sidecar",
            "PeerAuthentication",
            "AuthorizationPolicy",
            "RequestAuthentication",
            "LocalRateLimitPolicy"
        ]
    );
    assert_eq!(
        kinds(&["--set", "istio.enabled=false"]),
        ["LocalRateLimitPolicy"],
        "Ferry's own kinds stay"
    );
}

fn install(api: &ApiServer, release: &str, chart_name: &str, extra: &[&str]) -> String {
    let path = chart(chart_name);
    let mut args = vec!["install", release, &path];
    args.extend_from_slice(&["--namespace", NS, "--create-namespace"]);
    args.extend_from_slice(extra);
    api.helm_output(&args)
        .unwrap_or_else(|e| panic!("helm install {chart_name}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_then_the_controller_with_the_charts_rbac_accepts_the_class_and_addresses_the_gateway(
) {
    let api = ApiServer::start();
    api.apply(&support::kube::gateway_api_crds());
    let crds_out = install(&api, "ferry-crds", "ferry-crds", &[]);
    api.wait_crds_established();
    let out = install(&api, "ferry", "ferry", &[]);
    println!("{crds_out}\n{out}");
    assert!(out.contains("STATUS: deployed"), "{out}");

    // Least privilege, as the API server sees it.
    let sa = format!("--as=system:serviceaccount:{NS}:ferry-controller");
    let can = |verb: &str, resource: &str, ns: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let mut args = vec!["auth", "can-i", verb, resource, "-n", ns, &sa];
        let flag = format!("--subresource={subresource}");
        if !subresource.is_empty() {
            args.push(&flag);
        }
        api.kubectl_output(&args)
            .is_ok_and(|out| out.trim() == "yes")
    };
    assert!(can(
        "patch",
        "gateways.gateway.networking.k8s.io/status",
        "default"
    ));
    assert!(can("watch", "secrets", "default"));
    assert!(can("update", "leases.coordination.k8s.io", NS));
    assert!(!can("update", "leases.coordination.k8s.io", "default"));
    assert!(
        !can("update", "gateways.gateway.networking.k8s.io", "default"),
        "spec is the user's"
    );
    // A gateway per Gateway: what it deploys, in any namespace; never Secrets or RBAC.
    for resource in [
        "deployments.apps",
        "services",
        "serviceaccounts",
        "poddisruptionbudgets.policy",
    ] {
        assert!(can("create", resource, "default"), "{resource}");
        assert!(can("delete", resource, "default"), "{resource}");
    }
    assert!(!can("create", "roles.rbac.authorization.k8s.io", "default"));
    assert!(!can("create", "pods", "default"));
    assert!(can("create", "tokenreviews.authentication.k8s.io", ""));
    assert!(can("create", "secrets", NS), "the generated root CA");
    assert!(!can("create", "secrets", "default"));
    assert!(
        can("patch", "configmaps", "default"),
        "ferry-ca-root everywhere"
    );
    assert!(!can("delete", "secrets", "default"));

    // The controller as the chart runs it: the chart's ServiceAccount, Lease in the release
    // namespace.
    let token = api.kubectl(&["create", "token", "ferry-controller", "-n", NS]);
    let kubeconfig = api.kubeconfig_with_token(&token);
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // The injection webhook with the chart's generated certificate, where the API server
    // calls it: the ferry-controller Service's ClusterIP, port 443 (added to lo, as no
    // kube-proxy runs here).
    let webhook = ChartWebhook::from_release(&api);
    let controller = Controller::start_with(
        &kubeconfig,
        addr,
        &[
            "--namespace",
            NS,
            "--identity",
            "ferry-controller-0",
            "--webhook-listen",
            &webhook.listen,
            "--webhook-cert",
            &webhook.cert,
            "--webhook-key",
            &webhook.key,
        ],
    )
    .await;
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n---\n\
               apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {containers: [{name: web, image: web:1}]}\n");
    assert_eq!(
        api.get("pod", "shop", "web", ".spec.initContainers[*].name"),
        "ferry-init ferry-proxy"
    );
    let condition = |kind: &str| format!(r#".status.conditions[?(@.type=="{kind}")].status"#);
    api.eventually_get("gatewayclass", "", "ferry", &condition("Accepted"), "True")
        .await;
    // With only the chart's RBAC the controller made its CA, published the roots and signs
    // for the gateway's ServiceAccount.
    let gateway_credentials = api.proxy_credentials(NS, "ferry-gateway");
    let channel = ferry_gateway::control_channel::ControlChannel {
        address: controller.addr.to_string(),
        root_file: gateway_credentials.root_file.clone(),
        token_file: gateway_credentials.token_file.clone(),
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let signed: ferry_model::identity::CertificateResponse = channel
        .post_json(
            ferry_model::identity::CERTIFICATE_PATH,
            &ferry_model::identity::CertificateRequest { csr_pem: csr },
        )
        .await
        .expect("the chart's gateway gets a certificate");
    assert!(signed.cert_chain_pem.contains("BEGIN CERTIFICATE"));
    // Accepted, and not Programmed until a proxy of it applies its snapshot: no gateway
    // process runs here (tests/cluster.rs runs the chart's pods; tests/controller.rs proxies).
    api.eventually_get(
        "gateway",
        NS,
        "ferry-gateway",
        &condition("Accepted"),
        "True",
    )
    .await;
    api.eventually_get(
        "gateway",
        NS,
        "ferry-gateway",
        r#".status.conditions[?(@.type=="Programmed")].reason"#,
        "Pending",
    )
    .await;
    // A LoadBalancer without a load-balancer controller has no ingress yet: the cluster IP.
    let cluster_ip = api.get("service", NS, "ferry-gateway", ".spec.clusterIP");
    api.eventually_get(
        "gateway",
        NS,
        "ferry-gateway",
        ".status.addresses[0].value",
        &cluster_ip,
    )
    .await;

    // The demo profile: a NodePort gateway; its address is a node's.
    api.apply(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n\
         status: {addresses: [{type: InternalIP, address: 10.20.0.7}]}\n",
    );
    api.kubectl(&[
        "patch",
        "node",
        "node-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"addresses":[{"type":"InternalIP","address":"10.20.0.7"}]}}"#,
    ]);
    let upgraded = api
        .helm_output(&[
            "upgrade",
            "ferry",
            &chart("ferry"),
            "--namespace",
            NS,
            "-f",
            &profile("demo"),
        ])
        .expect("helm upgrade to the demo profile");
    assert!(upgraded.contains("STATUS: deployed"), "{upgraded}");
    assert_eq!(
        api.get("service", NS, "ferry-gateway", ".spec.type"),
        "NodePort"
    );
    assert_eq!(
        api.get("service", NS, "ferry-gateway", ".spec.ports[0].nodePort"),
        "30080"
    );
    api.eventually_get(
        "gateway",
        NS,
        "ferry-gateway",
        ".status.addresses[0].value",
        "10.20.0.7",
    )
    .await;

    // For the record (`cargo test --test helm -- --nocapture`): what `kubectl get` shows.
    println!("{}", api.kubectl(&["get", "gatewayclass,gateway", "-A"]));
    println!(
        "{}",
        api.kubectl(&[
            "get",
            "deploy,svc,hpa,pdb,mutatingwebhookconfiguration",
            "-n",
            NS
        ])
    );
    let logs = controller.logs();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the chart's RBAC is missing something:\n{logs}"
    );
}

/// The webhook certificate the chart generated, written to files, and the Service ClusterIP
/// the API server will dial, added to `lo` for the test's lifetime.
struct ChartWebhook {
    listen: String,
    cert: String,
    key: String,
    ip: String,
    _files: tempfile::TempDir,
}

impl ChartWebhook {
    fn from_release(api: &ApiServer) -> ChartWebhook {
        use base64::Engine;
        let files = tempfile::tempdir().unwrap();
        let write = |key: &str, file: &str| {
            let jsonpath = format!(".data.{}", key.replace('.', "\\."));
            let encoded = api.get("secret", NS, "ferry-webhook-tls", &jsonpath);
            let pem = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .unwrap();
            let path = files.path().join(file);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        };
        let (cert, key) = (write("tls.crt", "tls.crt"), write("tls.key", "tls.key"));
        let ip = api.get("service", NS, "ferry-controller", ".spec.clusterIP");
        let added = Command::new("ip")
            .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
            .status()
            .unwrap();
        assert!(added.success(), "ip addr replace {ip}/32 dev lo");
        ChartWebhook {
            listen: format!("{ip}:443"),
            cert,
            key,
            ip,
            _files: files,
        }
    }
}

impl Drop for ChartWebhook {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.ip), "dev", "lo"])
            .status();
    }
}
