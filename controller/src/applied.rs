//! Which Gateways' configuration a proxy has applied. A Gateway is `Programmed` when a proxy
//! implementing it has ACKed a snapshot made from its current generation — not when the
//! translation alone succeeded (Gateway API: "the Gateway's configuration has been sent to
//! the data plane and should be ready soon").
//!
//! Proxies connect to any controller replica, and only the leader writes statuses, so each
//! replica publishes what its own proxies applied in a ConfigMap of its own
//! (`ferry-applied-<replica>`, owned by the replica's Pod so it goes with it) and the leader
//! reads them all. Once written, `Programmed=True` for a generation stays (read back from the
//! Gateway's status) while proxies reconnect to a new replica.

use std::collections::BTreeMap;

use gateway_api::apis::standard::gateways::Gateway;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The label on every replica's ConfigMap.
pub const LABEL: &str = "ferry.dev/applied-gateways";

/// A Gateway object (its uid: a deleted and re-created Gateway starts again at generation 1)
/// and the generation a proxy applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedGeneration {
    pub uid: String,
    pub generation: i64,
}

/// `namespace/name` -> what a proxy of that Gateway applied.
pub type AppliedGateways = BTreeMap<String, AppliedGeneration>;

/// What status computation knows about proxies.
pub enum Applied<'a> {
    /// No proxies to ask (`ferry analyze`, unit tests): Programmed as translated.
    Assumed,
    /// From the proxies' ACKs, across replicas.
    Known(&'a AppliedGateways),
    /// As `Known`, and this controller deploys each Gateway's proxies and Service itself: a
    /// Gateway without its own Service yet is not reachable, whatever proxy ACKed (a draining
    /// proxy of a deleted namesake still ACKs the re-created Gateway's snapshot).
    KnownAndDeployed(&'a AppliedGateways),
}

impl Applied<'_> {
    /// Whether a proxy serves `gateway`'s current generation, or its status already says so
    /// (a new leader, or proxies reconnecting, must not flip it back).
    pub fn serves(&self, gateway: &Gateway) -> bool {
        let (Applied::Known(applied) | Applied::KnownAndDeployed(applied)) = self else {
            return true;
        };
        let metadata = &gateway.metadata;
        let generation = metadata.generation.unwrap_or(0);
        let key = format!(
            "{}/{}",
            metadata.namespace.as_deref().unwrap_or_default(),
            metadata.name.as_deref().unwrap_or_default()
        );
        let acked = applied.get(&key).is_some_and(|a| {
            Some(a.uid.as_str()) == metadata.uid.as_deref() && a.generation >= generation
        });
        acked || already_programmed(gateway, generation)
    }
}

fn already_programmed(gateway: &Gateway, generation: i64) -> bool {
    let conditions = gateway.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| {
        c.type_ == "Programmed" && c.status == "True" && c.observed_generation >= Some(generation)
    })
}

/// Merges what several replicas report: the highest generation per Gateway object.
pub fn merge(into: &mut AppliedGateways, from: AppliedGateways) {
    for (key, applied) in from {
        record(into, key, applied);
    }
}

/// Adds one report unless `into` already has that object at a generation as new.
pub fn record(into: &mut AppliedGateways, key: String, applied: AppliedGeneration) {
    match into.get(&key) {
        Some(have) if have.uid == applied.uid && have.generation >= applied.generation => {}
        _ => {
            into.insert(key, applied);
        }
    }
}

/// The ConfigMap name of a replica (identities are pod names: already DNS labels).
fn config_map_name(replica: &str) -> String {
    let clean: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("ferry-applied-{clean}")
}

/// ConfigMap keys cannot hold `/`; a namespace cannot hold `.`, so `namespace.name` splits
/// back at its first dot.
fn encode(applied: &AppliedGateways) -> BTreeMap<String, String> {
    applied
        .iter()
        .map(|(key, a)| {
            (
                key.replacen('/', ".", 1),
                format!("{} {}", a.generation, a.uid),
            )
        })
        .collect()
}

