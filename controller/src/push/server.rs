//! The controller's port: proxies' push streams (HTTP/2, also HTTP/1.1 chunked for curl),
//! `/debug/proxies`, `/metrics` and `/ready`.

use bytes::Bytes;
use ferry_model::push::SUBSCRIBE_PATH;
use ferry_model::push::{encode_line, ControllerFrame, LineDecoder, ProxyFrame, Scope};
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::{Proxies, Publisher};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A proxy must say who it is this soon after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PushState {
    pub publisher: Arc<Publisher>,
    pub proxies: Arc<Proxies>,
    pub registry: Registry,
    /// True once every watched kind has been listed.
    pub synced: watch::Receiver<bool>,
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<PushState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("push connection ended: {e}");
            }
        });
    }
}

async fn handle(
    state: Arc<PushState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::POST, SUBSCRIBE_PATH) => subscribe(state, req.into_body()).await,
        (&Method::GET, "/debug/proxies") => json(&debug_proxies(&state)),
        (&Method::GET, "/metrics") => metrics(&state.registry),
        (&Method::GET, "/ready") if *state.synced.borrow() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "syncing\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
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

/// Reads the Hello, then streams the scope's snapshots while recording ACKs and NACKs.
async fn subscribe(state: Arc<PushState>, mut body: Incoming) -> Response<Body> {
    let mut decoder = LineDecoder::default();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, first_frame(&mut body, &mut decoder)).await;
    let (proxy, scope) = match hello {
        Ok(Ok(ProxyFrame::Hello { proxy, scope })) => (proxy.to_string(), scope),
        Ok(Ok(other)) => return refuse(format!("first frame must be hello, got {other:?}")),
        Ok(Err(e)) => return refuse(e),
        Err(_) => return refuse("no hello within 10 s".into()),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(session(state, proxy, scope, body, decoder, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
        .expect("valid response")
}

async fn first_frame(body: &mut Incoming, decoder: &mut LineDecoder) -> Result<ProxyFrame, String> {
    loop {
        let Some(frame) = body.frame().await else {
            return Err("stream closed before hello".into());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if let Some(first) = decoder.push::<ProxyFrame>(data)?.into_iter().next() {
                return Ok(first);
            }
        }
    }
}

fn refuse(message: String) -> Response<Body> {
    tracing::warn!("push stream refused: {message}");
    let line = encode_line(&ControllerFrame::Error { message });
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .body(Full::new(Bytes::from(line)).boxed_unsync())
        .expect("valid response")
}

/// One proxy's stream: current snapshot at once, every newer one after, until either side
/// goes away.
async fn session(
    state: Arc<PushState>,
    proxy: String,
    scope: Scope,
    mut body: Incoming,
    mut decoder: LineDecoder,
    tx: mpsc::Sender<Bytes>,
) {
    let connected_at = state.proxies.connected(&proxy, &scope_label(&scope));
    tracing::info!(proxy, scope = %scope_label(&scope), "proxy connected");
    let mut snapshots = state.publisher.subscribe(&scope);
    snapshots.mark_changed();
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() { break; }
                let published = snapshots.borrow_and_update().clone();
                let Some(published) = published else { continue };
                if tx.send(published.frame.clone()).await.is_err() { break; }
                state.proxies.sent(&proxy, published.version);
            }
            frame = body.frame() => {
                let Some(Ok(frame)) = frame else { break };
                let Some(data) = frame.data_ref() else { continue };
                match decoder.push::<ProxyFrame>(data) {
                    Ok(frames) => frames.into_iter().for_each(|f| record(&state, &proxy, f)),
                    Err(e) => { tracing::warn!(proxy, "bad frame from proxy: {e}"); break; }
                }
            }
        }
    }
    state.proxies.disconnected(&proxy, connected_at);
    tracing::info!(proxy, "proxy disconnected");
}

fn record(state: &PushState, proxy: &str, frame: ProxyFrame) {
    match frame {
        ProxyFrame::Ack { version } => state.proxies.acked(proxy, version),
        ProxyFrame::Nack { version, reasons } => state.proxies.nacked(proxy, version, reasons),
        ProxyFrame::Hello { .. } => tracing::warn!(proxy, "second hello ignored"),
    }
}

/// How a scope is shown: the Gateway, else the labels.
pub fn scope_label(scope: &Scope) -> String {
    if !scope.gateway.is_empty() {
        return scope.gateway.to_string();
    }
    let labels: Vec<String> = scope
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.join(",")
}

fn json(value: &serde_json::Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .expect("valid response")
}

fn metrics(registry: &Registry) -> Response<Body> {
    let mut buffer = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(buffer)).boxed_unsync())
        .expect("valid response")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync())
        .expect("valid response")
}
