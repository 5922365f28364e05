//! Ferry's mesh mode on the shared engine: where a sidecar's workload identity comes from
//! (a key made here and a certificate from the controller's CA, or files), kept current by
//! renewing before expiry. The engine (`ferry-gateway`) presents and checks it in mesh mTLS.

pub mod identity;
