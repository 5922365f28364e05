//! The proxy's side of the connection to the controller: TLS verified against the mesh's
//! roots (the `ferry-ca-root` ConfigMap mounted in the pod), and the pod's projected
//! ServiceAccount token (audience `ferry`) on every request. Both files are read at each
//! connection: kubelet rotates the token and a root rotation updates the bundle.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PINGs on the control connection: a controller that stops answering (a link down,
/// a node gone, a restart the proxy never heard of) is noticed within interval + timeout,
/// and the proxy reconnects instead of waiting on a dead stream while its snapshot ages.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the controller is and how to prove who this proxy is.
#[derive(Clone, Debug)]
pub struct ControlChannel {
    /// `host:port` of the controller's proxy port.
    pub address: String,
    /// PEM roots the controller's certificate must chain to.
    pub root_file: PathBuf,
    /// The projected ServiceAccount token.
    pub token_file: PathBuf,
}

/// An open HTTP/2 connection and the token to send on it.
pub struct Connected<B> {
    pub sender: http2::SendRequest<B>,
    pub token: String,
}

impl ControlChannel {
    /// Dials the controller over TLS (HTTP/2) and reads the current token.
    pub async fn connect<B>(&self) -> Result<Connected<B>, String>
    where
        B: hyper::body::Body + Unpin + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let token = self.token()?;
        let connector = tokio_rustls::TlsConnector::from(self.tls_config()?);
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tls =
            tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(self.server_name()?, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS with the controller: {e}"))?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Connected { sender, token })
    }

    /// POSTs `body` (JSON) to `path` and returns the JSON answer.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, String> {
        let mut connected = self.connect::<Full<Bytes>>().await?;
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let request = http::Request::post(format!("https://{}{path}", self.address))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", connected.token))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = connected
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!("controller answered {status}: {}", text.trim()));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("controller's answer: {e}"))
    }

    pub fn token(&self) -> Result<String, String> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("token {}: {e}", self.token_file.display()))?;
        Ok(token.trim().to_string())
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let pem = std::fs::read(&self.root_file)
            .map_err(|e| format!("controller root {}: {e}", self.root_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: CertificateDer = cert.map_err(|e| format!("controller root: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("controller root: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no certificate", self.root_file.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The host part of the address, as the certificate must name it.
    fn server_name(&self) -> Result<ServerName<'static>, String> {
        let host = match self.address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => self.address.as_str(),
        };
        ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
    }
}
