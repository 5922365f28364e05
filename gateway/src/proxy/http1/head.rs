//! The request head, parsed with httparse into offsets of the connection's read buffer, and
//! the framing checks RFC 9112 asks of a proxy (a message that could be read two ways is
//! refused rather than guessed at: that is how requests are smuggled past a proxy).

use super::span::{is_token_in_list, Span};
use crate::header_lookup::HeaderLookup;

/// Size limits of a request head (nginx's and Envoy's defaults are near these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeadLimits {
    #[serde(rename = "max_request_line_bytes")]
    pub max_request_line: usize,
    #[serde(rename = "max_request_head_bytes")]
    pub max_head: usize,
    #[serde(rename = "max_request_headers")]
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: 8 * 1024,
            max_head: 60 * 1024,
            max_headers: 100,
        }
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BodyFraming {
    #[default]
    None,
    Length(u64),
    Chunked,
}

/// Why a head was refused: the status to answer (the connection is closed after it).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// A parsed request head. Reused across the requests of a connection (its header list keeps
/// its capacity).
#[derive(Default, Debug)]
pub struct RequestHead {
    pub method: Span,
    /// The request target in origin form (path and query; for an absolute-form target, what
    /// follows its authority, which may be empty).
    pub target: Span,
    /// The authority of an absolute-form target: it replaces the Host header (RFC 9112
    /// section 3.2.2).
    pub authority: Option<Span>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(Span, Span)>,
    /// Bytes of the head, up to and including the empty line.
    pub len: usize,
    pub body: BodyFraming,
    /// Index of the Host header.
    pub host: Option<usize>,
    /// The client wants the connection kept after this request.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// Upgrade requested (WebSocket, h2c...).
    pub upgrade: bool,
    /// Any header named by Connection besides close / keep-alive / upgrade: those headers are
    /// hop-by-hop too and must be found and dropped.
    pub connection_names_others: bool,
}

impl RequestHead {
    /// Parses `buf`. `Ok(false)`: the head is not complete yet (read more and call again).
    pub fn parse(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<bool, Refusal> {
        // Left uninitialised: httparse writes the slots it uses (zeroing 128 of them cost
        // about 500 instructions a request).
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let slots = &mut slots[..limits.max_headers.min(128)];
        let mut request = httparse::Request::new(&mut []);
        let status = match request.parse_with_uninit_headers(buf, slots) {
            Ok(status) => status,
            Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many headers")),
            Err(httparse::Error::Version) => return Err(refuse(505, "HTTP version")),
            Err(_) => return Err(refuse(400, "malformed request head")),
        };
        let httparse::Status::Complete(len) = status else {
            return check_partial(buf, limits).map(|_| false);
        };
        if len > limits.max_head {
            return Err(refuse(431, "request head too large"));
        }
        if line_length(buf) > limits.max_request_line {
            return Err(refuse(414, "request line too long"));
        }
        self.fill(buf, &request, len)?;
        Ok(true)
    }

    fn fill(
        &mut self,
        buf: &[u8],
        request: &httparse::Request<'_, '_>,
        len: usize,
    ) -> Result<(), Refusal> {
        let method = request.method.unwrap_or_default();
        let target = request.path.unwrap_or_default();
        self.method = Span::within(buf, method.as_bytes());
        (self.authority, self.target) = split_absolute_form(buf, target.as_bytes());
        self.minor_version = request.version.unwrap_or(1);
        self.len = len;
        self.headers.clear();
        self.headers.extend(request.headers.iter().map(|h| {
            (
                Span::within(buf, h.name.as_bytes()),
                Span::within(buf, h.value),
            )
        }));
        self.check_headers(buf)
    }

    /// Host, framing and connection options, with RFC 9112's refusals.
    fn check_headers(&mut self, buf: &[u8]) -> Result<(), Refusal> {
        let mut host = None;
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut connection = ConnectionOptions::default();
        self.expect_continue = false;
        for (index, (name, value)) in self.headers.iter().enumerate() {
            let name = name.of(buf);
            let value = value.of(buf);
            if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(refuse(400, "control character in a header value"));
            }
            if name.eq_ignore_ascii_case(b"host") {
                if host.replace(index).is_some() {
                    return Err(refuse(400, "repeated Host header"));
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(content_length(value, length)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = Some(final_coding_is_chunked(value)?);
            } else if name.eq_ignore_ascii_case(b"connection") {
                connection.read(value);
            } else if name.eq_ignore_ascii_case(b"expect") {
                self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        if host.is_none() && self.minor_version == 1 {
            return Err(refuse(400, "missing Host header"));
        }
        self.host = host;
        self.body = match (chunked, length) {
            (Some(_), Some(_)) => {
                return Err(refuse(400, "both Content-Length and Transfer-Encoding"))
            }
            (Some(_), None) if self.minor_version == 0 => {
                return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"))
            }
            (Some(true), None) => BodyFraming::Chunked,
            (Some(false), None) => {
                return Err(refuse(400, "Transfer-Encoding not ending in chunked"))
            }
            (None, Some(0)) | (None, None) => BodyFraming::None,
            (None, Some(n)) => BodyFraming::Length(n),
        };
        self.keep_alive = match self.minor_version {
            0 => connection.keep_alive && !connection.close,
            _ => !connection.close,
        };
        self.upgrade = connection.upgrade;
        self.connection_names_others = connection.others;
        Ok(())
    }

    pub fn method<'b>(&self, buf: &'b [u8]) -> &'b str {
        self.method.text(buf)
    }

    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b str {
        self.target.text(buf)
    }

    /// Path and query of the target ("/" for an absolute-form target without a path).
    pub fn path_and_query<'b>(&self, buf: &'b [u8]) -> (&'b str, Option<&'b str>) {
        let target = self.target(buf);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        (if path.is_empty() { "/" } else { path }, query)
    }

    /// The target's authority (absolute form) or else the Host header.
    pub fn host<'b>(&self, buf: &'b [u8]) -> &'b str {
        match self.authority {
            Some(authority) => authority.text(buf),
            None => self
                .host
                .map_or("", |index| self.headers[index].1.text(buf)),
        }
    }

    /// The head's header lookup over `buf`.
    pub fn lookup<'a>(&'a self, buf: &'a [u8]) -> HeadLookup<'a> {
        HeadLookup { head: self, buf }
    }
}

