//! Keeps each Gateway's deployment (crate::deploy) in the cluster: server-side apply of what
//! changed, and deletion of what the controller deployed for a Gateway it no longer deploys
//! (class changed, a chart's gateway took it over). Deleting the Gateway itself needs nothing
//! here: the objects are owned by it and Kubernetes' garbage collector removes them.
//!
//! Only the leader writes. What was applied is remembered, so an unchanged Gateway costs no
//! API call; the memory is dropped every [`RESYNC`] so a hand-deleted Deployment comes back.

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::deploy::{self, DeployConfig, GatewayObjects, MANAGED_BY};
use crate::status::GATEWAY_NAME_LABEL;
use crate::Inputs;

const FIELD_MANAGER: &str = "ferry-controller";
const RESYNC: Duration = Duration::from_secs(300);

/// The kinds deployed for a Gateway: (group, version, kind).
const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "ServiceAccount"),
    ("apps", "v1", "Deployment"),
    ("", "v1", "Service"),
    ("policy", "v1", "PodDisruptionBudget"),
];

pub struct Deployer {
    client: kube::Client,
    config: DeployConfig,
    /// `Kind/namespace/name` -> the manifest last applied.
    applied: BTreeMap<String, Value>,
    /// The Gateways (`namespace/name`) deployed at the last sync.
    gateways: BTreeSet<String>,
    forget_at: Instant,
}

impl Deployer {
    pub fn new(client: kube::Client, config: DeployConfig) -> Self {
        Deployer {
            client,
            config,
            applied: BTreeMap::new(),
            gateways: BTreeSet::new(),
            forget_at: Instant::now() + RESYNC,
        }
    }

    /// A new leader applies everything again (another replica may have written meanwhile).
    pub fn forget(&mut self) {
        self.applied.clear();
        self.gateways.clear();
    }

    pub async fn sync(&mut self, inputs: &Inputs) {
        if Instant::now() >= self.forget_at {
            self.forget();
            self.forget_at = Instant::now() + RESYNC;
        }
        let desired = deploy::desired(inputs, &self.config);
        let gateways: BTreeSet<String> = desired
            .iter()
            .map(|d| format!("{}/{}", d.namespace, d.gateway))
            .collect();
        for deployment in &desired {
            self.apply(deployment).await;
        }
        if gateways != self.gateways {
            self.prune(&gateways).await;
            self.gateways = gateways;
        }
    }

    async fn apply(&mut self, deployment: &GatewayObjects) {
        for object in &deployment.objects {
            let key = key_of(object);
            if self.applied.get(&key) == Some(object) {
                continue;
            }
            let kind = object["kind"].as_str().unwrap_or_default();
            let api = self.api(kind, Some(&deployment.namespace));
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if let Some(owner) = someone_elses(&api, name).await {
                // Taking it over would also let the garbage collector delete it with the
                // Gateway: an object of the same name made by someone else is left alone.
                tracing::warn!(object = %key, %owner, "not Ferry's: gateway deployment not applied");
                continue;
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(name, &params, &Patch::Apply(object)).await {
                Ok(_) => {
                    tracing::info!(object = %key, "gateway deployment applied");
                    self.applied.insert(key, object.clone());
                }
                Err(e) => tracing::warn!(object = %key, "gateway deployment not applied: {e}"),
            }
        }
    }

    /// Deletes what this controller deployed for Gateways no longer in `keep`.
    async fn prune(&mut self, keep: &BTreeSet<String>) {
        let selector = format!("app.kubernetes.io/managed-by={MANAGED_BY},{GATEWAY_NAME_LABEL}");
        for (_, _, kind) in KINDS {
            let api = self.api(kind, None);
            let listed = match api.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => list.items,
                Err(e) => {
                    tracing::warn!(kind, "cannot list deployed objects to prune: {e}");
                    continue;
                }
            };
            for object in listed {
                let namespace = object.metadata.namespace.clone().unwrap_or_default();
                let labels = object.metadata.labels.clone().unwrap_or_default();
                let gateway = labels.get(GATEWAY_NAME_LABEL).cloned().unwrap_or_default();
                if keep.contains(&format!("{namespace}/{gateway}")) {
                    continue;
                }
                let name = object.metadata.name.clone().unwrap_or_default();
                let namespaced = self.api(kind, Some(&namespace));
                match namespaced.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => tracing::info!(kind, %namespace, %name, "gateway deployment removed"),
                    Err(e) => tracing::warn!(kind, %namespace, %name, "not removed: {e}"),
                }
                self.applied.remove(&format!("{kind}/{namespace}/{name}"));
            }
        }
    }

    fn api(&self, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let (group, version, _) = KINDS
            .iter()
            .find(|(_, _, k)| *k == kind)
            .expect("a deployed kind");
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }
}

/// Who made an existing object of this name, when it was not Ferry's controller.
async fn someone_elses(api: &Api<DynamicObject>, name: &str) -> Option<String> {
    let existing = api.get_opt(name).await.ok()??;
    let labels = existing.metadata.labels.unwrap_or_default();
    let managed_by = labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str);
    (managed_by != Some(MANAGED_BY)).then(|| managed_by.unwrap_or("unlabelled").to_string())
}

fn key_of(object: &Value) -> String {
    let metadata = &object["metadata"];
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        metadata["namespace"].as_str().unwrap_or_default(),
        metadata["name"].as_str().unwrap_or_default()
    )
}
