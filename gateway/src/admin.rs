//! Admin HTTP server: readiness, configuration dump, Prometheus metrics, run-time log level.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// Reads (None) or replaces (Some) the log filter; returns the filter in effect.
pub type LogControl = Arc<dyn Fn(Option<&str>) -> Result<String, String> + Send + Sync>;

/// Binds `addr` and serves the admin endpoints until the process exits.
pub async fn serve(
    addr: SocketAddr,
    engine: Arc<Engine>,
    log_control: LogControl,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let engine = engine.clone();
            let log_control = log_control.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let engine = engine.clone();
                    let log_control = log_control.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&engine, &log_control, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn handle(
    engine: &Engine,
    log_control: &LogControl,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/logging" => logging(log_control, &req),
        "/endpoints" => json(&endpoints(engine)),
        "/ready" if engine.is_ready() => text(StatusCode::OK, "ready\n"),
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
            "endpoints: /ready /healthz /config_dump /endpoints /metrics /stats/prometheus /logging\n",
        ),
    }
}

/// `GET /logging` shows the log filter; `POST /logging?level=FILTER` replaces it (a level
/// such as `debug`, or any tracing filter such as `info,ferry_gateway=trace`).
fn logging(log_control: &LogControl, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let wanted = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("level="))
            .map(|v| v.replace("%2C", ",").replace("%3D", "="))
    });
    let result = match (req.method(), wanted) {
        (&hyper::Method::POST, Some(level)) => log_control(Some(&level)),
        (&hyper::Method::POST, None) => Err("POST /logging?level=FILTER".to_string()),
        _ => log_control(None),
    };
    match result {
        Ok(current) => text(StatusCode::OK, &format!("{current}\n")),
        Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    }
}

fn config_dump(engine: &Engine) -> serde_json::Value {
    let active = engine.active();
    let status = engine.status();
    let mut snapshot = serde_json::to_value(active.as_deref()).unwrap_or_default();
    redact_private_keys(&mut snapshot);
    serde_json::json!({
        "version": active.as_ref().map(|s| s.version),
        "snapshot": snapshot,
        "reports": status.reports,
        "last_rejected": status.last_rejected,
        "listener_errors": status.listener_errors,
    })
}

/// The admin port is for operators and debugging tools: certificates are shown, their keys
/// are not.
fn redact_private_keys(snapshot: &mut serde_json::Value) {
    let Some(listeners) = snapshot.get_mut("listeners").and_then(|l| l.as_array_mut()) else {
        return;
    };
    let certificates = listeners
        .iter_mut()
        .filter_map(|l| l.pointer_mut("/tls/certificates"))
        .filter_map(|c| c.as_array_mut())
        .flatten();
    for certificate in certificates {
        if let Some(key) = certificate.get_mut("private_key_pem") {
            *key = ferry_model::PrivateKeyPem::REDACTED.into();
        }
    }
}

/// Every endpoint of every cluster with its run-time health, for `ferry proxy-config
/// endpoints` (like Envoy's /clusters).
fn endpoints(engine: &Engine) -> serde_json::Value {
    let Some(snapshot) = engine.store.load() else {
        return serde_json::json!({ "clusters": [] });
    };
    let mut clusters: Vec<_> = snapshot
        .clusters()
        .map(|cluster| {
            let status = cluster.state.endpoint_status();
            let endpoints: Vec<_> = cluster
                .cluster
                .endpoints
                .iter()
                .zip(status)
                .map(|(endpoint, status)| {
                    serde_json::json!({
                        "address": endpoint.address,
                        "pod": endpoint.pod,
                        "health": if status.ejected { "EJECTED" } else { "HEALTHY" },
                        "active_requests": status.active_requests,
                    })
                })
                .collect();
            serde_json::json!({ "cluster": cluster.cluster.name, "endpoints": endpoints })
        })
        .collect();
    clusters.sort_by(|a, b| a["cluster"].as_str().cmp(&b["cluster"].as_str()));
    serde_json::json!({ "version": snapshot.version, "clusters": clusters })
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
