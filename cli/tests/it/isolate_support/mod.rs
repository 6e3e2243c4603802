//! Shared set-up of the `isolate_*` tests: real namespaces, real processes, an ordinary user.
//!
//! As root the tests run `vrift` as `nobody` (through `runuser`) in a directory `nobody`
//! owns; as an ordinary user they run it as themselves. The test directory lives in
//! `/var/tmp` (not `/tmp`): without `--base` the sandbox gets a fresh tmpfs `/tmp`, and the
//! host-visibility tests need the store and the project to be visible (read-only) inside.
//! Tests skip (with a message) where user namespaces are unavailable; `busybox-static` and
//! `nodejs` come from `.ci/apt-packages` and are never installed by a test.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const NOBODY: u32 = 65534;

pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn skip(why: &str) -> Option<Env> {
    // Under CI every isolation test must run: user namespaces are a requirement there.
    assert!(
        std::env::var_os("CI").is_none(),
        "required in CI, missing here: {why}"
    );
    eprintln!("SKIP: {why}");
    None
}

/// A test environment: a directory the test user owns, a store in it, the binary.
pub struct Env {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub script: PathBuf,
    pub home: PathBuf,
    pub store: PathBuf,
    pub as_nobody: bool,
}

impl Env {
    pub fn new() -> Option<Env> {
        let as_nobody = is_root();
        if as_nobody {
            let ok = Command::new("runuser")
                .args(["-u", "nobody", "--", "true"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return skip("running as root but `runuser -u nobody` does not work");
            }
        }
        let base = if Path::new("/var/tmp").is_dir() {
            PathBuf::from("/var/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("vrift-isolate-")
            .tempdir_in(&base)
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().to_path_buf();
        let bin = path.join("vrift");
        // VRIFT_TEST_BIN runs the suite against another build (e.g. the one before a fix).
        let under_test = std::env::var_os("VRIFT_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vrift")));
        fs::copy(under_test, &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let script = path.join("make-busybox-base.sh");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-busybox-base.sh"),
            &script,
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let home = path.join("home");
        fs::create_dir(&home).unwrap();
        let env = Env {
            _dir: dir,
            dir: path,
            bin,
            script,
            store: home.join("store"),
            home,
            as_nobody,
        };
        env.give(&env.home);
        // Can this user create user namespaces at all?
        let o = env.cmd("unshare").args(["-U", "true"]).output();
        if !o.as_ref().is_ok_and(|o| o.status.success()) {
            return skip(&format!(
                "the test user cannot create user namespaces here (unshare -U: {:?})",
                o.map(|o| describe(&o))
            ));
        }
        Some(env)
    }

    /// `program` run as the test user in `home`.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        c.current_dir(&self.home);
        c.env_remove("VR_THE_SOURCE");
        c.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        c.stdin(Stdio::null());
        c
    }

    /// `vrift --the-source-root STORE`, as the test user.
    pub fn vrift(&self) -> Command {
        let mut c = self.cmd(&self.bin);
        c.arg("--the-source-root").arg(&self.store);
        c
    }

    /// Gives a tree to the test user (no-op when not root).
    pub fn give(&self, p: &Path) {
        if !self.as_nobody {
            return;
        }
        std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        if fs::symlink_metadata(p).unwrap().is_dir() {
            for e in fs::read_dir(p).unwrap() {
                self.give(&e.unwrap().path());
            }
        }
    }

    /// Writes a file under `home` (parents created), owned by the test user.
    pub fn write(&self, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = self.home.join(rel);
        let mut made = Vec::new();
        let mut a = p.parent().unwrap().to_path_buf();
        while !a.exists() {
            made.push(a.clone());
            a = a.parent().unwrap().to_path_buf();
        }
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        for d in made {
            self.give(&d);
        }
        self.give(&p);
        p
    }

    /// `vrift ingest DIR -o OUT` as the test user; must succeed.
    pub fn ingest(&self, dir: &Path, out: &Path) {
        let o = self
            .vrift()
            .arg("--no-progress")
            .arg("ingest")
            .arg(dir)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ingest {}\n{}",
            dir.display(),
            describe(&o)
        );
    }

