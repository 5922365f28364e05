//! Accepting: the header a load balancer in front of a gateway sends first on each
//! connection, naming the client it accepted the connection from. With `--proxy-protocol` every connection of a gateway's listeners must start with one
//! (version 1 or 2, told apart by their first bytes); the address it reports becomes the
//! connection's client for X-Forwarded-For, access logs, authorization, rate limits, hashing
//! and per-client connection limits. A connection without a valid header is closed: accepting
//! it would let any client that reaches the port directly pass as the load balancer.
//!
//! The header is taken off the socket exactly, never a byte more, so what follows (a TLS
//! ClientHello, an HTTP request, a relayed protocol) is read by the code that serves the
//! connection as if the header had never been there. Parsing is the `ppp` crate's.

use std::io;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::V2_SIGNATURE;

const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 line, CRLF included (the specification's 107 bytes).
const V1_MAX: usize = 107;
/// A version 2 header's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the connection closed before a PROXY protocol header")]
    Closed,
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("reading a PROXY protocol header: {0}")]
    Io(String),
}

/// Reads the header off `tcp`. `Some(client)` when it reports an IP client; `None` for the
/// load balancer's own connections (version 2 LOCAL, version 1 UNKNOWN, or a family other
/// than IPv4/IPv6), which keep the socket's addresses, as the specification asks.
///
/// Bytes are peeked, then consumed only as far as they are known to be header: all of them
/// while the header's end is not in sight, exactly up to its end once it is. Consuming what
/// was peeked also makes the next peek wait for new bytes instead of returning the same ones.
pub async fn read(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut header = Vec::with_capacity(V2_FIXED);
    let mut window = [0u8; V1_MAX];
    loop {
        let seen = tcp.peek(&mut window).await.map_err(io_error)?;
        if seen == 0 {
            return Err(HeaderError::Closed);
        }
        let before = header.len();
        header.extend_from_slice(&window[..seen]);
        let length = length_so_far(&header)?;
        header.truncate(before);
        let take = length.map_or(seen, |total| total - before);
        header.resize(before + take, 0);
        tcp.read_exact(&mut header[before..])
            .await
            .map_err(io_error)?;
        if length.is_some() {
            return match Start::of(&header) {
                Start::V1 => parse_v1(&header),
                _ => parse_v2(&header),
            };
        }
    }
}

/// The whole header's length, when the bytes of its start seen so far tell it.
fn length_so_far(bytes: &[u8]) -> Result<Option<usize>, HeaderError> {
    match Start::of(bytes) {
        Start::Neither => Err(HeaderError::Missing),
        Start::Undecided => Ok(None),
        Start::V1 => match line_end(bytes) {
            Some(end) if end <= V1_MAX => Ok(Some(end)),
            None if bytes.len() < V1_MAX => Ok(None),
            _ => Err(HeaderError::Invalid("version 1 line over 107 bytes".into())),
        },
        Start::V2 if bytes.len() >= V2_FIXED => {
            let rest = u16::from_be_bytes([bytes[14], bytes[15]]);
            Ok(Some(V2_FIXED + usize::from(rest)))
        }
        Start::V2 => Ok(None),
    }
}

/// What the first bytes seen say.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    V1,
    V2,
    /// Too few bytes to tell, all of them agreeing with a signature so far.
    Undecided,
    Neither,
}

impl Start {
    fn of(bytes: &[u8]) -> Start {
        let agrees = |signature: &[u8]| {
            let n = bytes.len().min(signature.len());
            bytes[..n] == signature[..n]
        };
        match (agrees(V1_PREFIX), agrees(&V2_SIGNATURE)) {
            (true, _) if bytes.len() >= V1_PREFIX.len() => Start::V1,
            (_, true) if bytes.len() >= V2_SIGNATURE.len() => Start::V2,
            (false, false) => Start::Neither,
            _ => Start::Undecided,
        }
    }
}

/// The length of the version 1 line, CRLF included, when its end has arrived.
fn line_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n").map(|at| at + 2)
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let text = std::str::from_utf8(line).map_err(|_| HeaderError::Invalid("not text".into()))?;
    let header = Header::try_from(text).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unknown => None,
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

impl HeaderError {
    /// The `reason` label of `ferry_proxy_protocol_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HeaderError::Closed | HeaderError::Io(_) => "closed",
            HeaderError::Missing => "missing",
            HeaderError::Invalid(_) => "invalid",
        }
    }
}

fn io_error(e: io::Error) -> HeaderError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => HeaderError::Closed,
        _ => HeaderError::Io(e.to_string()),
    }
}
