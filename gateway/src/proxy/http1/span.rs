//! Offsets into a connection's read buffer: a parsed head refers to its bytes instead of
//! copying them, so the buffer can be reused for the next request.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `part`, a slice of `buf` (httparse hands out slices of what it parsed).
    pub fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        debug_assert!(start + part.len() <= buf.len(), "span outside its buffer");
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// The bytes as text; "" when they are not UTF-8 (httparse lets obs-text through in
    /// values, which nothing here routes on).
    pub fn text<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(self.of(buf)).unwrap_or_default()
    }
}

/// Whether the comma-separated `list` holds `token` (case-insensitive).
pub fn is_token_in_list(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}
