//! One published snapshot per proxy scope, versioned, serialized once and shared by every
//! subscriber of that scope.

use bytes::Bytes;
use ferry_model::push::{encode_line, ControllerFrame, Scope};
use ferry_model::Snapshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use crate::applied::{AppliedGateways, AppliedGeneration};
use crate::{translate, Inputs, Options, Output, Severity};

/// A snapshot as it goes on the wire: the encoded frame line and its version.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub frame: Bytes,
    /// Kept to tell a real change from a recomputation that produced the same config.
    snapshot: Snapshot,
}

struct ScopeState {
    tx: watch::Sender<Option<Arc<Published>>>,
    /// Errors of the latest translation that were not published (last good kept).
    rejected: Vec<String>,
    /// The scope's Gateway as the published snapshot has it (also when a new generation
    /// translated to the same snapshot): a proxy that ACKed that version serves it.
    gateway: Option<AppliedGeneration>,
}

/// Scopes proxies asked for, each with its latest snapshot.
pub struct Publisher {
    inner: Mutex<PublisherState>,
}

struct PublisherState {
    /// The mesh's root namespace and trust domain (translator options).
    root_namespace: String,
    trust_domain: String,
    inputs: Option<Arc<Inputs>>,
    scopes: HashMap<Scope, ScopeState>,
    last_version: u64,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new(crate::translate::DEFAULT_ROOT_NAMESPACE, "cluster.local")
    }
}

impl Publisher {
    /// A publisher translating with `root_namespace` as the mesh's root namespace and
    /// `trust_domain` for workload identities.
    pub fn new(root_namespace: &str, trust_domain: &str) -> Self {
        Publisher {
            inner: Mutex::new(PublisherState {
                root_namespace: root_namespace.into(),
                trust_domain: trust_domain.into(),
                inputs: None,
                scopes: HashMap::new(),
                last_version: 0,
            }),
        }
    }

