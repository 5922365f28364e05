//! End to end on a real single-node Kubernetes (tests/cluster/up.sh: kubelet, containerd,
//! kube-proxy, CoreDNS in a network namespace of their own), as a user meets Ferry:
//! `helm install` with the demo profile, the controller and gateway pods Ready, then the
//! weather canary's Deployments and Istio manifests applied with kubectl and curled through
//! the gateway's NodePort from outside the node. The image is the `ferry` binary this test run
//! built. One cluster per machine, so the scenarios run in order in one test.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::cluster::Cluster;
use support::{Http, Proto};

const NS: &str = "ferry-system";
const NODE_PORT: u16 = 30080;
const WEATHER_HOST: &str = "weather.example.com";

fn path(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(relative)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_real_node_helm_install_serves_the_weather_canary_through_the_node_port() {
    let cluster = Cluster::start();
    install_ferry(&cluster);
    let http = Http::new(Proto::H1);
    weather_canary(&cluster, &http).await;
    let dashboard = dashboard(&cluster).await;
    gateway_per_gateway(&cluster, &http).await;
    mesh(&cluster, &http).await;
    // The mesh's east-west calls: the client sidecar's edge into the Service, all over mTLS.
    dashboard
        .shows(&format!("service/{MESH}/weather"), 200, 2, |e| {
            e["source"] == format!("workload/{MESH}/fortio") && e["mtlsPercent"] == 100.0
        })
        .await;
    // The Service's page has the mesh VirtualService's 80/20 as a sidecar there sees it.
    let page = dashboard
        .get(&format!("/api/node?id=service/{MESH}/weather"))
        .await
        .expect("the weather Service's page");
    let mesh_weights: Vec<f64> = page["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scope"] == "mesh" && r["object"] == format!("VirtualService {MESH}/weather"))
        .filter_map(|r| r["weightPercent"].as_f64())
        .collect();
    assert_eq!(mesh_weights, vec![80.0, 20.0], "{page:#}");
    circuit_breaker(&cluster, &http).await;
    controller_failover(&cluster, &http).await;
    println!("{}", cluster.kubectl(&["get", "pods", "-A", "-o", "wide"]));
}

/// The upstream Gateway API CRDs, `helm install` of both charts (demo profile: one replica,
/// NodePort 30080/30443), then what examples/helm-install tells the user to check.
fn install_ferry(cluster: &Cluster) {
    // The Gateway API CRDs are the upstream release's, applied first (as Istio documents it).
    cluster.apply(&support::kube::gateway_api_crds());
    cluster
        .helm_output(&["install", "ferry-crds", &path("charts/ferry-crds")])
        .unwrap_or_else(|e| panic!("helm install ferry-crds: {e}"));
    cluster.wait_crds_established();
    cluster
        .helm_output(&[
            "install",
            "ferry",
            &path("charts/ferry"),
            "--namespace",
            NS,
            "--create-namespace",
            "-f",
            &path("charts/ferry/profiles/demo.yaml"),
        ])
        .unwrap_or_else(|e| panic!("helm install ferry: {e}"));
    cluster.wait_deployments(NS, Duration::from_secs(180));
    cluster.eventually(
        "GatewayClass ferry Accepted",
        Duration::from_secs(60),
        || {
            (cluster.get(
                "gatewayclass",
                "",
                "ferry",
                r#".status.conditions[?(@.type=="Accepted")].status"#,
            ) == "True")
                .then_some(())
        },
    );
    let address = programmed_address(cluster, NS, "ferry-gateway");
    assert_eq!(
        address,
        cluster.node_ip.to_string(),
        "a NodePort gateway's address is the node's"
    );
}

