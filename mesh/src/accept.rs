//! The receiving side of mesh mTLS at a sidecar's inbound port: what a new connection
//! speaks (read from its first bytes without consuming them), and the handshake that
//! requires a client certificate from the mesh.
//!
//! Mesh traffic is told from an app's own TLS by the ALPN names Ferry's client offers
//! ([`ferry_gateway::mesh_identity::ALPN_MESH_H2`] and `..._HTTP1`), read from the ClientHello, as
//! Istio tells its mTLS by `istio-*` ALPN names: in PERMISSIVE mode a client speaking TLS to
//! the app itself passes through untouched.

use pingora_core::protocols::l4::stream::Stream as L4Stream;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use ferry_gateway::mesh_identity::{peer_id, WorkloadIdentity, ALPN_MESH_H2, ALPN_MESH_HTTP1};

/// How long a client may take to send its ClientHello (or first bytes).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_millis(500);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ClientHello fits one TLS record (at most 16 KiB plus the header).
const MAX_RECORD: usize = 16 * 1024 + 5;

/// What a connection's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello offering Ferry's mesh ALPN names.
    MeshTls,
    /// Anything else: plaintext, or TLS the app terminates itself.
    Other,
    /// Nothing in time (a server-first protocol) or the client closed: not HTTP either.
    Silent,
}

/// Peeks at the connection's first bytes (they stay unread).
pub async fn opening(tcp: &TcpStream) -> Opening {
    let mut buf = vec![0u8; MAX_RECORD];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_TIMEOUT;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Opening::Silent,
        };
        match client_hello_alpn(&buf[..peeked]) {
            Hello::Incomplete if peeked < MAX_RECORD => {
                // peek returns what has arrived; give the rest of the record a moment.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Hello::Alpn(names) if names.iter().any(|n| is_mesh_alpn(n)) => return Opening::MeshTls,
            _ => return Opening::Other,
        }
    }
}

fn is_mesh_alpn(name: &[u8]) -> bool {
    name == ALPN_MESH_H2 || name == ALPN_MESH_HTTP1
}

/// Completes the mesh mTLS handshake; the client must present a certificate from the mesh's
/// roots that names a SPIFFE ID. Returns the session and that ID.
pub async fn accept(
    identity: &Arc<WorkloadIdentity>,
    stream: L4Stream,
) -> Result<(TlsStream<L4Stream>, ferry_model::SpiffeId), String> {
    if !identity.is_ready() {
        return Err("no workload certificate yet".into());
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
    let session = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake failed: {e}"))?;
    let peer = peer_id(session.get_ref().1.peer_certificates())
        .ok_or("the client certificate names no SPIFFE ID")?;
    Ok((session, peer))
}

#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// More bytes are needed.
    Incomplete,
    NotTls,
    /// The ALPN names offered (empty without the extension).
    Alpn(Vec<Vec<u8>>),
}

/// The ALPN names of a TLS ClientHello at the start of `bytes` (RFC 8446 4.1.2, RFC 7301).
fn client_hello_alpn(bytes: &[u8]) -> Hello {
    // Record: type 22 (handshake), version, length.
    if bytes.is_empty() {
        return Hello::Incomplete;
    }
    if bytes[0] != 22 {
        return Hello::NotTls;
    }
    if bytes.len() < 5 {
        return Hello::Incomplete;
    }
    let record_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if bytes.len() < 5 + record_len {
        return Hello::Incomplete;
    }
    let mut reader = Reader(&bytes[5..5 + record_len]);
    parse_hello(&mut reader).map_or(Hello::NotTls, Hello::Alpn)
}

fn parse_hello(r: &mut Reader) -> Option<Vec<Vec<u8>>> {
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let body_len = r.u24()?;
    let mut body = Reader(r.take(body_len)?);
    body.take(2 + 32)?; // legacy_version, random
    let session_id = body.u8()?;
    body.take(usize::from(session_id))?;
    let suites = body.u16()?;
    body.take(usize::from(suites))?;
    let compression = body.u8()?;
    body.take(usize::from(compression))?;
    if body.0.is_empty() {
        return Some(Vec::new()); // no extensions
    }
    let extensions_len = usize::from(body.u16()?);
    let mut extensions = Reader(body.take(extensions_len)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data_len = usize::from(extensions.u16()?);
        let data = extensions.take(data_len)?;
        if kind == 16 {
            return alpn_names(data);
        }
    }
    Some(Vec::new())
}

fn alpn_names(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut r = Reader(data);
    let list_len = usize::from(r.u16()?);
    let mut list = Reader(r.take(list_len)?);
    let mut names = Vec::new();
    while !list.0.is_empty() {
        let len = list.u8()?;
        names.push(list.take(usize::from(len))?.to_vec());
    }
    Some(names)
}

/// A cursor over bytes that fails (None) instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello from rustls offering `alpn`.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn alpn_names_are_read_from_a_client_hello() {
        let hello = client_hello(&[ALPN_MESH_H2, b"h2"]);
        assert_eq!(
            client_hello_alpn(&hello),
            Hello::Alpn(vec![ALPN_MESH_H2.to_vec(), b"h2".to_vec()])
        );
        assert_eq!(client_hello_alpn(&client_hello(&[])), Hello::Alpn(vec![]));
        assert_eq!(
            client_hello_alpn(&hello[..hello.len() - 1]),
            Hello::Incomplete
        );
        assert_eq!(client_hello_alpn(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        let mut broken = hello.clone();
        broken[6] = 0xff; // a handshake length past the record
        assert_eq!(client_hello_alpn(&broken), Hello::NotTls);
    }
}