fn decode(data: &BTreeMap<String, String>) -> AppliedGateways {
    data.iter()
        .filter_map(|(key, value)| {
            let (generation, uid) = value.split_once(' ')?;
            Some((
                key.replacen('.', "/", 1),
                AppliedGeneration {
                    uid: uid.to_string(),
                    generation: generation.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// Writes this replica's ConfigMap (server-side apply). `owner`: the replica's Pod (name,
/// uid), so the ConfigMap is deleted with it.
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    replica: &str,
    owner: Option<&(String, String)>,
    applied: &AppliedGateways,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = config_map_name(replica);
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {LABEL: "true"}},
        "data": encode(applied),
    });
    if let Some((pod, uid)) = owner {
        object["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}]);
    }
    let params = PatchParams::apply("ferry-controller").force();
    api.patch(&name, &params, &Patch::Apply(&object)).await?;
    Ok(())
}

/// What every replica reported, from the ConfigMaps in `namespace` (the controller watches
/// ConfigMaps, so another replica's report arrives like any change).
pub fn collect(config_maps: &[ConfigMap], namespace: &str) -> AppliedGateways {
    let mut all = AppliedGateways::new();
    for config_map in config_maps {
        let metadata = &config_map.metadata;
        let ours = metadata.namespace.as_deref() == Some(namespace)
            && metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL))
                .map(String::as_str)
                == Some("true");
        if ours {
            merge(
                &mut all,
                decode(config_map.data.as_ref().unwrap_or(&BTreeMap::new())),
            );
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> Gateway {
        serde_yaml::from_str(yaml).unwrap()
    }

    const GATEWAY: &str = "
metadata: {name: public, namespace: infra, uid: u1, generation: 3}
spec: {gatewayClassName: ferry, listeners: []}
";

    fn applied(uid: &str, generation: i64) -> AppliedGateways {
        BTreeMap::from([(
            "infra/public".to_string(),
            AppliedGeneration {
                uid: uid.into(),
                generation,
            },
        )])
    }

    #[test]
    fn programmed_needs_a_proxy_on_the_current_generation_of_the_same_object() {
        let gw = gateway(GATEWAY);
        assert!(Applied::Assumed.serves(&gw));
        assert!(!Applied::Known(&AppliedGateways::new()).serves(&gw));
        assert!(
            !Applied::Known(&applied("u1", 2)).serves(&gw),
            "an older generation"
        );
        assert!(
            !Applied::Known(&applied("u0", 3)).serves(&gw),
            "a deleted namesake"
        );
        assert!(Applied::Known(&applied("u1", 3)).serves(&gw));
    }

    #[test]
    fn a_written_programmed_status_stays_while_proxies_reconnect() {
        let gw = gateway(&format!(
            "{GATEWAY}status: {{conditions: [{{type: Programmed, status: 'True', reason: Programmed, message: '', observedGeneration: 3, lastTransitionTime: '2026-11-30T00:00:00Z'}}]}}"
        ));
        assert!(Applied::Known(&AppliedGateways::new()).serves(&gw));
    }

    #[test]
    fn replicas_reports_merge_to_the_newest_generation_and_survive_the_configmap_encoding() {
        let mut all = applied("u1", 2);
        merge(&mut all, applied("u1", 3));
        merge(&mut all, applied("u1", 1));
        assert_eq!(all, applied("u1", 3));
        let mut names = applied("u1", 3);
        names.insert(
            "shop/api.example.com".into(),
            AppliedGeneration {
                uid: "u2".into(),
                generation: 1,
            },
        );
        assert_eq!(decode(&encode(&names)), names);
        assert_eq!(
            config_map_name("ferry-controller-7d9f-abc"),
            "ferry-applied-ferry-controller-7d9f-abc"
        );
    }
}
