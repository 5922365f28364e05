//! Reading a TLS ClientHello without answering it, for routing by server name while the
//! TLS session itself passes through to the backend untouched. rustls parses the hello
//! (its `Acceptor`); the bytes read are kept to be replayed to the backend.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A ClientHello larger than this is refused (they are a few hundred bytes; post-quantum
/// key shares bring them near 2 KiB).
const MAX_HELLO_BYTES: usize = 16 * 1024;

/// The opening of a passed-through TLS connection.
pub struct Hello {
    /// The server name the client asked for (SNI), lowercased.
    pub server_name: Option<String>,
    /// Everything read from the client so far, to send to the backend first.
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("client closed before its ClientHello")]
    Closed,
    #[error("not a TLS ClientHello: {0}")]
    NotTls(String),
    #[error("ClientHello larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("reading the ClientHello: {0}")]
    Io(#[from] io::Error),
}

/// Reads from `tcp` until a whole ClientHello is in (the caller bounds the time).
pub async fn read(tcp: &mut TcpStream) -> Result<Hello, HelloError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut bytes = Vec::with_capacity(2048);
    loop {
        // Read into the vector's spare room (no buffer on the task's stack).
        let seen = bytes.len();
        if bytes.capacity() == seen {
            bytes.reserve(2048);
        }
        if tcp.read_buf(&mut bytes).await? == 0 {
            return Err(HelloError::Closed);
        }
        if bytes.len() > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        if let Some(server_name) = feed(&mut acceptor, &bytes[seen..])? {
            return Ok(Hello { server_name, bytes });
        }
    }
}

/// Gives the acceptor new bytes; Some once the hello is complete (with its server name).
fn feed(
    acceptor: &mut rustls::server::Acceptor,
    mut new: &[u8],
) -> Result<Option<Option<String>>, HelloError> {
    while !new.is_empty() {
        acceptor
            .read_tls(&mut new)
            .map_err(|e| HelloError::NotTls(e.to_string()))?;
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let name = accepted
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                return Ok(Some(name));
            }
            Err((e, _alert)) => return Err(HelloError::NotTls(e.to_string())),
        }
    }
    Ok(None)
}

/// A stream that yields `prefix` (bytes already read from it) before reading on, so a TLS
/// handshake can start from a ClientHello that was read to route the connection.
pub struct Replay<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.offset < this.prefix.len() {
            let rest = &this.prefix[this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real client's ClientHello, as rustls writes it for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        hello
    }

    #[test]
    fn the_server_name_is_read_from_a_hello_fed_a_byte_at_a_time() {
        let hello = client_hello("DB.example.com");
        let mut acceptor = rustls::server::Acceptor::default();
        let mut found = None;
        for byte in hello.chunks(1) {
            if let Some(name) = feed(&mut acceptor, byte).unwrap() {
                found = Some(name);
            }
        }
        assert_eq!(found, Some(Some("db.example.com".to_string())));
    }

    #[test]
    fn a_client_without_server_name_is_read_as_none() {
        let hello = client_hello("192.0.2.7");
        let mut acceptor = rustls::server::Acceptor::default();
        assert_eq!(feed(&mut acceptor, &hello).unwrap(), Some(None));
    }

    #[test]
    fn plaintext_is_not_a_hello() {
        let mut acceptor = rustls::server::Acceptor::default();
        let result = feed(&mut acceptor, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(result, Err(HelloError::NotTls(_))), "{result:?}");
    }
}
