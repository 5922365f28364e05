//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! the holder renews every [`RENEW`]; another replica takes over once the lease has not been
//! renewed for [`LEASE`]. Every replica serves snapshots; only the leader writes statuses.
//! Updates carry the lease's resourceVersion, so two replicas cannot both win a round.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

pub const LEASE_NAME: &str = "ferry-controller";
const LEASE: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(2);

/// Starts campaigning; the receiver says whether this replica leads right now.
pub fn campaign(client: kube::Client, namespace: &str, identity: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        loop {
            let leading = match round(&api, &identity).await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!("leader election: {e}");
                    false
                }
            };
            tx.send_if_modified(|current| {
                let changed = *current != leading;
                if changed {
                    tracing::info!(identity, leading, "leadership changed");
                    *current = leading;
                }
                changed
            });
            tokio::time::sleep(RENEW).await;
        }
    });
    rx
}

/// One attempt to acquire or renew; Ok(true) when this replica holds the lease afterwards.
async fn round(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..ObjectMeta::default()
            },
            spec: Some(held_by(identity, now, None)),
        };
        return created_or_lost(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(identity);
    if !ours && !expired(&spec, now) {
        return Ok(false);
    }
    let mut next = held_by(identity, now, Some(&spec));
    if ours {
        next.acquire_time = spec.acquire_time.clone();
        next.lease_transitions = spec.lease_transitions;
    }
    lease.spec = Some(next);
    created_or_lost(
        api.replace(LEASE_NAME, &PostParams::default(), &lease)
            .await,
    )
}

fn held_by(identity: &str, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.into()),
        lease_duration_seconds: Some(LEASE.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(previous.and_then(|p| p.lease_transitions).unwrap_or(0) + 1),
        ..LeaseSpec::default()
    }
}

/// A lease nobody renewed within its duration (or never renewed) is free.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = spec
        .lease_duration_seconds
        .unwrap_or(LEASE.as_secs() as i32);
    renewed.0 + SignedDuration::from_secs(duration.into()) < now
}

/// A write that lost a race (409 Conflict / 409 AlreadyExists) means another replica won.
fn created_or_lost(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_once_its_duration_passed_without_renewal() {
        let now = Timestamp::now();
        let mut spec = held_by("a", now, None);
        assert!(!expired(&spec, now));
        spec.renew_time = Some(MicroTime(now - SignedDuration::from_secs(16)));
        assert!(expired(&spec, now));
        spec.renew_time = None;
        assert!(expired(&spec, now));
    }
}
