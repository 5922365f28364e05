//! Pure request transformations: path rewrites, redirect `Location`, header edits.

use ferry_model::{HeaderMods, PathMatch, PathRewrite, Redirect, RedirectPort};
use pingora_http::{RequestHeader, ResponseHeader};

/// The path after `rewrite`, for a request whose route matched with `matched`.
///
/// A prefix replacement swaps only the matched prefix (Gateway API `ReplacePrefixMatch`,
/// Istio `rewrite.uri`); on routes without a prefix match it replaces the whole path.
pub fn rewrite_path(rewrite: &PathRewrite, matched: &PathMatch, path: &str) -> String {
    match (rewrite, matched) {
        (PathRewrite::Full(value), _) => value.to_string(),
        (PathRewrite::Prefix(value), PathMatch::SegmentPrefix(prefix)) => {
            let prefix = prefix.trim_end_matches('/');
            let rest = path.get(prefix.len()..).unwrap_or_default();
            join_segments(value, rest)
        }
        (PathRewrite::Prefix(value), PathMatch::Prefix(prefix)) => {
            let rest = path.get(prefix.len()..).unwrap_or_default();
            format!("{value}{rest}")
        }
        (PathRewrite::Prefix(value), PathMatch::Any) => {
            format!("{value}{}", path.get(1..).unwrap_or_default())
        }
        (PathRewrite::Prefix(value), _) => value.to_string(),
        // Rare: compiled per request rather than kept in the snapshot.
        (
            PathRewrite::Regex {
                pattern,
                substitution,
            },
            _,
        ) => match regex::Regex::new(pattern) {
            Ok(re) => re
                .replace_all(path, re2_substitution(substitution).as_str())
                .into_owned(),
            Err(_) => path.to_string(),
        },
    }
}

/// Istio writes capture groups RE2-style (`\\1`); the regex crate expects `${1}`.
fn re2_substitution(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

/// Joins a replacement prefix and the rest of a path without doubling or losing the `/`.
fn join_segments(prefix: &str, rest: &str) -> String {
    let joined = match (prefix.ends_with('/'), rest.starts_with('/')) {
        (true, true) => format!("{prefix}{}", &rest[1..]),
        (false, false) if !rest.is_empty() => format!("{prefix}/{rest}"),
        _ => format!("{prefix}{rest}"),
    };
    if joined.is_empty() {
        "/".into()
    } else {
        joined
    }
}

/// What a redirect needs to know about the request.
pub struct RedirectRequest<'a> {
    /// The scheme the request came with (`https` on a TLS listener): a redirect that names
    /// none keeps it.
    pub scheme: &'static str,
    pub host: &'a str,
    /// The port written in the Host header, if any.
    pub host_port: Option<u16>,
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched: &'a PathMatch,
}

pub fn redirect_location(r: &Redirect, req: &RedirectRequest<'_>) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(req.scheme);
    let host = r.host.as_deref().unwrap_or(req.host);
    let port = match r.port {
        RedirectPort::FromRequest => req.host_port,
        RedirectPort::Listener => Some(req.listener_port),
        RedirectPort::SchemeDefault => None,
        RedirectPort::Explicit(p) => Some(p),
    };
    let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
    let path = match &r.path {
        Some(rewrite) => rewrite_path(rewrite, req.matched, req.path),
        None => req.path.to_string(),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&path);
    if let Some(query) = req.query {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// Header editing shared by requests and responses.
pub trait EditHeaders {
    fn set(&mut self, name: &str, value: &str);
    fn add(&mut self, name: &str, value: &str);
    fn remove(&mut self, name: &str);
}

macro_rules! impl_edit_headers {
    ($t:ty) => {
        impl EditHeaders for $t {
            fn set(&mut self, name: &str, value: &str) {
                let _ = self.insert_header(name.to_string(), value);
            }
            fn add(&mut self, name: &str, value: &str) {
                let _ = self.append_header(name.to_string(), value);
            }
            fn remove(&mut self, name: &str) {
                let _ = self.remove_header(name);
            }
        }
    };
}

impl_edit_headers!(RequestHeader);
impl_edit_headers!(ResponseHeader);

/// Applies set, then add, then remove — the order Gateway API and Istio describe.
pub fn apply_header_mods(target: &mut impl EditHeaders, mods: &HeaderMods) {
    mods.set.iter().for_each(|(n, v)| target.set(n, v));
    mods.add.iter().for_each(|(n, v)| target.add(n, v));
    mods.remove.iter().for_each(|n| target.remove(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(p: &str) -> PathMatch {
        PathMatch::SegmentPrefix(p.into())
    }

    #[test]
    fn prefix_rewrite_replaces_only_the_matched_segments() {
        let r = PathRewrite::Prefix("/v2".into());
        assert_eq!(rewrite_path(&r, &seg("/v1"), "/v1/users"), "/v2/users");
        assert_eq!(rewrite_path(&r, &seg("/v1"), "/v1"), "/v2");
        assert_eq!(
            rewrite_path(&PathRewrite::Prefix("/".into()), &seg("/v1"), "/v1/users"),
            "/users"
        );
        assert_eq!(
            rewrite_path(&PathRewrite::Prefix("/".into()), &seg("/v1"), "/v1"),
            "/"
        );
        assert_eq!(rewrite_path(&r, &seg("/"), "/users"), "/v2/users");
        let istio = PathMatch::Prefix("/api".into());
        assert_eq!(rewrite_path(&r, &istio, "/api/x"), "/v2/x");
    }

    #[test]
    fn regex_rewrite_understands_re2_groups() {
        let r = PathRewrite::Regex {
            pattern: "^/users/([0-9]+)/profile".into(),
            substitution: "/profile/\\1".into(),
        };
        assert_eq!(
            rewrite_path(&r, &PathMatch::Any, "/users/42/profile"),
            "/profile/42"
        );
    }

    #[test]
    fn redirect_omits_well_known_ports_and_keeps_query() {
        let r = Redirect {
            scheme: Some("https".into()),
            host: None,
            port: RedirectPort::SchemeDefault,
            path: None,
            status: 301,
        };
        let req = RedirectRequest {
            scheme: "http",
            host: "a.com",
            host_port: Some(8080),
            listener_port: 8080,
            path: "/x",
            query: Some("q=1"),
            matched: &PathMatch::Any,
        };
        assert_eq!(redirect_location(&r, &req), "https://a.com/x?q=1");
        let r = Redirect {
            scheme: None,
            host: Some("b.com".into()),
            port: RedirectPort::Listener,
            path: None,
            status: 302,
        };
        assert_eq!(redirect_location(&r, &req), "http://b.com:8080/x?q=1");
        // Over TLS a redirect naming no scheme stays on https (and drops its default port).
        let tls = RedirectRequest {
            scheme: "https",
            listener_port: 443,
            host_port: None,
            ..req
        };
        assert_eq!(redirect_location(&r, &tls), "https://b.com/x?q=1");
    }
}
