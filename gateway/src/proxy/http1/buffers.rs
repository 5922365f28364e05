//! The buffers an exchange needs (the head being written, the upstream's bytes) are lent by
//! the worker for the request and given back when it completes, so an idle keep-alive
//! connection holds only its small read buffer: nginx keeps about 1 KiB per idle connection,
//! and a proxy in front of thousands of idle clients should not keep 20 KiB each.

use bytes::BytesMut;
use std::cell::RefCell;

use super::Conn;

/// The read buffer a connection starts with and shrinks back to when idle (a typical request
/// head fits; larger ones grow it).
pub const READ_BUFFER: usize = 1024;
/// A grown read buffer larger than this is not kept while the connection idles.
const MAX_IDLE_READ_BUFFER: usize = 4 * READ_BUFFER;
/// Spare exchange buffers kept per worker: enough for the exchanges a worker has in flight
/// at once in steady load, not a burst's worth kept for ever.
const MAX_SPARE: usize = 32;

#[derive(Default)]
struct Spare {
    heads: Vec<Vec<u8>>,
    upstream: Vec<BytesMut>,
}

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::new(Spare::default());
}

/// Lends the connection its exchange buffers for one request.
pub fn lend(conn: &mut Conn) {
    if conn.out.capacity() > 0 {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        conn.out = spare
            .heads
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(1024));
        conn.upstream_buf = spare.upstream.pop().unwrap_or_default();
    });
}

/// Takes the exchange buffers back when the connection has nothing more buffered (a pipelined
/// request keeps them), and shrinks a read buffer a large head grew.
pub fn give_back(conn: &mut Conn) {
    if !conn.buf.is_empty() {
        return;
    }
    if conn.buf.capacity() > MAX_IDLE_READ_BUFFER {
        conn.buf = BytesMut::with_capacity(READ_BUFFER);
    }
    let mut head = std::mem::take(&mut conn.out);
    let mut upstream = std::mem::take(&mut conn.upstream_buf);
    if head.capacity() == 0 {
        return;
    }
    head.clear();
    upstream.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.heads.len() < MAX_SPARE {
            spare.heads.push(head);
            spare.upstream.push(upstream);
        }
    });
}
