//! The downstream connection as both request loops see it: the accepted socket (a gateway's
//! cleartext connections), Pingora's stream (the mesh's), or the TLS session on one, behind a
//! small write buffer, implementing the traits Pingora's HTTP code asks of a stream.
//!
//! Pingora's HTTP/1 server writes a response header and its body in separate calls and flushes
//! when the response is complete; its own listeners put a write buffer (one MSS) under that so
//! a small response leaves in one segment. This one is allocated only while a write waits for
//! its flush, so idle connections hold none. Ferry binds ports itself (they follow the snapshot)
//! and Pingora keeps its buffer setter crate-private, so without this wrapper every response
//! costs two `send` syscalls — on loopback each one also runs the receiver's TCP stack. Over
//! TLS the buffer also keeps header and body in one record. The wrapper adds the buffer and
//! delegates everything else to the transport underneath.

use crate::h2_guard::{self, H2Guard};
use async_trait::async_trait;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, ALPN};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::ready;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// One TCP segment's worth, as Pingora's own listeners use: a typical response header plus a
/// small body leave together, a large body bypasses the buffer.
const WRITE_BUFFER: usize = pingora_core::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE;

/// What a downstream connection runs on: a gateway's plain socket, Pingora's stream (the
/// mesh's captured connections), or TLS terminated over one.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug + 'static {
    /// Pingora's stream underneath, when there is one: what it records is reported from it.
    fn l4(&self) -> Option<&L4Stream>;
    fn l4_mut(&mut self) -> Option<&mut L4Stream>;
    fn raw_fd(&self) -> RawFd;
    /// Present on TLS connections; Pingora reads it to skip the cleartext HTTP/2 sniffing.
    fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        None
    }
    fn alpn(&self) -> Option<ALPN> {
        None
    }
    /// Puts bytes back in front of what is read next (cleartext transports only).
    fn unread(&mut self, _bytes: &[u8]) {}
    /// Where a transport without Pingora's stream keeps the socket digest once made.
    fn digest_cell(&self) -> Option<&std::sync::OnceLock<Arc<SocketDigest>>> {
        None
    }
    /// Whether bytes can be peeked (the cleartext HTTP/2 preface check).
    const PEEKABLE: bool;
}

impl Transport for L4Stream {
    fn l4(&self) -> Option<&L4Stream> {
        Some(self)
    }

    fn l4_mut(&mut self) -> Option<&mut L4Stream> {
        Some(self)
    }

    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn unread(&mut self, bytes: &[u8]) {
        self.rewind(bytes);
    }

    const PEEKABLE: bool = true;
}

/// A gateway's cleartext connection: the socket itself, and bytes put back to be read again
/// (the HTTP/2 preface the loop read before handing the connection to Pingora). Pingora's
/// stream would add about 450 bytes per connection (buffers, digests, timings) that nothing
/// on this path reads.
#[derive(Debug)]
pub struct PlainTcp {
    tcp: TcpStream,
    replay: Vec<u8>,
    /// Made the first time Pingora's path asks (it asks per request); Ferry's loop reads the
    /// addresses once without keeping it (`fresh_socket_digest`).
    digest: std::sync::OnceLock<Arc<SocketDigest>>,
}

impl PlainTcp {
    pub fn new(tcp: TcpStream) -> Self {
        PlainTcp {
            tcp,
            replay: Vec::new(),
            digest: std::sync::OnceLock::new(),
        }
    }

    /// A connection whose client a PROXY protocol header named: the digest every path reads
    /// the client from is made now, with that address (so such a connection keeps it while
    /// idle, the price of not reading the socket's peer).
    pub fn with_client(tcp: TcpStream, client: std::net::SocketAddr) -> Self {
        let plain = PlainTcp::new(tcp);
        let digest = digest_with_client(plain.raw_fd(), client);
        let _ = plain.digest.set(Arc::new(digest));
        plain
    }
}

