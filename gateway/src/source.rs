//! Standalone configuration: manifests on disk, re-read when they change.
//!
//! The loader (files -> snapshot) is injected so the engine does not depend on the
//! translator; the binary wires `ferry-controller`'s loader in.

use ferry_model::Snapshot;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;

/// A translated configuration ready to apply, with its status reports.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub reports: serde_json::Value,
}

/// Reads the configuration; `Err` lists why it is invalid (each naming object and field).
pub type Loader = Arc<dyn Fn() -> Result<Loaded, Vec<String>> + Send + Sync>;

/// Events closer together than this are handled as one reload (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(40);

/// Loads once, then reloads on every change under `path`, and whenever `also` is notified
/// (inputs that are not files, such as fetched JWT keys). Runs until the process exits.
pub async fn watch(
    path: PathBuf,
    loader: Loader,
    engine: Arc<Engine>,
    also: Arc<tokio::sync::Notify>,
) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = path.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access() && touches_config(&e.paths, &config)) {
            let _ = tx.send(());
        }
    })?;
    let (target, mode) = watch_target(&path);
    watcher.watch(&target, mode)?;
    let mut reloader = Reloader {
        loader,
        engine,
        last_applied: None,
        last_errors: Vec::new(),
    };
    reloader.reload().await;
    loop {
        tokio::select! {
            event = rx.recv() => if event.is_none() { break },
            _ = also.notified() => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        reloader.reload().await;
    }
    drop(watcher);
    Ok(())
}

/// Whether an event may change the configuration: it names the configured file itself, a
/// manifest (.yaml, .yml, .json, as the loader reads) or something without an extension (a
/// folder). Other files written beside the manifests (logs, certificates) must not trigger
/// reloads: each reload re-reads the folder, and a proxy logging into the folder it watches
/// woke itself forever (2% of a core per idle sidecar in bench/sidecar.sh).
fn touches_config(paths: &[PathBuf], config: &Path) -> bool {
    paths.iter().any(|path| {
        path == config || path.extension().is_none() || ferry_model::manifests::is_manifest(path)
    })
}

/// A file is watched through its directory so atomic replaces (write + rename) are seen.
fn watch_target(path: &Path) -> (PathBuf, RecursiveMode) {
    if path.is_dir() {
        (path.to_path_buf(), RecursiveMode::Recursive)
    } else {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (parent.to_path_buf(), RecursiveMode::NonRecursive)
    }
}

struct Reloader {
    loader: Loader,
    engine: Arc<Engine>,
    last_applied: Option<Snapshot>,
    last_errors: Vec<String>,
}

impl Reloader {
    async fn reload(&mut self) {
        match (self.loader)() {
            Ok(loaded) => {
                // Valid again: a later repeat of an old mistake must be reported again.
                self.last_errors.clear();
                if self.last_applied.as_ref() == Some(&loaded.snapshot) {
                    return; // content unchanged (e.g. a touch, or a file outside the config)
                }
                let snapshot = loaded.snapshot.clone();
                if self
                    .engine
                    .apply(loaded.snapshot, loaded.reports)
                    .await
                    .is_ok()
                {
                    self.last_applied = Some(snapshot);
                }
            }
            Err(errors) if errors != self.last_errors => {
                self.engine.reject(errors.clone());
                self.last_errors = errors;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_manifests_folders_and_the_configured_file_trigger_reloads() {
        let dir = Path::new("/etc/ferry");
        let touches = |path: &str| touches_config(&[PathBuf::from(path)], dir);
        assert!(touches("/etc/ferry/routes.yaml"));
        assert!(touches("/etc/ferry/routes.yml"));
        assert!(touches("/etc/ferry/list.json"));
        assert!(touches("/etc/ferry/team-a"));
        assert!(!touches("/etc/ferry/sidecar.log"));
        assert!(!touches("/etc/ferry/id/cert-chain.pem"));
        assert!(!touches("/etc/ferry/.routes.yaml.swp"));
        let file = Path::new("/etc/ferry.conf");
        assert!(touches_config(&[file.to_path_buf()], file));
    }
}
