//! Which files hold manifests: what `ferry gateway --config DIR` reads and what its watcher
//! reloads for, in one place.

use std::path::Path;

/// Whether `path` names a manifest file (.yaml, .yml or .json).
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}
