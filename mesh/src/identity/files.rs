//! Identity from files, for proxies without a controller (standalone `--config`, tests,
//! other CAs): `cert-chain.pem` (leaf first), `key.pem` and `root-cert.pem` in one directory,
//! Istio's file names. Re-read when they change; a broken set is logged and the identity in
//! use is kept.

use ferry_gateway::mesh_identity::WorkloadIdentity;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const KEY: &str = "key.pem";
pub const ROOTS: &str = "root-cert.pem";

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(500);

/// Installs the files' identity now (an error if they cannot be used), then follows them.
pub async fn follow(dir: PathBuf, identity: Arc<WorkloadIdentity>) -> Result<(), String> {
    let mut current = read(&dir)?;
    install(&identity, &current)?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            match read(&dir) {
                Ok(files) if files != current => match install(&identity, &files) {
                    Ok(()) => current = files,
                    Err(e) => tracing::warn!(dir = %dir.display(), "identity files not used: {e}"),
                },
                Ok(_) => {}
                Err(e) => tracing::debug!("identity files: {e}"),
            }
        }
    });
    Ok(())
}

#[derive(PartialEq, Eq)]
struct Files {
    chain: String,
    key: String,
    roots: String,
}

fn read(dir: &Path) -> Result<Files, String> {
    let text = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok(Files {
        chain: text(CERT_CHAIN)?,
        key: text(KEY)?,
        roots: text(ROOTS)?,
    })
}

fn install(identity: &WorkloadIdentity, files: &Files) -> Result<(), String> {
    let id = identity.install(&files.chain, &files.key, &files.roots)?;
    tracing::info!(%id, "workload identity installed from files");
    Ok(())
}
