//! Upstream connections of one worker thread: dialled with pingora-core's transport
//! connector, kept idle per endpoint address after a complete exchange. Each worker serves
//! its connections on its own single-threaded runtime (crate::workers), so the pool is a
//! thread-local: no lock, no cross-thread wakeup, no task per idle connection.

use futures::FutureExt;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// Idle connections kept per endpoint (beyond it the oldest are closed).
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// What a pooled connection is for: an endpoint, and how the connection is protected (one
/// endpoint can be reached several ways, e.g. through two DestinationRule subsets):
/// `Security::pool_class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub address: SocketAddr,
    pub security: u64,
}

/// An upstream connection and what the proxy knows of its history.
pub struct Upstream {
    pub io: Stream,
    pub key: Key,
    /// Requests sent on it, the current one included.
    pub uses: u32,
    /// Taken from the pool (so it may have been closed by the peer while idle).
    pub reused: bool,
    idle_since: Instant,
}

struct Idle {
    connections: Vec<Upstream>,
}

/// foldhash: the default SipHash cost ~600 instructions a request for this one lookup.
type Pool = HashMap<Key, Idle, foldhash::fast::RandomState>;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An idle connection for `key` that the peer has not closed, if any. Connections idle
/// longer than `idle_timeout` are closed instead.
pub fn take(key: Key, idle_timeout: Option<Duration>) -> Option<Upstream> {
    loop {
        let mut upstream = POOL.with(|pool| {
            pool.borrow_mut()
                .get_mut(&key)
                .and_then(|idle| idle.connections.pop())
        })?;
        let expired = idle_timeout.is_some_and(|limit| upstream.idle_since.elapsed() > limit);
        if !expired && still_open(&mut upstream.io) {
            upstream.reused = true;
            upstream.uses += 1;
            return Some(upstream);
        }
    }
}

/// Keeps `upstream` for the next request to its endpoint.
pub fn give_back(mut upstream: Upstream) {
    upstream.idle_since = Instant::now();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let idle = pool.entry(upstream.key).or_insert_with(|| Idle {
            connections: Vec::new(),
        });
        if idle.connections.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.connections.remove(0);
        }
        idle.connections.push(upstream);
    });
}

/// Dials `peer`, the endpoint of `key` (connect timeout from its options).
pub async fn connect(
    connector: &TransportConnector,
    peer: &HttpPeer,
    key: Key,
) -> pingora_core::Result<Upstream> {
    let io = connector.new_stream(peer).await?;
    Ok(Upstream {
        io,
        key,
        uses: 1,
        reused: false,
        idle_since: Instant::now(),
    })
}

/// An idle HTTP/1 connection has nothing to read: readable means the peer closed it (or sent
/// something unasked, which also makes it unusable). A poll that is not ready costs no
/// syscall: tokio knows from the last readiness event.
fn still_open(io: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf))
        .now_or_never()
        .is_none()
}