/// A socket digest that reports `client` as the peer instead of asking the socket (the
/// local address and the original destination are still the socket's).
pub fn digest_with_client(fd: RawFd, client: std::net::SocketAddr) -> SocketDigest {
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(client.into()));
    digest
}

impl DownstreamIo<PlainTcp> {
    /// The socket's digest, not kept: an idle connection should not hold its 400 bytes.
    pub fn fresh_socket_digest(&self) -> SocketDigest {
        SocketDigest::from_raw_fd(self.transport.raw_fd())
    }

    /// Whether the digest was made already (a PROXY protocol header named the client).
    pub fn has_digest(&self) -> bool {
        self.transport.digest.get().is_some()
    }
}

impl Transport for PlainTcp {
    fn l4(&self) -> Option<&L4Stream> {
        None
    }

    fn l4_mut(&mut self) -> Option<&mut L4Stream> {
        None
    }

    fn raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    fn unread(&mut self, bytes: &[u8]) {
        self.replay.splice(0..0, bytes.iter().copied());
    }

    fn digest_cell(&self) -> Option<&std::sync::OnceLock<Arc<SocketDigest>>> {
        Some(&self.digest)
    }

    const PEEKABLE: bool = true;
}

impl AsyncRead for PlainTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A terminated TLS session, with what Pingora asks about it computed once at handshake.
#[derive(Debug)]
pub struct TlsTransport {
    stream: TlsStream<L4Stream>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
}

impl TlsTransport {
    pub fn new(stream: TlsStream<L4Stream>) -> Self {
        let session = stream.get_ref().1;
        let cipher = session
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let version = session
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        // A verified client certificate (mesh mTLS, or a listener validating client
        // certificates) may name the peer's SPIFFE ID; it travels in the digest's
        // peer-certificate field, where both request paths read it for metrics, logs and
        // authorization (`peer_identity`); the certificate's SHA-256 goes in its digest field
        // (x-forwarded-client-cert's Hash).
        let peer = crate::mesh_identity::peer_id(session.peer_certificates());
        let organization = peer.map(|id| id.to_string());
        let cert_digest = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| {
                ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())
                    .as_ref()
                    .to_vec()
            })
            .unwrap_or_default();
        // Pingora's digest has no field for the server name the client asked for, and Ferry
        // reports no certificate serial numbers: the SNI travels in that slot
        // (`requested_server_name`), for AuthorizationPolicy's `connection.sni`.
        let sni = session.server_name().map(str::to_ascii_lowercase);
        let digest = Arc::new(SslDigest::new(
            cipher,
            version,
            organization,
            sni,
            cert_digest,
        ));
        let alpn = match session.alpn_protocol() {
            Some(b"h2" | crate::mesh_identity::ALPN_MESH_H2) => Some(ALPN::H2),
            Some(b"http/1.1" | crate::mesh_identity::ALPN_MESH_HTTP1) => Some(ALPN::H1),
            _ => None,
        };
        TlsTransport {
            stream,
            digest,
            alpn,
        }
    }
}

impl Transport for TlsTransport {
    fn l4(&self) -> Option<&L4Stream> {
        Some(self.stream.get_ref().0)
    }

    fn l4_mut(&mut self) -> Option<&mut L4Stream> {
        Some(self.stream.get_mut().0)
    }

    fn raw_fd(&self) -> RawFd {
        self.stream.get_ref().0.as_raw_fd()
    }

    fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn alpn(&self) -> Option<ALPN> {
        self.alpn.clone()
    }

    const PEEKABLE: bool = false;
}

impl AsyncRead for TlsTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The transport and its write buffer. The buffer is allocated when a small write arrives
/// and released once flushed, so an idle keep-alive connection holds none (tokio's
/// `BufWriter` kept 1,460 bytes per connection for its whole life).
#[derive(Debug)]
pub struct DownstreamIo<T: Transport = L4Stream> {
    transport: T,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    sent: usize,
    /// On a client's HTTP/2 connection: the flood checks (crate::h2_guard).
    h2: Option<Box<H2Watch>>,
}

