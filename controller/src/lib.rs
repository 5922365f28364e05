//! Ferry's controller: Kubernetes objects in, routing snapshots and statuses out.
//!
//! `inputs` turns manifests (from files now, from the API server later) into typed objects;
//! `translate` is the pure function from those objects to a [`ferry_model::Snapshot`] plus the
//! status conditions the objects should carry.

pub mod analyze;
pub mod applied;
pub mod ca;
pub mod cluster;
pub mod crds;
pub mod dashboard;
pub mod deploy;
pub mod features;
#[cfg(test)]
mod fuzz;
pub mod inject;
mod inject_probes;
pub mod inputs;
pub mod jwks;
pub mod migrate;
pub mod push;
pub mod status;
pub mod translate;
pub mod webhook;

pub use inputs::{Inputs, LoadError};
pub use translate::{translate, Options, Output, Report, Severity};
