//! Admin HTTP server: readiness, configuration dump, Prometheus metrics.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// Binds `addr` and serves the admin endpoints until the process exits.
pub async fn serve(addr: SocketAddr, engine: Arc<Engine>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let engine = engine.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&engine, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn handle(engine: &Engine, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" if engine.store.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet\n"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/config_dump" => json(&config_dump(engine)),
        "/metrics" | "/stats/prometheus" => {
            let mut response = text(StatusCode::OK, &engine.metrics.render());
            response.headers_mut().insert(
                "content-type",
                "text/plain; version=0.0.4".parse().expect("static header"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: /ready /healthz /config_dump /metrics\n",
        ),
    }
}

fn config_dump(engine: &Engine) -> serde_json::Value {
    let active = engine.active();
    let status = engine.status();
    serde_json::json!({
        "version": active.as_ref().map(|s| s.version),
        "snapshot": active.as_deref(),
        "reports": status.reports,
        "last_rejected": status.last_rejected,
        "listener_errors": status.listener_errors,
    })
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    response
}
