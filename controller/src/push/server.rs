//! The controller's port for proxies (TLS, HTTP/2 and HTTP/1.1): the push streams
//! (`POST /ferry.v1/subscribe`), the certificate authority (`POST /ferry.v1/certificate`)
//! and `/ready`. Every call but `/ready` is authenticated by the proxy's ServiceAccount token
//! and limited to what that identity may have ([`super::access`]). Operators' endpoints
//! (`/debug/proxies`, `/metrics`) are on the monitoring port ([`super::monitoring`]).

use bytes::Bytes;
use ferry_model::identity::{CertificateRequest, CertificateResponse, CERTIFICATE_PATH};
use ferry_model::push::{
    encode_line, ControllerFrame, LineDecoder, ProxyFrame, Scope, MAX_PROXY_FRAME_BYTES,
    SUBSCRIBE_PATH,
};
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounterVec, Registry};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::access::{bearer_token, entitled_scope, refusal_counter, Authenticate, Refusal};
use super::{Proxies, Publisher};
use crate::ca::tokens::Caller;
use crate::ca::CurrentAuthority;

pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A proxy must say who it is this soon after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake (or an HTTP request head) must complete this soon.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most; beyond, new ones are closed at once (and counted).
const MAX_CONNECTIONS: usize = 16_384;
/// Streams per HTTP/2 connection: a proxy needs one push stream and a certificate call.
const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// Interval (and timeout) of the HTTP/2 PINGs to each proxy.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Largest certificate request body.
const MAX_CSR_BYTES: usize = 64 * 1024;

pub struct PushState {
    pub publisher: Arc<Publisher>,
    pub proxies: Arc<Proxies>,
    pub registry: Registry,
    /// True once every watched kind has been listed.
    pub synced: watch::Receiver<bool>,
    pub authenticator: Arc<dyn Authenticate>,
    pub authority: Arc<CurrentAuthority>,
    /// The controller's namespace: gateways there may serve Ingress TLS hosts.
    pub ingress_namespace: String,
    /// Where proxies' traffic summaries go (set when the controller serves a dashboard).
    pub dashboard: std::sync::OnceLock<Arc<crate::dashboard::Dashboard>>,
    refusals: IntCounterVec,
}

impl PushState {
    pub fn new(
        publisher: Arc<Publisher>,
        registry: Registry,
        synced: watch::Receiver<bool>,
        authenticator: Arc<dyn Authenticate>,
        authority: Arc<CurrentAuthority>,
        ingress_namespace: &str,
    ) -> PushState {
        PushState {
            publisher,
            proxies: Arc::new(Proxies::new(&registry)),
            refusals: refusal_counter(&registry),
            registry,
            synced,
            authenticator,
            authority,
            ingress_namespace: ingress_namespace.into(),
            dashboard: std::sync::OnceLock::new(),
        }
    }

    /// Logs and counts a refusal, and builds its answer.
    fn refuse(&self, refusal: Refusal, message: String) -> Response<Body> {
        tracing::warn!(
            reason = refusal.label(),
            "controller refused a proxy: {message}"
        );
        self.refusals.with_label_values(&[refusal.label()]).inc();
        let status = match refusal {
            Refusal::NoToken | Refusal::BadToken => StatusCode::UNAUTHORIZED,
            Refusal::NotEntitled => StatusCode::FORBIDDEN,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        };
        let line = encode_line(&ControllerFrame::Error { message });
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(line)).boxed_unsync())
            .expect("valid response")
    }
}

/// Every proxy reconnects at once after a controller restart: the accept queue holds that
/// herd (4,096, the kernel's somaxconn cap here) while TLS handshakes drain it, instead of
/// the 128 of a plain bind whose overflow the proxies see as stalls and resets.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listening socket for the push port (and the controller's other ports) with that queue.
pub fn listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Serves TLS connections until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<PushState>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state
                .refusals
                .with_label_values(&[Refusal::Overloaded.label()])
                .inc();
            tracing::warn!(%peer, "connection limit ({MAX_CONNECTIONS}) reached: closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (state, acceptor) = (state.clone(), acceptor.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let Ok(Ok(tls)) = handshake.await else {
                tracing::debug!(%peer, "TLS handshake failed or timed out");
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(64 * 1024);
            // PINGs find proxies gone without a word (their node lost, a link down), so
            // their streams, and their place in proxy-status, do not linger.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
                .keep_alive_timeout(KEEPALIVE_INTERVAL)
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .max_header_list_size(16 * 1024);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!("push connection ended: {e}");
            }
            drop(slot);
        });
    }
}

