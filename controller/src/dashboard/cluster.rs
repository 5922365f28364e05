//! The controller's dashboard source: the objects its watches last listed, and the proxies
//! connected to this replica.

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
