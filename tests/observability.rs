//! Observability through the real binary: Istio metrics parsed with a Prometheus text
//! parser, access-log lines, trace propagation to `ferry echo`, spans received by an OTLP
//! receiver, run-time log level and `ferry proxy-config`.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_parse::{Sample, Scrape, Value};
use std::sync::{Arc, Mutex};
use support::manifests::{ep, istio_gateway, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, Proto};

const HOST: &str = "reviews.example.com";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn virtual_service() -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: shop}}\n\
         spec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n  - retries: {{attempts: 0}}\n    route: [{{destination: {{host: reviews}}}}]\n"
    )
}

/// A gateway on `port` routing reviews.example.com to one echo labelled app=reviews,v1.
async fn start(echo: &Echo, port: u16, extra: &[&str]) -> (ConfigDir, Gateway) {
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &istio_gateway("shop", "gw", port, &["*"]),
            &service(
                "shop",
                "reviews",
                80,
                &[ep(echo, &[("app", "reviews"), ("version", "v1")])],
            ),
            &virtual_service(),
        ]),
    );
    let gateway = Gateway::spawn(dir.path(), extra);
    gateway.wait_ready().await;
    (dir, gateway)
}

async fn get(port: u16, host: &str, headers: &[(&str, &str)]) -> support::Reply {
    Http::new(Proto::H1)
        .get(
            &format!("http://127.0.0.1:{port}/r?x=1"),
            Some(host),
            headers,
        )
        .await
        .expect("gateway answered")
}