/// examples/helm-install/weather.yaml: 90/10 between two Deployments, a header pinning the
/// canary, then a blue/green switch by editing the VirtualService under load.
async fn weather_canary(cluster: &Cluster, http: &Http) {
    let manifest = std::fs::read_to_string(path("examples/helm-install/weather.yaml")).unwrap();
    cluster.apply(&manifest);
    cluster.wait_deployments("weather", Duration::from_secs(120));
    let url = format!("http://{}:{NODE_PORT}/forecast", cluster.node_ip);
    // The gateway serves the route once its snapshot has the endpoints.
    weather_served(http, &url, "the weather route served").await;

    let split = count_backends(http, &url, &[], 200).await;
    println!("weather canary split over 200 requests: {split:?}");
    let v2 = split.get("weather-v2").copied().unwrap_or(0);
    assert_eq!(
        split.values().sum::<usize>(),
        200,
        "every request answered: {split:?}"
    );
    // 10% of 200 is 20; three standard deviations of a binomial(200, 0.1) is ~13.
    assert!(
        (7..=33).contains(&v2),
        "v2 share out of tolerance: {split:?}"
    );

    let pinned = count_backends(http, &url, &[("x-canary", "always")], 50).await;
    assert_eq!(
        pinned.get("weather-v2"),
        Some(&50),
        "x-canary pins v2: {pinned:?}"
    );

    blue_green_switch(cluster, http, &url).await;
}

/// `ferry dashboard`: a port-forward to the controller's dashboard.
struct Dashboard {
    port: u16,
    _forward: support::Proc,
}

impl Dashboard {
    fn open(cluster: &Cluster) -> Dashboard {
        let port = support::free_port();
        let forward = support::ferry()
            .args(["dashboard", "-n", NS, "--browser", "false"])
            .args(["--port", &port.to_string()])
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ferry dashboard");
        Dashboard {
            port,
            _forward: support::Proc(forward),
        }
    }

    async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let reply = Http::new(Proto::H1).get(&url, None, &[]).await?;
        serde_json::from_str(&reply.text).ok()
    }

    /// Waits until the 10-minute graph has `requests` into `service` (from callers whose
    /// edges satisfy `caller`) and edges out of it to `workloads` workloads.
    async fn shows(
        &self,
        service: &str,
        requests: u64,
        workloads: usize,
        caller: fn(&serde_json::Value) -> bool,
    ) {
        let what = format!("{requests} requests into {service} on the dashboard");
        support::eventually_within(&what, Duration::from_secs(30), || async {
            let Some(graph) = self.get("/api/graph?window=10m").await else {
                return false;
            };
            let edges = graph["edges"].as_array().cloned().unwrap_or_default();
            let into: u64 = edges
                .iter()
                .filter(|e| e["target"] == service && caller(e))
                .filter_map(|e| e["requests"].as_u64())
                .sum();
            let out = edges.iter().filter(|e| e["source"] == service).count();
            into >= requests && out >= workloads
        })
        .await;
    }
}

/// The controller's dashboard, through `ferry dashboard`, shows the weather canary's traffic
/// the gateway reported over its control stream (into the Service, out to both workloads),
/// and the gateway in sync.
async fn dashboard(cluster: &Cluster) -> Dashboard {
    let dashboard = Dashboard::open(cluster);
    dashboard
        .shows("service/weather/weather", 250, 2, |e| {
            e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("gateway/"))
        })
        .await;
    let proxies = dashboard.get("/api/proxies").await.expect("proxies");
    let proxies = proxies["proxies"].as_array().unwrap();
    assert!(
        proxies
            .iter()
            .any(|p| p["sync"] == "SYNCED" && p["lastSummaryUnixMs"].is_u64()),
        "{proxies:?}"
    );
    dashboard
}

/// Waits (60 s) until the Gateway is Programmed with an address, and returns the address.
fn programmed_address(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let what = format!("Gateway {namespace}/{name} Programmed with an address");
    cluster.eventually(&what, Duration::from_secs(60), || {
        let condition = r#".status.conditions[?(@.type=="Programmed")].status"#;
        let programmed = cluster.get("gateway", namespace, name, condition);
        let address = cluster.get("gateway", namespace, name, ".status.addresses[0].value");
        (programmed == "True" && !address.is_empty()).then_some(address)
    })
}

/// Waits (60 s) until `url` answers the weather host with 200.
async fn weather_served(http: &Http, url: &str, what: &str) {
    support::eventually_within(what, Duration::from_secs(60), || async {
        http.get(url, Some(WEATHER_HOST), &[])
            .await
            .is_some_and(|reply| reply.status == 200)
    })
    .await;
}