    /// `scripts/make-busybox-base.sh` as the test user; returns the manifest.
    pub fn busybox_base(&self) -> PathBuf {
        let out = self.home.join("busybox.manifest");
        let o = self
            .cmd(&self.script)
            .arg("-o")
            .arg(&out)
            .arg("--vrift")
            .arg(&self.bin)
            .arg("--")
            .arg("--the-source-root")
            .arg(&self.store)
            .output()
            .unwrap();
        assert!(o.status.success(), "make-busybox-base.sh\n{}", describe(&o));
        assert!(out.is_file());
        out
    }

    /// `vrift run --isolate ARGS...` (layers, flags, `--`, command), as the test user.
    pub fn isolate<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.isolate_cmd(args).output().unwrap()
    }

    pub fn isolate_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.vrift();
        c.arg("run").arg("--isolate").args(args);
        c
    }

    /// Nothing of a finished run may be left: no scratch directory, no half-built farm.
    #[track_caller]
    pub fn assert_clean(&self) {
        if let Ok(rd) = fs::read_dir(self.store.join("isolate")) {
            let left: Vec<OsString> = rd
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.as_bytes().starts_with(b"kept-"))
                .collect();
            assert!(left.is_empty(), "scratch directories left: {left:?}");
        }
        if let Ok(rd) = fs::read_dir(self.store.join("tmp")) {
            let left: Vec<OsString> = rd.flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "files left in the store's tmp/: {left:?}");
        }
        if let Ok(rd) = fs::read_dir(self.store.join("farms")) {
            let left: Vec<OsString> = rd
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n.as_bytes().starts_with(b".") && n != ".index")
                .collect();
            assert!(left.is_empty(), "unfinished farms left: {left:?}");
        }
    }

    /// Finished farms in the store.
    pub fn farms(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.store.join("farms"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A base layer holding `prog` and the shared libraries `ldd` names for it, at their
    /// host paths (a dynamic program for a busybox root). `None` if `prog` is missing.
    pub fn dynamic_layer(&self, prog: &str, name: &str) -> Option<PathBuf> {
        let prog = Path::new(prog);
        if !prog.exists() {
            return None;
        }
        let o = Command::new("ldd").arg(prog).output().ok()?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut files = vec![prog.to_path_buf()];
        for line in text.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.push(PathBuf::from(p));
            }
        }
        let root = self.home.join(format!("{name}.root"));
        for f in &files {
            let dest = root.join(f.strip_prefix("/").unwrap());
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
        }
        self.give(&root);
        let out = self.home.join(format!("{name}.manifest"));
        self.ingest(&root, &out);
        Some(out)
    }
}

/// The static busybox of `busybox-static`, or a skip (a panic under CI, which installs it
/// from `.ci/apt-packages`).
pub fn need_busybox() -> bool {
    if Path::new("/bin/busybox").is_file() {
        return true;
    }
    let msg = "/bin/busybox missing: install busybox-static (listed in .ci/apt-packages)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    false
}

/// Host pids whose command line contains `needle` (as NUL-separated argv joined by spaces).
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cl) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cl: Vec<u8> = cl
            .into_iter()
            .map(|b| if b == 0 { b' ' } else { b })
            .collect();
        if String::from_utf8_lossy(&cl).trim_end() == needle {
            out.push(pid);
        }
    }
    out
}

/// Waits up to `secs` for exactly one process with this command line; returns its pid.
pub fn wait_for_process(needle: &str, secs: u64) -> i32 {
    let t = std::time::Instant::now();
    loop {
        let p = pids_with_cmdline(needle);
        if p.len() == 1 {
            return p[0];
        }
        assert!(
            t.elapsed().as_secs() < secs,
            "no single process `{needle}` after {secs} s: {p:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn os(s: &str) -> OsString {
    OsString::from(s)
}