    /// A receiver of `scope`'s snapshots. A scope seen for the first time is translated
    /// now (if inputs are synced), so the subscriber gets its snapshot at once.
    pub fn subscribe(&self, scope: &Scope) -> watch::Receiver<Option<Arc<Published>>> {
        let mut state = self.inner.lock().expect("publisher lock");
        if let Some(existing) = state.scopes.get(scope) {
            return existing.tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        state.scopes.insert(
            scope.clone(),
            ScopeState {
                tx,
                rejected: Vec::new(),
                gateway: None,
            },
        );
        if let Some(inputs) = state.inputs.clone() {
            state.refresh(scope, &inputs);
        }
        rx
    }

    /// New inputs: every scope is translated again; changed ones get a new version.
    /// Scopes nobody subscribes to any more are forgotten.
    pub fn update(&self, inputs: Arc<Inputs>) {
        let mut state = self.inner.lock().expect("publisher lock");
        state.scopes.retain(|_, s| s.tx.receiver_count() > 0);
        let scopes: Vec<Scope> = state.scopes.keys().cloned().collect();
        for scope in &scopes {
            state.refresh(scope, &inputs);
        }
        state.inputs = Some(inputs);
    }

    /// Reasons the latest translation of each scope was held back, for the admin endpoint.
    pub fn rejected(&self) -> Vec<(Scope, Vec<String>)> {
        let state = self.inner.lock().expect("publisher lock");
        state
            .scopes
            .iter()
            .filter(|(_, s)| !s.rejected.is_empty())
            .map(|(scope, s)| (scope.clone(), s.rejected.clone()))
            .collect()
    }

    /// The Gateways whose latest snapshot a proxy has ACKed (`acked`: the highest version
    /// per scope, by [`scope_label`](super::server::scope_label)), at the generation that
    /// snapshot was made from.
    pub fn applied(&self, acked: &std::collections::BTreeMap<String, u64>) -> AppliedGateways {
        let state = self.inner.lock().expect("publisher lock");
        let mut applied = AppliedGateways::new();
        for (scope, scope_state) in &state.scopes {
            let (Some(gateway), Some(published)) =
                (&scope_state.gateway, &*scope_state.tx.borrow())
            else {
                continue;
            };
            if acked
                .get(&*scope.gateway)
                .is_some_and(|v| *v >= published.version)
            {
                crate::applied::record(&mut applied, scope.gateway.to_string(), gateway.clone());
            }
        }
        applied
    }

    pub fn scope_count(&self) -> usize {
        self.inner.lock().expect("publisher lock").scopes.len()
    }
}

impl PublisherState {
    fn refresh(&mut self, scope: &Scope, inputs: &Inputs) {
        let (output, left_out) = translate_valid(
            inputs,
            &options_for(scope, &self.root_namespace, &self.trust_domain),
        );
        let version = next_version(self.last_version);
        let Some(state) = self.scopes.get_mut(scope) else {
            return;
        };
        for error in left_out.iter().filter(|e| !state.rejected.contains(e)) {
            tracing::warn!(gateway = %scope.gateway, "left out of the snapshot: {error}");
        }
        state.rejected = left_out;
        let Some(output) = output else {
            return; // still invalid without the bad objects: the last good snapshot stays
        };
        state.gateway = gateway_generation(inputs, &scope.gateway);
        let unchanged = state
            .tx
            .borrow()
            .as_ref()
            .is_some_and(|p| p.snapshot == output.snapshot);
        if unchanged {
            return;
        }
        let warnings: Vec<_> = output
            .reports
            .iter()
            .filter(|r| r.severity != Severity::Info)
            .collect();
        let mut snapshot = output.snapshot;
        snapshot.version = version;
        let frame = ControllerFrame::Snapshot {
            snapshot: snapshot.clone(),
            reports: serde_json::to_value(&warnings).unwrap_or_default(),
        };
        let line = encode_line(&frame);
        snapshot.version = 0;
        self.last_version = version;
        state.tx.send_replace(Some(Arc::new(Published {
            version,
            frame: Bytes::from(line),
            snapshot,
        })));
        tracing::info!(gateway = %scope.gateway, version, "snapshot published");
    }
}

/// The uid and generation of the Gateway `namespace/name` in `inputs`.
fn gateway_generation(inputs: &Inputs, key: &str) -> Option<AppliedGeneration> {
    let (namespace, name) = key.split_once('/')?;
    let gateway = inputs.gateways.iter().find(|g| {
        g.metadata.namespace.as_deref() == Some(namespace)
            && g.metadata.name.as_deref() == Some(name)
    })?;
    Some(AppliedGeneration {
        uid: gateway.metadata.uid.clone().unwrap_or_default(),
        generation: gateway.metadata.generation.unwrap_or(0),
    })
}

/// Translates `inputs`; objects with errors are left out (as istiod ignores an invalid
/// VirtualService and Envoy Gateway an invalid route) so one team's mistake does not freeze
/// everyone's updates. Returns None when what remains still has errors, with every error.
fn translate_valid(inputs: &Inputs, options: &Options) -> (Option<Output>, Vec<String>) {
    let output = translate(inputs, options);
    let errors: Vec<String> = output.errors().map(ToString::to_string).collect();
    if errors.is_empty() {
        return (Some(output), errors);
    }
    let invalid: Vec<ferry_model::Meta> = output.errors().map(|r| r.object.clone()).collect();
    let retry = translate(&inputs.without(&invalid), options);
    let still: Vec<String> = retry.errors().map(ToString::to_string).collect();
    if still.is_empty() {
        (Some(retry), errors)
    } else {
        (None, errors.into_iter().chain(still).collect())
    }
}

/// Versions increase within a run and across controller restarts: a restarted controller
/// starts from the wall clock (ms), so proxies never see a version go backwards.
fn next_version(last: u64) -> u64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now_ms.max(last + 1)
}

