//! The dashboard's port: the UI's files and its JSON API, read-only (GET only). Bound to
//! loopback by default (`ferry dashboard` port-forwards to it): it shows the mesh's
//! topology, which is not for everyone who can reach a pod.

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

use super::assets;

/// The UI's scripts and styles come from this port only (no CDN: clusters are often
/// air-gapped, and nothing else may run in the page).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

pub const API_INDEX: &str = "endpoints: /api/overview /api/graph?window=1m|10m \
     /api/node?id=KIND/NAMESPACE/NAME /api/gateways /api/proxies /api/messages \
     /api/export?window=1m|10m\n";

/// A refused API call: its status and a one-line reason.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

impl Refused {
    pub fn new(status: StatusCode, reason: &str) -> Refused {
        Refused(status, reason.to_string())
    }
}

/// What answers `/api/NAME?QUERY`: one controller's dashboard, or several replicas merged.
#[async_trait::async_trait]
pub trait Answer: Send + Sync + 'static {
    async fn answer(
        &self,
        api: &str,
        query: &HashMap<String, String>,
    ) -> Result<serde_json::Value, Refused>;
}

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, api: Arc<dyn Answer>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(handle(&*api, &req).await) }
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

async fn handle(api: &dyn Answer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only\n".into(),
        );
    }
    let path = req.uri().path();
    let Some(name) = path.strip_prefix("/api/") else {
        return asset(path);
    };
    match api.answer(name, &query(req.uri().query())).await {
        Ok(value) => json(&value),
        Err(Refused(status, reason)) => text(status, format!("{reason}\n")),
    }
}

/// The `window` parameter (1m by default).
pub fn window(query: &HashMap<String, String>) -> Result<super::Window, Refused> {
    let text = query.get("window").map_or("1m", String::as_str);
    super::Window::parse(text)
        .ok_or_else(|| Refused::new(StatusCode::BAD_REQUEST, "window: 1m or 10m"))
}

fn asset(path: &str) -> Response<Full<Bytes>> {
    let path = if path == "/" { "/index.html" } else { path };
    let Some((content_type, body)) = assets::get(path) else {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
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

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn query(raw: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}
