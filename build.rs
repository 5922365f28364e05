//! Release builds lay out the functions a sidecar runs while starting and idling side by
//! side (link/symbol-order.txt, written by bench/symbol-order.sh). The kernel maps a binary's
//! code in 64 KiB fault-around windows; with those functions scattered over the fat-LTO text,
//! an idle proxy kept ~6 MiB of code resident to run ~1.4 MiB of it. The order is a hint: a
//! stale or missing entry only moves a function, never breaks the build.

use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "link/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() != Ok("release") || !links_with_lld() {
        return;
    }
    let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join(ORDER_FILE);
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bin=ferry=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=ferry=-Wl,--no-warn-symbol-ordering");
    }
}

/// `--symbol-ordering-file` is an LLD option; rustc links x86_64 Linux with its bundled LLD
/// from 1.90 on. Older toolchains and other targets use the system linker: no ordering.
fn links_with_lld() -> bool {
    let target = std::env::var("TARGET").unwrap_or_default();
    target == "x86_64-unknown-linux-gnu" && rustc_minor_version().is_some_and(|minor| minor >= 90)
}

fn rustc_minor_version() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let version = String::from_utf8(output.stdout).ok()?; // "rustc 1.95.0 (...)"
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
