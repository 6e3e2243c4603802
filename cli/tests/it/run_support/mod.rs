//! Shared helpers for the `vrift run` end-to-end tests (real programs on real files).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test (`VRIFT_TEST_BIN` runs the suite against another build; its shim
/// is the `libvrift_shim.so` beside it).
pub fn vrift_bin() -> PathBuf {
    std::env::var_os("VRIFT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vrift")))
}

/// Fails with a clear message when the shim library was not built next to the binary.
pub fn require_shim() {
    if std::env::var_os("VRIFT_SHIM").is_some() {
        return;
    }
    let so = vrift_bin().with_file_name("libvrift_shim.so");
    assert!(
        so.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace --release`, as scripts/test.sh does)",
        so.display()
    );
}

/// True if `prog` is on PATH.
/// `None` (skip, with a note) when `what` is missing outside CI; a failure under `CI=true`,
/// where every tool a test needs is installed.
pub fn need(ok: bool, what: &str) -> Option<()> {
    if ok {
        return Some(());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is required in CI"
    );
    eprintln!("SKIPPED: {what} missing");
    None
}

/// `vrift --json ingest DIR -o OUT --mode copy` in the env's store (the tree is left as it
/// was); its JSON summary.
pub fn ingest_copy_json(env: &Env, dir: &Path, out: &str) -> serde_json::Value {
    let o = env
        .vrift()
        .args(["--json", "ingest"])
        .arg(dir)
        .args(["-o", out, "--mode", "copy"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Checks `manifest` out into `<env>/back` and returns `diff -r --no-dereference src back`
/// (empty when the trees are the same) and the checkout's path.
pub fn checkout_and_diff(env: &Env, manifest: &str, src: &Path) -> (String, PathBuf) {
    let back = env.path("back");
    let o = env
        .vrift()
        .arg("checkout")
        .arg(manifest)
        .arg(&back)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(src)
        .arg(&back)
        .output()
        .unwrap();
    (String::from_utf8_lossy(&d.stdout).into_owned(), back)
}

/// `npm install --ignore-scripts PKG@VERSION...` in `dir` from the registry; `None` (a
/// failure under `CI=true`) when npm or the registry is not there.
pub fn npm_install(dir: &Path, packages: &[&str]) -> Option<()> {
    need(have("npm") && have("node"), "npm and node")?;
    let o = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--ignore-scripts"])
        .args(packages)
        .current_dir(dir)
        .output()
        .unwrap();
    need(
        o.status.success(),
        &format!("npm install of {packages:?} from the registry"),
    )
}

pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// A temp dir with its own store.
pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        require_shim();
        let tmp = tempfile::Builder::new()
            .prefix("vrift-run-test")
            .tempdir()
            .unwrap();
        // Canonical root: manifests record canonical paths.
        Env { tmp }
    }

    pub fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.tmp.path()).unwrap()
    }

    pub fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// `vrift --the-source-root <store>` with a clean environment for the shim variables.
    pub fn vrift(&self) -> Command {
        let mut c = Command::new(vrift_bin());
        c.arg("--the-source-root")
            .arg(self.store())
            .arg("--no-progress");
        for k in [
            "VRIFT_MANIFESTS",
            "VRIFT_STORE",
            "VRIFT_UPPER",
            "VRIFT_EXE",
            "VR_THE_SOURCE",
        ] {
            c.env_remove(k);
        }
        c.current_dir(self.root());
        c
    }

    /// Ingests `dir` (relative to the root) into manifest `out`, phantom mode (the files
    /// move into the store), then removes whatever is left of the tree.
    pub fn ingest_and_remove(&self, dir: &str, out: &str) -> PathBuf {
        let o = self
            .vrift()
            .args(["ingest", dir, "-o", out, "--mode", "phantom"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ingest failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let d = self.path(dir);
        if d.exists() {
            make_writable(&d);
            std::fs::remove_dir_all(&d).unwrap();
        }
        assert!(!d.exists());
        self.path(out)
    }

    /// `vrift run --manifest m... -- args`, in the root directory.
    pub fn run(&self, manifests: &[&Path], args: &[&str]) -> Output {
        let mut c = self.vrift();
        c.arg("run");
        for m in manifests {
            c.arg("--manifest").arg(m);
        }
        c.arg("--").args(args);
        c.output().unwrap()
    }

    /// Like `run` but asserts success and returns stdout.
    pub fn run_ok(&self, manifests: &[&Path], args: &[&str]) -> String {
        let o = self.run(manifests, args);
        assert!(
            o.status.success(),
            "vrift run {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            args,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

pub fn make_writable(p: &Path) {
    let _ = Command::new("chmod").arg("-R").arg("u+w").arg(p).status();
}

/// Shell-quotes one argument.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub fn write(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

pub fn write_exec(p: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(p, content);
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every blob file's content in the store.
pub fn blobs(store: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![store.join("blake3")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "bin") {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Compiles the C file `src` into the program `out` with the system's gcc (natively, no view).
pub fn compile_c(src: &Path, out: &Path) {
    let o = Command::new("gcc")
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}
