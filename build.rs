//! Links the release daemon with its functions in the order of
//! `packaging/code-order/TARGET.txt` (made by `bench/code_order.py`, which
//! says why): the code an idle node runs sits together, so the kernel maps
//! fewer pages of the binary. Only the layout depends on the list: a stale
//! or missing one, or a toolchain without Rust's lld, links as before.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=packaging/code-order");
    let (Ok(profile), Ok(target)) = (env::var("PROFILE"), env::var("TARGET")) else {
        return;
    };
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&dir).join(format!("packaging/code-order/{target}.txt"));
    // Debug and test builds keep the linker's default: their symbols
    // differ from the release build's anyway.
    if profile != "release" || !order.exists() {
        return;
    }
    let Some(lld) = rust_lld_dir() else {
        return;
    };
    for arg in [
        "-fuse-ld=lld".to_string(),
        format!("-B{}", lld.display()),
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        // Names the current code no longer has are expected, not news.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=receptor={arg}");
    }
}

/// The directory with the `ld.lld` that rustup ships beside rustc (the
/// one rustc itself links with on x86_64 Linux), if this toolchain has it.
fn rust_lld_dir() -> Option<PathBuf> {
    let rustc = env::var("RUSTC").ok()?;
    let host = env::var("HOST").ok()?;
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim()).join(format!("lib/rustlib/{host}/bin/gcc-ld"));
    dir.join("ld.lld").exists().then_some(dir)
}
