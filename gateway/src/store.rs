//! The one place the active snapshot lives: a single `ArcSwapOption`.
//!
//! A request loads it once and keeps that `Arc` for all of its phases, so a swap in the
//! middle of a request never mixes two versions.

use arc_swap::ArcSwapOption;
use std::sync::Arc;

use crate::compiled::CompiledSnapshot;

#[derive(Default)]
pub struct SnapshotStore {
    current: ArcSwapOption<CompiledSnapshot>,
}

impl SnapshotStore {
    pub fn load(&self) -> Option<Arc<CompiledSnapshot>> {
        self.current.load_full()
    }

    pub fn swap(&self, snapshot: Arc<CompiledSnapshot>) {
        self.current.store(Some(snapshot));
    }
}
