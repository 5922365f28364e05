//! Ferry's proxy engine: Pingora underneath, one hot-swapped snapshot on top.
//!
//! `engine` applies snapshots; `compiled` turns a snapshot into lookup structures;
//! `proxy` is the Pingora `ProxyHttp` glue; `listeners` follows the snapshot's ports;
//! `source` feeds snapshots from files; `admin` and `metrics` report; `echo` is a test backend.

pub mod admin;
pub mod admission;
pub mod app_health;
mod cert_names;
pub mod compiled;
pub mod control_channel;
pub mod disclosure;
pub mod dns;
pub mod downstream;
mod downstream_io;
pub mod echo;
pub mod engine;
mod h2_guard;
mod header_lookup;
mod header_names;
mod htpasswd;
pub mod in_flight;
pub mod limits;
pub mod listeners;
pub mod mesh_connect;
pub mod mesh_identity;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod rewrite;
pub mod source;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod upstream_tls;
mod workers;

pub use engine::Engine;
