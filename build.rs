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
    println!("cargo:rerun-if-env-changed=RECEPTOR_CODE_ORDER");
    let (Ok(profile), Ok(target)) = (env::var("PROFILE"), env::var("TARGET")) else {
        return;
    };
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&dir).join(format!("packaging/code-order/{target}.txt"));
    // Debug and test builds keep the linker's default: their symbols
    // differ from the release build's anyway.
    if profile != "release" || !order.exists() || !wanted(&target) {
        return;
    }
    let Some(lld) = rust_lld_dir().filter(|dir| cc_links_with(dir)) else {
        return;
    };
    let mut args = vec!["-fuse-ld=lld".to_string(), format!("-B{}", lld.display())];
    // -Xlinker passes each word whole (-Wl, would split a path at commas).
    for word in [
        format!("--symbol-ordering-file={}", order.display()),
        // Names the current code no longer has are expected, not news.
        "--no-warn-symbol-ordering".to_string(),
    ] {
        args.extend(["-Xlinker".to_string(), word]);
    }
    for arg in args {
        println!("cargo:rustc-link-arg-bin=receptor={arg}");
    }
}

/// Whether to order the code: not when asked not to
/// (`RECEPTOR_CODE_ORDER=0`), nor when the builder chose a linker of its
/// own, whose choice would clash with ours (a later `-fuse-ld` wins, and
/// GNU ld knows no ordering file).
fn wanted(target: &str) -> bool {
    if env::var("RECEPTOR_CODE_ORDER").is_ok_and(|v| v == "0") {
        return false;
    }
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={linker_var}");
    if env::var_os("RUSTC_LINKER").is_some() || env::var_os(linker_var).is_some() {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    !(flags.contains("fuse-ld") || flags.contains("linker"))
}

/// Whether the C compiler driver rustc links with (`cc`) takes
/// `-fuse-ld=lld` with `dir` (GCC before 9 does not): one try with
/// `--version`, so an old compiler builds as before instead of failing.
fn cc_links_with(dir: &Path) -> bool {
    Command::new("cc")
        .arg("-fuse-ld=lld")
        .arg(format!("-B{}", dir.display()))
        .arg("-Wl,--version")
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("LLD")
        })
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
