use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::Str;

/// Everything a request must satisfy for a route to apply. All present conditions are ANDed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Istio `ignoreUriCase`: compare the path case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_path_case: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub headers: Arc<[HeaderMatch]>,
    /// Istio `withoutHeaders`: none of these may match.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub without_headers: Arc<[HeaderMatch]>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub query_params: Arc<[QueryMatch]>,
    /// Istio `authority` match against the Host / :authority value (port stripped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Istio `port`: the listener port the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn is_empty<T>(items: &Arc<[T]>) -> bool {
    items.is_empty()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// No path condition (matches every path).
    #[default]
    Any,
    Exact(Str),
    /// Plain string prefix (Istio `prefix`).
    Prefix(Str),
    /// Path-element prefix (Gateway API `PathPrefix`, Ingress `Prefix`): `/foo` matches `/foo`,
    /// `/foo/` and `/foo/bar` but not `/foobar`.
    SegmentPrefix(Str),
    /// RE2-style regular expression that must match the whole path.
    Regex(Str),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(Str),
    Prefix(Str),
    /// Must match the whole value.
    Regex(Str),
    /// The header or parameter only has to be present.
    Present,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower-cased header name.
    pub name: Str,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: Str,
    pub value: StringMatch,
}
