//! Sources of the workload identity installed in the engine's
//! [`ferry_gateway::mesh_identity::WorkloadIdentity`].

pub mod controller;
pub mod files;
