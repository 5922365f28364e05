//! Captured traffic routed by a VirtualService through both sidecars, and the local demo.

use crate::pods::*;
use crate::support::netns::{Network, Pod};
use crate::support::ConfigDir;
use std::time::Duration;

fn manifests(v1: &Pod, v2: &Pod) -> String {
    let pod = |name: &str, version: &str, ip: &std::net::Ipv4Addr| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: weather, labels: {{app: weather, version: {version}}}}}\n\
             spec: {{containers: [{{name: app, image: ferry}}]}}\nstatus: {{podIP: {ip}}}\n---\n"
        )
    };
    let endpoint = |name: &str, ip: &std::net::Ipv4Addr| {
        format!(
            "  - {{addresses: [\"{ip}\"], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {name}, namespace: weather}}}}\n"
        )
    };
    format!(
        "{}{}apiVersion: v1\nkind: Service\nmetadata: {{name: weather, namespace: weather}}\n\
         spec: {{clusterIP: {CLUSTER_IP}, selector: {{app: weather}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: weather-1, namespace: weather, labels: {{kubernetes.io/service-name: weather}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}{}---\n{ROUTING}",
        pod("weather-v1", "v1", &v1.address),
        pod("weather-v2", "v2", &v2.address),
        endpoint("weather-v1", &v1.address),
        endpoint("weather-v2", &v2.address),
    )
}

