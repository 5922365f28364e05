//! The controller's monitoring port (loopback by default, as it shows every proxy's state):
//! `/debug/proxies` (read by `ferry proxy-status`), `/metrics`, `/ready`. Nothing on it
//! changes anything or carries a secret.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, TextEncoder};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use super::server::{Body, PushState};

pub async fn serve(listener: TcpListener, state: Arc<PushState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<PushState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/debug/proxies") => json(&debug_proxies(&state)),
        (&Method::GET, "/metrics") => metrics(&state),
        (&Method::GET, "/ready") => ready(&state),
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: /debug/proxies /metrics /ready\n",
        ),
    };
    Ok(response)
}

pub(super) fn ready(state: &PushState) -> Response<Body> {
    if *state.synced.borrow() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "syncing\n")
    }
}

fn debug_proxies(state: &PushState) -> serde_json::Value {
    let held_back: Vec<_> = state
        .publisher
        .rejected()
        .into_iter()
        .map(|(scope, reasons)| serde_json::json!({"scope": scope, "reasons": reasons}))
        .collect();
    serde_json::json!({"proxies": state.proxies.list(), "heldBack": held_back})
}

pub(super) fn json(value: &serde_json::Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .expect("valid response")
}

fn metrics(state: &PushState) -> Response<Body> {
    let mut buffer = Vec::new();
    let _ = TextEncoder::new().encode(&state.registry.gather(), &mut buffer);
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(buffer)).boxed_unsync())
        .expect("valid response")
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync())
        .expect("valid response")
}
