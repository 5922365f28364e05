//! Ferry's mesh mode on the shared engine (`ferry-gateway`): the sidecar's traffic capture
//! (the init step's iptables rules, the capture listeners with original-destination
//! outbound and inbound to the app), the receiving side of mesh mTLS, and where a proxy's
//! workload identity comes from (a key made here and a certificate from the controller's CA,
//! or files), kept current by renewing before expiry. The engine presents and checks that
//! identity in mesh mTLS and dials meshed endpoints (`ferry_gateway::mesh_connect`, used on
//! every upstream connection of both request paths).

pub mod accept;
pub mod capture;
pub mod identity;
pub mod init_rules;
