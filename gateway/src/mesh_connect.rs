//! Mutual TLS to a meshed endpoint, as Pingora's custom L4 connector: both request paths (the
//! HTTP/1 loop's transport connector and pingora-proxy's) dial through it, and the TLS
//! session is handed to them as the "socket" they speak HTTP over. The server must present
//! a certificate from the mesh's roots naming exactly the identity the snapshot expects for
//! the endpoint (its Pod's ServiceAccount); anything else fails the connection.

use async_trait::async_trait;
use ferry_model::SpiffeId;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_core::{Error, ErrorType, OrErr, Result};
use rustls::pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::mesh_identity::{peer_id, WorkloadIdentity, ALPN_MESH_H2, ALPN_MESH_HTTP1};

/// Dials one meshed endpoint over mTLS.
#[derive(Debug)]
pub struct MeshConnect {
    identity: Arc<WorkloadIdentity>,
    config: Arc<rustls::ClientConfig>,
    expected: SpiffeId,
}

/// The two client configurations of a proxy (by inner protocol), built once.
#[derive(Debug)]
pub struct MeshClients {
    identity: Arc<WorkloadIdentity>,
    http1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl MeshClients {
    pub fn new(identity: Arc<WorkloadIdentity>) -> Self {
        MeshClients {
            http1: identity.client_config(ALPN_MESH_HTTP1),
            h2: identity.client_config(ALPN_MESH_H2),
            identity,
        }
    }

    pub fn identity(&self) -> &Arc<WorkloadIdentity> {
        &self.identity
    }

    /// A connector for an endpoint expected to be `expected`, speaking HTTP/2 inside or not.
    pub fn connector(&self, expected: SpiffeId, h2: bool) -> Arc<MeshConnect> {
        Arc::new(MeshConnect {
            identity: self.identity.clone(),
            config: if h2 {
                self.h2.clone()
            } else {
                self.http1.clone()
            },
            expected,
        })
    }
}

#[async_trait]
impl L4Connect for MeshConnect {
    async fn connect(&self, addr: &PingoraAddr) -> Result<Stream> {
        let PingoraAddr::Inet(addr) = addr else {
            return Error::e_explain(ErrorType::ConnectError, "mesh mTLS needs an IP endpoint");
        };
        if !self.identity.is_ready() {
            // Fail closed: this endpoint requires mutual TLS and there is no certificate yet.
            return Error::e_explain(
                ErrorType::ConnectError,
                "mesh mTLS required but this proxy has no workload certificate yet",
            );
        }
        let tcp = TcpStream::connect(addr)
            .await
            .or_err(ErrorType::ConnectError, "mesh mTLS: TCP connect failed")?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from("ferry-mesh").expect("valid name");
        let tls = connector
            .connect(name, tcp)
            .await
            .or_err(ErrorType::TLSHandshakeFailure, "mesh mTLS handshake failed")?;
        let peer = peer_id(tls.get_ref().1.peer_certificates());
        if peer.as_ref() != Some(&self.expected) {
            let found = peer.map_or("no SPIFFE ID".to_string(), |p| p.to_string());
            return Error::e_explain(
                ErrorType::InvalidCert,
                format!("mesh mTLS: {addr} is {found}, expected {}", self.expected),
            );
        }
        Ok(Stream::from(VirtualSocketStream::new(Box::new(TlsSocket(
            tls,
        )))))
    }
}

/// The TLS session as the socket Pingora reads and writes (mesh mTLS and origination).
#[derive(Debug)]
pub(crate) struct TlsSocket(pub(crate) TlsStream<TcpStream>);

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().0.set_nodelay(true),
            _ => Ok(()),
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
