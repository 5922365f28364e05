//! The Grafana dashboards the chart ships (charts/ferry/dashboards) and the queries Istio's
//! standard dashboards are documented to use, asked of a real Prometheus (Debian's package)
//! scraping a Ferry gateway that served known traffic: every query must be valid PromQL over
//! metrics Ferry exports, and those about HTTP traffic must return data. Istio's metric names
//! and labels are Ferry's promise (README, Observability); this list keeps it.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{free_port, start_example, Http, Proto};

/// Queries of Istio's Mesh, Service and Workload dashboards (Istio's documented names and
/// labels; `$__rate_interval` as Grafana fills it), each with data from the test's traffic
/// (HTTP through the weather canary, TCP through the tls-passthrough example).
const ISTIO_QUERIES: &[&str] = &[
    r#"round(sum(irate(istio_requests_total{reporter="source"}[1m])), 0.001)"#,
    r#"sum(rate(istio_requests_total{reporter="source", response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="source"}[1m]))"#,
    r#"sum(irate(istio_requests_total{reporter="source", response_code=~"4.*"}[1m]))"#,
    r#"sum(irate(istio_requests_total{reporter="source", response_code=~"5.*"}[1m]))"#,
    r#"sum(rate(istio_requests_total{reporter="source", destination_service=~"weather.weather.svc.cluster.local"}[$__rate_interval])) by (destination_workload, destination_workload_namespace, response_code)"#,
    r#"label_join(sum(rate(istio_requests_total{reporter="source", response_code="200"}[1m])) by (destination_workload, destination_workload_namespace, destination_service), "destination_workload_var", ".", "destination_workload", "destination_workload_namespace")"#,
    r#"histogram_quantile(0.50, sum(irate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])) by (le, destination_service))"#,
    r#"histogram_quantile(0.90, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source", destination_service=~"weather.weather.svc.cluster.local"}[$__rate_interval])) by (le, source_workload, source_workload_namespace))"#,
    r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source"}[$__rate_interval])) by (le, destination_workload, destination_workload_namespace))"#,
    r#"sum(rate(istio_requests_total{reporter="source", connection_security_policy!="mutual_tls"}[$__rate_interval])) by (source_workload, source_workload_namespace, source_canonical_service)"#,
    r#"histogram_quantile(0.99, sum(rate(istio_request_bytes_bucket{reporter="source"}[$__rate_interval])) by (le, destination_service))"#,
    r#"histogram_quantile(0.99, sum(rate(istio_response_bytes_bucket{reporter="source"}[$__rate_interval])) by (le, destination_service))"#,
    r#"sum(rate(istio_request_duration_milliseconds_count{reporter="source"}[$__rate_interval])) by (destination_canonical_service, destination_canonical_revision, request_protocol)"#,
    r#"sum(irate(istio_tcp_sent_bytes_total{reporter="source"}[1m])) by (destination_service)"#,
    r#"sum(irate(istio_tcp_received_bytes_total{reporter="source"}[1m])) by (destination_service)"#,
    r#"sum(rate(istio_tcp_connections_opened_total{reporter="source"}[$__rate_interval])) by (source_workload, destination_workload)"#,
    r#"sum(rate(istio_tcp_connections_closed_total{reporter="source"}[$__rate_interval])) by (source_workload, destination_workload)"#,
];

/// Dashboard queries whose series exist only under conditions the test does not create.
fn may_be_empty(expr: &str) -> bool {
    [
        "ferry_upstream_connect_failures",
        "ferry_http1_fallback",
        "reporter=\"destination\"",
    ]
    .iter()
    .any(|series| expr.contains(series))
}

