//! The dashboard of a standalone gateway (`ferry gateway --dashboard`), on the weather
//! canary example with known traffic: its JSON API, then the UI in Debian's Chromium
//! (dashboard/tests/ui.mjs through playwright-core), which must show the same nodes, edges and
//! numbers; the graph's screenshot is saved (target/dashboard-weather-canary.png; with
//! FERRY_UPDATE_SCREENSHOT=1 also docs/images/dashboard-weather-canary.png, the README's).
//! The controller's dashboard, fed by proxies over the control channel, is tested in
//! tests/controller.rs.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::{free_port, start_example, Http, Proto};

const WEATHER: usize = 200;
const NO_ROUTE: usize = 5;

async fn api(dashboard: &str, path: &str) -> Value {
    let reply = Http::new(Proto::H1)
        .get(&format!("http://{dashboard}{path}"), None, &[])
        .await
        .expect("dashboard answered");
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    serde_json::from_str(&reply.text).unwrap()
}

fn edge<'a>(graph: &'a Value, source: &str, target: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target} in {graph:#}"))
}

const GATEWAY: &str = "gateway/unknown/ferry-gateway";
const SERVICE: &str = "service/weather/weather";
const V1: &str = "workload/weather/weather-v1";
const V2: &str = "workload/weather/weather-v2";
const NO_SERVICE: &str = "unknown/-/no service";

/// Sends the known traffic and waits until the dashboard has counted all of it.
async fn send_known_traffic(dashboard: &str) -> Value {
    let http = Http::new(Proto::H1);
    for _ in 0..WEATHER {
        let reply = support::weather_forecast(&http, &[]).await;
        assert_eq!(reply.status, 200);
    }
    for _ in 0..NO_ROUTE {
        let reply = http
            .get("http://127.0.0.1:18080/", Some("nowhere.example.com"), &[])
            .await;
        assert_eq!(reply.unwrap().status, 404);
    }
    let counted = |graph: &Value| -> u64 {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == GATEWAY)
            .map(|e| e["requests"].as_u64().unwrap())
            .sum()
    };
    support::eventually(|| async {
        counted(&api(dashboard, "/api/graph?window=1m").await) == (WEATHER + NO_ROUTE) as u64
    })
    .await;
    api(dashboard, "/api/graph?window=1m").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_canary_graph_routes_gateways_and_proxies() {
    let dashboard = format!("127.0.0.1:{}", free_port());
    let (_backends, _gw) = start_example("weather-canary", &["--dashboard", &dashboard]).await;
    let graph = send_known_traffic(&dashboard).await;

    // The 90/10 canary is one edge into the Service and two out of it.
    let into_service = edge(&graph, GATEWAY, SERVICE);
    assert_eq!(into_service["requests"], WEATHER);
    assert_eq!(into_service["errorPercent"], 0.0);
    assert!(into_service["p99Ms"].as_f64().unwrap() > 0.0);
    let (v1, v2) = (edge(&graph, SERVICE, V1), edge(&graph, SERVICE, V2));
    let (v1, v2) = (
        v1["requests"].as_u64().unwrap(),
        v2["requests"].as_u64().unwrap(),
    );
    assert_eq!(v1 + v2, WEATHER as u64);
    // 200 draws at p=0.1: 20 +- 17 is beyond 4 sd.
    assert!((3..=37).contains(&v2), "{v2} of {WEATHER} went to v2");
    let unrouted = edge(&graph, GATEWAY, NO_SERVICE);
    assert_eq!(unrouted["clientErrors"], NO_ROUTE);
    assert_eq!(unrouted["flags"]["NR"], NO_ROUTE);
    assert_eq!(unrouted["errorPercent"], 100.0);
    let ten_minutes = api(&dashboard, "/api/graph?window=10m").await;
    assert_eq!(edge(&ten_minutes, GATEWAY, SERVICE)["requests"], WEATHER);

    // The Service's page: the VirtualService's weights (its second rule, canary-split),
    // the DestinationRule's subsets.
    let node = api(&dashboard, &format!("/api/node?id={SERVICE}")).await;
    let routes = node["routes"].as_array().unwrap();
    let weight_of = |cluster: &str| {
        routes
            .iter()
            .find(|r| {
                r["object"] == "VirtualService weather/weather"
                    && r["rule"].as_str().unwrap().contains("/http/1/")
                    && r["cluster"].as_str().unwrap().ends_with(cluster)
            })
            .unwrap_or_else(|| panic!("no canary-split route to {cluster}: {node:#}"))
            ["weightPercent"]
            .as_f64()
            .unwrap()
    };
    assert_eq!((weight_of("/v1"), weight_of("/v2")), (90.0, 10.0));
    // The VirtualService is bound to the Gateway only, and the example's Service has no
    // ClusterIP a sidecar could dial: every route is the gateway's.
    assert!(routes.iter().all(|r| r["scope"] == "gateway"), "{node:#}");
    let policies = node["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{node:#}");
    assert!(policies
        .iter()
        .all(|p| p["from"] == "DestinationRule weather/weather"));
    assert_eq!(node["outbound"].as_array().unwrap().len(), 2);
    // The proxy's own 404s, with their cause, on the page of where they ended.
    let unrouted_page = api(&dashboard, "/api/node?id=unknown/-/no%20service").await;
    let errors = unrouted_page["recentErrors"].as_array().unwrap();
    assert_eq!(errors.len(), NO_ROUTE, "{unrouted_page:#}");
    assert!(
        errors[0]["cause"].as_str().unwrap().starts_with("NR"),
        "{errors:?}"
    );

    let gateways = api(&dashboard, "/api/gateways").await;
    let gateway = &gateways["gateways"][0];
    assert_eq!(gateway["name"], "weather-gateway");
    assert_eq!(gateway["servers"][0]["port"]["number"], 18080);
    assert_eq!(gateway["routes"][0]["name"], "weather");
    let proxies = api(&dashboard, "/api/proxies").await;
    assert_eq!(proxies["proxies"][0]["sync"], "SYNCED");
    assert!(proxies["proxies"][0]["lastSummaryUnixMs"]
        .as_u64()
        .is_some());
    assert_eq!(api(&dashboard, "/api/messages").await["errors"], 0);

    read_only_and_self_contained(&dashboard).await;
    the_browser_shows_the_same(&dashboard, v1, v2).await;
}

