//! `ferry echo`: a backend that describes the request it received, for examples, tests
//! and benchmarks. Speaks HTTP/1.1 and h2c (prior knowledge) on one port, or HTTPS with its
//! own certificate (a backend that terminates its own TLS, for passthrough examples).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct EchoConfig {
    pub name: String,
    pub namespace: String,
    /// Print one JSON line per request on stdout (handy to watch mirrored traffic).
    pub log_requests: bool,
    /// Status answered when the request has no `x-echo-status` (a failing "pod").
    pub status: u16,
    /// Delay applied when the request has no `x-echo-delay-ms` (a slow "pod").
    pub delay_ms: u64,
    /// Answer every request with this many bytes of filler instead of the JSON
    /// description: a static responder for benchmarks.
    pub fixed_body: Option<usize>,
    /// Serve HTTPS with this configuration (HTTP/1.1 and h2 by ALPN).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What the echo server answers: a description of the request.
#[derive(Serialize)]
struct EchoReply<'a> {
    name: &'a str,
    namespace: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    host: &'a str,
    headers: BTreeMap<String, String>,
    protocol: &'static str,
    body_bytes: usize,
    /// The client address of the connection the request came on.
    peer: String,
    /// The server name the client's TLS handshake asked for, when serving HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_server_name: Option<String>,
}

pub async fn serve(listener: TcpListener, config: EchoConfig) {
    let fixed = config.fixed_body.map(|n| Bytes::from(vec![b'x'; n]));
    let config = Arc::new(config);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let config = config.clone();
        let fixed = fixed.clone();
        tokio::spawn(async move {
            let Some(tls) = config.tls.clone() else {
                return serve_connection(tcp, config, fixed, peer, None).await;
            };
            match tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await {
                Ok(session) => {
                    let name = session.get_ref().1.server_name().map(str::to_owned);
                    serve_connection(session, config, fixed, peer, name).await;
                }
                Err(e) => tracing::debug!(%peer, "echo TLS handshake failed: {e}"),
            }
        });
    }
}

async fn serve_connection<S>(
    io: S,
    config: Arc<EchoConfig>,
    fixed: Option<Bytes>,
    peer: SocketAddr,
    server_name: Option<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let config = config.clone();
        let fixed = fixed.clone();
        let server_name = server_name.clone();
        async move {
            let response = match fixed {
                Some(body) => Response::new(Full::new(body)),
                None => answer(&config, req, peer, server_name).await,
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// The TLS configuration of `ferry echo --tls-cert/--tls-key` (PEM files).
pub fn tls_from_files(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let key = ferry_model::certified_key(&read(cert)?, &read(key)?)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn answer(
    config: &EchoConfig,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls_server_name: Option<String>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let header_text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let delay = header_text("x-echo-delay-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.delay_ms);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = header_text("x-echo-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .or_else(|| StatusCode::from_u16(config.status).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or(header_text("host"))
        .unwrap_or_default();
    let reply = EchoReply {
        name: &config.name,
        namespace: &config.namespace,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        host,
        headers,
        protocol: protocol_name(parts.version),
        body_bytes,
        peer: peer.to_string(),
        tls_server_name,
    };
    let body = serde_json::to_vec(&reply).unwrap_or_default();
    if config.log_requests {
        println!("{}", String::from_utf8_lossy(&body));
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    response
}

fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}