struct Prometheus {
    address: String,
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Prometheus scraping the `targets`' /stats/prometheus every second.
fn prometheus(targets: &[&str]) -> Prometheus {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let targets = targets.join(", ");
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             \x20 - job_name: ferry-gateway\n\
             \x20   metrics_path: /stats/prometheus\n\
             \x20   static_configs: [{{targets: [{targets}]}}]\n"
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus runs (tests/setup.sh installs Debian's package)");
    Prometheus {
        address,
        child,
        _data: data,
    }
}

impl Prometheus {
    /// An instant query's answer (`data.result`), or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let expr = expr.replace("$__rate_interval", "1m");
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.address,
            url_encode(&expr)
        );
        let reply = Http::new(Proto::H1)
            .get(&url, None, &[])
            .await
            .ok_or("prometheus did not answer")?;
        let answer: Value = serde_json::from_str(&reply.text).map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {}", reply.text));
        }
        let result = &answer["data"]["result"];
        Ok(match answer["data"]["resultType"].as_str() {
            Some("scalar") => vec![result.clone()],
            _ => result.as_array().cloned().unwrap_or_default(),
        })
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every target expression of every panel of the chart's dashboards.
fn dashboard_queries() -> Vec<(String, String)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/ferry/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let title = format!("{} / {}", dashboard["title"], panel["title"]);
                queries.push((title, target["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    queries
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_answers_the_shipped_dashboards_and_istios_standard_queries() {
    let status = format!("127.0.0.1:{}", free_port());
    let (_backends, _gw) = start_example("weather-canary", &["--status", &status]).await;
    let tcp_status = format!("127.0.0.1:{}", free_port());
    let (_tcp_backends, _tcp_gw) =
        start_example("tls-passthrough", &["--status", &tcp_status]).await;
    let prometheus = prometheus(&[&status, &tcp_status]);
    support::eventually_within(
        "prometheus scrapes the gateway",
        Duration::from_secs(30),
        || async {
            let up = prometheus
                .query(r#"up{job="ferry-gateway"}"#)
                .await
                .unwrap_or_default();
            up.first().is_some_and(|s| s["value"][1] == "1")
        },
    )
    .await;
    // Traffic over several scrapes, so rates have samples apart.
    let http = Http::new(Proto::H1);
    for round in 0..6 {
        for _ in 0..40 {
            let reply = support::weather_forecast(&http, &[]).await;
            assert_eq!(reply.status, 200);
        }
        let miss = http
            .get("http://127.0.0.1:18080/", Some("nowhere.example.com"), &[])
            .await;
        assert_eq!(miss.unwrap().status, 404, "round {round}");
        // A backend failing: the 5xx series.
        let failing = [("x-echo-status", "503")];
        let failed = http
            .get(
                "http://127.0.0.1:18080/",
                Some("weather.example.com"),
                &failing,
            )
            .await;
        assert_eq!(failed.unwrap().status, 503, "round {round}");
        support::legacy_tcp_exchange().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    support::eventually_within(
        "prometheus scraped the traffic",
        Duration::from_secs(30),
        || async {
            let total = prometheus
                .query("sum(istio_requests_total)")
                .await
                .unwrap_or_default();
            total
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok())
                == Some(252.0)
        },
    )
    .await;
    // ...and once more after it, so every rate sees the increase.
    support::eventually_within(
        "rates over the traffic",
        Duration::from_secs(30),
        || async {
            let rate = prometheus
                .query("sum(rate(ferry_requests_total[1m]))")
                .await
                .unwrap_or_default();
            rate.first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|r| r > 0.0)
        },
    )
    .await;
    let mut failures = Vec::new();
    for (title, expr) in dashboard_queries() {
        match prometheus.query(&expr).await {
            Ok(result) if result.is_empty() && !may_be_empty(&expr) => {
                failures.push(format!("{title}: no data for {expr}"))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{title}: {e}")),
        }
    }
    for expr in ISTIO_QUERIES {
        match prometheus.query(expr).await {
            Ok(result) if result.is_empty() => failures.push(format!("Istio: no data for {expr}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("Istio: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The numbers are the traffic's: 246 to the weather Service (6 failed), split over its
    // two workloads.
    let by_workload = prometheus
        .query(r#"sum by (destination_workload) (istio_requests_total{reporter="source", destination_service="weather.weather.svc.cluster.local"})"#)
        .await
        .unwrap();
    let total: f64 = by_workload
        .iter()
        .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 246.0, "{by_workload:?}");
    assert_eq!(by_workload.len(), 2, "{by_workload:?}");
}
