//! Writes the desired statuses to the API server, only when they changed.
//!
//! Each object's status is patched on its `/status` subresource (JSON merge patch of
//! `status`). What was last written is remembered per object; an unchanged status is not
//! written again, and a condition that keeps its status keeps its `lastTransitionTime`.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use std::collections::HashMap;

use crate::status::DesiredStatus;

pub struct StatusWriter {
    client: kube::Client,
    /// Kind -> resource, for the kinds that get a status.
    resources: HashMap<String, ApiResource>,
    /// `kind/namespace/name#uid` -> the status last written (with times).
    written: HashMap<String, Value>,
}

impl StatusWriter {
    pub fn new(client: kube::Client, kinds: &[ApiResource]) -> Self {
        let resources = kinds
            .iter()
            .filter_map(|r| match r.group.as_str() {
                "gateway.networking.k8s.io" => Some((r.kind.clone(), r.clone())),
                // Reports name Istio's Gateway with its group (Gateway API has one too).
                "networking.istio.io" if r.kind == "Gateway" => {
                    Some(("Gateway.networking.istio.io".into(), r.clone()))
                }
                "networking.istio.io" | "security.istio.io" | "policy.ferry.dev" => {
                    Some((r.kind.clone(), r.clone()))
                }
                _ => None,
            })
            .collect();
        StatusWriter {
            client,
            resources,
            written: HashMap::new(),
        }
    }

    /// Writes every status that differs from what was last written; returns how many.
    pub async fn write(&mut self, desired: Vec<DesiredStatus>) -> usize {
        // An object no longer desired was deleted: forget it, so one created again under the
        // same name (with an empty status) is written.
        let keys: std::collections::HashSet<String> = desired.iter().map(key_of).collect();
        self.written.retain(|key, _| keys.contains(key));
        let mut count = 0;
        for item in desired {
            let key = key_of(&item);
            let previous = self.written.get(&key);
            if previous.is_some_and(|p| same_ignoring_times(p, &item.status)) {
                continue;
            }
            let status = stamp_times(item.status, previous);
            match self.patch(&item.object, &status).await {
                Ok(()) => {
                    self.written.insert(key, status);
                    count += 1;
                }
                Err(e) => tracing::warn!(object = %item.object, "status not written: {e}"),
            }
        }
        count
    }

    async fn patch(&self, object: &ferry_model::Meta, status: &Value) -> Result<(), String> {
        let resource = self
            .resources
            .get(&*object.kind)
            .ok_or_else(|| format!("kind {} not watched", object.kind))?;
        let api: Api<DynamicObject> = if object.namespace.is_empty() {
            Api::all_with(self.client.clone(), resource)
        } else {
            Api::namespaced_with(self.client.clone(), &object.namespace, resource)
        };
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// True when `a` and `b` differ at most in `lastTransitionTime` values.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    strip_times(a.clone()) == strip_times(b.clone())
}

fn strip_times(mut value: Value) -> Value {
    visit_conditions_at(&mut value, String::new(), &mut |_, c| {
        if let Some(map) = c.as_object_mut() {
            map.remove("lastTransitionTime");
        }
    });
    value
}

/// Adds `lastTransitionTime` to every condition: the previous one when the same condition
/// (same place, type and status) was written before, else now.
fn stamp_times(mut status: Value, previous: Option<&Value>) -> Value {
    let now = chrono_now();
    let mut earlier: HashMap<String, String> = HashMap::new();
    if let Some(previous) = previous {
        let mut previous = previous.clone();
        visit_conditions_at(&mut previous, String::new(), &mut |path, c| {
            if let Some(time) = c["lastTransitionTime"].as_str() {
                earlier.insert(
                    format!("{path}{}{}", c["type"], c["status"]),
                    time.to_string(),
                );
            }
        });
    }
    visit_conditions_at(&mut status, String::new(), &mut |path, c| {
        let key = format!("{path}{}{}", c["type"], c["status"]);
        let time = earlier.get(&key).cloned().unwrap_or_else(|| now.clone());
        c["lastTransitionTime"] = time.into();
    });
    status
}

/// Calls `f` on every element of every `conditions` array, with the JSON path leading to it
/// (so a listener's `Accepted` differs from the Gateway's).
fn visit_conditions_at(value: &mut Value, path: String, f: &mut dyn FnMut(&str, &mut Value)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "conditions" {
                    if let Value::Array(items) = child {
                        items.iter_mut().for_each(|c| f(&path, c));
                    }
                } else {
                    visit_conditions_at(child, format!("{path}/{key}"), f);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                visit_conditions_at(child, format!("{path}/{index}"), f);
            }
        }
        _ => {}
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `kind/namespace/name#uid`: an object created again under the same name has a new key.
fn key_of(item: &DesiredStatus) -> String {
    let object = &item.object;
    let uid = item.uid.as_deref().unwrap_or_default();
    format!("{}/{}/{}#{uid}", object.kind, object.namespace, object.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let first = stamp_times(
            json!({"conditions": [{"type": "Accepted", "status": "True"}],
                   "listeners": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}),
            None,
        );
        let mut old = first.clone();
        old["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00Z".into();
        let next = json!({"conditions": [{"type": "Accepted", "status": "True"}],
                          "listeners": [{"conditions": [{"type": "Accepted", "status": "False"}]}]});
        assert!(!same_ignoring_times(&old, &next));
        let stamped = stamp_times(next, Some(&old));
        assert_eq!(
            stamped["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_ne!(
            stamped["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert!(same_ignoring_times(&stamped, &strip_times(stamped.clone())));
    }
}
