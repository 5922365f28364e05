//! Moving bytes: the response body copied to the client by its framing, request bodies to the
//! upstream, and the small read and write helpers both directions use.

use bytes::{Buf, BytesMut};
use pingora_core::protocols::Stream;
use std::io::{self, IoSlice};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::ChunkedScanner;
use super::pool::Upstream;
use super::response::Framing;
use super::Conn;

/// Read size while copying bodies.
const COPY_CHUNK: usize = 16 * 1024;

pub struct Copied {
    pub bytes: u64,
    /// The body ended where its framing says.
    pub complete: bool,
    /// The upstream sent bytes after the body: its connection is not reused.
    pub extra: bool,
    pub downstream_failed: bool,
}

/// Copies the body after the response head (already in `conn.out`) to the client; `dechunk`:
/// a chunked body goes out decoded (the client speaks HTTP/1.0, and the connection closes
/// after it).
pub async fn copy_body(
    conn: &mut Conn,
    upstream: &mut Upstream,
    framing: &Framing,
    timeout: Option<Duration>,
    dechunk: bool,
) -> Copied {
    let mut copied = Copied {
        bytes: 0,
        complete: false,
        extra: false,
        downstream_failed: false,
    };
    let mut body = BodyTracker::new(framing);
    let mut decoded = dechunk.then(Vec::new);
    let mut first = true;
    // Broken framing ends the loop: both sides are closed.
    while let Ok((take, done, extra)) = body.follow(&conn.upstream_buf, decoded.as_mut()) {
        let head: &[u8] = if first { &conn.out } else { &[] };
        first = false;
        let chunk = match &decoded {
            Some(data) if matches!(body, BodyTracker::Chunked(_)) => &data[..],
            _ => &conn.upstream_buf[..take],
        };
        if write_all_vectored(&mut conn.io, &[head, chunk])
            .await
            .is_err()
        {
            copied.downstream_failed = true;
            return copied;
        }
        copied.bytes += chunk.len() as u64;
        conn.upstream_buf.advance(take);
        if let Some(data) = &mut decoded {
            data.clear();
        }
        if done {
            copied.complete = true;
            copied.extra = extra || !conn.upstream_buf.is_empty();
            return copied;
        }
        conn.upstream_buf.clear();
        match read_some(
            &mut upstream.io,
            &mut conn.upstream_buf,
            COPY_CHUNK,
            timeout,
        )
        .await
        {
            Ok(0) if body.ends_at_close() => {
                copied.complete = true;
                return copied;
            }
            Ok(n) if n > 0 => {}
            _ => return copied, // upstream failed mid-body: the client sees the close
        }
    }
    copied
}

/// Where the body ends, by framing.
enum BodyTracker {
    Empty,
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
}

impl BodyTracker {
    fn new(framing: &Framing) -> Self {
        match framing {
            Framing::None => BodyTracker::Empty,
            Framing::Length(n) => BodyTracker::Length(*n),
            Framing::Chunked => BodyTracker::Chunked(ChunkedScanner::default()),
            Framing::UntilClose => BodyTracker::UntilClose,
        }
    }

    /// Of `bytes`: how many belong to the body, whether the body is complete, whether bytes
    /// follow it. A chunked body's data is appended to `decoded` when given.
    fn follow(
        &mut self,
        bytes: &[u8],
        decoded: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool, bool), ()> {
        match self {
            BodyTracker::Empty => Ok((0, true, !bytes.is_empty())),
            BodyTracker::Length(left) => {
                let take = (bytes.len() as u64).min(*left) as usize;
                *left -= take as u64;
                Ok((take, *left == 0, *left == 0 && take < bytes.len()))
            }
            BodyTracker::Chunked(scanner) => {
                let take = match decoded {
                    Some(data) => scanner.decode(bytes, data),
                    None => scanner.scan(bytes),
                }
                .map_err(|_| ())?;
                Ok((take, scanner.is_done(), take < bytes.len()))
            }
            BodyTracker::UntilClose => Ok((bytes.len(), false, false)),
        }
    }

    fn ends_at_close(&self) -> bool {
        matches!(self, BodyTracker::UntilClose)
    }
}

pub enum ReadError {
    Io,
    Timeout,
}

/// Reads what the peer sent into `buf`, with room for at least `room` more bytes.
pub async fn read_some(
    io: &mut Stream,
    buf: &mut BytesMut,
    room: usize,
    timeout: Option<Duration>,
) -> Result<usize, ReadError> {
    buf.reserve(room);
    let read = io.read_buf(buf);
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .map_err(|_| ReadError::Timeout)?,
        None => read.await,
    };
    result.map_err(|_| ReadError::Io)
}

/// Copies exactly `length` bytes from `from` to `to` (a request body too large to hold);
/// a write `to` does not take within `write_timeout` fails with `TimedOut`.
pub async fn copy_exact(
    from: &mut Stream,
    to: &mut Stream,
    mut length: u64,
    write_timeout: Option<Duration>,
) -> io::Result<()> {
    let mut chunk = vec![0u8; COPY_CHUNK.min(length as usize)];
    while length > 0 {
        let want = chunk.len().min(length as usize);
        let n = from.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        within(write_timeout, to.write_all(&chunk[..n])).await?;
        length -= n as u64;
    }
    within(write_timeout, to.flush()).await
}

/// `io` within `limit` (if any); running out is a `TimedOut` error.
pub async fn within<T>(
    limit: Option<Duration>,
    io: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, io)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => io.await,
    }
}

/// Reads into `buf` until it holds `want` bytes.
pub async fn read_at_least(io: &mut Stream, buf: &mut BytesMut, want: usize) -> io::Result<()> {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        if io.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

pub async fn send_all(io: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Writes every part with as few `writev` calls as the socket allows, then flushes.
pub async fn write_all_vectored(io: &mut Stream, parts: &[&[u8]]) -> io::Result<()> {
    let mut parts: smallvec::SmallVec<[&[u8]; 4]> =
        parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let slices: smallvec::SmallVec<[IoSlice<'_>; 4]> =
            parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            if written >= parts[0].len() {
                written -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][written..];
                written = 0;
            }
        }
    }
    io.flush().await
}
