//! Raw HTTP/2 frames, written by hand: the attacks send what a well-behaved client library
//! refuses to (CONTINUATION without end, control-frame floods, header values with CR/LF).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 section 5.1), `first` holding the
/// bits above the prefix.
fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header as a literal without indexing, new name, no Huffman (section 6.2.2).
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    integer(out, 0, 7, name.len());
    out.extend_from_slice(name);
    integer(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A header as a literal with incremental indexing (it enters the dynamic table).
pub fn indexed_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x40);
    integer(out, 0, 7, name.len());
    out.extend_from_slice(name);
    integer(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A reference to table entry `index` (62 is the newest dynamic entry).
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, 0x80, 7, index);
}

/// A header block of a GET with `extra` headers (pseudo-headers first, as required).
pub fn request_block(path: &[u8], extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, b":method", b"GET");
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":authority", b"a.example");
    literal(&mut block, b":path", path);
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    block
}

/// An h2c connection with the preface and an empty SETTINGS sent.
pub async fn open(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    stream
}

/// A frame the server sent.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's or RST_STREAM's error code.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// Reads frames until the server closes, sends GOAWAY, or `quiet` passes without a frame.
pub async fn read_frames(stream: &mut TcpStream, quiet: Duration) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout(quiet, stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return (frames, true), // closed
            Err(_) => return (frames, false),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return (frames, true);
        }
        let frame = Frame {
            kind: head[3],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        let goaway = frame.kind == GOAWAY;
        frames.push(frame);
        if goaway {
            return (frames, true);
        }
    }
}

/// The `:status` of a response HEADERS frame whose block starts with a static-table status
/// (h2 encodes 200, 204, 206, 304, 400, 404, 500 as indexed fields 8-14) or a literal one.
pub fn status_of(frame: &Frame) -> Option<u16> {
    if frame.kind != HEADERS {
        return None;
    }
    let first = *frame.payload.first()?;
    let indexed = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let index = usize::from(first & 0x7f);
        return (8..=14).contains(&index).then(|| indexed[index - 8]);
    }
    // A literal with the name `:status` (index 8), value 3 ASCII digits.
    let value = frame.payload.get(2..5)?;
    std::str::from_utf8(value).ok()?.parse().ok()
}