async fn handle(
    state: Arc<PushState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => super::monitoring::ready(&state),
        (&Method::POST, SUBSCRIBE_PATH) => match authenticate(&state, &req).await {
            Ok(caller) => subscribe(state, caller, req.into_body()).await,
            Err(refused) => refused,
        },
        (&Method::POST, CERTIFICATE_PATH) => match authenticate(&state, &req).await {
            Ok(caller) => certificate(&state, &caller, req.into_body()).await,
            Err(refused) => refused,
        },
        _ => super::monitoring::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// The ServiceAccount behind the request's token.
async fn authenticate(
    state: &PushState,
    req: &Request<Incoming>,
) -> Result<Caller, Response<Body>> {
    let Some(token) = bearer_token(req.headers()) else {
        return Err(state.refuse(Refusal::NoToken, "no bearer token".into()));
    };
    state
        .authenticator
        .authenticate(token)
        .await
        .map_err(|e| state.refuse(Refusal::BadToken, e))
}

/// Signs the proxy's CSR for its own ServiceAccount (whatever the CSR asks for).
async fn certificate(state: &PushState, caller: &Caller, body: Incoming) -> Response<Body> {
    let bytes = match Limited::new(body, MAX_CSR_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return state.refuse(Refusal::BadRequest, format!("{caller}: body: {e}")),
    };
    let request: CertificateRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => return state.refuse(Refusal::BadRequest, format!("{caller}: {e}")),
    };
    let authority = state.authority.get();
    let signed =
        authority.sign_workload(&request.csr_pem, &caller.namespace, &caller.service_account);
    match signed {
        Ok(cert_chain_pem) => {
            tracing::info!(%caller, "signed a workload certificate");
            let response = CertificateResponse {
                cert_chain_pem,
                trust_bundle_pem: authority.trust_bundle_pem().to_string(),
            };
            super::monitoring::json(&serde_json::to_value(response).unwrap_or_default())
        }
        Err(e) => state.refuse(Refusal::BadRequest, format!("{caller}: {e}")),
    }
}

/// Reads the Hello, checks the scope against the caller's identity, then streams the scope's
/// snapshots while recording ACKs and NACKs.
async fn subscribe(state: Arc<PushState>, caller: Caller, mut body: Incoming) -> Response<Body> {
    let mut decoder = LineDecoder::with_limit(MAX_PROXY_FRAME_BYTES);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, first_frame(&mut body, &mut decoder)).await;
    let (proxy, scope) = match hello {
        Ok(Ok(ProxyFrame::Hello { proxy, scope })) => (proxy.to_string(), scope),
        Ok(Ok(other)) => {
            let message = format!("first frame must be hello, got {other:?}");
            return state.refuse(Refusal::BadRequest, message);
        }
        Ok(Err(e)) => return state.refuse(Refusal::BadRequest, e),
        Err(_) => return state.refuse(Refusal::BadRequest, "no hello within 10 s".into()),
    };
    let scope = match entitled_scope(&caller, &scope, &state.ingress_namespace) {
        Ok(scope) => scope,
        Err(e) => return state.refuse(Refusal::NotEntitled, format!("proxy {proxy}: {e}")),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(session(state, proxy, caller, scope, body, decoder, tx));
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

/// One proxy's stream: current snapshot at once, every newer one after, until either side
/// goes away.
async fn session(
    state: Arc<PushState>,
    proxy: String,
    caller: Caller,
    scope: Scope,
    mut body: Incoming,
    mut decoder: LineDecoder,
    tx: mpsc::Sender<Bytes>,
) {
    let connected_at = state.proxies.connected(&proxy, &scope_label(&scope));
    tracing::info!(proxy, identity = %caller, scope = %scope_label(&scope), "proxy connected");
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
                    Ok(frames) => frames.into_iter().for_each(|f| record(&state, &proxy, &caller, f)),
                    Err(e) => { tracing::warn!(proxy, "bad frame from proxy: {e}"); break; }
                }
            }
        }
    }
    state.proxies.disconnected(&proxy, connected_at);
    tracing::info!(proxy, "proxy disconnected");
}

fn record(state: &PushState, proxy: &str, caller: &Caller, frame: ProxyFrame) {
    match frame {
        ProxyFrame::Ack { version } => state.proxies.acked(proxy, version),
        ProxyFrame::Nack { version, reasons } => state.proxies.nacked(proxy, version, reasons),
        ProxyFrame::Hello { .. } => tracing::warn!(proxy, "second hello ignored"),
        ProxyFrame::Summary { mut summary } => {
            if let Some(dashboard) = state.dashboard.get() {
                crate::dashboard::cluster::attribute(&mut summary, &caller.namespace);
                dashboard.record(proxy, &summary);
            }
        }
    }
}

/// How a scope is shown: the Gateway, else the labels.
pub fn scope_label(scope: &Scope) -> String {
    if !scope.gateway.is_empty() {
        return scope.gateway.to_string();
    }
    if let Some(namespace) = &scope.mesh_namespace {
        return format!("mesh:{namespace}");
    }
    let labels: Vec<String> = scope
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.join(",")
}
