//! Objects read from the API server, decoded into the translator's types as they arrive.
//!
//! Every kind is watched as a dynamic object and decoded with the same code that reads
//! manifest files, so an object the translator cannot read is reported the same way (kind,
//! namespace/name, field) in both modes — and is left out instead of stopping the others.

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

use crate::inputs::{decode_api_object, Inputs, LoadError, Object, Rejected};

/// `kind/namespace/name`.
type Key = String;

#[derive(Default)]
struct Contents {
    /// Per kind, the decoded objects with the creation timestamp and name they sort by.
    objects: HashMap<String, BTreeMap<Key, (String, Object)>>,
    /// Objects that did not decode, with the reason.
    invalid: BTreeMap<Key, Rejected>,
    synced: Vec<String>,
}

/// The latest state of every watched kind; `changed` fires on every event.
#[derive(Default)]
pub struct Cache {
    contents: Mutex<Contents>,
    pub changed: Notify,
}

impl Cache {
    /// Watches `resource` cluster-wide for as long as the process runs (Secrets: one stream
    /// per type Ferry reads, see [`streams`]).
    pub fn watch(self: &Arc<Self>, client: kube::Client, resource: ApiResource) {
        for (stream, selector) in streams(&resource) {
            let cache = self.clone();
            let (client, resource) = (client.clone(), resource.clone());
            tokio::spawn(async move {
                let api: Api<DynamicObject> = Api::all_with(client, &resource);
                let mut config = watcher::Config::default();
                if let Some(selector) = selector {
                    config = config.fields(selector);
                }
                let mut events = watcher::watcher(api, config).default_backoff().boxed();
                let mut buffer = BTreeMap::new();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => cache.on_event(&resource, &stream, event, &mut buffer),
                        Err(e) => {
                            tracing::warn!(kind = %resource.kind, "watch failed, retrying: {e}")
                        }
                    }
                }
            });
        }
    }

    fn on_event(
        &self,
        resource: &ApiResource,
        kind: &String,
        event: Event<DynamicObject>,
        buffer: &mut BTreeMap<Key, (String, Object)>,
    ) {
        match event {
            Event::Init => buffer.clear(),
            Event::InitApply(object) => {
                if let Some((key, entry)) = self.decode(resource, object) {
                    buffer.insert(key, entry);
                }
            }
            Event::InitDone => {
                let mut contents = self.lock();
                contents
                    .objects
                    .insert(kind.clone(), std::mem::take(buffer));
                if !contents.synced.contains(kind) {
                    contents.synced.push(kind.clone());
                }
            }
            Event::Apply(object) => {
                if let Some((key, entry)) = self.decode(resource, object) {
                    let mut contents = self.lock();
                    contents
                        .objects
                        .entry(kind.clone())
                        .or_default()
                        .insert(key, entry);
                }
            }
            Event::Delete(object) => {
                let key = key_of(kind, &object);
                let mut contents = self.lock();
                contents.invalid.remove(&key);
                if let Some(objects) = contents.objects.get_mut(kind) {
                    objects.remove(&key);
                }
            }
        }
        self.changed.notify_one();
    }

    /// Decodes one object; a failure is recorded (and logged once) and yields None, and a
    /// valid version of the object clears an earlier failure.
    fn decode(
        &self,
        resource: &ApiResource,
        object: DynamicObject,
    ) -> Option<(Key, (String, Object))> {
        let key = key_of(&kind_key(resource), &object);
        let created = object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        match decode_dynamic(resource, &object, "api-server") {
            Ok(Some(decoded)) => {
                self.lock().invalid.remove(&key);
                Some((key, (created, decoded)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("{e}");
                let rejected = rejected_of(resource, &object, e.to_string());
                let mut contents = self.lock();
                contents.invalid.insert(key.clone(), rejected);
                if let Some(objects) = contents.objects.get_mut(&kind_key(resource)) {
                    objects.remove(&key);
                }
                None
            }
        }
    }

    /// True once every kind in `kinds` has been listed (every stream of it).
    pub fn synced(&self, kinds: &[ApiResource]) -> bool {
        let contents = self.lock();
        kinds
            .iter()
            .flat_map(streams)
            .all(|(stream, _)| contents.synced.contains(&stream))
    }

    /// The translator's inputs: every object, oldest first (Istio merges VirtualServices in
    /// creation order), then by namespace/name; and the objects left out, with why.
    pub fn inputs(&self) -> Inputs {
        let contents = self.lock();
        let mut all: Vec<&(String, Object)> =
            contents.objects.values().flat_map(|o| o.values()).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut inputs = Inputs::from_objects(all.into_iter().map(|(_, object)| object.clone()));
        inputs.rejected = contents.invalid.values().cloned().collect();
        inputs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contents> {
        self.contents.lock().expect("cache lock")
    }
}

/// The watch streams of a kind: (key of its objects, field selector). Secrets are watched
/// by type, only those that can hold certificates: `kubernetes.io/tls`, and `Opaque` (what
/// `kubectl create secret generic` makes, as Istio's MUTUAL instructions do); Ferry keeps
/// only their certificate keys (see `Inputs::add`), so tokens and app credentials are never
/// listed at all, and other keys of Opaque Secrets never kept.
fn streams(resource: &ApiResource) -> Vec<(String, Option<&'static str>)> {
    let key = kind_key(resource);
    if resource.group.is_empty() && resource.kind == "Secret" {
        vec![
            (key.clone(), Some("type=kubernetes.io/tls")),
            (format!("{key}#Opaque"), Some("type=Opaque")),
        ]
    } else {
        vec![(key, None)]
    }
}

/// A listed or watched object decoded like a manifest. The API server leaves `apiVersion`
/// and `kind` out of list items, so they come from the resource.
pub(super) fn decode_dynamic(
    resource: &ApiResource,
    object: &DynamicObject,
    origin: &str,
) -> Result<Option<Object>, LoadError> {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["apiVersion"] = resource.api_version.clone().into();
    value["kind"] = resource.kind.clone().into();
    decode_api_object(value, origin)
}

fn rejected_of(resource: &ApiResource, object: &DynamicObject, message: String) -> Rejected {
    Rejected {
        group: resource.group.clone(),
        kind: resource.kind.clone(),
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
        generation: object.metadata.generation,
        message,
        parent_refs: object.data["spec"]["parentRefs"].clone(),
    }
}

/// `group/Kind`: Gateway API and Istio both have a `Gateway`.
fn kind_key(resource: &ApiResource) -> String {
    format!("{}/{}", resource.group, resource.kind)
}

fn key_of(kind: &str, object: &DynamicObject) -> Key {
    format!(
        "{kind}/{}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    )
}
