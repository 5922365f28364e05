//! `ferry analyze`, `ferry precheck` and `ferry version` as a user runs them: the real binary,
//! manifests on disk, and the real API server for the cluster checks.

mod support;

use std::process::Output;
use support::apiserver::ApiServer;
use support::ConfigDir;

fn ferry(args: &[&str]) -> Output {
    support::ferry().args(args).output().expect("run ferry")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const BROKEN_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  rules:
    - matches: [{path: {type: RegularExpression, value: \"((\"}}]
      backendRefs: [{name: web, port: 80}]
";

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
";

#[test]
fn analyze_reports_code_object_and_field_and_fails_on_errors() {
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", GATEWAY);
    dir.write("route.yaml", BROKEN_ROUTE);
    dir.write("typo.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: shop}\nspec: {hostz: [a]}\n");
    let path = dir.path().display().to_string();
    let out = ferry(&["analyze", "-f", &path]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let regex = text
        .lines()
        .find(|l| l.contains("HTTPRoute shop/web"))
        .unwrap_or_else(|| panic!("no HTTPRoute line in:\n{text}"));
    assert!(regex.starts_with("Error [FRY0102]"), "{regex}");
    assert!(
        regex.contains("field spec.rules[0].matches[0].path"),
        "{regex}"
    );
    let schema = text
        .lines()
        .find(|l| l.contains("VirtualService shop/r"))
        .unwrap();
    assert!(
        schema.starts_with("Error [FRY0003]") && schema.contains("typo.yaml"),
        "{schema}"
    );
    assert!(schema.contains("field spec.hostz"), "{schema}");

    let json = ferry(&["analyze", "-f", &path, "-o", "json"]);
    let findings: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(findings
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "FRY0003"));
}

#[test]
fn analyze_passes_clean_manifests_and_warnings_fail_only_when_asked() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/weather-canary");
    let out = ferry(&["analyze", "-f", example]);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with("No validation issues found"),
        "{}",
        stdout(&out)
    );

    let dir = ConfigDir::new();
    dir.write("gateway.yaml", GATEWAY);
    dir.write(
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\n\
         spec: {parentRefs: [{name: edge, namespace: infra}], rules: [{backendRefs: [{name: gone, port: 80}]}]}\n",
    );
    let path = dir.path().display().to_string();
    assert!(
        ferry(&["analyze", "-f", &path]).status.success(),
        "warnings alone pass"
    );
    let strict = ferry(&["analyze", "-f", &path, "--failure-threshold", "Warning"]);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn version_prints_the_release() {
    let out = ferry(&["version", "--short"]);
    assert_eq!(stdout(&out).trim(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn analyze_cluster_and_precheck_run_against_the_api_server() {
    let api = ApiServer::start();
    let kubeconfig = api.kubeconfig.display().to_string();

    // A fresh cluster and an admin: every check passes but the Gateway API CRDs, which are
    // the upstream release's to install, and precheck says how.
    let out = ferry(&["precheck", "--kubeconfig", &kubeconfig]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("✔ Kubernetes API reachable, version v1.34"),
        "{text}"
    );
    assert!(text.contains("✘ Gateway API CRDs missing (gatewayclasses.gateway.networking.k8s.io, gateways.gateway.networking.k8s.io"), "{text}");
    assert!(text.contains("kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.5.1/standard-install.yaml"), "{text}");
    assert!(text.contains("✔ no conflicting CRDs"), "{text}");
    assert!(text.contains("✔ you may create everything"), "{text}");

    // An old Istio already installed its VirtualService CRD (v1alpha3 only).
    api.apply(OLD_VIRTUALSERVICE_CRD);
    let out = ferry(&["precheck", "--kubeconfig", &kubeconfig]);
    let text = stdout(&out);
    assert!(text.contains("✘ CRD virtualservices.networking.istio.io already installed (Istio) without version v1"), "{text}");

    // With the upstream CRDs (and Ferry's Istio ones): all pass.
    api.install_crds();
    let out = ferry(&["precheck", "--kubeconfig", &kubeconfig]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("✔ Gateway API CRDs installed, bundle version v1.5.1"),
        "{text}"
    );

    // A Gateway API release newer than Ferry reads: a warning. (Older ones the upstream
    // CRDs' own ValidatingAdmissionPolicy refuses to install over these.)
    let crd = "gatewayclasses.gateway.networking.k8s.io";
    let newer = "gateway.networking.k8s.io/bundle-version=v1.6.0";
    api.kubectl(&["annotate", "crd", crd, newer, "--overwrite"]);
    let out = ferry(&["precheck", "--kubeconfig", &kubeconfig]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(r#"! Gateway API CRDs of bundle version ["v1.6.0"], newer than"#),
        "{text}"
    );

    // Someone without rights.
    api.kubectl(&["create", "serviceaccount", "nobody", "-n", "default"]);
    let token = api.kubectl(&["create", "token", "nobody", "-n", "default"]);
    let nobody = api.kubeconfig_with_token(&token).display().to_string();
    let text = stdout(&ferry(&["precheck", "--kubeconfig", &nobody]));
    assert!(
        text.contains("✘ missing permissions: create customresourcedefinitions"),
        "{text}"
    );

    // analyze --cluster reads the live objects.
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n");
    api.apply(&format!("{GATEWAY}---\n{BROKEN_ROUTE}"));
    let out = ferry(&["analyze", "--cluster", "--kubeconfig", &kubeconfig]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Error [FRY0102] (HTTPRoute shop/web) field spec.rules[0].matches[0].path"),
        "{text}"
    );
}

const OLD_VIRTUALSERVICE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: virtualservices.networking.istio.io
  labels: {app: istio-pilot}
spec:
  group: networking.istio.io
  names: {kind: VirtualService, plural: virtualservices, singular: virtualservice, listKind: VirtualServiceList}
  scope: Namespaced
  versions:
    - name: v1alpha3
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
";

#[test]
fn proxy_flags_for_sidecars_and_deployed_gateways_are_checked_when_the_controller_starts() {
    let out = ferry(&["controller", "--sidecar-arg=--max-connections=lots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sidecar-arg") && err.contains("max-connections"),
        "{err}"
    );
    let out = ferry(&["controller", "--gateway-arg=--no-such-flag"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--gateway-arg"),
        "{err}"
    );
}
