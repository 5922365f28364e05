//! The sidecar in real network namespaces: each "pod" is a netns on a bridge, with the rules
//! `ferry sidecar-init` writes and `ferry sidecar` running as uid 1337 beside a `ferry echo`
//! app. A client pod calls the weather Service's ClusterIP; its sidecar routes by a
//! VirtualService (90/10 by subset, a header pins v2) to a pod whose sidecar hands the
//! connection to the app. Needs root, iproute2, iptables and setpriv (util-linux).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;
use support::netns::{Network, Pod};
use support::{eventually_within, ConfigDir, Proc};

const CLUSTER_IP: &str = "10.96.0.20";
const SIDECAR_UID: u32 = 1337;

fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// The app: an echo answering with its name, on `port` in the pod.
fn app(pod: &Pod, name: &str, port: u16) -> Proc {
    app_on(pod, name, &format!("0.0.0.0:{port}"))
}

fn app_on(pod: &Pod, name: &str, listen: &str) -> Proc {
    let child = pod
        .command(ferry_bin())
        .args([
            "echo",
            "--listen",
            listen,
            "--name",
            name,
            "--namespace",
            "weather",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start echo in pod");
    Proc(child)
}

/// Writes a manifest the sidecar (uid 1337) can read, in a directory it can list.
fn write_readable(dir: &ConfigDir, name: &str, text: &str) {
    dir.write(name, text);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join(name);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn init(pod: &Pod, extra: &[&str]) {
    let mut args = vec!["sidecar-init"];
    args.extend_from_slice(extra);
    pod.run(ferry_bin(), &args).expect("sidecar-init");
}

/// `ferry sidecar` as uid 1337: admin on the pod's loopback, the status port (probes,
/// metrics; never captured) on the pod address.
fn sidecar(pod: &Pod, config: &std::path::Path) -> Proc {
    sidecar_with(pod, config, &[])
}

/// Its access log (off unless `extra` sets `--access-log`) goes to [`access_log_path`].
fn sidecar_with(pod: &Pod, config: &std::path::Path, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(format!("/tmp/ferry-sidecar-{}.log", pod.name)).unwrap();
    let access_log = std::fs::File::create(access_log_path(pod)).unwrap();
    let default_log: &[&str] = if extra.contains(&"--access-log") {
        &[]
    } else {
        &["--access-log", "off"]
    };
    let child = pod
        .command_as(SIDECAR_UID, ferry_bin())
        .args([
            "sidecar",
            "--config",
            &config.display().to_string(),
            "--namespace",
            "weather",
        ])
        .args(default_log)
        .args(extra)
        .stdout(access_log)
        .stderr(log)
        .spawn()
        .expect("start sidecar");
    Proc(child)
}

fn access_log_path(pod: &Pod) -> String {
    format!("/tmp/ferry-sidecar-{}.access.log", pod.name)
}

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

/// `count` requests on one connection (curl reuses it), one JSON answer per line.
fn curl(pod: &Pod, url: &str, headers: &[&str], count: usize) -> Vec<serde_json::Value> {
    let mut args = vec!["-s", "--max-time", "10", "-w", "\\n"];
    for header in headers {
        args.extend_from_slice(&["-H", header]);
    }
    let urls = vec![url; count];
    args.extend(urls.iter().copied());
    let out = pod
        .run("curl", &args)
        .unwrap_or_else(|e| panic!("curl {url}: {e}"));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not an echo answer: {l}")))
        .collect()
}

/// `curl` from the pod: the status code, a space, the body (`000` when nothing answered).
fn fetch_code_and_body(pod: &Pod, url: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.name, "curl", "-s", "--max-time", "5"])
        .args(["-w", "%{http_code} ", "-o", "/dev/stderr", url])
        .output()
        .expect("run curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn metric(pod: &Pod, name: &str, listener: &str) -> f64 {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("listener=\"{listener}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `istio_requests_total` with this reporter, 200s, summed over label sets.
async fn istio_requests(pod: &Pod, reporter: &str) -> f64 {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            l.contains(&format!("reporter=\"{reporter}\"")) && l.contains("response_code=\"200\"")
        })
        .filter(|l| reporter == "source" || l.contains("connection_security_policy=\"none\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sidecar's inbound HTTP/1 requests were served by Ferry's own loop.
async fn assert_served_by_http1_loop(pod: &Pod) {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    support::assert_served_by_http1_loop(&text);
}

async fn reqwest_text(url: &str) -> Option<String> {
    let reply = support::Http::new(support::Proto::H1)
        .get(url, None, &[])
        .await?;
    Some(reply.text)
}

async fn ready(pod: &Pod) {
    let url = format!("http://{}:15020/healthz/ready", pod.address);
    eventually_within(
        &format!("sidecar in {} ready", pod.name),
        Duration::from_secs(20),
        || async {
            support::Http::new(support::Proto::H1)
                .get(&url, None, &[])
                .await
                .is_some_and(|r| r.status == 200)
        },
    )
    .await;
}

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

/// One pod's identity files (`--identity-dir`), readable by the sidecar's uid.
struct IdentityDir {
    dir: tempfile::TempDir,
    spiffe_id: String,
}

impl IdentityDir {
    fn new(spiffe_id: &str) -> IdentityDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        IdentityDir {
            dir,
            spiffe_id: spiffe_id.into(),
        }
    }

    /// A fresh key and certificate from `ca`, and `roots` as the bundle. Each file is
    /// replaced by a rename, as kubelet and cert tools do, so no half-written file is read.
    fn issue(&self, ca: &support::tls::TestCa, roots: &str, lifetime: Duration) {
        let leaf = ca.issue_svid(&self.spiffe_id, lifetime);
        self.write("root-cert.pem", roots);
        self.write("key.pem", &leaf.key_pem);
        self.write("cert-chain.pem", &leaf.cert_pem);
    }

    fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    fn arg(&self) -> [String; 2] {
        [
            "--identity-dir".into(),
            self.dir.path().display().to_string(),
        ]
    }
}

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

async fn metric_value(pod: &Pod, sample: &str) -> f64 {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(sample))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A DNS server for the test: answers A queries for the names in its table (each with a
/// TTL of one second) and nothing else; the table can change while it runs.
struct TinyDns {
    names: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::Ipv4Addr>>>,
    queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TinyDns {
    fn start(address: std::net::Ipv4Addr) -> TinyDns {
        let socket = std::net::UdpSocket::bind((address, 53)).expect("bind DNS port");
        let dns = TinyDns {
            names: Default::default(),
            queries: Default::default(),
        };
        let (names, queries) = (dns.names.clone(), dns.queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let names = names.lock().unwrap().clone();
                if let Some(reply) = dns_reply(&buf[..n], &names) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        dns
    }

    fn set(&self, name: &str, ip: std::net::Ipv4Addr) {
        self.names.lock().unwrap().insert(name.into(), ip);
    }
}

/// The answer to one query (RFC 1035 wire format): the A record when the name is known and
/// the query asks for A, else an empty NOERROR answer.
fn dns_reply(
    query: &[u8],
    names: &std::collections::HashMap<String, std::net::Ipv4Addr>,
) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let found = names.get(&labels.join(".")).filter(|_| qtype == 1);
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(found.is_some()), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let Some(ip) = found {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]); // TTL 1 s
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// The pod's `/etc/resolv.conf` as `ip netns exec` shows it to the pod's processes.
struct PodResolvConf(std::path::PathBuf);

impl PodResolvConf {
    fn write(pod: &Pod, nameserver: std::net::Ipv4Addr) -> PodResolvConf {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{}", pod.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:2\n"),
        )
        .unwrap();
        PodResolvConf(dir)
    }
}

impl Drop for PodResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SERVICE_ENTRIES: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: weather}
spec:
  egress: [{hosts: [\"./*\"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-api, namespace: weather}
spec:
  hosts: [static-api.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  endpoints: [{address: EXTERNAL_ONE}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-api, namespace: weather}
spec:
  hosts: [dns-api.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-db, namespace: weather}
spec:
  hosts: [db.example]
  addresses: [EXTERNAL_TWO/32]
  resolution: NONE
  ports: [{number: 8080, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls-api, namespace: weather}
spec:
  hosts: [tls-api.example]
  resolution: NONE
  ports: [{number: 8443, name: tls, protocol: TLS}]
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: weather}
spec: {clusterIP: 10.96.0.30, ports: [{name: tcp-ledger, port: 5432, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ledger-v1, namespace: weather, labels: {app: ledger, version: v1}}
spec: {containers: [{name: app, image: ferry}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ledger-v2, namespace: weather, labels: {app: ledger, version: v2}}
spec: {containers: [{name: app, image: ferry}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ledger-1, namespace: weather, labels: {kubernetes.io/service-name: ledger}}
addressType: IPv4
ports: [{name: tcp-ledger, port: 8080}]
endpoints:
  - {addresses: [EXTERNAL_ONE], conditions: {ready: true}, targetRef: {kind: Pod, name: ledger-v1, namespace: weather}}
  - {addresses: [EXTERNAL_TWO], conditions: {ready: true}, targetRef: {kind: Pod, name: ledger-v2, namespace: weather}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger, namespace: weather}
spec:
  host: ledger
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger, namespace: weather}
spec:
  hosts: [ledger]
  tcp:
  - route: [{destination: {host: ledger, subset: v2}}]
";

/// Sidecars under REGISTRY_ONLY (set by the namespace's Sidecar resource) let out exactly
/// what ServiceEntries register: an HTTP host with STATIC endpoints, one the sidecar resolves
/// through DNS (following a changed answer once its TTL runs out), a TCP address block, a TLS
/// server name; anything else is refused (502 for HTTP). A VirtualService tcp route steers a
/// Service's connections.
#[tokio::test(flavor = "multi_thread")]
async fn service_entries_let_registered_hosts_out_under_registry_only() {
    let mut net = Network::new();
    let (client, one, two) = (net.pod(2), net.pod(3), net.pod(4));
    let bridge =
        std::net::Ipv4Addr::new(client.address.octets()[0], client.address.octets()[1], 0, 1);
    let dns = TinyDns::start(bridge);
    dns.set("dns-api.example", one.address);
    let _resolv = PodResolvConf::write(&client, bridge);
    let dir = ConfigDir::new();
    let manifests = SERVICE_ENTRIES
        .replace("EXTERNAL_ONE", &one.address.to_string())
        .replace("EXTERNAL_TWO", &two.address.to_string());
    write_readable(&dir, "entries.yaml", &manifests);
    let ca = support::tls::TestCa::new("external-ca");
    let leaf = ca.issue(&["tls-api.example", "other.example"]);
    dir.write("ca.pem", &ca.cert_pem);
    dir.write("tls.pem", &leaf.cert_pem);
    dir.write("tls.key", &leaf.key_pem);
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls_app = Proc(
        one.command(ferry_bin())
            .args(["echo", "--listen", "0.0.0.0:8443", "--name", "external-tls"])
            .args([
                "--tls-cert",
                &file("tls.pem"),
                "--tls-key",
                &file("tls.key"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start TLS echo"),
    );
    let _apps = [
        app(&one, "external-one", 8080),
        app(&two, "external-two", 8080),
        tls_app,
    ];
    init(&client, &[]);
    // REGISTRY_ONLY comes from the namespace's Sidecar resource (the flag says ALLOW_ANY).
    let _sidecar = sidecar_with(
        &client,
        dir.path(),
        &["--outbound-traffic-policy", "ALLOW_ANY"],
    );
    ready(&client).await;

    // STATIC: the Host header names the entry; the address dialled (pod two, port 80,
    // where nothing listens) does not matter, the entry's endpoint answers.
    let url = format!("http://{}/", two.address);
    let answers = curl(&client, &url, &["Host: static-api.example"], 3);
    assert!(
        answers.iter().all(|a| a["name"] == "external-one"),
        "{answers:?}"
    );

    // Without an entry for the host: 502, as Istio's BlackHoleCluster answers.
    let refused = fetch_code_and_body_with(&client, &url, "Host: unknown.example");
    assert!(refused.starts_with("502"), "{refused}");

    // DNS: resolved by the sidecar through the pod's resolver...
    let answers = curl(&client, &url, &["Host: dns-api.example"], 2);
    assert!(
        answers.iter().all(|a| a["name"] == "external-one"),
        "{answers:?}"
    );
    assert!(dns.queries.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // ...and asked again when the answer's TTL (1 s) runs out.
    dns.set("dns-api.example", two.address);
    eventually_within(
        "the sidecar follows the changed DNS answer",
        Duration::from_secs(15),
        || async {
            let answer = curl(&client, &url, &["Host: dns-api.example"], 1);
            answer.first().is_some_and(|a| a["name"] == "external-two")
        },
    )
    .await;

    // TCP by address: the entry's block lets connections to pod two's 8080 out (to the
    // address dialled, resolution NONE); pod one's 8080 is outside every entry.
    let direct = curl(&client, &format!("http://{}:8080/", two.address), &[], 1);
    assert_eq!(direct[0]["name"], "external-two");
    let outside = client.run(
        "curl",
        &[
            "-s",
            "--max-time",
            "3",
            &format!("http://{}:8080/", one.address),
        ],
    );
    assert!(
        outside.is_err() || outside.as_ref().is_ok_and(|o| o.is_empty()),
        "{outside:?}"
    );

    // TLS by server name (resolution NONE: on to the address dialled, untouched: the
    // client checks the external server's own certificate).
    let ca_file = file("ca.pem");
    let tls = |name: &str| {
        let resolve = format!("{name}:8443:{}", one.address);
        let url = format!("https://{name}:8443/");
        let args = [
            "-s",
            "--max-time",
            "5",
            "--cacert",
            &ca_file,
            "--resolve",
            &resolve,
            &url,
        ];
        client.run("curl", &args)
    };
    let answer = tls("tls-api.example").expect("registered server name");
    assert!(answer.contains("external-tls"), "{answer}");
    let refused = tls("other.example");
    assert!(
        refused.is_err(),
        "an unregistered server name got {refused:?}"
    );

    // A VirtualService tcp route takes every connection to the Service's ClusterIP and
    // port whole (here: all to subset v2), whatever the connection carries.
    for _ in 0..4 {
        let answer = curl(&client, "http://10.96.0.30:5432/", &[], 1);
        assert_eq!(answer[0]["name"], "external-two", "{answer:?}");
    }
}

/// `curl` with one header (certificates not checked): the status code, a space, the body.
fn fetch_code_and_body_with(pod: &Pod, url: &str, header: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.name,
            "curl",
            "-s",
            "-k",
            "--max-time",
            "5",
        ])
        .args([
            "-H",
            header,
            "-w",
            "%{http_code} ",
            "-o",
            "/dev/stderr",
            url,
        ])
        .output()
        .expect("run curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const EGRESS_GATEWAY: &str = "apiVersion: v1
kind: Pod
metadata: {name: egressgateway-1, namespace: istio-system, labels: {istio: egressgateway}}
spec: {serviceAccountName: ferry-egressgateway, containers: [{name: gateway, image: ferry}]}
---
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec: {clusterIP: 10.96.0.50, ports: [{name: https, port: 8443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: egress-1, namespace: istio-system, labels: {kubernetes.io/service-name: istio-egressgateway}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints:
  - {addresses: [EGRESS_POD], conditions: {ready: true}, targetRef: {kind: Pod, name: egressgateway-1, namespace: istio-system}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway, namespace: weather}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: api.external.example}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api, namespace: weather}
spec:
  hosts: [api.external.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  endpoints: [{address: EXTERNAL_POD}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: weather}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [api.external.example]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: external-via-egress, namespace: weather}
spec:
  hosts: [api.external.example]
  gateways: [mesh, egress]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 8443}}}]
  - match: [{gateways: [egress], port: 8443}]
    route: [{destination: {host: api.external.example, port: {number: 80}}}]
";

/// Istio's egress gateway pattern, as its docs write it: the app calls an external host (a
/// ServiceEntry); a VirtualService bound to the mesh sends the sidecar's request to the egress
/// gateway (a Ferry gateway labelled `istio: egressgateway`, serving no Ingress) over the
/// mesh's mTLS (DestinationRule ISTIO_MUTUAL, Gateway server ISTIO_MUTUAL), and the
/// gateway's own route sends it to the external host. Under REGISTRY_ONLY the external host
/// is reached this way only, and the gateway's port refuses clients without a mesh identity.
#[tokio::test(flavor = "multi_thread")]
async fn calls_to_an_external_host_leave_through_the_egress_gateway_over_mtls() {
    use support::tls::TestCa;
    let mut net = Network::new();
    let (client, egress, external) = (net.pod(2), net.pod(3), net.pod(4));
    let dir = ConfigDir::new();
    let manifests = EGRESS_GATEWAY
        .replace("EGRESS_POD", &egress.address.to_string())
        .replace("EXTERNAL_POD", &external.address.to_string());
    write_readable(&dir, "egress.yaml", &manifests);
    let root = TestCa::new("mesh root");
    let lifetime = Duration::from_secs(300);
    let client_id = IdentityDir::new("spiffe://cluster.local/ns/weather/sa/client");
    let gateway_id =
        IdentityDir::new("spiffe://cluster.local/ns/istio-system/sa/ferry-egressgateway");
    client_id.issue(&root, &root.cert_pem, lifetime);
    gateway_id.issue(&root, &root.cert_pem, lifetime);

    let config = dir.path().display().to_string();
    let gateway_log = dir.path().join("egress-access.log");
    let _gateway = Proc(
        egress
            .command(ferry_bin())
            .args([
                "gateway",
                "--config",
                &config,
                "--label",
                "istio=egressgateway",
            ])
            .args(gateway_id.arg())
            .args(["--ingress-port", "0", "--access-log", "json"])
            .args(["--admin", "127.0.0.1:15000", "--status", "0.0.0.0:15020"])
            .stdout(std::fs::File::create(&gateway_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the egress gateway"),
    );
    let _app = app(&external, "external", 8080);
    init(&client, &[]);
    let mut sidecar_args = client_id.arg().to_vec();
    sidecar_args.extend(["--outbound-traffic-policy".into(), "REGISTRY_ONLY".into()]);
    let sidecar_args: Vec<&str> = sidecar_args.iter().map(String::as_str).collect();
    let _sidecar = sidecar_with(&client, dir.path(), &sidecar_args);
    ready(&client).await;
    ready(&egress).await;

    // The app dials the external host's address; the answer comes back through the gateway:
    // the external server saw the egress gateway's address as its peer.
    let url = format!("http://{}/", external.address);
    let answers = curl(&client, &url, &["Host: api.external.example"], 3);
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        assert_eq!(answer["name"], "external", "{answer}");
        let peer = answer["peer"].as_str().unwrap_or_default();
        assert!(
            peer.starts_with(&format!("{}:", egress.address)),
            "the external server was reached from {peer}, not the egress gateway"
        );
    }
    // The gateway knew its client by the mesh identity the client proved.
    let wanted = r#""downstream_peer_uri_san":"spiffe://cluster.local/ns/weather/sa/client""#;
    eventually_within(
        "egress gateway access log",
        Duration::from_secs(5),
        || async { std::fs::read_to_string(&gateway_log).is_ok_and(|log| log.contains(wanted)) },
    )
    .await;
    // Another host at the same address is not registered: refused.
    let refused = fetch_code_and_body_with(&client, &url, "Host: elsewhere.example");
    assert!(refused.starts_with("502"), "{refused}");
    // The gateway's port takes mesh mTLS only: plaintext and TLS without a client
    // certificate get no answer.
    let port = format!("{}:8443", egress.address);
    for (scheme, what) in [
        ("http", "plaintext"),
        ("https", "TLS without a mesh identity"),
    ] {
        let url = format!("{scheme}://{port}/");
        let reply = fetch_code_and_body_with(&external, &url, "Host: api.external.example");
        assert!(
            reply.starts_with("000"),
            "{what} reached the egress gateway: {reply}"
        );
    }
}
