//! Distribution: snapshots per proxy scope, pushed to proxies over one HTTP/2 stream each
//! (protocol in [`ferry_model::push`]), with every proxy's ACK/NACK state on record.

pub mod access;
pub mod monitoring;
pub mod proxies;
pub mod publisher;
pub mod server;

pub use proxies::{Proxies, ProxyState};
pub use publisher::{Published, Publisher};
