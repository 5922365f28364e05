//! Kubernetes Ingress routing through the real binary.

mod support;

use support::manifests::{ep, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, BOTH};

#[tokio::test(flavor = "multi_thread")]
async fn hosts_paths_and_default_backend() {
    let (store, checkout, fallback, api) = (
        Echo::start("store"),
        Echo::start("checkout"),
        Echo::start("fallback"),
        Echo::start("api"),
    );
    let port = free_port();
    let dir = ConfigDir::new();
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: main, namespace: web}\nspec:\n  ingressClassName: ferry\n  defaultBackend: {service: {name: fallback, port: {number: 80}}}\n  rules:\n    - host: shop.example.com\n      http:\n        paths:\n          - {path: /, pathType: Prefix, backend: {service: {name: store, port: {name: http}}}}\n          - {path: /checkout, pathType: Exact, backend: {service: {name: checkout, port: {number: 80}}}}\n          - {path: /api, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}\n";
    let other_class = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: theirs, namespace: web}\nspec:\n  ingressClassName: nginx\n  rules: [{host: theirs.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: store, port: {number: 80}}}}]}}]\n";
    dir.write(
        "all.yaml",
        &join(&[
            ingress,
            other_class,
            &service("web", "store", 80, &[ep(&store, &[])]),
            &service("web", "checkout", 80, &[ep(&checkout, &[])]),
            &service("web", "fallback", 80, &[ep(&fallback, &[])]),
            &service("web", "api", 80, &[ep(&api, &[])]),
        ]),
    );
    let port_arg = port.to_string();
    let gw = Gateway::spawn(dir.path(), &["--ingress-port", &port_arg]);
    gw.wait_ready().await;
    for proto in BOTH {
        let http = Http::new(proto);
        let cases = [
            ("shop.example.com", "/", "store"),
            ("shop.example.com", "/checkout", "checkout"),
            ("shop.example.com", "/checkout/x", "store"),
            ("shop.example.com", "/api/v1", "api"),
            ("shop.example.com", "/apis", "store"),
            ("unknown.example.com", "/anything", "fallback"),
            ("theirs.example.com", "/", "fallback"),
        ];
        for (host, path, want) in cases {
            let r = http
                .get(&format!("http://127.0.0.1:{port}{path}"), Some(host), &[])
                .await
                .unwrap();
            assert_eq!(r.backend(), want, "{proto:?} {host}{path}");
        }
    }
}
