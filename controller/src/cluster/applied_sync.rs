//! This replica's share of "which Gateways a proxy serves" (see crate::applied): published
//! in its ConfigMap when its proxies' ACKs change it; the leader reads every replica's from
//! its watch.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::applied::{self, AppliedGateways};

pub struct AppliedSync {
    client: kube::Client,
    namespace: String,
    replica: String,
    /// This replica's Pod (name, uid) when it runs in one: its ConfigMap goes with it.
    owner: Option<(String, String)>,
    published: Option<AppliedGateways>,
}

impl AppliedSync {
    pub async fn new(client: kube::Client, namespace: &str, replica: &str) -> AppliedSync {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let owner = match pods.get_opt(replica).await {
            Ok(Some(pod)) => pod.metadata.uid.map(|uid| (replica.to_string(), uid)),
            _ => None, // not a pod (a process beside the cluster): the ConfigMap stays
        };
        AppliedSync {
            client,
            namespace: namespace.into(),
            replica: replica.into(),
            owner,
            published: None,
        }
    }

    /// Publishes `mine` if it differs from what was published; returns whether it did.
    pub async fn publish(&mut self, mine: AppliedGateways) -> bool {
        if self.published.as_ref() == Some(&mine) {
            return false;
        }
        let written = applied::publish(
            &self.client,
            &self.namespace,
            &self.replica,
            self.owner.as_ref(),
            &mine,
        )
        .await;
        match written {
            Ok(()) => self.published = Some(mine),
            // Retried on the next ACK or change; the leader also merges its own view.
            Err(e) => {
                tracing::warn!("cannot publish the Gateways this replica's proxies serve: {e}")
            }
        }
        true
    }

    /// What every replica reported (the watched ConfigMaps in `inputs`), this one's latest
    /// view included.
    pub fn all(&self, inputs: &crate::Inputs, mine: &AppliedGateways) -> AppliedGateways {
        let mut all = applied::collect(&inputs.config_maps, &self.namespace);
        applied::merge(&mut all, mine.clone());
        all
    }
}
