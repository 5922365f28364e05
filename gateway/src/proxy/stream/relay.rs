//! Copying a connection's bytes both ways until both sides are done, with one reused buffer
//! per direction, half-closes passed on (a client's shutdown(SHUT_WR) reaches the backend
//! while the answer still flows back), and an idle timeout over both directions.

use prometheus::IntCounter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes moved per read: the size a TCP proxy's buffers commonly take (HAProxy's bufsize
/// is 16 KiB), large enough for bulk transfers, small enough for thousands of connections.
const BUFFER_BYTES: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both sides closed their half.
    Closed,
    /// Neither side sent anything for the idle timeout.
    Idle,
    /// A read or write failed (a reset, usually).
    Broken,
}

/// Bytes counted as they move, so long-lived connections show progress in metrics.
pub struct Counters {
    /// Client to backend (Istio's "received": the request side of a TCP connection).
    pub received: IntCounter,
    /// Backend to client ("sent": the response side).
    pub sent: IntCounter,
}

pub struct Totals {
    pub received: u64,
    pub sent: u64,
    pub ending: Ending,
}

/// Relays between `client` and `backend` until both directions end or `idle` passes without
/// a byte either way.
pub async fn relay<C, B>(client: C, backend: B, idle: Duration, counters: &Counters) -> Totals
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock {
        started: Instant::now(),
        last_activity_ms: AtomicU64::new(0),
    };
    let (received, sent) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let up = Direction {
        counter: &counters.received,
        total: &received,
        clock: &clock,
    };
    let down = Direction {
        counter: &counters.sent,
        total: &sent,
        clock: &clock,
    };
    let both = async {
        let (up_ok, down_ok) = tokio::join!(
            up.pump(&mut client_read, &mut backend_write),
            down.pump(&mut backend_read, &mut client_write)
        );
        up_ok && down_ok
    };
    let ending = tokio::select! {
        clean = both => if clean { Ending::Closed } else { Ending::Broken },
        () = clock.idle_for(idle) => Ending::Idle,
    };
    Totals {
        received: received.load(Ordering::Relaxed),
        sent: sent.load(Ordering::Relaxed),
        ending,
    }
}

/// When the relay started and when a byte last moved (ms since the start).
struct Clock {
    started: Instant,
    last_activity_ms: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    /// Returns once `idle` has passed since the last byte moved either way.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
            let quiet_until = self.started + last + idle;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until.into()).await;
        }
    }
}

/// One direction's accounting.
struct Direction<'a> {
    counter: &'a IntCounter,
    total: &'a AtomicU64,
    clock: &'a Clock,
}

impl Direction<'_> {
    /// Copies until EOF (then passes the half-close on); false when a read or write failed.
    async fn pump<R, W>(&self, from: &mut R, to: &mut W) -> bool
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Read into spare capacity: the buffer is never zeroed (a connection that moves a
        // few bytes pays for no 16 KiB memset).
        let mut buffer = bytes::BytesMut::with_capacity(BUFFER_BYTES);
        loop {
            buffer.clear();
            let n = match from.read_buf(&mut buffer).await {
                Ok(0) => return to.shutdown().await.is_ok(),
                Ok(n) => n,
                Err(_) => return false,
            };
            if to.write_all(&buffer).await.is_err() {
                return false;
            }
            self.total.fetch_add(n as u64, Ordering::Relaxed);
            self.counter.inc_by(n as u64);
            self.clock.touch();
        }
    }
}
