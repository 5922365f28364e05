//! Writing heads: the upstream request and the downstream response are the parsed head's
//! bytes minus hop-by-hop and edited headers, plus the edits; local replies are written whole.

use std::borrow::Cow;

use super::head::is_hop_by_hop;
use super::span::Span;
use crate::proxy::respond::sanitize;
use crate::rewrite::EditHeaders;

/// A header name or value: the proxy's own are static text, a route's are copied.
type Text = Cow<'static, str>;

/// Header changes to a parsed head, applied while it is written out. Names are kept in lower
/// case.
#[derive(Default)]
pub struct HeaderEdits {
    /// Names whose original headers are dropped.
    removed: Vec<Text>,
    added: Vec<(Text, Text)>,
}

impl HeaderEdits {
    pub fn clear(&mut self) {
        self.removed.clear();
        self.added.clear();
    }

    /// Whether the lists own memory (an idle connection's should not).
    pub fn has_capacity(&self) -> bool {
        self.removed.capacity() > 0 || self.added.capacity() > 0
    }

    /// `set` for the headers the proxy itself writes (no copy of the name).
    pub fn set_own(&mut self, name: &'static str, value: impl Into<Text>) {
        self.forget_added(name);
        self.removed.push(Cow::Borrowed(name));
        self.added.push((Cow::Borrowed(name), value.into()));
    }

    fn drops(&self, name: &[u8]) -> bool {
        self.removed
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
    }

    fn forget_added(&mut self, name: &str) {
        self.added.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

fn lower(name: &str) -> Text {
    Cow::Owned(name.to_ascii_lowercase())
}

impl EditHeaders for HeaderEdits {
    fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.added
            .push((lower(name), Cow::Owned(value.to_string())));
    }

    fn add(&mut self, name: &str, value: &str) {
        self.added
            .push((lower(name), Cow::Owned(value.to_string())));
    }

    fn remove(&mut self, name: &str) {
        self.forget_added(name);
        self.removed.push(lower(name));
    }
}

/// Writes `headers` (spans of `buf`) that are end-to-end and not dropped by `edits`, then the
/// edits' additions. `connection_lists_names`: a Connection header names other headers (they
/// are hop-by-hop too and are looked for only then). The head's final empty line is left to
/// the caller.
pub fn write_headers(
    out: &mut Vec<u8>,
    buf: &[u8],
    headers: &[(Span, Span)],
    edits: &HeaderEdits,
    connection_lists_names: bool,
) {
    let connection_lists = || {
        headers
            .iter()
            .filter(move |(n, _)| {
                connection_lists_names && n.of(buf).eq_ignore_ascii_case(b"connection")
            })
            .map(|(_, v)| v.of(buf))
    };
    for (name, value) in headers {
        let name = name.of(buf);
        if is_hop_by_hop(name, &mut connection_lists()) || edits.drops(name) {
            continue;
        }
        push_header(out, name, value.of(buf));
    }
    for (name, value) in &edits.added {
        push_header(out, name.as_bytes(), value.as_bytes());
    }
}

pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response the proxy writes itself.
pub struct LocalReply<'a> {
    pub status: u16,
    pub cause: &'a str,
    pub body: &'a str,
    pub headers: &'a [(std::borrow::Cow<'static, str>, String)],
    /// The request was HEAD: headers only.
    pub head_only: bool,
    pub close: bool,
    /// The request's HTTP minor version (1.0 keeps a connection only when told so).
    pub minor_version: u8,
}

pub fn write_local_reply(out: &mut Vec<u8>, reply: &LocalReply<'_>) {
    write_status_line(out, reply.status, None);
    push_header(out, b"x-ferry-cause", sanitize(reply.cause).as_bytes());
    if !reply.headers.iter().any(|(name, _)| name == "content-type") {
        push_header(out, b"content-type", b"text/plain; charset=utf-8");
    }
    push_header(
        out,
        b"content-length",
        reply.body.len().to_string().as_bytes(),
    );
    for (name, value) in reply.headers {
        push_header(out, name.as_bytes(), value.as_bytes());
    }
    connection_header(out, reply.close, reply.minor_version);
    out.extend_from_slice(b"\r\n");
    if !reply.head_only {
        out.extend_from_slice(reply.body.as_bytes());
    }
}

/// `Connection: close` when the connection ends after this response; to an HTTP/1.0 client,
/// whose connections end by default, `Connection: keep-alive` when it stays open (RFC 9112
/// section 9.3 and appendix C.2.2).
pub fn connection_header(out: &mut Vec<u8>, close: bool, minor_version: u8) {
    if close {
        push_header(out, b"connection", b"close");
    } else if minor_version == 0 {
        push_header(out, b"connection", b"keep-alive");
    }
}

/// `HTTP/1.1 <status> <reason>`: the upstream's reason phrase when given, else the standard
/// one.
pub fn write_status_line(out: &mut Vec<u8>, status: u16, reason: Option<&[u8]>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status_digits(out, status);
    out.push(b' ');
    let standard = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    out.extend_from_slice(reason.unwrap_or(standard.as_bytes()));
    out.extend_from_slice(b"\r\n");
}

/// A status code's three digits, without a `String` per response.
fn push_status_digits(out: &mut Vec<u8>, status: u16) {
    let status = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_use_the_given_or_the_standard_reason() {
        for (status, reason, line) in [
            (200, None, "HTTP/1.1 200 OK\r\n"),
            (404, Some(&b"Nope"[..]), "HTTP/1.1 404 Nope\r\n"),
            (503, None, "HTTP/1.1 503 Service Unavailable\r\n"),
            (599, None, "HTTP/1.1 599 Unknown\r\n"),
        ] {
            let mut out = Vec::new();
            write_status_line(&mut out, status, reason);
            assert_eq!(String::from_utf8(out).unwrap(), line);
        }
    }
}
