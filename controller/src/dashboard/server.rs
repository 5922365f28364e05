//! The dashboard's port: the UI's files and its JSON API, read-only (GET only). Bound to
//! loopback by default (`kubectl port-forward` / `ferry dashboard` reach it): it shows the
//! mesh's topology, which is not for everyone who can reach a pod.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use super::traffic::Window;
use super::{assets, now_ms, views, Dashboard};

/// The UI's scripts and styles come from this port only (no CDN: clusters are often
/// air-gapped, and nothing else may run in the page).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, dashboard: Arc<Dashboard>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, Infallible>(handle(&dashboard, &req)) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request (also what the API tests call through a real socket).
pub fn handle(dashboard: &Dashboard, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only\n",
        );
    }
    let query = query(req.uri().query());
    let path = req.uri().path();
    match path.strip_prefix("/api/") {
        Some(api) => answer_api(dashboard, api, &query),
        None => asset(path),
    }
}

fn answer_api(
    dashboard: &Dashboard,
    api: &str,
    query: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    let now = now_ms();
    let derived = dashboard.derived();
    let value = match api {
        "graph" => {
            let window = query.get("window").map_or("1m", String::as_str);
            let Some(window) = Window::parse(window) else {
                return text(StatusCode::BAD_REQUEST, "window: 1m or 10m\n");
            };
            views::graph(
                &mut dashboard.traffic.lock().expect("traffic lock"),
                window,
                now,
            )
        }
        "node" => {
            let Some(id) = query.get("id") else {
                return text(StatusCode::BAD_REQUEST, "id: kind/namespace/name\n");
            };
            let mut traffic = dashboard.traffic.lock().expect("traffic lock");
            match views::node(&mut traffic, derived.as_deref(), id, now) {
                Some(node) => node,
                None => return text(StatusCode::NOT_FOUND, "no such node\n"),
            }
        }
        "gateways" | "messages" if derived.is_none() => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "objects not read yet\n")
        }
        "gateways" => views::gateways(derived.as_deref().expect("checked")),
        "messages" => views::messages(derived.as_deref().expect("checked")),
        "proxies" => views::proxies(&dashboard.proxies()),
        "overview" => overview(dashboard),
        _ => return text(StatusCode::NOT_FOUND, API_INDEX),
    };
    json(&value)
}

const API_INDEX: &str = "endpoints: /api/overview /api/graph?window=1m|10m \
     /api/node?id=KIND/NAMESPACE/NAME /api/gateways /api/proxies /api/messages\n";

fn overview(dashboard: &Dashboard) -> serde_json::Value {
    let traffic = dashboard.traffic.lock().expect("traffic lock");
    serde_json::json!({
        "mode": if dashboard.source.statuses_written() { "cluster" } else { "standalone" },
        "edgesKept": traffic.edge_count(),
        "edgeLimit": super::traffic::MAX_EDGES,
        "bytesPerEdge": super::traffic::EDGE_BYTES,
        "droppedEdges": traffic.dropped_edges(),
        "summariesReceived": traffic.summaries(),
        "assetsBuilt": assets::BUILT,
    })
}

fn asset(path: &str) -> Response<Full<Bytes>> {
    let path = if path == "/" { "/index.html" } else { path };
    let Some((content_type, body)) = assets::get(path) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(Bytes::from_static(body)))
        .expect("valid response")
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}

fn query(raw: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}
