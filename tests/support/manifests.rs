//! Builders for the Kubernetes objects tests write: Services whose EndpointSlices point at
//! `ferry echo` processes, Pods carrying labels for subsets, Gateways.

use super::Echo;

/// One endpoint of a Service: an echo process and its Pod labels.
pub struct Endpoint<'a> {
    pub echo: &'a Echo,
    pub labels: &'a [(&'a str, &'a str)],
}

pub fn ep<'a>(echo: &'a Echo, labels: &'a [(&'a str, &'a str)]) -> Endpoint<'a> {
    Endpoint { echo, labels }
}

/// A Service on `port` (HTTP/1.1 upstream) with one Pod + EndpointSlice per endpoint.
pub fn service(namespace: &str, name: &str, port: u16, endpoints: &[Endpoint<'_>]) -> String {
    service_with(namespace, name, port, None, endpoints)
}

/// Like [`service`] with an `appProtocol` (e.g. `kubernetes.io/h2c`).
pub fn service_with(
    namespace: &str,
    name: &str,
    port: u16,
    app_protocol: Option<&str>,
    endpoints: &[Endpoint<'_>],
) -> String {
    let app_protocol = app_protocol
        .map(|p| format!(", appProtocol: {p}"))
        .unwrap_or_default();
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{ports: [{{name: http, port: {port}, targetPort: 8080{app_protocol}}}]}}\n"
    );
    for (i, endpoint) in endpoints.iter().enumerate() {
        let pod = format!("{name}-{i}");
        let labels: Vec<String> = endpoint
            .labels
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out.push_str(&format!(
            // A container so a real API server accepts the Pod (nothing runs it).
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {namespace}, labels: {{{}}}}}\n\
             spec: {{containers: [{{name: app, image: ferry-echo}}]}}\n",
            labels.join(", ")
        ));
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {pod}, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\n\
             endpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}, namespace: {namespace}}}}}]\n",
            endpoint.echo.addr.port(),
            endpoint.echo.addr.ip()
        ));
    }
    out
}

/// A Service `namespace/name` on port 80 whose one endpoint is 127.0.0.1:`target` (a
/// backend the test runs itself), port named `port_name`.
pub fn loopback_service(namespace: &str, name: &str, port_name: &str, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{ports: [{{name: {port_name}, port: 80, targetPort: {target}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: {port_name}, port: {target}}}]\n\
         endpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n"
    )
}

/// A Gateway of class `ferry` with HTTP listeners `(name, port, hostname)` open to all namespaces.
pub fn gateway(namespace: &str, name: &str, listeners: &[(&str, u16, Option<&str>)]) -> String {
    let listeners: Vec<String> = listeners
        .iter()
        .map(|(l, port, host)| {
            let host = host.map(|h| format!(", hostname: \"{h}\"")).unwrap_or_default();
            format!("    - {{name: {l}, port: {port}, protocol: HTTP{host}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n")
        })
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  gatewayClassName: ferry\n  listeners:\n{}",
        listeners.concat()
    )
}

/// An Istio Gateway selected by `istio: ingressgateway` with one HTTP server.
pub fn istio_gateway(namespace: &str, name: &str, port: u16, hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n    - port: {{number: {port}, name: http, protocol: HTTP}}\n      hosts: [{}]\n",
        hosts.join(", ")
    )
}

pub fn join(docs: &[&str]) -> String {
    docs.iter()
        .map(|d| d.trim_end())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// An Ingress of class nginx in namespace `web`: one ImplementationSpecific path on `host`
/// to port 80 of `backend`, with ingress-nginx `annotations` (names without the prefix).
pub fn nginx_ingress(
    name: &str,
    host: &str,
    path: &str,
    backend: &str,
    annotations: &[(&str, &str)],
) -> String {
    nginx_ingress_tls(name, host, path, backend, annotations, false)
}

/// [`nginx_ingress`], with `tls`: the host under `spec.tls` with Secret `<name>-tls`.
pub fn nginx_ingress_tls(
    name: &str,
    host: &str,
    path: &str,
    backend: &str,
    annotations: &[(&str, &str)],
    tls: bool,
) -> String {
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("nginx.ingress.kubernetes.io/{k}: {v:?}"))
        .collect();
    let tls = match tls {
        true => format!("  tls: [{{hosts: [{host}], secretName: {name}-tls}}]\n"),
        false => String::new(),
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: web\n  annotations: {{{}}}\n\
         spec:\n  ingressClassName: nginx\n{tls}  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: {path:?}, pathType: ImplementationSpecific, backend: {{service: {{name: {backend}, port: {{number: 80}}}}}}}}\n",
        annotations.join(", ")
    )
}
