//! Reading request headers without knowing how they are stored: Pingora's path keeps them in
//! an `http::HeaderMap`, the HTTP/1 fast path as offsets into its read buffer. Routing,
//! policies and telemetry read them through this trait, so both paths share that code.

use std::borrow::Cow;

pub trait HeaderLookup: Sync {
    /// The `n`th value (0-based, in arrival order) of header `name`, given in lower case.
    fn nth_value(&self, name: &str, n: usize) -> Option<&[u8]>;

    /// Every header, in arrival order, with its name in lower case (for a subrequest that
    /// passes them on).
    fn for_each(&self, f: &mut dyn FnMut(&str, &[u8]));
}

impl HeaderLookup for http::HeaderMap {
    fn nth_value(&self, name: &str, n: usize) -> Option<&[u8]> {
        self.get_all(name).iter().nth(n).map(|v| v.as_bytes())
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &[u8])) {
        for (name, value) in self {
            f(name.as_str(), value.as_bytes());
        }
    }
}

/// The first value of `name` as text (values that are not visible ASCII count as absent).
pub fn first_text<'h>(headers: &'h dyn HeaderLookup, name: &str) -> Option<&'h str> {
    headers.nth_value(name, 0).and_then(text)
}

/// A header's value; several occurrences are joined with "," as RFC 9110 allows.
pub fn joined<'h>(headers: &'h dyn HeaderLookup, name: &str) -> Option<Cow<'h, str>> {
    let mut all = (0..)
        .map_while(|n| headers.nth_value(name, n))
        .filter_map(text);
    let first = all.next()?;
    match all.next() {
        None => Some(first.into()),
        Some(second) => {
            let mut joined = format!("{first},{second}");
            all.for_each(|v| {
                joined.push(',');
                joined.push_str(v);
            });
            Some(joined.into())
        }
    }
}

/// A value as `http::HeaderValue::to_str` accepts it: visible ASCII, spaces and tabs.
fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_values_in_order_and_joined() {
        let mut map = http::HeaderMap::new();
        map.append("x-a", "1".parse().unwrap());
        map.append("x-a", "2".parse().unwrap());
        assert_eq!(map.nth_value("x-a", 1), Some(&b"2"[..]));
        assert_eq!(joined(&map, "x-a").as_deref(), Some("1,2"));
        assert_eq!(first_text(&map, "x-a"), Some("1"));
        assert_eq!(joined(&map, "x-b"), None);
    }
}
