//! The controller's dashboard source: the objects its watches last listed, and the proxies
//! connected to this replica.

use ferry_model::summary::{
    EdgeKey, Reporter, TrafficSummary, MAX_SUMMARY_EDGES, MAX_SUMMARY_ERRORS,
};
use std::sync::{Arc, Mutex};

use super::{ProxyView, Source};
use crate::push::Proxies;
use crate::{Inputs, Options};

pub struct ClusterSource {
    inputs: Mutex<Option<Arc<Inputs>>>,
    proxies: Arc<Proxies>,
    options: Options,
}

impl ClusterSource {
    pub fn new(proxies: Arc<Proxies>, options: Options) -> Arc<ClusterSource> {
        Arc::new(ClusterSource {
            inputs: Mutex::new(None),
            proxies,
            options,
        })
    }

    /// The controller read a new set of objects.
    pub fn update(&self, inputs: Arc<Inputs>) {
        *self.inputs.lock().expect("inputs lock") = Some(inputs);
    }
}

impl Source for ClusterSource {
    fn inputs(&self) -> Option<Arc<Inputs>> {
        self.inputs.lock().expect("inputs lock").clone()
    }

    fn options(&self) -> Options {
        self.options.clone()
    }

    fn proxies(&self) -> Vec<ProxyView> {
        self.proxies
            .list()
            .into_iter()
            .map(|state| ProxyView {
                sync: state.sync(),
                proxy: state.proxy,
                scope: state.scope,
                sent_version: state.sent_version,
                acked_version: state.acked_version,
                reasons: state.nack_reasons,
                last_summary_unix_ms: None,
            })
            .collect()
    }

    fn statuses_written(&self) -> bool {
        true
    }
}

/// What a proxy may say about itself: the controller knows its namespace from its token (a
/// ServiceAccount is used by pods of its own namespace only), so the proxy's own end of each
/// edge — the caller of what it reports as source, the callee of what it reports as
/// destination — is put in that namespace whatever the summary said (a proxy run by hand
/// without POD_NAMESPACE says `unknown`; another could claim a namespace not its own). A
/// summary longer than a proxy ever sends is cut to that length.
pub fn attribute(summary: &mut TrafficSummary, namespace: &str) {
    if summary.edges.len() > MAX_SUMMARY_EDGES {
        let cut = summary.edges.len() - MAX_SUMMARY_EDGES;
        summary.edges.truncate(MAX_SUMMARY_EDGES);
        summary.dropped_edges += cut as u64;
    }
    summary.errors.truncate(MAX_SUMMARY_ERRORS);
    let own = |key: &mut EdgeKey| {
        let end = match key.reporter {
            Reporter::Source => Some(&mut key.source),
            Reporter::Destination => key.workload.as_mut(),
        };
        if let Some(node) = end {
            node.namespace = namespace.into();
        }
    };
    summary.edges.iter_mut().for_each(|e| own(&mut e.key));
    summary.errors.iter_mut().for_each(|e| own(&mut e.edge));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::summary::{EdgeCounts, EdgeSample, NodeKind, NodeRef};

    #[test]
    fn a_proxys_own_end_of_its_edges_is_in_its_authenticated_namespace() {
        let sample = |reporter| EdgeSample {
            key: EdgeKey {
                reporter,
                source: NodeRef::new(NodeKind::Gateway, "unknown", "gw"),
                service: Some(NodeRef::new(NodeKind::Service, "shop", "cart")),
                workload: Some(NodeRef::new(NodeKind::Workload, "other", "cart-v1")),
            },
            counts: EdgeCounts::default(),
        };
        let mut summary = TrafficSummary {
            edges: vec![sample(Reporter::Source), sample(Reporter::Destination)],
            ..TrafficSummary::default()
        };
        attribute(&mut summary, "infra");
        let (source, destination) = (&summary.edges[0].key, &summary.edges[1].key);
        assert_eq!(&*source.source.namespace, "infra");
        assert_eq!(&*source.workload.as_ref().unwrap().namespace, "other");
        assert_eq!(&*destination.workload.as_ref().unwrap().namespace, "infra");
        assert_eq!(&*destination.source.namespace, "unknown");
    }
}
