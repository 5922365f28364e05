//! Responses the proxy writes itself (no route, invalid backend, redirects...).

use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

pub use crate::header_names::CAUSE_HEADER;

pub struct LocalReply<'a> {
    pub status: u16,
    pub cause: &'a str,
    pub body: &'a str,
    pub headers: &'a [(std::borrow::Cow<'static, str>, String)],
}

pub async fn send(session: &mut Session, reply: LocalReply<'_>) -> Result<()> {
    let mut header = ResponseHeader::build(reply.status, Some(4))?;
    header.insert_header(CAUSE_HEADER, sanitize(reply.cause))?;
    if !reply.headers.iter().any(|(name, _)| name == "content-type") {
        header.insert_header("content-type", "text/plain; charset=utf-8")?;
    }
    header.insert_header("content-length", reply.body.len().to_string())?;
    for (name, value) in reply.headers {
        let name = match name {
            std::borrow::Cow::Borrowed(fixed) => http::HeaderName::from_static(fixed),
            std::borrow::Cow::Owned(given) => {
                http::HeaderName::try_from(given.as_str()).map_err(|_| {
                    pingora_core::Error::new(pingora_core::ErrorType::InvalidHTTPHeader)
                })?
            }
        };
        header.append_header(name, value.as_str())?;
    }
    let head_only = reply.body.is_empty() || session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::copy_from_slice(reply.body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

/// Header values must be visible ASCII; causes may quote user input.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
