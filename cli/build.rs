//! Build metadata for `vrift --version`: the commit the binary was built from (`unknown`
//! outside a git checkout, e.g. from a source archive) and the build date (UTC, or
//! `SOURCE_DATE_EPOCH` for reproducible builds).
//!
//! And the shim library, embedded in the binary so that `vrift` is the one file to install
//! (`cargo install --path cli` included): `vrift run` writes it out on first use when no
//! `libvrift_shim.so` sits beside the binary. It is built here by a cargo of its own, in the
//! `dist` profile (no debug info, stripped: ~0.6 MB), into `<target>/shim-embed/`, where
//! later builds find it up to date.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    embed_shim();
    build_info();
}

/// Builds `vrift-shim` (the workspace's `shim/` crate) and copies the library to
/// `$OUT_DIR/libvrift_shim.so`, which `src/shim.rs` includes.
fn embed_shim() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = here.join("..");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for p in [
        "shim/src",
        "shim/Cargo.toml",
        "shim-core/src",
        "shim-core/Cargo.toml",
        "manifest/src",
        "manifest/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed=../{p}");
    }
    // OUT_DIR is <target>[/<triple>]/<profile>/build/vrift-cli-<hash>/out.
    let target = out
        .ancestors()
        .nth(4)
        .map_or_else(|| out.join("shim-target"), |t| t.join("shim-embed"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "--profile", "dist", "-p", "vrift-shim"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        // Not this build's wrappers (clippy's driver) or target: a plain library build.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Ok(t) = std::env::var("TARGET") {
        if std::env::var("HOST").ok().as_deref() != Some(t.as_str()) {
            cmd.args(["--target", &t]);
        }
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the shim library");
    assert!(
        status.success(),
        "building the shim library (vrift-shim) failed"
    );
    let mut lib = target.clone();
    if let (Ok(t), Ok(h)) = (std::env::var("TARGET"), std::env::var("HOST")) {
        if t != h {
            lib.push(t);
        }
    }
    lib.push("dist/libvrift_shim.so");
    std::fs::copy(&lib, out.join("libvrift_shim.so"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", lib.display()));
}

fn build_info() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    println!("cargo:rustc-env=VRIFT_BUILD_INFO={commit} {}", date(secs));
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit changes these; watching only paths that exist (a missing one would make
    // every build rerun this script).
    for p in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// `YYYY-MM-DD` of a Unix time (days to civil date, proleptic Gregorian calendar).
fn date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