/// An HTTP/2 connection's flood checks and where they are counted.
#[derive(Debug)]
struct H2Watch {
    guard: H2Guard,
    abuse: prometheus::IntCounterVec,
    /// Caught: a GOAWAY is on its way and reads end.
    closing: bool,
}

impl<T: Transport> DownstreamIo<T> {
    pub fn new(transport: T) -> Self {
        DownstreamIo {
            transport,
            pending: Vec::new(),
            sent: 0,
            h2: None,
        }
    }

    /// Records what the server wrote on an HTTP/2 connection (`accepted` bytes of `bufs`).
    fn watch_written(&mut self, bufs: &[&[u8]], mut accepted: usize) {
        let Some(watch) = self.h2.as_mut() else {
            return;
        };
        for buf in bufs {
            let n = accepted.min(buf.len());
            watch.guard.outbound(&buf[..n]);
            accepted -= n;
        }
        for code in watch.guard.take_goaways() {
            let kind = match code {
                h2_guard::ENHANCE_YOUR_CALM => "goaway_enhance_your_calm",
                0x1 => "goaway_protocol_error",
                _ => "goaway_other_error",
            };
            watch.abuse.with_label_values(&[kind]).inc();
        }
    }

    /// Checks what the client sent on an HTTP/2 connection; true when it turned out to be a
    /// flood: a GOAWAY (when the output is at a frame boundary) goes out and reads end.
    fn watch_read(&mut self, bytes: &[u8]) -> bool {
        let Some(watch) = self.h2.as_mut() else {
            return false;
        };
        let Some(abuse) = watch.guard.inbound(bytes) else {
            return false;
        };
        tracing::debug!(abuse = abuse.as_str(), "HTTP/2 client flooding: GOAWAY");
        watch.abuse.with_label_values(&[abuse.as_str()]).inc();
        watch.closing = true;
        if watch.guard.at_frame_boundary() {
            let goaway = h2_guard::goaway_frame(0x7fff_ffff, h2_guard::ENHANCE_YOUR_CALM);
            self.buffer(&goaway);
        }
        true
    }