const EDGE_GATEWAY: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: edge-options, namespace: weather}
data: {service.type: NodePort}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: weather}
spec:
  gatewayClassName: ferry
  infrastructure:
    labels: {team: weather}
    annotations: {owner: ops}
    parametersRef: {group: \"\", kind: ConfigMap, name: edge-options}
  listeners:
  - {name: http, port: 8080, protocol: HTTP, hostname: weather.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: forecast, namespace: weather}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: weather, port: 80}]}]
";

/// A Gateway API Gateway of its own: the controller deploys `edge-ferry` (Deployment,
/// NodePort Service from the parametersRef ConfigMap, ServiceAccount, PDB) with the
/// Gateway's infrastructure labels, the Gateway is Programmed at the node's address and
/// serves its route there, and deleting it deletes them all. The chart's own Gateway, served
/// by the chart's gateway, gets no second deployment.
async fn gateway_per_gateway(cluster: &Cluster, http: &Http) {
    cluster.apply(EDGE_GATEWAY);
    let objects = [
        "deployment",
        "service",
        "serviceaccount",
        "poddisruptionbudget",
    ];
    for kind in objects {
        let team = ".metadata.labels.team";
        cluster
            .eventually_get(kind, "weather", "edge-ferry", team, "weather")
            .await;
        let owner = ".metadata.ownerReferences[0].name";
        let owner = cluster.get(kind, "weather", "edge-ferry", owner);
        assert_eq!(owner, "edge", "{kind} edge-ferry is owned by the Gateway");
    }
    let service_type = cluster.get("service", "weather", "edge-ferry", ".spec.type");
    assert_eq!(service_type, "NodePort", "from the parametersRef ConfigMap");
    cluster.wait_deployments("weather", Duration::from_secs(120));
    let address = programmed_address(cluster, "weather", "edge");
    assert_eq!(address, cluster.node_ip.to_string());
    let node_port = cluster.get(
        "service",
        "weather",
        "edge-ferry",
        ".spec.ports[0].nodePort",
    );
    let url = format!("http://{address}:{node_port}/forecast");
    weather_served(http, &url, "the edge Gateway serves its route").await;
    let chart_gateway =
        cluster.kubectl_output(&["get", "deployment", "ferry-gateway-ferry", "-n", NS]);
    assert!(
        chart_gateway.is_err(),
        "the chart's Gateway is served by the chart's gateway"
    );

    cluster.kubectl(&["delete", "gateway", "edge", "-n", "weather"]);
    cluster.eventually(
        "edge-ferry deleted with its Gateway",
        Duration::from_secs(60),
        || {
            let left: Vec<&str> = objects
                .into_iter()
                .filter(|kind| {
                    cluster
                        .kubectl_output(&["get", kind, "edge-ferry", "-n", "weather"])
                        .is_ok()
                })
                .collect();
            left.is_empty().then_some(())
        },
    );
}

/// All traffic moved from v1 to v2 by editing the VirtualService while requests flow: none
/// fails, and afterwards every request reaches v2.
async fn blue_green_switch(cluster: &Cluster, http: &Http, url: &str) {
    let load = Load::start(http, url);
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_weather_weights(cluster, 0, 100);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (sent, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the switch: {failures:?}",
        failures.len()
    );
    let after = cluster.eventually("all traffic on v2", Duration::from_secs(30), || {
        let split = futures_block(count_backends(http, url, &[], 20));
        (split.get("weather-v2") == Some(&20)).then_some(split)
    });
    println!("blue/green: {sent} requests during the switch, none failed; after: {after:?}");
}

/// The weather VirtualService's 90/10 rule set to `v1`/`v2` percent.
fn set_weather_weights(cluster: &Cluster, v1: u32, v2: u32) {
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/http/1/route/0/weight","value":{v1}}},
            {{"op":"replace","path":"/spec/http/1/route/1/weight","value":{v2}}}]"#
    );
    cluster.kubectl(&[
        "patch",
        "virtualservice",
        "weather",
        "-n",
        "weather",
        "--type=json",
        "-p",
        &patch,
    ]);
}

