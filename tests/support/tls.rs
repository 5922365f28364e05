//! Test certificates (a throwaway CA per test) and a real HTTPS client: rustls with SNI, ALPN
//! and certificate verification against that CA, hyper on top.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

use super::Reply;

pub struct TestCa {
    pub cert_pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert_pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            cert_pem,
            params,
            key,
        }
    }

    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        Leaf {
            cert_pem: params.signed_by(&key, &issuer).unwrap().pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl TestCa {
    /// A workload certificate (X.509 SVID) naming `spiffe_id`, valid from a minute ago for
    /// `lifetime`, for client and server use; the chain is the leaf alone.
    pub fn issue_svid(&self, spiffe_id: &str, lifetime: std::time::Duration) -> Leaf {
        use rcgen::{ExtendedKeyUsagePurpose, SanType};
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(60)).into();
        params.not_after = (now + lifetime).into();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        Leaf {
            cert_pem: params.signed_by(&key, &issuer).unwrap().pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A kubernetes.io/tls Secret manifest, with `data` base64-encoded as the API returns it.
pub fn tls_secret(namespace: &str, name: &str, leaf: &Leaf) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&leaf.cert_pem),
        b64(&leaf.key_pem)
    )
}

/// What an HTTPS exchange produced: the reply and the protocol ALPN picked.
pub struct HttpsReply {
    pub reply: Reply,
    pub alpn: Option<String>,
}

/// GET `https://{sni}{path}` from 127.0.0.1:`port`, trusting only `ca_pem`, offering `alpn`
/// (`h2` and/or `http/1.1`). Errors carry the handshake or request failure.
pub async fn https_get(
    port: u16,
    sni: &str,
    ca_pem: &str,
    alpn: &[&str],
    path: &str,
) -> Result<HttpsReply, String> {
    let tls = connect(port, sni, client_config(ca_pem, None, alpn)?).await?;
    let negotiated = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let request = http::Request::get(format!("https://{sni}{path}"))
        .header("host", sni)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let io = TokioIo::new(tls);
    let response = if negotiated.as_deref() == Some("h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = request;
        request.headers_mut().remove("host");
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("http/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = request;
        *request.uri_mut() = path.parse().unwrap();
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {e}"))?;
    Ok(HttpsReply {
        reply: reply_of(response).await?,
        alpn: negotiated,
    })
}

/// A client trusting `ca_pem`, presenting `client` when given, offering `alpn`.
pub fn client_config(
    ca_pem: &str,
    client: Option<&Leaf>,
    alpn: &[&str],
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::PrivateKeyDer;
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                .map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// A TLS session with 127.0.0.1:`port`, asking for `sni`.
pub async fn connect(
    port: u16,
    sni: &str,
    config: rustls::ClientConfig,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

async fn reply_of(response: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A Secret with these keys (base64 `data`, as the API returns it).
pub fn secret_with(namespace: &str, name: &str, entries: &[(&str, &str)]) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: Vec<String> = entries
        .iter()
        .map(|(key, value)| format!("  {key}: {}\n", b64(value)))
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata:\n{}",
        data.concat()
    )
}

/// An HTTPS backend on loopback (HTTP/1.1 inside), answering every request with JSON naming
/// the SNI it was asked for, whether the client presented a certificate, and the path.
pub struct TlsBackend {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    /// Serves `leaf` on 127.0.0.1; with `client_ca`, a client certificate from that CA is
    /// required.
    pub async fn start(leaf: &Leaf, client_ca: Option<&str>) -> TlsBackend {
        Self::start_on("127.0.0.1".parse().unwrap(), leaf, client_ca).await
    }

    /// [`TlsBackend::start`] on another address (a test pod's).
    pub async fn start_on(
        ip: std::net::IpAddr,
        leaf: &Leaf,
        client_ca: Option<&str>,
    ) -> TlsBackend {
        use rustls::pki_types::PrivateKeyDer;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                    .unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    let sni = session.server_name().map(String::from);
                    let client_cert = session.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let body = serde_json::json!({
                                "sni": sni, "client_cert": client_cert, "path": request.uri().path(),
                            });
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(body.to_string()),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsBackend { port, task }
    }
}

/// GET `https://{sni}{path}` over HTTP/1.1 from 127.0.0.1:`port`, trusting `ca_pem`,
/// presenting `client` when given, with extra `headers`. Errors carry the failure.
pub async fn https_get_as(
    port: u16,
    sni: &str,
    ca_pem: &str,
    client: Option<&Leaf>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let tls = connect(port, sni, client_config(ca_pem, client, &["http/1.1"])?).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http/1.1 handshake: {e}"))?;
    tokio::spawn(conn);
    // The Host is the SNI unless `headers` names another (a misdirected request).
    let is_host = |name: &str| name.eq_ignore_ascii_case("host");
    let host = headers
        .iter()
        .find(|(n, _)| is_host(n))
        .map_or(sni, |(_, v)| *v);
    let mut request = http::Request::get(path).header("host", host);
    for (name, value) in headers.iter().filter(|(n, _)| !is_host(n)) {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("request (the server may have refused the certificate): {e}"))?;
    reply_of(response).await
}

/// A rustls server configuration serving `leaf` (a test's own TLS backend).
pub fn server_config(leaf: &Leaf) -> rustls::ServerConfig {
    use rustls::pki_types::PrivateKeyDer;
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
}
