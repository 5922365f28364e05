//! Header names the proxy looks up on every request, parsed once. A lookup by `&str` parses
//! and validates the name on each call (about 300 instructions in `http`, seven times per
//! request before this module); a prebuilt `HeaderName` is only hashed. Inserts take
//! `NAME.as_str()`: Pingora parses an inserted name either way, and a `&'static str` saves
//! it a copy.

use http::HeaderName;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Header naming why the proxy answered itself: a short cause code and the object at fault.
pub const CAUSE_HEADER: &str = "x-ferry-cause";
pub static X_FERRY_CAUSE: HeaderName = HeaderName::from_static(CAUSE_HEADER);
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Headers of an answer the proxy relays as a reply of its own (error pages, an auth
/// service's denial) that are not passed on: framing and hop-by-hop ones, which the reply's
/// writer sets itself, and the answering server's `Date` / `Server`.
pub const NOT_RELAYED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "date",
    "server",
];