    /// Writes out what is buffered, then lets the buffer go.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let written =
                ready!(Pin::new(&mut self.transport).poll_write(cx, &self.pending[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn buffer(&mut self, bytes: &[u8]) {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(WRITE_BUFFER);
        }
        self.pending.extend_from_slice(bytes);
    }
}

/// The SPIFFE ID (URI) of a mesh mTLS peer, from a connection's TLS digest.
pub fn peer_identity(digest: Option<&SslDigest>) -> Option<Arc<str>> {
    peer_identity_str(digest).map(Into::into)
}

/// [`peer_identity`] without a copy.
pub fn peer_identity_str(digest: Option<&SslDigest>) -> Option<&str> {
    let organization = digest?.organization.as_deref()?;
    organization
        .starts_with("spiffe://")
        .then_some(organization)
}

/// The TLS server name (SNI) the client asked for, as `TlsTransport` records it.
pub fn requested_server_name(digest: Option<&SslDigest>) -> Option<&str> {
    digest?.serial_number.as_deref()
}

/// The `x-forwarded-client-cert` element for a verified client certificate (Envoy's
/// format): its SHA-256 and, when it names one, its SPIFFE ID.
pub fn client_cert_details(digest: &SslDigest) -> Option<String> {
    if digest.cert_digest.is_empty() {
        return None;
    }
    // Hex by table: a `format!` per byte would allocate 32 strings per request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hash = String::with_capacity(digest.cert_digest.len() * 2);
    for byte in &digest.cert_digest {
        hash.push(char::from(HEX[usize::from(byte >> 4)]));
        hash.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    Some(match peer_identity_str(Some(digest)) {
        Some(uri) => format!("Hash={hash};URI={uri}"),
        None => format!("Hash={hash}"),
    })
}

/// Puts `bytes` back in front of what a cleartext downstream connection reads next, so a
/// reader handed the connection later (Pingora's HTTP/2 server) sees them again. `None` when
/// the stream is not a cleartext downstream connection.
pub fn unread(
    stream: pingora_core::protocols::Stream,
    bytes: &[u8],
) -> Option<pingora_core::protocols::Stream> {
    let stream = match stream.into_any().downcast::<DownstreamIo<PlainTcp>>() {
        Ok(mut io) => {
            io.transport.unread(bytes);
            return Some(io);
        }
        Err(other) => other,
    };
    let mut io = stream.downcast::<DownstreamIo<L4Stream>>().ok()?;
    io.transport.unread(bytes);
    Some(io)
}

/// Watches a client's HTTP/2 connection for the floods h2 lets through (crate::h2_guard),
/// counting them and h2's own GOAWAYs in `abuse`. Streams that are not downstream
/// connections are returned as they are.
pub fn watch_http2(
    stream: pingora_core::protocols::Stream,
    abuse: &prometheus::IntCounterVec,
) -> pingora_core::protocols::Stream {
    fn watched<T: Transport>(
        stream: pingora_core::protocols::Stream,
        abuse: &prometheus::IntCounterVec,
    ) -> pingora_core::protocols::Stream {
        match stream.into_any().downcast::<DownstreamIo<T>>() {
            Ok(mut io) => {
                io.h2 = Some(Box::new(H2Watch {
                    guard: H2Guard::default(),
                    abuse: abuse.clone(),
                    closing: false,
                }));
                io
            }
            Err(_) => unreachable!("checked with `is` first"),
        }
    }
    let any = stream.as_any();
    if any.is::<DownstreamIo<PlainTcp>>() {
        watched::<PlainTcp>(stream, abuse)
    } else if any.is::<DownstreamIo<TlsTransport>>() {
        watched::<TlsTransport>(stream, abuse)
    } else if any.is::<DownstreamIo<L4Stream>>() {
        watched::<L4Stream>(stream, abuse)
    } else {
        stream
    }
}

impl<T: Transport> AsyncRead for DownstreamIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.as_mut().get_mut();
        if this.h2.is_none() {
            return Pin::new(&mut this.transport).poll_read(cx, buf);
        }
        if this.h2.as_ref().is_some_and(|w| w.closing) {
            // The GOAWAY goes out, then the connection reads as closed.
            ready!(this.poll_drain(cx))?;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.transport).poll_read(cx, buf))?;
        if this.watch_read(&buf.filled()[before..]) {
            buf.set_filled(before);
            ready!(this.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Transport> AsyncWrite for DownstreamIo<T> {
    /// Small writes wait in the buffer for the flush (Pingora writes a response header and
    /// its body separately); a write of a segment or more goes straight out.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() + buf.len() > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        if buf.len() >= WRITE_BUFFER {
            let written = ready!(Pin::new(&mut this.transport).poll_write(cx, buf))?;
            this.watch_written(&[buf], written);
            return Poll::Ready(Ok(written));
        }
        this.buffer(buf);
        this.watch_written(&[buf], buf.len());
        Poll::Ready(Ok(buf.len()))
    }

    /// Ferry's HTTP/1 loop hands a whole response head and body at once: on cleartext they
    /// go out in one `writev` without a copy. Over TLS they are buffered into one record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if T::PEEKABLE || total >= WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
            let written = ready!(Pin::new(&mut this.transport).poll_write_vectored(cx, bufs))?;
            if this.h2.is_some() {
                let slices: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
                this.watch_written(&slices, written);
            }
            return Poll::Ready(Ok(written));
        }
        if this.pending.len() + total > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        bufs.iter().for_each(|b| this.buffer(b));
        if this.h2.is_some() {
            let slices: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            this.watch_written(&slices, total);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.transport).poll_flush(cx)
    }

    /// Sends what is buffered first, so a `Connection: close` reply is sent whole before the
    /// FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.transport).poll_shutdown(cx)
    }
}

#[async_trait]
impl<T: Transport> Shutdown for DownstreamIo<T> {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            tracing::debug!("downstream shutdown: {e}");
        }
    }
}

