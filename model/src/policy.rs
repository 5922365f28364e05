use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::Str;

/// A request/response transformation attached to a route or to one weighted backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    RequestHeaders(HeaderMods),
    ResponseHeaders(HeaderMods),
    Rewrite(Rewrite),
    Mirror(Mirror),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HeaderMods {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub set: Arc<[(Str, Str)]>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub add: Arc<[(Str, Str)]>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub remove: Arc<[Str]>,
}

fn is_empty<T>(items: &Arc<[T]>) -> bool {
    items.is_empty()
}

/// Rewrites applied before forwarding upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(Str),
    /// Replace the part of the path matched by the route's prefix (or the whole path for an
    /// exact match).
    Prefix(Str),
    /// Istio `uriRegexRewrite`: replace every match of `pattern` with `substitution`.
    Regex { pattern: Str, substitution: Str },
}

/// Copy requests to another cluster, fire-and-forget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: Str,
    /// Share of requests mirrored, in parts per million (1_000_000 = all).
    pub per_million: u32,
}

/// Answer with a redirect instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Str>,
    pub port: RedirectPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    pub status: u16,
}

/// Where the port of the `Location` URL comes from. A port equal to the scheme's well-known
/// port (80 for http, 443 for https) is never written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    /// Keep whatever port the request's Host header carried (Istio default).
    FromRequest,
    /// The port of the listener that received the request (Gateway API default).
    Listener,
    /// The well-known port of the redirect scheme.
    SchemeDefault,
    Explicit(u16),
}
