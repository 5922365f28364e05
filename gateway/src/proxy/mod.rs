//! The request path. Two loops sit side by side over one shared layer: `http1` (Ferry's own
//! HTTP/1.x loop on pingora-core) and `pingora` (Pingora's generic proxy, for HTTP/2 and what
//! `http1` hands over). Both call the same decision code (`decide`, `admit`, `tries`,
//! `policy`), read requests through `facts`, answer failures through `failure` and report
//! through `observe`, so their semantics cannot drift.

mod admit;
pub(crate) mod authz;
pub(crate) mod authz_index;
mod basic_auth;
pub(crate) mod body_limit;
mod context;
mod decide;
mod entry;
mod error_pages;
mod ext_auth;
mod facts;
mod failure;
mod forwarded;
pub mod http1;
pub(crate) mod jwt;
mod mesh_peer;
pub mod mirror;
pub(crate) mod observe;
mod pingora;
mod pingora_request;
mod policy;
mod rate_limits;
mod request_series;
mod respond;
pub(crate) mod stream;
mod tries;

pub use context::RequestCtx;
use entry::Entry;
use failure::{failure_cause, failure_status};
use forwarded::ip_text;
pub use pingora::FerryProxy;
pub use respond::CAUSE_HEADER;
