//! The proxy's two HTTP ports.
//!
//! - admin (loopback only): readiness, configuration dump, endpoints, metrics, run-time log
//!   level. It changes the proxy and shows its configuration, so only the pod itself (or a
//!   `kubectl port-forward`) may reach it, as Envoy's admin on 127.0.0.1:15000 in Istio.
//! - status (what the cluster must reach: kubelet probes, Prometheus): readiness, liveness
//!   and metrics, read-only, as Istio's 15020/15021/15090.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::app_health::AppProbes;
use crate::engine::Engine;

/// Reads (None) or replaces (Some) the log filter; returns the filter in effect.
pub type LogControl = Arc<dyn Fn(Option<&str>) -> Result<String, String> + Send + Sync>;

/// The admin address must be a loopback one: admin changes the proxy and shows its
/// configuration. Anything the cluster must reach is on the status port.
pub fn check_loopback(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "--admin {addr}: the admin port binds loopback only (it serves /config_dump and \
             POST /logging); use --status for what the cluster reaches (probes, metrics), or \
             kubectl port-forward to reach admin"
        ))
    }
}

/// Binds `addr` (loopback, see [`check_loopback`]) and serves the admin endpoints until the
/// process exits.
pub async fn serve(
    addr: SocketAddr,
    engine: Arc<Engine>,
    log_control: LogControl,
) -> std::io::Result<SocketAddr> {
    let addr = check_loopback(addr).map_err(std::io::Error::other)?;
    serve_with(addr, move |req, _local| {
        let response = admin(&engine, &log_control, req);
        async move { response }
    })
    .await
}

/// Binds `addr` and serves the read-only status endpoints (readiness, liveness, metrics,
/// and the app's rewritten kubelet probes under `/app-health/`) until the process exits.
pub async fn serve_status(
    addr: SocketAddr,
    engine: Arc<Engine>,
    probes: Arc<AppProbes>,
) -> std::io::Result<SocketAddr> {
    serve_with(addr, move |req, local: SocketAddr| {
        let (engine, probes) = (engine.clone(), probes.clone());
        async move {
            match probes.get(req.uri().path()) {
                // The address kubelet dialled: the pod's, where the app is probed.
                Some(probe) => probe.check(local.ip()).await,
                None => status(&engine, &req),
            }
        }
    })
    .await
}

/// Serves HTTP/1.1 on `addr`; `handle` gets each request and the local address its
/// connection reached.
async fn serve_with<H, F>(addr: SocketAddr, handle: H) -> std::io::Result<SocketAddr>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let Ok(local) = tcp.local_addr() else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = handle(req, local);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn admin(
    engine: &Engine,
    log_control: &LogControl,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/logging" => logging(log_control, &req),
        "/endpoints" => json(&endpoints(engine)),
        "/config_dump" => json(&config_dump(engine)),
        "/ready" | "/healthz" | "/metrics" | "/stats/prometheus" => status(engine, &req),
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: /ready /healthz /config_dump /endpoints /metrics /stats/prometheus /logging\n",
        ),
    }
}

/// What kubelet and Prometheus read. Istio's names are answered too (`/healthz/ready` on
/// its 15021, `/stats/prometheus` on 15090), so existing probes and scrape configs work.
fn status(engine: &Engine, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/ready" | "/healthz/ready" if engine.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" | "/healthz/ready" => {
            text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet\n")
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
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
            "endpoints: /ready /healthz/ready /healthz /metrics /stats/prometheus\n",
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
        "identity": identity(engine),
        "snapshot": snapshot,
        "reports": status.reports,
        "last_rejected": status.last_rejected,
        "listener_errors": status.listener_errors,
        "limits": engine.limits(),
    })
}

/// The workload certificate's identity and validity (never its key).
fn identity(engine: &Engine) -> serde_json::Value {
    let Some(svid) = engine.identity.svid() else {
        return serde_json::Value::Null;
    };
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    serde_json::json!({
        "spiffe_id": svid.uri,
        "not_before_unix": unix(svid.not_before),
        "not_after_unix": unix(svid.not_after),
    })
}

/// The admin port is for operators and debugging tools: certificates are shown, their keys
/// are not, nor are password hashes.
fn redact_private_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            for (name, member) in members.iter_mut() {
                if name == "private_key_pem" || name == "password_hash" {
                    *member = ferry_model::PrivateKeyPem::REDACTED.into();
                } else {
                    redact_private_keys(member);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_private_keys),
        _ => {}
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