/// Requests to the weather host one after another until stopped; counts what failed.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<Option<u16>>)>,
}

impl Load {
    fn start(http: &Http, url: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (http, url, stopped) = (http.clone(), url.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut sent, mut failures) = (0, Vec::new());
            while !stopped.load(Ordering::Relaxed) {
                sent += 1;
                match http.get(&url, Some(WEATHER_HOST), &[]).await {
                    Some(reply) if reply.status == 200 => {}
                    other => failures.push(other.map(|r| r.status)),
                }
            }
            (sent, failures)
        });
        Load { stop, task }
    }

    /// Requests sent, and the status (None: no answer) of each that failed.
    async fn stop(self) -> (usize, Vec<Option<u16>>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

async fn count_backends(
    http: &Http,
    url: &str,
    headers: &[(&str, &str)],
    requests: usize,
) -> BTreeMap<String, usize> {
    let mut split = BTreeMap::new();
    for _ in 0..requests {
        let backend = match http.get(url, Some(WEATHER_HOST), headers).await {
            Some(reply) if reply.status == 200 => reply.backend(),
            Some(reply) => format!("status {}", reply.status),
            None => "no answer".to_string(),
        };
        *split.entry(backend).or_insert(0) += 1;
    }
    split
}

const MESH: &str = "mesh-demo";

/// examples/helm-install/mesh.yaml in a namespace labelled `istio-injection=enabled`: the
/// webhook injects every pod, `ferry-init` writes its rules into the pod's network namespace
/// (made by the real CNI), and fortio's requests to `http://weather/` (CoreDNS, kube-proxy's
/// ClusterIP) follow the VirtualService's 80/20 split, as both sidecars' metrics report.
async fn mesh(cluster: &Cluster, http: &Http) {
    let manifest = std::fs::read_to_string(path("examples/helm-install/mesh.yaml")).unwrap();
    cluster.apply(&manifest);
    cluster.wait_deployments(MESH, Duration::from_secs(180));
    let fortio = cluster.pod(MESH, "app=fortio");
    let init_containers = cluster.get("pod", MESH, &fortio, ".spec.initContainers[*].name");
    assert_eq!(
        init_containers, "ferry-init ferry-proxy",
        "injected init containers"
    );
    assert_eq!(
        cluster.get(
            "pod",
            MESH,
            &fortio,
            ".spec.initContainers[1].restartPolicy"
        ),
        "Always",
        "the proxy is a native sidecar"
    );
    let fortio_ip = cluster.pod_ip(MESH, "app=fortio");
    let rules = cluster.in_pod_network(&fortio_ip, &["iptables-save", "-t", "nat"]);
    assert!(
        rules.contains("-A FERRY_OUTPUT -p tcp -j FERRY_REDIRECT"),
        "capture rules in the pod's namespace:\n{rules}"
    );

    let load = fortio_load(cluster, 2, 200, "http://weather/");
    assert!(
        load.contains("Code 200 : 200 "),
        "fortio through the mesh:\n{load}"
    );

    let source = metrics(http, &fortio_ip).await;
    let to = |version: &str| {
        metric_sum(
            &source,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("destination_service_name", "weather"),
                ("destination_version", version),
                ("response_code", "200"),
            ],
        )
    };
    let (v1, v2) = (to("v1"), to("v2"));
    println!("east-west split over 200 requests (client sidecar's metrics): v1 {v1}, v2 {v2}");
    assert_eq!(
        v1 + v2,
        200.0,
        "every request counted by the client's sidecar"
    );
    // 20% of 200 is 40; three standard deviations of a binomial(200, 0.2) is ~17.
    assert!(
        (23.0..=57.0).contains(&v2),
        "v2 share out of tolerance: v1 {v1}, v2 {v2}"
    );
    // The server sidecars know the client by its certificate (sidecars talk mTLS to each
    // other by default) and name themselves as the client's sidecar named them.
    let mut served = 0.0;
    for version in ["v1", "v2"] {
        let ip = cluster.pod_ip(MESH, &format!("app=weather,version={version}"));
        served += metric_sum(
            &metrics(http, &ip).await,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("connection_security_policy", "mutual_tls"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/mesh-demo/sa/default",
                ),
                ("destination_workload", &format!("weather-{version}")),
                ("destination_canonical_revision", version),
            ],
        );
    }
    assert_eq!(
        served, 200.0,
        "the server sidecars report every request over mTLS"
    );
}

