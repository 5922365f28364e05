//! Ferry's snapshot: the typed routing IR every proxy runs.
//!
//! Plain data only — no I/O, no Pingora, no Kubernetes types — so the controller, the
//! gateway engine and the tests all agree on one shape. Collections are `Arc<[T]>` and strings
//! `Arc<str>` so cloning a snapshot (or a piece of it) is cheap.

pub mod authz;
mod cluster;
pub mod identity;
pub mod jwt;
pub mod manifests;
mod matching;
mod meta;
mod policy;
pub mod push;
mod snapshot;
mod stream;
pub mod summary;
mod tls;
mod traffic;

pub use cluster::{Cluster, DnsName, Endpoint, ServiceId, UpstreamProtocol, Workload};
pub use identity::{effective_mtls_mode, MtlsMode, PeerAuthenticationPolicy, SpiffeId};
pub use matching::{HeaderMatch, PathMatch, QueryMatch, RouteMatch, StringMatch};
pub use meta::Meta;
pub use policy::{Filter, HeaderMods, Mirror, PathRewrite, Redirect, RedirectPort, Rewrite};
pub use snapshot::{
    Action, BackendTarget, Listener, Route, Snapshot, VirtualHost, WeightedBackend,
};
pub use stream::{AddressRoute, OutboundPort, StreamRoute, StreamRoutes};
#[cfg(feature = "rustls")]
pub use tls::certified_key;
pub use tls::{
    ClientCertificate, ClientValidation, ListenerTls, PrivateKeyPem, ServerCertificate, UpstreamTls,
};
pub use traffic::{
    BasicAuth, BasicAuthUser, ClusterPolicy, ConcurrencyLimit, Cors, ErrorPages, ExtAuth,
    ExtAuthProtocol, Fault, FaultAbort, FaultDelay, HashOn, Limits, LoadBalancer, OutlierDetection,
    PasswordHash, ProxyProtocol, RateLimit, RateLimitKey, RetryBudget, RetryOn, RetryPolicy,
    RoutePolicy, SourceRanges, TcpKeepalive,
};

/// Shorthand used by every constructor in the IR.
pub type Str = std::sync::Arc<str>;
