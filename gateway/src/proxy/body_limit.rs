//! `--max-request-body`: requests whose body is larger get 413 (RFC 9110 section 15.5.14),
//! before anything is forwarded when Content-Length says so, and as soon as the count passes
//! the limit for bodies that arrive without one (chunked, HTTP/2 DATA).

use pingora_core::{Error, ErrorType, Result};

use super::RequestCtx;

/// What the 413's cause header says.
pub fn cause(limit: u64) -> String {
    format!("DPE request body larger than {limit} bytes")
}

/// The declared length is over the limit.
pub fn declared_over(content_length: Option<&[u8]>, limit: u64) -> bool {
    content_length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > limit)
}

/// Counts a body chunk; an error (413) once the body passes the limit.
pub fn count(ctx: &mut RequestCtx, chunk: usize, limit: u64) -> Result<()> {
    ctx.body_bytes += chunk as u64;
    if ctx.body_bytes > limit {
        return Error::e_explain(ErrorType::HTTPStatus(413), cause(limit));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_lengths_are_compared_as_numbers() {
        assert!(declared_over(Some(b"1025"), 1024));
        assert!(!declared_over(Some(b"1024"), 1024));
        assert!(!declared_over(Some(b"junk"), 1024)); // refused as malformed elsewhere
        assert!(!declared_over(None, 1024));
    }

    #[test]
    fn a_body_without_a_length_is_refused_once_it_passes_the_limit() {
        let mut ctx = RequestCtx::default();
        assert!(count(&mut ctx, 1000, 1024).is_ok());
        let error = count(&mut ctx, 100, 1024).unwrap_err();
        assert_eq!(error.etype(), &ErrorType::HTTPStatus(413));
    }
}
