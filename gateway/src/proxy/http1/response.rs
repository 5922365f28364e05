//! The upstream's response head, parsed into offsets of the upstream read buffer, and how its
//! body is delimited (RFC 9112 section 6.3).

use super::span::{is_token_in_list, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD requests, 1xx, 204, 304.
    None,
    Length(u64),
    Chunked,
    /// Read until the upstream closes.
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Span,
    pub headers: Vec<(Span, Span)>,
    pub len: usize,
    pub framing: Framing,
    /// Content-Length was sent (dropped when Transfer-Encoding overrides it).
    pub has_length: bool,
    /// The upstream closes the connection after this response.
    pub close: bool,
    /// A Connection header names other (hop-by-hop) headers.
    pub connection_lists_names: bool,
    pub grpc_status: Option<u16>,
}

/// Why a response head is unusable (the try fails with 502).
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// `Ok(None)`: the head is not complete yet.
pub fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<ResponseHead>, Invalid> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut response = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut response, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => {
            return Err(Invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Invalid("malformed response head")),
    };
    let status = response.code.unwrap_or(0);
    let mut head = ResponseHead {
        status,
        reason: Span::within(buf, response.reason.unwrap_or_default().as_bytes()),
        headers: Vec::with_capacity(response.headers.len()),
        len,
        framing: Framing::UntilClose,
        has_length: false,
        close: response.version == Some(0),
        connection_lists_names: false,
        grpc_status: None,
    };
    let mut length = None;
    let mut chunked = None;
    for header in response.headers.iter() {
        let (name, value) = (header.name.as_bytes(), header.value);
        head.headers
            .push((Span::within(buf, name), Span::within(buf, value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            length = Some(content_length(value, length)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = Some(ends_in_chunked(value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.connection_lists_names |=
                value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .any(|t| {
                        !t.is_empty()
                            && ![&b"close"[..], b"keep-alive", b"upgrade"]
                                .iter()
                                .any(|known| t.eq_ignore_ascii_case(known))
                    });
            if is_token_in_list(value, b"close") {
                head.close = true;
            } else if is_token_in_list(value, b"keep-alive") && response.version == Some(0) {
                head.close = false;
            }
        } else if name.eq_ignore_ascii_case(b"grpc-status") {
            head.grpc_status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
    }
    head.has_length = length.is_some();
    head.framing = framing(status, head_request, chunked, length);
    if chunked.is_some() && length.is_some() {
        head.close = true; // RFC 9112 6.3: a message sent both ways ends the connection
    }
    Ok(Some(head))
}

fn framing(status: u16, head_request: bool, chunked: Option<bool>, length: Option<u64>) -> Framing {
    if head_request || status < 200 || status == 204 || status == 304 {
        return Framing::None;
    }
    match (chunked, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    }
}

fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, Invalid> {
    let mut found = seen;
    for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if item.is_empty() || item.len() > 18 || !item.iter().all(u8::is_ascii_digit) {
            return Err(Invalid("invalid Content-Length"));
        }
        let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(Invalid("differing Content-Length values"));
        }
        found = Some(n);
    }
    found.ok_or(Invalid("invalid Content-Length"))
}

fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ResponseHead {
        parse_response(text.as_bytes(), false).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
                Framing::None,
                false,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::None, false),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                true,
            ),
        ];
        for (text, framing, close) in cases {
            let head = parse(text);
            assert_eq!((head.framing, head.close), (framing, close), "{text:?}");
        }
        let head = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(head.unwrap().unwrap().framing, Framing::None);
    }

    #[test]
    fn broken_lengths_are_invalid_and_partial_heads_wait() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1e3\r\n\r\n",
        ] {
            assert!(parse_response(text.as_bytes(), false).is_err(), "{text:?}");
        }
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK
content-le",
                false
            ),
            Ok(None)
        ));
    }
}
