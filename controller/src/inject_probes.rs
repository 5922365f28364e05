//! Kubelet's HTTP probes of injected pods, rewritten to go through the sidecar's status
//! port (never captured), as Istio's `rewriteAppHTTPProbers` does: under STRICT mTLS the
//! app's own port only accepts mesh peers, and kubelet is not one. The sidecar calls the app
//! with the original probe and answers kubelet with the app's status.
//!
//! Opt out per pod with the annotation `sidecar.istio.io/rewriteAppHTTPProbers: "false"`.

use serde_json::{json, Map, Value};

const OPT_OUT: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
const PROBES: [(&str, &str); 3] = [
    ("readinessProbe", "readyz"),
    ("livenessProbe", "livez"),
    ("startupProbe", "startupz"),
];

/// Rewrites the HTTP probes of `containers` to `status_port`; returns what the sidecar must
/// call instead (`/app-health/<container>/<kind>` -> the original `httpGet`), empty when
/// nothing was rewritten.
pub fn rewrite(
    annotations: &Value,
    containers: &mut [Value],
    status_port: u16,
) -> Map<String, Value> {
    let mut probes = Map::new();
    if annotations.get(OPT_OUT).and_then(Value::as_str) == Some("false") {
        return probes;
    }
    for container in containers.iter_mut() {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let ports = container["ports"].clone();
        for (field, kind) in PROBES {
            let Some(get) = container[field].get("httpGet").cloned() else {
                continue;
            };
            let Some(port) = resolve_port(&get["port"], &ports) else {
                continue; // a named port the container does not declare: left to kubelet
            };
            let path = format!("/app-health/{name}/{kind}");
            let mut original = get.clone();
            original["port"] = json!(port);
            probes.insert(path.clone(), json!({"httpGet": original}));
            container[field]["httpGet"] =
                json!({"path": path, "port": status_port, "scheme": "HTTP"});
        }
    }
    probes
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &Value, container_ports: &Value) -> Option<u64> {
    if let Some(number) = port.as_u64() {
        return Some(number);
    }
    let name = port.as_str()?;
    if let Ok(number) = name.parse() {
        return Some(number);
    }
    container_ports
        .as_array()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_probes_move_to_the_status_port_and_tcp_probes_stay() {
        let mut containers = vec![json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 3},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
        })];
        let probes = rewrite(&json!({}), &mut containers, 15020);
        assert_eq!(
            containers[0]["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
        );
        assert_eq!(containers[0]["readinessProbe"]["periodSeconds"], 3);
        assert_eq!(
            containers[0]["livenessProbe"],
            json!({"tcpSocket": {"port": 8080}})
        );
        assert_eq!(
            probes["/app-health/web/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 8080}})
        );
        let opted_out = json!({OPT_OUT: "false"});
        let mut untouched =
            vec![json!({"name": "web", "readinessProbe": {"httpGet": {"port": 80}}})];
        assert!(rewrite(&opted_out, &mut untouched, 15020).is_empty());
        assert_eq!(untouched[0]["readinessProbe"]["httpGet"]["port"], 80);
    }
}
