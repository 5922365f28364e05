//! The buffers an exchange needs (the head being written, the upstream's bytes) are lent by
//! the worker for the request and given back when it completes, and so is the read buffer:
//! an idle keep-alive connection holds none. nginx keeps about 1 KiB per idle connection, and
//! a proxy in front of thousands of idle clients should not keep more.
//!
//! The read buffer is lent per poll: while a connection waits for its next request, each
//! readiness check borrows a spare buffer for the read and returns it when nothing came, so
//! the waiting task owns no buffer between polls (Pingora's stream offers no buffer-less
//! readiness wait; a read into a borrowed buffer is the same syscall).

use bytes::BytesMut;
use pingora_core::protocols::Stream;
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use tokio::io::AsyncReadExt;

use super::span::Span;
use super::write::HeaderEdits;
use super::Conn;

/// A parsed head's header list (name and value spans).
type HeaderList = Vec<(Span, Span)>;

/// The read buffer lent to a connection when bytes arrive (a typical request head fits;
/// larger ones grow it).
pub const READ_BUFFER: usize = 1024;
/// A read buffer a large head grew past this is let go rather than kept among the spares.
const MAX_IDLE_READ_BUFFER: usize = 4 * READ_BUFFER;
/// Spare exchange buffers kept per worker: enough for the exchanges a worker has in flight
/// at once in steady load, not a burst's worth kept for ever.
const MAX_SPARE: usize = 32;

#[derive(Default)]
struct Spare {
    heads: Vec<Vec<u8>>,
    upstream: Vec<BytesMut>,
    edits: Vec<HeaderEdits>,
    reads: Vec<BytesMut>,
    header_lists: Vec<HeaderList>,
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
        if !conn.edits.has_capacity() {
            conn.edits = spare.edits.pop().unwrap_or_default();
        }
    });
}

/// Lends the head parser a header list when the connection has none (it gave it back when it
/// went idle).
pub fn lend_header_list(list: &mut HeaderList) {
    if list.capacity() == 0 {
        if let Some(spare) = SPARE.with(|spare| spare.borrow_mut().header_lists.pop()) {
            *list = spare;
        }
    }
}

/// Takes the exchange buffers and the read buffer back when the connection has nothing more
/// buffered (a pipelined request keeps them).
pub fn give_back(conn: &mut Conn) {
    if !conn.buf.is_empty() {
        return;
    }
    give_back_read_buffer(std::mem::take(&mut conn.buf));
    let mut header_list = std::mem::take(&mut conn.head.headers);
    let mut head = std::mem::take(&mut conn.out);
    let mut upstream = std::mem::take(&mut conn.upstream_buf);
    let mut edits = std::mem::take(&mut conn.edits);
    header_list.clear();
    head.clear();
    upstream.clear();
    edits.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if header_list.capacity() > 0 && spare.header_lists.len() < MAX_SPARE {
            spare.header_lists.push(header_list);
        }
        if head.capacity() > 0 && spare.heads.len() < MAX_SPARE {
            spare.heads.push(head);
            spare.upstream.push(upstream);
            spare.edits.push(edits);
        }
    });
}

/// Reads what the client sent next into `buf`. When `buf` owns no memory (an idle
/// connection), a spare buffer is borrowed for each poll and returned unless bytes came.
pub async fn read_lent(io: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| {
        let lent = buf.capacity() == 0;
        if lent {
            *buf = take_read_buffer();
        } else {
            buf.reserve(READ_BUFFER);
        }
        let polled = pin!(io.read_buf(buf)).poll(cx);
        if lent && buf.is_empty() {
            give_back_read_buffer(std::mem::take(buf));
        }
        polled
    })
    .await
}

fn take_read_buffer() -> BytesMut {
    let spare = SPARE.with(|spare| spare.borrow_mut().reads.pop());
    let mut buf = spare.unwrap_or_default();
    buf.reserve(READ_BUFFER);
    buf
}

/// Keeps an emptied read buffer for the next connection that has bytes to read; one a large
/// head grew is let go.
fn give_back_read_buffer(mut buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > MAX_IDLE_READ_BUFFER {
        return;
    }
    buf.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.reads.len() < MAX_SPARE {
            spare.reads.push(buf);
        }
    });
}
