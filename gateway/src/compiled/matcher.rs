//! Route matching against one request. Regexes are compiled once per snapshot.

use super::path_index::{regex_literal_prefix, PathKey};
use crate::header_lookup::{self, HeaderLookup};
use ferry_model::{HeaderMatch, PathMatch, QueryMatch, RouteMatch, Str, StringMatch};
use regex::Regex;

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    pub port: u16,
    /// Lower-case, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub headers: &'a dyn HeaderLookup,
}

pub struct CompiledMatch {
    path: CompiledPath,
    ignore_case: bool,
    method: Option<CompiledString>,
    headers: Vec<(Str, CompiledString)>,
    without_headers: Vec<(Str, CompiledString)>,
    query: Vec<(Str, CompiledString)>,
    authority: Option<CompiledString>,
    port: Option<u16>,
}

enum CompiledPath {
    Any,
    Exact(String),
    Prefix(String),
    SegmentPrefix(String),
    /// With the literal text every match starts with ("" when unknown), for the path index.
    Regex(Regex, String),
}

enum CompiledString {
    Exact(Str),
    Prefix(Str),
    Regex(Regex),
    Present,
}

/// Anchors a pattern so it must match the whole value, as Gateway API and Istio require.
fn full_regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let flags = if ignore_case { "(?i)" } else { "" };
    Regex::new(&format!("{flags}^(?:{pattern})$"))
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

impl CompiledMatch {
    pub fn compile(m: &RouteMatch) -> Result<Self, String> {
        let fold = |s: &str| {
            if m.ignore_path_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let path = match &m.path {
            PathMatch::Any => CompiledPath::Any,
            PathMatch::Exact(p) => CompiledPath::Exact(fold(p)),
            PathMatch::Prefix(p) => CompiledPath::Prefix(fold(p)),
            PathMatch::SegmentPrefix(p) => {
                CompiledPath::SegmentPrefix(fold(p.trim_end_matches('/')))
            }
            PathMatch::Regex(p) => CompiledPath::Regex(
                full_regex(p, m.ignore_path_case)?,
                regex_literal_prefix(p).to_string(),
            ),
        };
        Ok(CompiledMatch {
            path,
            ignore_case: m.ignore_path_case,
            method: m.method.as_ref().map(CompiledString::compile).transpose()?,
            headers: compile_headers(&m.headers)?,
            without_headers: compile_headers(&m.without_headers)?,
            query: m
                .query_params
                .iter()
                .map(compile_query)
                .collect::<Result<_, _>>()?,
            authority: m
                .authority
                .as_ref()
                .map(CompiledString::compile)
                .transpose()?,
            port: m.port,
        })
    }

    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        self.port.is_none_or(|p| p == r.port)
            && self.path_matches(r.path)
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(Some(r.method)))
            && self
                .authority
                .as_ref()
                .is_none_or(|a| a.matches(Some(r.host)))
            && self
                .headers
                .iter()
                .all(|(name, m)| m.matches(header(r.headers, name)))
            && !self
                .without_headers
                .iter()
                .any(|(name, m)| m.matches(header(r.headers, name)))
            && self
                .query
                .iter()
                .all(|(name, m)| m.matches(query_param(r.query, name)))
    }

    fn path_matches(&self, path: &str) -> bool {
        let folded;
        let path = if self.ignore_case && !matches!(self.path, CompiledPath::Regex(..)) {
            folded = path.to_ascii_lowercase();
            folded.as_str()
        } else {
            path
        };
        match &self.path {
            CompiledPath::Any => true,
            CompiledPath::Exact(p) => path == p,
            CompiledPath::Prefix(p) => path.starts_with(p.as_str()),
            CompiledPath::SegmentPrefix(p) => segment_prefix(path, p),
            CompiledPath::Regex(re, _) => re.is_match(path),
        }
    }

    /// The path condition as the path index sees it.
    pub(super) fn path_key(&self) -> PathKey<'_> {
        if self.ignore_case {
            // The index holds literal bytes; folding every request path is not worth it for
            // Istio's rarely used ignoreUriCase.
            return PathKey::Always;
        }
        match &self.path {
            CompiledPath::Any => PathKey::Always,
            CompiledPath::Exact(p) => PathKey::Exact(p),
            CompiledPath::Prefix(p) => PathKey::Prefix(p),
            CompiledPath::SegmentPrefix(p) => PathKey::Segment(p),
            // An empty literal is the root's prefix: a candidate for every path.
            CompiledPath::Regex(_, literal) => PathKey::Prefix(literal),
        }
    }
}

/// `/foo` covers `/foo`, `/foo/` and `/foo/bar`, not `/foobar`. `prefix` has no trailing slash
/// (so `/` became the empty string, which covers everything).
fn segment_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn compile_headers(headers: &[HeaderMatch]) -> Result<Vec<(Str, CompiledString)>, String> {
    headers
        .iter()
        .map(|h| Ok((h.name.clone(), CompiledString::compile(&h.value)?)))
        .collect()
}

fn compile_query(q: &QueryMatch) -> Result<(Str, CompiledString), String> {
    Ok((q.name.clone(), CompiledString::compile(&q.value)?))
}

fn header<'h>(headers: &'h dyn HeaderLookup, name: &str) -> Option<std::borrow::Cow<'h, str>> {
    header_lookup::joined(headers, name)
}

/// The first value of a query parameter (exact, case-sensitive name).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.into())
}

impl CompiledString {
    fn compile(m: &StringMatch) -> Result<Self, String> {
        Ok(match m {
            StringMatch::Exact(v) => CompiledString::Exact(v.clone()),
            StringMatch::Prefix(v) => CompiledString::Prefix(v.clone()),
            StringMatch::Regex(v) => CompiledString::Regex(full_regex(v, false)?),
            StringMatch::Present => CompiledString::Present,
        })
    }

    fn matches<S: AsRef<str>>(&self, value: Option<S>) -> bool {
        let Some(value) = value else { return false };
        let value = value.as_ref();
        match self {
            CompiledString::Exact(v) => value == &**v,
            CompiledString::Prefix(v) => value.starts_with(&**v),
            CompiledString::Regex(re) => re.is_match(value),
            CompiledString::Present => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_prefix_respects_path_elements() {
        assert!(segment_prefix("/foo", "/foo"));
        assert!(segment_prefix("/foo/", "/foo"));
        assert!(segment_prefix("/foo/bar", "/foo"));
        assert!(!segment_prefix("/foobar", "/foo"));
        assert!(segment_prefix("/anything", ""));
    }

    #[test]
    fn query_param_takes_first_value() {
        assert_eq!(query_param(Some("a=1&b=2&a=3"), "a").as_deref(), Some("1"));
        assert_eq!(query_param(Some("flag&b=2"), "flag").as_deref(), Some(""));
        assert_eq!(query_param(None, "a"), None);
    }
}