const ROUTING: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weather, namespace: weather}
spec:
  hosts: [weather]
  http:
    - match: [{headers: {x-canary: {exact: always}}}]
      route: [{destination: {host: weather, subset: v2}}]
    - route:
        - {destination: {host: weather, subset: v1}, weight: 90}
        - {destination: {host: weather, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: weather, namespace: weather}
spec:
  host: weather
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";

#[tokio::test(flavor = "multi_thread")]
async fn captured_traffic_is_routed_by_virtual_service_and_delivered_through_both_sidecars() {
    let mut net = Network::new();
    let (client, v1, v2, strict) = (net.pod(2), net.pod(3), net.pod(4), net.pod(5));
    let dir = ConfigDir::new();
    write_readable(&dir, "weather.yaml", &manifests(&v1, &v2));

    let _apps = [
        app(&v1, "weather-v1", 8080),
        app(&v2, "weather-v2", 8080),
        app(&v1, "direct", 9090),
        app(&v1, "bypass", 9091),
        app_on(&v1, "private", "127.0.0.1:9092"),
    ];
    init(&client, &["--exclude-outbound-ports", "9091"]);
    for pod in [&v1, &v2] {
        init(pod, &["--exclude-inbound-ports", "9090"]);
    }
    init(&client, &["--exclude-outbound-ports", "9091"]); // idempotent: same rules once
    let rules = client.run("iptables-save", &["-t", "nat"]).unwrap();
    assert_eq!(
        rules.matches("-A OUTPUT -p tcp -j FERRY_OUTPUT").count(),
        1,
        "{rules}"
    );
    init(&strict, &[]);
    let _strict_sidecar = sidecar_with(
        &strict,
        dir.path(),
        &["--outbound-traffic-policy", "REGISTRY_ONLY"],
    );
    let mut sidecars = [
        sidecar(&client, dir.path()),
        sidecar(&v1, dir.path()),
        sidecar(&v2, dir.path()),
    ];
    for pod in [&client, &v1, &v2, &strict] {
        ready(pod).await;
    }
    let outbound_before = metric(&client, "ferry_downstream_connections_total", "15001").await;

    // 90/10 by subset, over the ClusterIP no kernel route knows: only the sidecar can serve it.
    let answers = curl(
        &client,
        &format!("http://{CLUSTER_IP}/forecast"),
        &["Host: weather"],
        200,
    );
    assert_eq!(answers.len(), 200);
    let v2_count = answers.iter().filter(|a| a["name"] == "weather-v2").count();
    assert!(
        (5..=40).contains(&v2_count),
        "{v2_count} of 200 went to v2 (want about 20)"
    );
    // Inbound capture: the sidecar delivers to the pod address the client dialled (never
    // loopback), so the app sees its own pod address as the peer.
    assert!(
        answers.iter().all(|a| {
            let peer = a["peer"].as_str().unwrap_or_default();
            peer.starts_with(&format!("{}:", v1.address))
                || peer.starts_with(&format!("{}:", v2.address))
        }),
        "{}",
        answers[0]
    );

    // A header pins the canary; the Host can be any Service name, or the IP itself.
    let pinned = curl(
        &client,
        &format!("http://{CLUSTER_IP}/"),
        &[
            "Host: weather.weather.svc.cluster.local",
            "x-canary: always",
        ],
        20,
    );
    assert!(pinned.iter().all(|a| a["name"] == "weather-v2"));
    let by_ip = curl(&client, &format!("http://{CLUSTER_IP}/"), &[], 5);
    assert!(by_ip
        .iter()
        .all(|a| a["name"].as_str().unwrap().starts_with("weather-v")));

    // HTTP/2 (prior knowledge) is detected and routed like HTTP/1.1.
    let h2 = client
        .run(
            "curl",
            &[
                "-s",
                "--http2-prior-knowledge",
                "-w",
                "\n%{http_version}",
                "-H",
                "Host: weather",
                &format!("http://{CLUSTER_IP}/"),
            ],
        )
        .unwrap();
    assert!(
        h2.contains("weather-v") && h2.trim_end().ends_with('2'),
        "{h2}"
    );

    // REGISTRY_ONLY: the mesh Service is served, a destination outside it is refused.
    assert_eq!(
        curl(
            &strict,
            &format!("http://{CLUSTER_IP}/"),
            &["Host: weather"],
            1
        )
        .len(),
        1
    );
    let outside = strict.run(
        "curl",
        &[
            "-s",
            "--max-time",
            "5",
            &format!("http://{}:9090/", v1.address),
        ],
    );
    assert!(outside.is_err(), "REGISTRY_ONLY let {outside:?} through");

    // Outside the mesh: passed through as TCP to the original destination (ALLOW_ANY), and an
    // inbound port excluded in the server pod reaches the app directly.
    let direct = curl(&client, &format!("http://{}:9090/", v1.address), &[], 1);
    assert_eq!(direct[0]["name"], "direct");
    assert!(
        direct[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", client.address)),
        "{}",
        direct[0]
    );
    let outbound_after = metric(&client, "ferry_downstream_connections_total", "15001").await;
    // curl opened one connection per invocation: 5 so far, all through the client's sidecar,
    // and its own upstream connections were not captured again (no loop).
    assert_eq!(outbound_after - outbound_before, 5.0);

    // An excluded outbound port bypasses the client's sidecar (the count does not move).
    let bypass = curl(&client, &format!("http://{}:9091/", v1.address), &[], 1);
    assert_eq!(bypass[0]["name"], "bypass");
    let outbound_end = metric(&client, "ferry_downstream_connections_total", "15001").await;
    assert_eq!(
        outbound_end, outbound_after,
        "excluded port went through the sidecar"
    );

    // Capture without exposure: from another pod, neither the sidecar's admin port nor an app
    // port bound to loopback only is reachable; inside the pod both are.
    for (port, path, inside) in [(15000, "/config_dump", "snapshot"), (9092, "/", "private")] {
        let from_outside =
            fetch_code_and_body(&client, &format!("http://{}:{port}{path}", v1.address));
        assert!(
            !from_outside.starts_with("200") && !from_outside.contains(inside),
            "port {port} of another pod answered: {from_outside}"
        );
        let url = format!("http://127.0.0.1:{port}{path}");
        let from_inside = fetch_code_and_body(&v1, &url);
        assert!(
            from_inside.contains(inside),
            "{url} in the pod: {from_inside}"
        );
    }
    // Inbound through v1's sidecar: its inbound listener counted the connections, and the
    // HTTP requests are reported as Istio's sidecars do (reporter=destination, plaintext).
    assert!(metric(&v1, "ferry_downstream_connections_total", "15006").await >= 2.0);
    let inbound = istio_requests(&v1, "destination").await;
    assert!(inbound >= 100.0, "v1 reported {inbound} inbound requests");
    assert_served_by_http1_loop(&v1).await;
    assert!(istio_requests(&client, "source").await >= 200.0);

    // SIGTERM drains: a request in flight through the client's sidecar still completes,
    // then the sidecar exits.
    let slow = std::thread::spawn({
        let (name, url) = (client.name.clone(), format!("http://{CLUSTER_IP}/slow"));
        move || {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .args(["-H", "Host: weather", "-H", "x-echo-delay-ms: 1000", &url])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = sidecars[0].0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(slow.join().unwrap(), "200", "the request in flight was cut");
    let exited = (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        sidecars[0].0.try_wait().unwrap().is_some()
    });
    assert!(exited, "the sidecar did not exit after draining");
}

#[test]
fn the_local_demo_script_shows_the_canary() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mesh-sidecar/demo.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("FERRY", ferry_bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |name: &str| -> usize {
        text.lines()
            .find(|l| {
                l.ends_with(&format!("\"name\":\"{name}\""))
                    && l.trim_start().starts_with(char::is_numeric)
            })
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("weather-v1") + count("weather-v2"), 100, "{text}");
    assert!(
        count("weather-v2") >= 2 && count("weather-v2") <= 25,
        "{text}"
    );
    assert!(text.contains("\"peer\":\"10.199.0."), "{text}");
    assert!(text.contains("(STRICT: refused):\nrefused"), "{text}");
    assert!(
        text.contains("connection_security_policy=\"mutual_tls\""),
        "{text}"
    );
    assert!(
        text.contains("source_principal=\"spiffe://cluster.local/ns/weather/sa/client\""),
        "{text}"
    );
}