async fn scrape(gateway: &Gateway) -> Scrape {
    let text = gateway.admin_get("/stats/prometheus").await;
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// A scrape once `counted` holds (within 10 s): Pingora's path counts a request in its
/// logging phase, after the response is written, so the last one may not be counted yet.
async fn scrape_when(gateway: &Gateway, counted: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let scraped = scrape(gateway).await;
        if counted(&scraped) || std::time::Instant::now() > deadline {
            return scraped;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    find(scrape, metric, labels)
        .iter()
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_metrics_count_requests_with_standard_labels() {
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, gateway) = start(&echo, port, &[]).await;
    for _ in 0..10 {
        assert_eq!(get(port, HOST, &[]).await.status, 200);
    }
    for _ in 0..4 {
        assert_eq!(
            get(port, HOST, &[("x-echo-status", "503")]).await.status,
            503
        );
    }
    for _ in 0..3 {
        assert_eq!(get(port, "unknown.example.com", &[]).await.status, 404);
    }
    let all_counted = |s: &Scrape| counter(s, "istio_requests_total", &[]) >= 17.0;
    let scrape = scrape_when(&gateway, all_counted).await;
    let served = [
        ("reporter", "source"),
        ("source_workload", "ferry-gateway"),
        ("destination_service", "reviews.shop.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "shop"),
        ("destination_workload", "reviews-0"),
        ("destination_workload_namespace", "shop"),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("destination_principal", "unknown"),
        ("source_principal", "unknown"),
        ("connection_security_policy", "unknown"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("grpc_response_status", ""),
    ];
    let with_code = |code: &'static str| {
        let mut labels = served.to_vec();
        labels.push(("response_code", code));
        labels
    };
    assert_eq!(
        counter(&scrape, "istio_requests_total", &with_code("200")),
        10.0
    );
    assert_eq!(
        counter(&scrape, "istio_requests_total", &with_code("503")),
        4.0
    );
    let no_route = [
        ("response_code", "404"),
        ("response_flags", "NR"),
        ("destination_service", "unknown"),
        ("destination_workload", "unknown"),
    ];
    assert_eq!(counter(&scrape, "istio_requests_total", &no_route), 3.0);
    // Every series carries exactly Istio's label set, and none a raw path or client host.
    for sample in find(&scrape, "istio_requests_total", &[]) {
        let text = format!("{:?}", sample.labels);
        assert!(
            !text.contains("/r") && !text.contains("unknown.example.com"),
            "{text}"
        );
    }
    let durations = find(
        &scrape,
        "istio_request_duration_milliseconds",
        &with_code("200"),
    );
    let Value::Histogram(buckets) = &durations[0].value else {
        panic!("duration is a histogram: {:?}", durations[0].value)
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(
        &bounds[..19],
        &[
            0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
            30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0
        ],
        "Istio's buckets"
    );
    assert_eq!(buckets.last().unwrap().count, 10.0);
    let response_sum = counter(&scrape, "istio_response_bytes_sum", &with_code("200"));
    assert!(
        response_sum > 10.0 * 100.0,
        "echo bodies counted: {response_sum}"
    );
    assert_eq!(
        counter(&scrape, "istio_request_bytes_count", &with_code("200")),
        10.0
    );
    // The engine's own metrics.
    assert_eq!(counter(&scrape, "ferry_snapshot_version", &[]), 1.0);
    assert_eq!(counter(&scrape, "ferry_active_requests", &[]), 0.0);
    let listener = port.to_string();
    assert!(
        counter(
            &scrape,
            "ferry_downstream_connections_total",
            &[("listener", &listener)]
        ) >= 1.0
    );
    assert_eq!(
        counter(&scrape, "ferry_requests_total", &[("listener", &listener)]),
        17.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_access_log_has_one_line_per_request() {
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, gateway) = start(&echo, port, &[]).await;
    let ok = get(
        port,
        HOST,
        &[("x-request-id", "req-1"), ("user-agent", "probe/1")],
    )
    .await;
    assert_eq!(ok.status, 200);
    get(port, "unknown.example.com", &[]).await;
    support::eventually(|| async { gateway.access_log().len() >= 2 }).await;
    let lines: Vec<serde_json::Value> = gateway
        .access_log()
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // Lines are written when each request ends, not necessarily in the order they came.
    let by_authority = |host: &str| {
        lines
            .iter()
            .find(|l| l["authority"] == host)
            .unwrap_or_else(|| panic!("a line for {host}: {lines:?}"))
    };
    let first = by_authority(HOST);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["authority"], HOST);
    assert_eq!(first["path"], "/r?x=1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["response_code"], 200);
    assert_eq!(first["response_flags"], "-");
    assert_eq!(first["request_id"], "req-1");
    assert_eq!(first["user_agent"], "probe/1");
    assert_eq!(first["upstream_host"], echo.addr.to_string());
    assert_eq!(first["upstream_cluster"], "shop/reviews:80");
    assert!(first["bytes_sent"].as_u64().unwrap() > 100);
    assert!(first["duration"].as_u64().is_some());
    assert!(first["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(first["route_name"]
        .as_str()
        .unwrap()
        .starts_with("shop/reviews"));
    let second = by_authority("unknown.example.com");
    assert_eq!(
        (
            second["response_code"].as_u64(),
            second["response_flags"].as_str()
        ),
        (Some(404), Some("NR"))
    );
    let generated = second["request_id"].as_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID was generated: {generated}");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_access_log_and_off() {
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, text) = start(&echo, port, &["--access-log", "text"]).await;
    get(port, HOST, &[("x-request-id", "req-2")]).await;
    support::eventually(|| async { !text.access_log().is_empty() }).await;
    let line = &text.access_log()[0];
    assert!(line.contains("\"GET /r?x=1 HTTP/1.1\" 200 - "), "{line}");
    assert!(line.contains("\"req-2\" \"reviews.example.com\""), "{line}");
    drop(text);
    let port = free_port();
    let (_dir, off) = start(&echo, port, &["--access-log", "off"]).await;
    get(port, HOST, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(off.access_log().is_empty());
}

/// A received span with its resource attributes (key, debug-printed value).
type ReceivedSpan = (Span, Vec<(String, String)>);

/// A real OTLP/HTTP receiver: decodes protobuf `ExportTraceServiceRequest`s.
struct OtlpReceiver {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpReceiver {
    async fn start() -> OtlpReceiver {
        use http_body_util::{BodyExt, Full};
        use prost::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let sink = sink.clone();
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            let body = req.into_body().collect().await?.to_bytes();
                            let export =
                                ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            for resource_spans in export.resource_spans {
                                let resource: Vec<(String, String)> = resource_spans
                                    .resource
                                    .iter()
                                    .flat_map(|r| r.attributes.iter())
                                    .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                                    .collect();
                                for scope in resource_spans.scope_spans {
                                    for span in scope.spans {
                                        sink.lock().unwrap().push((span, resource.clone()));
                                    }
                                }
                            }
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                bytes::Bytes::new(),
                            )))
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        OtlpReceiver { url, spans }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_context_propagates_and_spans_export_over_otlp() {
    let receiver = OtlpReceiver::start().await;
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, gateway) = start(
        &echo,
        port,
        &[
            "--tracing-endpoint",
            &receiver.url,
            "--tracing-sampling",
            "100",
        ],
    )
    .await;
    // W3C: same trace, a new span id (ours), tracestate kept, sampled flag kept.
    let traceparent = format!("00-{TRACE}-{PARENT_SPAN}-01");
    let reply = get(
        port,
        HOST,
        &[("traceparent", &traceparent), ("tracestate", "vendor=x")],
    )
    .await;
    let seen = &reply.echo()["headers"];
    let forwarded = seen["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{forwarded}"
    );
    assert_ne!(
        parts[2], PARENT_SPAN,
        "the gateway's own span is the upstream's parent"
    );
    assert_eq!(seen["tracestate"], "vendor=x");
    assert_eq!(
        seen["x-request-id"].as_str().unwrap().len(),
        36,
        "request id generated"
    );
    let our_span = parts[2].to_string();
    // B3 multi and single: answered in the same format.
    let reply = get(
        port,
        HOST,
        &[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", PARENT_SPAN),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let seen = &reply.echo()["headers"];
    assert_eq!(seen["x-b3-traceid"], TRACE);
    assert_ne!(seen["x-b3-spanid"], PARENT_SPAN);
    assert_eq!(seen["x-b3-sampled"], "1");
    let reply = get(port, HOST, &[("b3", &format!("{TRACE}-{PARENT_SPAN}-1"))]).await;
    let b3 = reply.echo()["headers"]["b3"].as_str().unwrap().to_string();
    assert!(
        b3.starts_with(TRACE) && !b3.contains(PARENT_SPAN) && b3.ends_with("-1"),
        "{b3}"
    );
    // No context: a new sampled trace starts here.
    let reply = get(port, HOST, &[]).await;
    let fresh = reply.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fresh.starts_with("00-") && fresh.ends_with("-01") && !fresh.contains(TRACE),
        "{fresh}"
    );

    support::eventually(|| async { receiver.spans.lock().unwrap().len() >= 4 }).await;
    let metrics = gateway.admin_get("/metrics").await;
    let spans = receiver.spans.lock().unwrap();
    let (span, resource) = spans
        .iter()
        .find(|(s, _)| hex(&s.span_id) == our_span)
        .expect("the W3C request's span was exported");
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN);
    assert!(span.name.starts_with("GET shop/reviews"), "{}", span.name);
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| format!("{:?}", kv.value))
            .unwrap_or_default()
    };
    assert!(
        attribute("http.response.status_code").contains("200"),
        "{:?}",
        span.attributes
    );
    assert!(attribute("upstream_cluster").contains("shop/reviews:80"));
    assert!(
        resource
            .iter()
            .any(|(k, v)| k == "service.name" && v.contains("ferry-gateway")),
        "{resource:?}"
    );
    // Traced requests are served by Ferry's HTTP/1 loop too.
    support::assert_served_by_http1_loop(&metrics);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tracing_trace_headers_pass_through_untouched() {
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, gateway) = start(&echo, port, &[]).await;
    let traceparent = format!("00-{TRACE}-{PARENT_SPAN}-01");
    let reply = get(
        port,
        HOST,
        &[("traceparent", &traceparent), ("x-request-id", "keep-me")],
    )
    .await;
    assert_eq!(reply.echo()["headers"]["traceparent"], traceparent.as_str());
    assert_eq!(reply.echo()["headers"]["x-request-id"], "keep-me");
    support::eventually(|| async { !gateway.access_log().is_empty() }).await;
    let line: serde_json::Value = serde_json::from_str(&gateway.access_log()[0]).unwrap();
    assert_eq!(
        line["trace_id"], TRACE,
        "the access log names the caller's trace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_level_changes_at_run_time() {
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, gateway) = start(&echo, port, &[]).await;
    assert_eq!(gateway.admin_get("/logging").await.trim(), "info");
    let url = format!("http://{}/logging?level=debug", gateway.admin);
    let reply = Http::new(Proto::H1)
        .send("POST", &url, None, &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!((reply.status, reply.text.trim()), (200, "debug"));
    get(port, HOST, &[]).await;
    support::eventually(|| async { gateway.logs().contains("DEBUG") }).await;
    let bad = format!("http://{}/logging?level=no%3D%3Dsuch", gateway.admin);
    let reply = Http::new(Proto::H1)
        .send("POST", &bad, None, &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(
        gateway.admin_get("/logging").await.trim(),
        "debug",
        "bad filter changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_config_prints_tables_from_a_running_proxy() {
    let echo = Echo::start("v1");
    let port = free_port();
    let (_dir, gateway) = start(&echo, port, &[]).await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("proxy-config")
            .args(args)
            .args(["--admin", &gateway.admin.to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let routes = run(&["routes"]);
    assert!(routes.starts_with("PORT"), "{routes}");
    assert!(
        routes.contains(HOST) && routes.contains("shop/reviews:80"),
        "{routes}"
    );
    let listeners = run(&["listeners"]);
    assert!(
        listeners.contains(&port.to_string()) && listeners.contains("/shop/gw"),
        "{listeners}"
    );
    let clusters = run(&["clusters"]);
    assert!(
        clusters.contains("reviews.shop.svc.cluster.local"),
        "{clusters}"
    );
    let endpoints = run(&["endpoints"]);
    assert!(
        endpoints.contains(&echo.addr.to_string()) && endpoints.contains("HEALTHY"),
        "{endpoints}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&["endpoints", "-o", "json"])).unwrap();
    assert_eq!(json["clusters"][0]["endpoints"][0]["pod"], "reviews-0");
}