impl<T: Transport> UniqueID for DownstreamIo<T> {
    fn id(&self) -> UniqueIDType {
        self.transport.raw_fd()
    }
}

impl<T: Transport> Ssl for DownstreamIo<T> {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.transport.ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.transport.alpn()
    }
}

/// Timings and the proxy digest are Pingora's stream's records; a plain socket keeps none
/// (Ferry reports neither, and accepts no PROXY protocol).
impl<T: Transport> GetTimingDigest for DownstreamIo<T> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.transport
            .l4()
            .map_or_else(Vec::new, |l4| l4.get_timing_digest())
    }

    fn get_read_pending_time(&self) -> Duration {
        self.transport
            .l4()
            .map_or(Duration::ZERO, |l4| l4.get_read_pending_time())
    }

    fn get_write_pending_time(&self) -> Duration {
        self.transport
            .l4()
            .map_or(Duration::ZERO, |l4| l4.get_write_pending_time())
    }
}

impl<T: Transport> GetProxyDigest for DownstreamIo<T> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.transport.l4()?.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        if let Some(l4) = self.transport.l4_mut() {
            l4.set_proxy_digest(digest)
        }
    }
}

impl<T: Transport> GetSocketDigest for DownstreamIo<T> {
    /// The digest kept by the transport (a plain socket makes it when first asked; Pingora's
    /// stream has it set), else a fresh one over the socket. Its addresses are read when first
    /// asked for. Pingora's path asks per request; Ferry's loop asks once per connection
    /// through `fresh_socket_digest`, so an idle gateway connection keeps none.
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        let fresh = || Arc::new(SocketDigest::from_raw_fd(self.transport.raw_fd()));
        if let Some(cell) = self.transport.digest_cell() {
            return Some(cell.get_or_init(fresh).clone());
        }
        self.transport
            .l4()
            .and_then(|l4| l4.get_socket_digest())
            .or_else(|| Some(fresh()))
    }

    /// Kept where Pingora's stream can hold it (the mesh sets the original destination it
    /// already knows); a plain socket's digest is made from the socket when asked for.
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        if let Some(l4) = self.transport.l4_mut() {
            l4.set_socket_digest(digest)
        }
    }
}

#[async_trait]
impl<T: Transport> Peek for DownstreamIo<T> {
    /// As Pingora's stream does it: read the bytes, then put them back to be read again.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !T::PEEKABLE {
            return Ok(false);
        }
        self.transport.read_exact(buf).await?;
        self.transport.unread(buf);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (DownstreamIo, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (DownstreamIo::new(L4Stream::from(server)), client)
    }

    #[tokio::test]
    async fn small_writes_wait_for_flush_and_large_ones_pass_through() {
        let (mut io, mut client) = pair().await;
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(50), client.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "a small write must stay buffered until flush"
        );
        io.flush().await.unwrap();
        let mut head = [0u8; 19];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 OK\r\n\r\n");

        let big = vec![b'x'; 4 * WRITE_BUFFER];
        io.write_all(&big).await.unwrap();
        let mut got = vec![0u8; big.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
    }

    #[tokio::test]
    async fn the_buffer_is_released_after_a_flush_and_vectored_writes_go_straight_out() {
        let (mut io, mut client) = pair().await;
        io.write_all(b"head").await.unwrap();
        assert!(io.pending.capacity() > 0);
        io.flush().await.unwrap();
        assert_eq!(
            io.pending.capacity(),
            0,
            "an idle connection holds no write buffer"
        );
        let parts = [
            io::IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n"),
            io::IoSlice::new(b"ok"),
        ];
        let n = io.write_vectored(&parts).await.unwrap();
        assert_eq!(n, 21);
        assert_eq!(
            io.pending.capacity(),
            0,
            "cleartext vectored writes are not copied"
        );
        let mut got = [0u8; 25];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"headHTTP/1.1 200 OK\r\n\r\nok");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered_before_closing() {
        let (mut io, mut client) = pair().await;
        io.write_all(b"bye").await.unwrap();
        Shutdown::shutdown(&mut io).await;
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"bye");
    }
}
