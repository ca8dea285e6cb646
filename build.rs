//! Two link-time choices for the release daemon, both only about layout:
//!
//! * its functions go in the order of `packaging/code-order/TARGET.txt`
//!   (made by `bench/code_order.py`, which says why): the code an idle node
//!   runs sits together, so the kernel maps fewer pages of the binary;
//! * its relative relocations are packed (`-z pack-relative-relocs`,
//!   DT_RELR): 12,000 of them shrink from 280 KiB, which the loader reads
//!   whole at every start and which stays mapped, to 4 KiB.
//!
//! A stale or missing order list, a toolchain without Rust's lld, or a
//! libc whose loader cannot apply packed relocations links as before. A
//! glibc build with packed relocations needs glibc 2.36 or later where it
//! runs (the static musl binary applies its own); `RECEPTOR_PACK_RELOCS=0`
//! builds one for older systems.

// The build script runs the toolchain, not the daemon: the reaper rule
// (clippy.toml) is not its.
#![allow(clippy::disallowed_methods)]

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
    // Debug and test builds keep the linker's defaults: their symbols
    // differ from the release build's anyway, and they start rarely.
    if profile != "release" || own_linker_chosen(&target) {
        return;
    }
    let mut args = order_args(&target);
    let packed: Vec<String> = ["-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"]
        .map(String::from)
        .into();
    println!("cargo:rerun-if-env-changed=RECEPTOR_PACK_RELOCS");
    let pack = !env::var("RECEPTOR_PACK_RELOCS").is_ok_and(|v| v == "0");
    if pack && probe_runs(&target, &[args.as_slice(), &packed].concat()) {
        args.extend(packed);
    }
    for arg in args {
        println!("cargo:rustc-link-arg-bin=receptor={arg}");
    }
}

/// The linker arguments that order the code, or none: not when asked not
/// to (`RECEPTOR_CODE_ORDER=0`), without a list for this target, or
/// without an lld that `cc` can drive (GNU ld knows no ordering file).
fn order_args(target: &str) -> Vec<String> {
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&dir).join(format!("packaging/code-order/{target}.txt"));
    if env::var("RECEPTOR_CODE_ORDER").is_ok_and(|v| v == "0") || !order.exists() {
        return Vec::new();
    }
    let Some(lld) = rust_lld_dir().filter(|dir| cc_links_with(dir)) else {
        return Vec::new();
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
    args
}

/// Whether a small program linked for `target` with `args` runs here and
/// finds its statics through relocated pointers. That answers, in one
/// try, whether the linker takes the arguments and whether this libc's
/// loader (glibc before 2.36 has no DT_RELR; a musl static binary
/// relocates itself) applies what it wrote. A target this machine cannot
/// run says no, and links as before.
fn probe_runs(target: &str, args: &[String]) -> bool {
    let (Ok(rustc), Ok(out)) = (env::var("RUSTC"), env::var("OUT_DIR")) else {
        return false;
    };
    let out = PathBuf::from(out);
    let src = out.join("relr_probe.rs");
    let bin = out.join("relr_probe");
    let program = "static A: u8 = 3;\nstatic B: u8 = 4;\n\
        static P: [&u8; 3] = [&A, &B, &A];\n\
        fn main() {\n    let p = std::hint::black_box(&P);\n    \
        std::process::exit(i32::from(*p[0] + *p[1] + *p[2] != 10));\n}\n";
    if std::fs::write(&src, program).is_err() {
        return false;
    }
    let mut build = Command::new(rustc);
    build.args(["--edition", "2021", "--target", target, "-o"]);
    build.arg(&bin).arg(&src);
    // The builder's flags (crt-static, a relocation model) shape the link
    // as they will the daemon's.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    build.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    for arg in args {
        build.arg(format!("-Clink-arg={arg}"));
    }
    let built = build.output().is_ok_and(|o| o.status.success());
    built && Command::new(&bin).status().is_ok_and(|s| s.success())
}

/// Whether the builder chose a linker of their own, whose choice would
/// clash with ours (a later `-fuse-ld` wins) and which may not know our
/// flags: then the link is theirs alone.
fn own_linker_chosen(target: &str) -> bool {
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={linker_var}");
    if env::var_os("RUSTC_LINKER").is_some() || env::var_os(linker_var).is_some() {
        return true;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    flags.contains("fuse-ld") || flags.contains("linker")
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
