//! Identity from the controller's CA: a key made here (it never leaves the process), a CSR
//! sent over the authenticated control channel, the signed certificate installed, and the
//! same again at half of its lifetime, without a restart and without touching open
//! connections (new handshakes use the new certificate).

use ferry_gateway::control_channel::ControlChannel;
use ferry_gateway::mesh_identity::WorkloadIdentity;
use ferry_model::identity::{CertificateRequest, CertificateResponse, CERTIFICATE_PATH};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Runs until the process ends.
pub async fn follow(channel: ControlChannel, identity: Arc<WorkloadIdentity>) {
    let mut retry = FIRST_RETRY;
    loop {
        match renew(&channel, &identity).await {
            Ok(next) => {
                retry = FIRST_RETRY;
                tokio::time::sleep(next).await;
            }
            Err(e) => {
                tracing::warn!("workload certificate not renewed ({e}); retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Gets and installs a new certificate; returns when to renew it.
async fn renew(channel: &ControlChannel, identity: &WorkloadIdentity) -> Result<Duration, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| e.to_string())?;
    let signed: CertificateResponse = channel
        .post_json(CERTIFICATE_PATH, &CertificateRequest { csr_pem: csr })
        .await?;
    let id = identity.install(
        &signed.cert_chain_pem,
        &key.serialize_pem(),
        &signed.trust_bundle_pem,
    )?;
    let svid = identity.svid().ok_or("certificate not installed")?;
    let next = renew_after(svid.not_before, svid.not_after, SystemTime::now());
    tracing::info!(%id, ?next, "workload certificate installed; renewing at half-life");
    Ok(next)
}

/// Half of the lifetime from `not_before` (with a little jitter so a fleet started together
/// does not renew in one burst), at least one second from now.
fn renew_after(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Duration {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let jitter = lifetime.mul_f64(rand::rng().random_range(0.0..0.05));
    let at = not_before + lifetime / 2 + jitter;
    at.duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_half_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(3600);
        let wait = renew_after(start, end, start + Duration::from_secs(60));
        assert!(
            wait >= Duration::from_secs(1740) && wait <= Duration::from_secs(1920),
            "{wait:?}"
        );
        let late = renew_after(start, end, end);
        assert_eq!(late, Duration::from_secs(1), "overdue: renew at once");
    }
}
