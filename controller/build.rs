//! Embeds the dashboard's UI (dashboard/dist/ui, built by `dashboard/build.sh` with npm) in
//! the binary, so a cluster needs no CDN and no volume for it. Without a build (a machine
//! without npm), `cargo build` still works: the binary then serves a page that says how to
//! build the UI, and the JSON API as always.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dist = manifest.join("../dashboard/dist");
    // The directory is committed (its README), so cargo watches every file the UI build
    // writes under it; the fallback page is watched through src/.
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-changed=build.rs");
    let ui = dist.join("ui");
    let built = ui.join("index.html").is_file();
    let root = if built {
        ui
    } else {
        manifest.join("src/dashboard/fallback")
    };
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut code = format!("/// Whether the UI was built (else: the fallback page).\npub const BUILT: bool = {built};\n");
    code.push_str("static FILES: &[(&str, &str, &[u8])] = &[\n");
    for (path, file) in &files {
        let _ = writeln!(
            code,
            "    ({path:?}, {:?}, include_bytes!({:?})),",
            content_type(path),
            file.display()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("dashboard_assets.rs");
    std::fs::write(out, code).expect("write the asset table");
}

/// Every file under `dir`, as (`/relative/path`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            files.push((format!("/{relative}"), path.canonicalize().unwrap_or(path)));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