/// Istio's circuit-breaking task in the mesh: with one connection, one pending request and
/// one request per connection, three concurrent fortio clients see 503s flagged UO, one does
/// not.
async fn circuit_breaker(cluster: &Cluster, http: &Http) {
    let fortio = |connections| fortio_load(cluster, connections, 20, "http://httpbin:8000/get");
    let serial = fortio(1);
    assert!(
        serial.contains("Code 200 : 20 "),
        "one client: no overflow\n{serial}"
    );
    let concurrent = fortio(3);
    println!("fortio -c 3 -n 20 through the circuit breaker:\n{concurrent}");
    assert!(
        concurrent.contains("Code 503 :"),
        "three clients overflow:\n{concurrent}"
    );
    let fortio_ip = cluster.pod_ip(MESH, "app=fortio");
    let overflowed = metric_sum(
        &metrics(http, &fortio_ip).await,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("destination_service_name", "httpbin"),
            ("response_code", "503"),
            ("response_flags", "UO"),
        ],
    );
    assert!(
        overflowed >= 1.0,
        "503s flagged UO in the client sidecar's metrics"
    );
}

/// `fortio load` as the mesh's client (its pod's sidecar in the path): `connections`
/// concurrent clients, `requests` in all, as fast as answers come; fortio's report.
fn fortio_load(cluster: &Cluster, connections: u32, requests: u32, url: &str) -> String {
    let (connections, requests) = (connections.to_string(), requests.to_string());
    let command = [
        "fortio",
        "load",
        "-quiet",
        "-c",
        &connections,
        "-qps",
        "0",
        "-n",
        &requests,
        url,
    ];
    cluster.exec(MESH, "deploy/fortio", "fortio", &command)
}

/// A sidecar's Prometheus metrics from its status port (15020), read from outside the node.
async fn metrics(http: &Http, pod_ip: &str) -> String {
    let url = format!("http://{pod_ip}:15020/stats/prometheus");
    match http.get(&url, None, &[]).await {
        Some(reply) if reply.status == 200 => reply.text,
        other => panic!("{url}: {other:?}"),
    }
}

/// The sum of a metric's samples whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The controller's pod is deleted: the gateway keeps serving what it has (no request fails),
/// the Deployment's new pod takes the leader Lease, and a change made after that reaches the
/// gateway through it.
async fn controller_failover(cluster: &Cluster, http: &Http) {
    let selector = "app.kubernetes.io/component=controller";
    let old = cluster.pod(NS, selector);
    let url = format!("http://{}:{NODE_PORT}/forecast", cluster.node_ip);
    let load = Load::start(http, &url);
    cluster.kubectl(&["delete", "pod", "-n", NS, &old, "--wait=false"]);
    let leader = cluster.eventually(
        "a new controller pod holds the leader Lease",
        Duration::from_secs(120),
        || {
            let holder = cluster.get("lease", NS, "ferry-controller", ".spec.holderIdentity");
            (!holder.is_empty() && !holder.contains(&old)).then_some(holder)
        },
    );
    // A change after the failover is pushed by the new leader: all traffic back to v1.
    set_weather_weights(cluster, 100, 0);
    let after = cluster.eventually(
        "the new controller's push served",
        Duration::from_secs(60),
        || {
            let split = futures_block(count_backends(http, &url, &[], 20));
            (split.get("weather-v1") == Some(&20)).then_some(split)
        },
    );
    assert_eq!(
        cluster.get(
            "gateway",
            NS,
            "ferry-gateway",
            r#".status.conditions[?(@.type=="Programmed")].status"#
        ),
        "True",
        "Programmed stays through the failover"
    );
    let (sent, failures) = load.stop().await;
    println!("controller failover: lease now held by {leader}; {sent} requests meanwhile, {} failed; after the next change: {after:?}", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed while the controller was replaced: {failures:?}",
        failures.len()
    );
}