/// Nothing changes through the port; the page loads nothing from elsewhere.
async fn read_only_and_self_contained(dashboard: &str) {
    let http = Http::new(Proto::H1);
    let post = http
        .send(
            "POST",
            &format!("http://{dashboard}/api/graph"),
            None,
            &[],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    let index = http
        .get(&format!("http://{dashboard}/"), None, &[])
        .await
        .unwrap();
    assert_eq!(index.status, 200);
    let policy = index.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let overview = api(dashboard, "/api/overview").await;
    assert_eq!(
        overview["assetsBuilt"], true,
        "run dashboard/build.sh before cargo build"
    );
    let script = index
        .text
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads a script");
    assert!(script.starts_with("/assets/"), "{script}");
    let js = http
        .get(&format!("http://{dashboard}{script}"), None, &[])
        .await
        .unwrap();
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
}

async fn the_browser_shows_the_same(dashboard: &str, v1: u64, v2: u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let screenshot = root.join("target/dashboard-weather-canary.png");
    let output = Command::new("node")
        .current_dir(root.join("dashboard"))
        .args(["tests/ui.mjs", &format!("http://{dashboard}")])
        .arg(&screenshot)
        .output()
        .expect("node runs (tests/setup.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ui.mjs failed: {stderr}");
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["problems"], serde_json::json!([]), "{shown:#}");
    let nodes = shown["graph"]["nodes"].as_array().unwrap();
    for node in [GATEWAY, SERVICE, V1, V2, NO_SERVICE] {
        assert!(
            nodes.iter().any(|n| n == node),
            "{node} not drawn: {nodes:?}"
        );
    }
    let labels = shown["graph"]["edges"].as_array().unwrap();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(labels
        .iter()
        .all(|e| e["label"].as_str().unwrap().contains(" rps · ")));
    // The edge table beside the graph: from, to, requests...
    let rows = shown["edges"].as_array().unwrap();
    let requests = |to: &str| {
        rows.iter()
            .find(|r| r[1] == to)
            .unwrap_or_else(|| panic!("no row to {to}: {rows:?}"))[2]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(requests(SERVICE), WEATHER as u64);
    assert_eq!((requests(V1), requests(V2)), (v1, v2));
    let unrouted = rows.iter().find(|r| r[1] == NO_SERVICE).unwrap();
    assert_eq!(unrouted[4], "100%");
    assert_eq!(unrouted[8], format!("NR×{NO_ROUTE}"));
    // The Service's page, the Gateways, the proxies, the messages.
    assert_eq!(shown["node"]["title"], "service weather/weather");
    let routes = shown["node"]["routes"].as_array().unwrap();
    assert!(routes.iter().any(|r| r[5] == "90 (90%)"), "{routes:?}");
    assert!(routes.iter().any(|r| r[5] == "10 (10%)"), "{routes:?}");
    assert!(shown["gateways"][0]
        .as_str()
        .unwrap()
        .contains("Gateway weather/weather-gateway"));
    assert_eq!(shown["proxies"][0][2], "SYNCED");
    assert!(shown["messages"].as_str().unwrap().contains("0 errors"));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    if std::env::var_os("FERRY_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(
            &screenshot,
            root.join("docs/images/dashboard-weather-canary.png"),
        )
        .unwrap();
    }
}

/// A TCPRoute's connections are an edge too: connections and bytes instead of requests.
#[tokio::test(flavor = "multi_thread")]
async fn relayed_tcp_connections_are_edges_with_their_bytes() {
    let dashboard = format!("127.0.0.1:{}", free_port());
    let (_backends, _gw) = start_example("tls-passthrough", &["--dashboard", &dashboard]).await;
    let mut received = 0;
    for _ in 0..3 {
        received += support::legacy_tcp_exchange().await;
    }
    let into_legacy = |graph: &Value| -> Option<Value> {
        graph["edges"]
            .as_array()?
            .iter()
            .find(|e| e["target"] == "service/data/legacy")
            .cloned()
    };
    support::eventually(|| async {
        let graph = api(&dashboard, "/api/graph?window=1m").await;
        into_legacy(&graph).is_some_and(|e| e["tcpConnections"] == 3)
    })
    .await;
    let graph = api(&dashboard, "/api/graph?window=1m").await;
    let edge = into_legacy(&graph).unwrap();
    assert_eq!(edge["requests"], 0);
    assert_eq!(edge["errorPercent"], 0.0);
    let seconds = graph["windowSeconds"].as_f64().unwrap();
    let bytes = edge["tcpBytesPerSecond"].as_f64().unwrap() * seconds;
    // Both directions: the answers (sent) and the requests (received); the rate is rounded.
    assert!(
        bytes > received as f64 * 0.99,
        "{edge}: {bytes} bytes, answers alone {received}"
    );
}