/// Translator options from what the proxy said about itself.
pub fn options_for(scope: &Scope, root_namespace: &str, trust_domain: &str) -> Options {
    Options {
        gateway_labels: scope.labels.clone(),
        ingress_port: scope.ingress_port,
        ingress_class: scope.ingress_class.clone(),
        ingress_tls_port: scope.ingress_tls_port,
        only_gateway: (!scope.gateway.is_empty()).then(|| scope.gateway.to_string()),
        mesh_namespace: scope.mesh_namespace.as_deref().map(str::to_string),
        root_namespace: root_namespace.into(),
        workload_namespace: scope.workload_namespace.as_deref().map(str::to_string),
        trust_domain: trust_domain.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::parse_manifests;

    fn inputs(yaml: &str) -> Arc<Inputs> {
        Arc::new(Inputs::from_objects(parse_manifests(yaml, "test").unwrap()))
    }

    const GATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners: [{name: http, port: 8080, protocol: HTTP}]
";

    fn scope() -> Scope {
        Scope {
            gateway: "infra/public".into(),
            labels: vec![],
            ..Scope::default()
        }
    }

    #[test]
    fn a_scope_gets_a_new_version_only_when_its_snapshot_changes() {
        let publisher = Publisher::default();
        publisher.update(inputs(GATEWAY));
        let rx = publisher.subscribe(&scope());
        let first = rx.borrow().clone().expect("published at subscribe");
        assert_eq!(first.snapshot.listeners[0].port, 8080);

        publisher.update(inputs(GATEWAY));
        assert_eq!(rx.borrow().as_ref().unwrap().version, first.version);

        publisher.update(inputs(&GATEWAY.replace("8080", "9090")));
        let second = rx.borrow().clone().unwrap();
        assert!(second.version > first.version);
        let frame: ControllerFrame = serde_json::from_slice(&second.frame).unwrap();
        let ControllerFrame::Snapshot { snapshot, .. } = frame else {
            panic!("snapshot frame expected")
        };
        assert_eq!(snapshot.version, second.version);
        assert_eq!(snapshot.listeners[0].port, 9090);
    }

    #[test]
    fn a_gateway_counts_as_applied_once_its_proxy_acked_the_snapshot_of_its_generation() {
        let publisher = Publisher::default();
        let generation = |g: u32| {
            GATEWAY.replace(
                "namespace: infra}",
                &format!("namespace: infra, uid: u1, generation: {g}}}"),
            )
        };
        publisher.update(inputs(&generation(1)));
        let rx = publisher.subscribe(&scope());
        let first = rx.borrow().as_ref().unwrap().version;
        let acked = |version: u64| {
            std::collections::BTreeMap::from([("infra/public".to_string(), version)])
        };
        assert!(
            publisher.applied(&acked(first - 1)).is_empty(),
            "not ACKed yet"
        );
        let applied = publisher.applied(&acked(first));
        assert_eq!(applied["infra/public"].generation, 1);

        // A new generation with a new snapshot waits for its own ACK...
        publisher.update(inputs(&generation(2).replace("8080", "9090")));
        let second = rx.borrow().as_ref().unwrap().version;
        assert!(publisher.applied(&acked(first)).is_empty());
        assert_eq!(
            publisher.applied(&acked(second))["infra/public"].generation,
            2
        );
        // ...one that translates to the same snapshot is served by what the proxy has.
        publisher.update(inputs(&generation(3).replace("8080", "9090")));
        assert_eq!(rx.borrow().as_ref().unwrap().version, second);
        assert_eq!(
            publisher.applied(&acked(second))["infra/public"].generation,
            3
        );
    }

    #[test]
    fn other_gateways_are_outside_the_scope() {
        let publisher = Publisher::default();
        let two = format!(
            "{GATEWAY}---\n{}",
            GATEWAY.replace("public", "private").replace("8080", "8081")
        );
        publisher.update(inputs(&two));
        let rx = publisher.subscribe(&scope());
        let ports: Vec<u16> = rx
            .borrow()
            .as_ref()
            .unwrap()
            .snapshot
            .listeners
            .iter()
            .map(|l| l.port)
            .collect();
        assert_eq!(ports, vec![8080]);
    }

    #[test]
    fn an_invalid_route_is_left_out_and_the_rest_still_published() {
        let publisher = Publisher::default();
        publisher.update(inputs(GATEWAY));
        let rx = publisher.subscribe(&scope());
        let first = rx.borrow().clone().unwrap().version;
        let routes = "
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: infra}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: infra}
spec:
  parentRefs: [{name: public}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: infra}
spec:
  parentRefs: [{name: public}]
  hostnames: [bad.example.com]
  rules: [{matches: [{path: {type: RegularExpression, value: '(('}}], backendRefs: [{name: web, port: 80}]}]
";
        publisher.update(inputs(&format!("{GATEWAY}{routes}")));
        let published = rx.borrow().clone().unwrap();
        assert!(
            published.version > first,
            "the valid route must be published"
        );
        let hosts: Vec<String> = published.snapshot.listeners[0]
            .virtual_hosts
            .iter()
            .map(|v| v.hostname.to_string())
            .collect();
        assert_eq!(hosts, vec!["*"]);
        let rejected = publisher.rejected();
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].1[0].contains("HTTPRoute/infra/bad"),
            "{rejected:?}"
        );
    }

    #[test]
    fn scopes_without_subscribers_are_dropped_on_update() {
        let publisher = Publisher::default();
        drop(publisher.subscribe(&scope()));
        publisher.update(inputs(GATEWAY));
        assert_eq!(publisher.scope_count(), 0);
    }
}
