//! The sidecar-injection admission webhook: `POST /inject` with an AdmissionReview (v1) for a
//! Pod, answered with the JSON patch of [`crate::inject`]. Served over TLS (the API server
//! calls webhooks over HTTPS only) with the certificate the chart generates.

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::inject::{patch_for, InjectConfig};

pub const INJECT_PATH: &str = "/inject";

/// Webhook requests larger than this are refused (a Pod is a few KiB).
const MAX_REVIEW_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook certificate: {0}")]
    Certificate(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `listen` and serves injection until the process ends.
pub async fn serve(
    listen: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
    config: InjectConfig,
) -> Result<(), WebhookError> {
    let tls = tls_config(cert_pem, key_pem)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| WebhookError::Listen {
            addr: listen,
            source,
        })?;
    tracing::info!(addr = %listen, "injection webhook listening (TLS)");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let config = Arc::new(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, config) = (acceptor.clone(), config.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(config.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!("webhook connection ended: {e}");
            }
        });
    }
}

fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let key = ferry_model::certified_key(cert_pem, key_pem).map_err(WebhookError::Certificate)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn handle(
    config: Arc<InjectConfig>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != INJECT_PATH {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            json!({"error": "POST /inject"}),
        ));
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string()}),
            ))
        }
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string()}),
            ))
        }
    };
    Ok(reply(StatusCode::OK, review_response(&review, &config)))
}

/// The AdmissionReview answer: always allowed (injection never blocks a pod), with a patch
/// when the pod gets a sidecar.
pub fn review_response(review: &Value, config: &InjectConfig) -> Value {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"], "allowed": true});
    let kind = request["kind"]["kind"].as_str().unwrap_or_default();
    if kind == "Pod" {
        match patch_for(&request["object"], config) {
            Ok(patch) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(encoded);
                let name = request["object"]["metadata"]["generateName"]
                    .as_str()
                    .or(request["name"].as_str());
                tracing::info!(
                    namespace = request["namespace"].as_str(),
                    pod = name,
                    "sidecar injected"
                );
            }
            Err(skipped) => tracing::debug!(?skipped, "pod not injected"),
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts")
}