/// A head and its buffer, read as headers by the shared decision code.
pub struct HeadLookup<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl HeaderLookup for HeadLookup<'_> {
    fn nth_value(&self, name: &str, n: usize) -> Option<&[u8]> {
        self.head
            .headers
            .iter()
            .filter(|(header, _)| header.of(self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .nth(n)
            .map(|(_, value)| value.of(self.buf))
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in &self.head.headers {
            let name = String::from_utf8_lossy(name.of(self.buf)).to_ascii_lowercase();
            f(&name, value.of(self.buf));
        }
    }
}

/// `http://authority/path?query` -> (authority, `/path?query`); other targets are kept whole.
fn split_absolute_form(buf: &[u8], target: &[u8]) -> (Option<Span>, Span) {
    let scheme_end = ["http://", "https://"]
        .iter()
        .find(|s| target.len() >= s.len() && target[..s.len()].eq_ignore_ascii_case(s.as_bytes()))
        .map(|s| s.len());
    let Some(start) = scheme_end else {
        return (None, Span::within(buf, target));
    };
    let rest = &target[start..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    (
        Some(Span::within(buf, &rest[..end])),
        Span::within(buf, &rest[end..]),
    )
}

/// An incomplete head may not grow past the limits while we wait for the rest.
fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), Refusal> {
    let line_ended = buf.contains(&b'\n');
    if !line_ended && buf.len() > limits.max_request_line {
        return Err(refuse(414, "request line too long"));
    }
    if buf.len() > limits.max_head {
        return Err(refuse(431, "request head too large"));
    }
    Ok(())
}

fn line_length(buf: &[u8]) -> usize {
    buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len())
}

/// Content-Length: digits only; a list or a repeated header must repeat one value.
fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, Refusal> {
    let mut found = seen;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 18 || !item.iter().all(u8::is_ascii_digit) {
            return Err(refuse(400, "invalid Content-Length"));
        }
        let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(refuse(400, "differing Content-Length values"));
        }
        found = Some(n);
    }
    found.ok_or_else(|| refuse(400, "invalid Content-Length"))
}

/// Whether the last transfer coding is `chunked` (it must be, for a request). Codings are
/// tokens; a parameter or anything odd is refused.
fn final_coding_is_chunked(value: &[u8]) -> Result<bool, Refusal> {
    let last = value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty())
        .ok_or_else(|| refuse(400, "empty Transfer-Encoding"))?;
    Ok(last.eq_ignore_ascii_case(b"chunked"))
}

/// The tokens of the Connection header(s).
#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    others: bool,
}

impl ConnectionOptions {
    fn read(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() {
                self.others = true;
            }
        }
    }
}

/// Whether `name` is hop-by-hop for this message: always-hop-by-hop names, and any name listed
/// in one of the Connection headers (`connection_values`).
pub fn is_hop_by_hop(name: &[u8], connection_values: &mut dyn Iterator<Item = &[u8]>) -> bool {
    const ALWAYS: [&[u8]; 5] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"proxy-connection",
    ];
    if ALWAYS.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-"))
    {
        return true;
    }
    for list in connection_values {
        if is_token_in_list(list, name) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;
