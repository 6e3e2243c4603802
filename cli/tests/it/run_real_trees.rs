//! What users run, on real trees, through the view (issue 16): each tree is installed from
//! the registries (crates the workspace itself depends on, from the local cargo registry;
//! pinned wheels that `.ci/run` downloads into `$VRIFT_WHEELS`), ingested, deleted, and the
//! same command is run natively first and then under `vrift run`; outputs must match byte for
//! byte. A missing tool fails the test under `CI=true` and skips it with a note elsewhere.

use crate::run_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use run_support::*;

fn sh(dir: &Path, script: &str, envs: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).current_dir(dir);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok_stdout(o: std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `vrift run` with `manifests`, `sh -c script` in the env's root, within a time limit (a hang
/// is a failure).
fn vrun(env: &Env, manifests: &[&Path], script: &str, envs: &[(&str, &Path)]) -> String {
    let mut c = env.vrift();
    c.arg("run");
    for m in manifests {
        c.arg("--manifest").arg(m);
    }
    c.args(["--", "sh", "-c", script]);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = output_within(&mut c, 300);
    ok_stdout(o, &format!("vrift run {script}"))
}

/// The same through `vrift run --isolate` (namespaces over the link farm).
fn visolate(env: &Env, manifests: &[&Path], script: &str, envs: &[(&str, &Path)]) -> String {
    let mut c = env.vrift();
    c.args(["run", "--isolate"]);
    for m in manifests {
        c.arg("--manifest").arg(m);
    }
    c.args(["--", "sh", "-c", script]);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = output_within(&mut c, 300);
    ok_stdout(o, &format!("vrift run --isolate {script}"))
}

/// Whether this test can run programs as `nobody` (it runs as root, `runuser` works).
fn can_run_as_nobody() -> Option<()> {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    need(
        root && Command::new("runuser")
            .args(["-u", "nobody", "--", "true"])
            .status()
            .is_ok_and(|s| s.success()),
        "root and runuser (to run as nobody)",
    )
}

/// `vrift --the-source-root <store> --no-progress run --manifest m -- sh -c script` as
/// `nobody`, in the env's root, with copies of vrift and its shim in `<env>/bin` (where
/// nobody can run them).
fn vrun_as_nobody(env: &Env, m: &Path, script: &str, tmpdir: &Path) -> Command {
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for f in ["vrift", "libvrift_shim.so"] {
        std::fs::copy(vrift_bin().with_file_name(f), bin.join(f)).unwrap();
    }
    let mut c = Command::new("runuser");
    c.args(["-u", "nobody", "--"])
        .arg(bin.join("vrift"))
        .arg("--the-source-root")
        .arg(env.store())
        .args(["--no-progress", "run", "--manifest"])
        .arg(m)
        .args(["--", "sh", "-c", script])
        .current_dir(env.root())
        .env_remove("VRIFT_SHIM")
        .env_remove("VRIFT_UPPER")
        .env("TMPDIR", tmpdir);
    c
}

fn output_within(cmd: &mut Command, secs: u64) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return std::process::Output {
                status,
                stdout: t1.join().unwrap(),
                stderr: t2.join().unwrap(),
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung (no exit within {secs} s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

// -----------------------------------------------------------------------------------------
// Rust: cargo and rustc (they link jemalloc, which calls readlink inside its first malloc)
// -----------------------------------------------------------------------------------------

const CRATES: [(&str, &str); 5] = [
    ("itoa", "1.0.19"),
    ("memchr", "2.8.3"),
    ("cfg-if", "1.0.5"),
    ("smallvec", "1.16.6"),
    ("either", "1.19.0"),
];

/// A `CARGO_HOME` holding just the five crates (index entries, `.crate` files, sources), copied
/// from this machine's cargo registry (the workspace depends on all five).
fn cargo_home(dest: &Path) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let index = std::fs::read_dir(home.join("registry/index"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join(".cache").is_dir())?;
    let idx = index.file_name()?.to_owned();
    let out = dest.join(".cargo/registry");
    for (name, version) in CRATES {
        let crate_file = home
            .join("registry/cache")
            .join(&idx)
            .join(format!("{name}-{version}.crate"));
        let src = home
            .join("registry/src")
            .join(&idx)
            .join(format!("{name}-{version}"));
        if !crate_file.is_file() || !src.is_dir() {
            return None;
        }
        let to = out.join("cache").join(&idx);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(&crate_file, to.join(crate_file.file_name()?)).unwrap();
        let to = out.join("src").join(&idx);
        std::fs::create_dir_all(&to).unwrap();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&to)
            .status()
            .unwrap()
            .success());
        let cache = index.join(".cache");
        let found = walk_find(&cache, name)?;
        let rel = found.strip_prefix(&index).unwrap();
        let to = out.join("index").join(&idx).join(rel);
        std::fs::create_dir_all(to.parent()?).unwrap();
        std::fs::copy(&found, &to).unwrap();
    }
    let cfg = index.join("config.json");
    if cfg.is_file() {
        std::fs::copy(&cfg, out.join("index").join(&idx).join("config.json")).unwrap();
    }
    Some(dest.join(".cargo"))
}

fn walk_find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = walk_find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

#[test]
fn cargo_builds_a_virtual_project_against_a_virtual_registry() {
    let Some(()) = need(have("cargo"), "cargo") else {
        return;
    };
    let env = Env::new();
    let Some(home) = cargo_home(&env.path("home")) else {
        need(
            false,
            "the five crates in the local cargo registry (build the workspace first)",
        );
        return;
    };
    let app = env.path("app");
    write(
        &app.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{}",
            CRATES
                .iter()
                .map(|(n, v)| format!("{n} = \"={v}\"\n"))
                .collect::<String>()
        ),
    );
    write(
        &app.join("src/main.rs"),
        "fn main() {\n    let mut b = itoa::Buffer::new();\n    let v: smallvec::SmallVec<[u8; 4]> = smallvec::smallvec![1, 2, 3];\n    let e: either::Either<u8, u8> = either::Either::Left(7);\n    cfg_if::cfg_if! { if #[cfg(unix)] { let os = \"unix\"; } else { let os = \"other\"; } }\n    println!(\"{} {:?} {} {} {:?}\", b.format(42), v, e, os, memchr::memchr(b'c', b\"abc\"));\n}\n",
    );
    let envs = [("CARGO_HOME", home.as_path())];
    let script = "cd app && cargo build --offline -q 2>&1 && ./target/debug/app && \
                  cargo tree --offline --prefix none | sort && \
                  cargo metadata --offline --format-version 1 --no-deps | grep -c '\"name\":\"app\"' && \
                  rustc --version";
    let native = ok_stdout(sh(&env.root(), script, &envs), "native cargo");
    assert!(native.contains("42 [1, 2, 3] 7 unix Some(2)"), "{native}");
    std::fs::remove_dir_all(app.join("target")).unwrap();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    let m_app = env.ingest_and_remove("app", "app.vrm");
    let m_home = env.ingest_and_remove("home", "home.vrm");
    let virt = vrun(&env, &[&m_app, &m_home], script, &envs);
    assert_eq!(virt, native);
    let isolated = visolate(&env, &[&m_app, &m_home], script, &envs);
    assert_eq!(isolated, native, "--isolate");
}

// -----------------------------------------------------------------------------------------
// Python: a venv with numpy, pandas, requests, django — deleted
// -----------------------------------------------------------------------------------------

fn wheels() -> Option<PathBuf> {
    let w = std::env::var_os("VRIFT_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/vrift-ci/wheels"));
    w.join("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl")
        .is_file()
        .then_some(w)
}

/// A venv at `v` with `what` (pip arguments: packages, or `-r FILE`) installed offline from
/// the pinned wheels.
fn make_venv(v: &Path, wheels: &Path, what: &[&std::ffi::OsStr]) {
    ok_stdout(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(v)
            .output()
            .unwrap(),
        "python3 -m venv",
    );
    ok_stdout(
        Command::new(v.join("bin/pip"))
            .args(["install", "-q", "--no-index", "--find-links"])
            .arg(wheels)
            .args(what)
            .output()
            .unwrap(),
        "pip install (offline, pinned)",
    );
}

fn venv(env: &Env, wheels: &Path) -> PathBuf {
    let v = env.path("venv");
    let req = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/requirements.txt");
    make_venv(&v, wheels, &["-r".as_ref(), req.as_os_str()]);
    v
}

#[test]
fn numpy_pandas_django_and_tls_from_a_deleted_venv() {
    let Some(()) = need(Path::new("/usr/bin/python3").exists(), "python3") else {
        return;
    };
    let Some(wheels) = wheels() else {
        need(
            false,
            "the pinned wheels (.ci/run downloads them into $VRIFT_WHEELS)",
        );
        return;
    };
    let env = Env::new();
    venv(&env, &wheels);
    let script = "venv/bin/python -c '\
import numpy, pandas, django, requests, ssl, certifi\n\
print(numpy.__version__, int(numpy.arange(10).sum()))\n\
print(pandas.DataFrame({\"a\": [1, 2, 3]}).a.sum())\n\
print(django.get_version())\n\
ctx = ssl.create_default_context(cafile=requests.certs.where())\n\
print(len(ctx.get_ca_certs()) > 100)\n\
'";
    let native = ok_stdout(sh(&env.root(), script, &[]), "native python");
    let native_pyc = ok_stdout(sh(&env.root(), PYC_CHECK, &[]), "native pyc check");
    assert_eq!(native_pyc, "True 0\n");
    // The default secret filter keeps every file of the venv: certifi's bundle, pip's copy.
    let o = env
        .vrift()
        .args([
            "--json", "ingest", "venv", "-o", "venv.vrm", "--mode", "phantom",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["excluded"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let d = env.path("venv");
    make_writable(&d);
    std::fs::remove_dir_all(&d).unwrap();
    let virt = vrun(&env, &[&env.path("venv.vrm")], script, &[]);
    assert_eq!(virt, native);
    let isolated = visolate(&env, &[&env.path("venv.vrm")], script, &[]);
    assert_eq!(isolated, native, "--isolate");
    // Every `.pyc` pip wrote stays valid in the view — Python's own check: the source's
    // `int(st_mtime)` (a double) and size against the `.pyc` header — so imports load
    // bytecode instead of compiling every module again on each run (shim and `--isolate`).
    let m = env.path("venv.vrm");
    let shim = vrun(&env, &[&m], PYC_CHECK, &[]);
    assert_eq!(shim, native_pyc, "shim");
    let isolated = visolate(&env, &[&m], PYC_CHECK, &[]);
    assert_eq!(isolated, native_pyc, "--isolate");
}

/// Counts the venv's timestamp-based `.pyc` files and those Python would find stale.
const PYC_CHECK: &str = r#"/usr/bin/python3 -c '
import importlib.util, os, struct
n = stale = 0
for d, _, fs in os.walk("venv/lib"):
    for f in fs:
        if not f.endswith(".py"):
            continue
        p = os.path.join(d, f)
        try:
            h = open(importlib.util.cache_from_source(p), "rb").read(16)
        except OSError:
            continue
        flags, mtime, size = struct.unpack("<III", h[4:16])
        if flags:
            continue
        st = os.stat(p)
        n += 1
        stale += (mtime, size) != (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
print(n > 1000, stale)
'"#;

/// `pip install` into a deleted venv, then the new console script (a real file written during
/// the run whose `#!` names the venv's virtual python), `ls -l` of it (xattrs of a file
/// written during the run), then `pip uninstall` of a package the manifest holds; the same
/// script natively on an identical venv prints the same.
#[test]
fn pip_install_console_script_and_uninstall_in_a_deleted_venv() {
    let Some(wheels) = wheels() else {
        need(
            false,
            "the pinned wheels (.ci/run downloads them into $VRIFT_WHEELS)",
        );
        return;
    };
    let env = Env::new();
    let mk = |name: &str| make_venv(&env.path(name), &wheels, &["idna".as_ref()]);
    mk("venv");
    let script = "set -e\n\
venv/bin/pip install -q --no-index --find-links \"$W\" sqlparse\n\
ls -l venv/bin/sqlformat | cut -c1-10\n\
echo 'select a from t' | venv/bin/sqlformat -k upper -\n\
venv/bin/pip uninstall -q -y idna\n\
venv/bin/python -c 'import idna' 2>/dev/null && echo still-there || echo idna-gone\n\
venv/bin/python -c 'import sqlparse; print(sqlparse.__version__)'\n";
    let m = env.ingest_and_remove("venv", "venv.vrm");
    let virt = vrun(&env, &[&m], script, &[("W", &wheels)]);
    let isolated = visolate(&env, &[&m], script, &[("W", &wheels)]);
    // Natively, on a fresh venv at the same path (scripts name their venv's absolute path).
    mk("venv");
    let native = ok_stdout(sh(&env.root(), script, &[("W", &wheels)]), "native pip");
    assert!(native.contains("SELECT a FROM t"), "{native}");
    assert_eq!(virt, native);
    assert_eq!(isolated, native, "--isolate");
}

/// A venv round-trips exactly: ingest (default filter), checkout, `diff -r`.
#[test]
fn a_venv_round_trips_exactly() {
    let Some(wheels) = wheels() else {
        need(
            false,
            "the pinned wheels (.ci/run downloads them into $VRIFT_WHEELS)",
        );
        return;
    };
    let env = Env::new();
    let v = venv(&env, &wheels);
    let s = ingest_copy_json(&env, &v, "venv.vrm");
    assert_eq!(s["excluded"], 0, "{s}");
    let (diff, _) = checkout_and_diff(&env, "venv.vrm", &v);
    assert_eq!(diff, "");
}

/// The cargo registry sources this workspace builds from (~14,000 files of real crates)
/// round-trip exactly: ingest with the default filter, checkout, `diff -r`. The only files
/// left out are key files (a key-file name holding a private-key block), each listed by
/// path; source code embedding test keys (ureq's `pool.rs`, aws-lc's `*_test.cc`) stays.
#[test]
fn a_cargo_registry_round_trips_except_key_files() {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let src = home.map(|h| h.join("registry/src"));
    let Some(src) = src.filter(|s| s.is_dir()) else {
        need(
            false,
            "the cargo registry sources (build the workspace first)",
        );
        return;
    };
    let env = Env::new();
    // `--mode copy` leaves the registry exactly as it was.
    let v = ingest_copy_json(&env, &src, "reg.vrm");
    assert_eq!(v["errors"], 0, "{v}");
    let excluded: Vec<PathBuf> = v["excluded_paths"]
        .as_array()
        .unwrap_or_else(|| panic!("no excluded_paths: {v}"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert_eq!(v["excluded"], excluded.len(), "{v}");
    for p in &excluded {
        let body = std::fs::read(p).unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("PRIVATE KEY-----"),
            "{} left out but holds no private key",
            p.display()
        );
    }
    let (diff, back) = checkout_and_diff(&env, "reg.vrm", &src);
    let mut missing: Vec<PathBuf> = Vec::new();
    for line in diff.lines() {
        let rest = line
            .strip_prefix("Only in ")
            .unwrap_or_else(|| panic!("checkout differs from the registry: {line}"));
        let (dir, name) = rest.split_once(": ").unwrap();
        assert!(
            dir.starts_with(src.to_str().unwrap()),
            "extra in the checkout: {line}"
        );
        missing.push(Path::new(dir).join(name));
    }
    missing.sort();
    let mut want = excluded.clone();
    want.sort();
    assert_eq!(missing, want, "what is missing is exactly what was listed");
    // Source that embeds a test key is kept (when the registry holds such a crate).
    let kept = back.join(
        src.read_dir()
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .file_name(),
    );
    for (krate, file) in [
        ("ureq-", "src/pool.rs"),
        ("proptest-", "src/regex-contrib/crates_regex.rs"),
    ] {
        for e in std::fs::read_dir(&kept).unwrap().flatten() {
            let n = e.file_name();
            if n.to_string_lossy().starts_with(krate) && e.path().join(file).is_file() {
                let body = std::fs::read_to_string(e.path().join(file)).unwrap();
                assert!(body.contains("PRIVATE KEY"), "{}", e.path().display());
            }
        }
    }
}

// -----------------------------------------------------------------------------------------
// git in a virtual repository
// -----------------------------------------------------------------------------------------

#[test]
fn git_commit_and_stash_in_a_virtual_repository() {
    let Some(()) = need(have("git"), "git") else {
        return;
    };
    let env = Env::new();
    let repo = env.path("repo");
    write(&repo.join("a.txt"), "one\n");
    let g = "git -c user.name=t -c user.email=t@t -c init.defaultBranch=main";
    ok_stdout(
        sh(
            &repo,
            &format!("git init -q && {g} add . && {g} commit -qm first"),
            &[],
        ),
        "git init",
    );
    // The work tree leaves version control out; the repository is a manifest of its own,
    // nested inside the work tree's root.
    let git = env.ingest_and_remove("repo/.git", "git.vrm");
    let m = env.ingest_and_remove("repo", "repo.vrm");
    let script = format!(
        "cd repo && echo two >> a.txt && {g} commit -qam second && echo three > b.txt && \
         {g} add b.txt && {g} stash -q && {g} stash pop -q && {g} log --format=%s && \
         cat a.txt b.txt && {g} fsck --no-progress 2>&1 | grep -c error; \
         ls -a | grep -cx .git; find . -name HEAD -path './.git/*' | sort | head -1; true"
    );
    let out = vrun(&env, &[&m, &git], &script, &[]);
    // The nested root shows up in its parent's listing (ls, find, du, tar see `.git`).
    let want = "second\nfirst\none\ntwo\nthree\n0\n1\n./.git/HEAD\n";
    assert_eq!(out, want);
    assert_eq!(visolate(&env, &[&m, &git], &script, &[]), want, "--isolate");
}

// -----------------------------------------------------------------------------------------
// The dynamic loader: libraries of the view found through RUNPATH, LD_LIBRARY_PATH, ctypes
// by bare name, and `ldd` (the loader opens these files itself; no preload sees it)
// -----------------------------------------------------------------------------------------

#[test]
fn the_loader_finds_libraries_of_a_deleted_tree() {
    let Some(()) = need(have("gcc"), "gcc") else {
        return;
    };
    let Some(()) = need(have("ldd"), "ldd") else {
        return;
    };
    let env = Env::new();
    let p = env.path("proj");
    for d in ["lib", "bin", "src"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("src/foo.c"), "int foo(int x) { return x * 7; }\n").unwrap();
    std::fs::write(
        p.join("src/main.c"),
        "#include <stdio.h>\nint foo(int);\nint main(void) { printf(\"foo(6)=%d\\n\", foo(6)); return 0; }\n",
    )
    .unwrap();
    let cc = |args: &[&str]| {
        ok_stdout(
            Command::new("gcc")
                .args(args)
                .current_dir(&p)
                .output()
                .unwrap(),
            &format!("gcc {args:?}"),
        )
    };
    cc(&["-shared", "-fPIC", "-o", "lib/libfoo.so", "src/foo.c"]);
    // One program finds libfoo through RUNPATH $ORIGIN/../lib, one only through
    // LD_LIBRARY_PATH.
    cc(&[
        "-o",
        "bin/rp",
        "src/main.c",
        "-Llib",
        "-lfoo",
        "-Wl,-rpath,$ORIGIN/../lib",
    ]);
    cc(&["-o", "bin/ll", "src/main.c", "-Llib", "-lfoo"]);
    let script = "set -e\n\
proj/bin/rp\n\
LD_LIBRARY_PATH=\"$PWD/proj/lib\" proj/bin/ll\n\
LD_LIBRARY_PATH=proj/lib python3 -c 'import ctypes; print(ctypes.CDLL(\"libfoo.so\").foo(3))'\n\
ldd proj/bin/rp | grep -o 'libfoo.so => [^ ]*' | sed 's/=> .*libfoo.so$/=> found/'\n\
LD_LIBRARY_PATH=proj/lib ldd proj/bin/ll | grep -o 'libfoo.so => [^ ]*' | sed 's/=> .*libfoo.so$/=> found/'\n";
    let native = ok_stdout(sh(&env.root(), script, &[]), "native");
    assert_eq!(
        native,
        "foo(6)=42\nfoo(6)=42\n21\nlibfoo.so => found\nlibfoo.so => found\n"
    );
    let m = env.ingest_and_remove("proj", "proj.vrm");
    let virt = vrun(&env, &[&m], script, &[]);
    assert_eq!(virt, native);
    assert_eq!(visolate(&env, &[&m], script, &[]), native, "--isolate");
}

// -----------------------------------------------------------------------------------------
// Programs the shim cannot serve (static binaries), and VRIFT_REPORT
// -----------------------------------------------------------------------------------------

/// The script of the static-program tests: busybox-static (like Go's esbuild, it never loads
/// the shim) reads the view, writes, deletes and makes a directory in it; dynamic programs of
/// the same run then see exactly that; a static program given no view path runs directly.
const STATIC_SCRIPT: &str = "cat v/a.txt; /bin/busybox ls v; /bin/busybox cat v/sub/b.txt; \
    (cd v/sub && /bin/busybox cat b.txt); \
    /bin/busybox sh -c 'echo new > v/c.txt; rm v/a.txt; mkdir v/d; echo y > v/d/e; echo more >> v/sub/b.txt; rm -r v/gone'; \
    echo \"sh=$?\"; ls v; cat v/c.txt v/d/e v/sub/b.txt; test -e v/a.txt || echo a-gone; \
    test -e v/gone || echo gone-gone; /bin/busybox echo not-in-view";

const STATIC_EXPECTED: &str =
    "alpha\na.txt\ngone\nsub\nbeta\nbeta\nsh=0\nc.txt\nd\nsub\nnew\ny\nbeta\nmore\na-gone\ngone-gone\nnot-in-view\n";

fn static_tree(env: &Env) -> PathBuf {
    for (f, c) in [
        ("v/a.txt", "alpha\n"),
        ("v/sub/b.txt", "beta\n"),
        ("v/gone/x", "x\n"),
    ] {
        let p = env.path(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, c).unwrap();
    }
    env.ingest_and_remove("v", "v.vrm")
}

/// A statically linked program that touches the view runs on the same layers through a mount
/// namespace (as root: no user namespace), and what it writes is the run's: later processes
/// see its files, its deletions, its directories. With `VRIFT_REPORT`, every process says
/// which hooks served it, and static programs are listed with how they ran.
#[test]
fn static_programs_see_the_view_and_their_writes_stay_in_the_run() {
    let bb = std::path::Path::new("/bin/busybox");
    let Some(()) = need(bb.exists(), "busybox-static (/bin/busybox)") else {
        return;
    };
    let env = Env::new();
    let m = static_tree(&env);
    let report = env.path("report.jsonl");
    let o = output_within(
        env.vrift()
            .env("VRIFT_REPORT", &report)
            .args(["run", "--manifest"])
            .arg(&m)
            .args(["--", "sh", "-c", STATIC_SCRIPT]),
        120,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(out, STATIC_EXPECTED, "{err}");
    assert!(o.status.success(), "{err}");
    assert!(
        !env.path("v").exists(),
        "nothing of the view reached the disk"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let cat = lines
        .iter()
        .find(|l| l["exe"].as_str().is_some_and(|e| e.ends_with("/cat")))
        .unwrap_or_else(|| panic!("no line for cat: {lines:?}"));
    assert!(cat["hooks"]["open"][1].as_u64() >= Some(1), "{cat}");
    let statics: Vec<_> = lines.iter().filter(|l| l["static"] == true).collect();
    let ran: Vec<&str> = statics.iter().map(|l| l["ran"].as_str().unwrap()).collect();
    assert_eq!(
        ran,
        ["namespace", "namespace", "namespace", "namespace", "direct"],
        "{lines:?}"
    );
    assert!(statics.iter().all(|l| l["exec"] == "/bin/busybox"));
    assert!(statics.iter().all(|l| l["refused"] == false));

    // `--isolate` serves the tree to static programs as well.
    let o = output_within(
        env.vrift()
            .args(["run", "--isolate", "--manifest"])
            .arg(&m)
            .args(["--", "/bin/busybox", "cat", "v/sub/b.txt"]),
        120,
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "beta\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A filter like Docker's default seccomp profile: `unshare` and a `clone` that asks for a
/// new namespace fail with `EPERM` (`clone3` with `ENOSYS`, so libc falls back to `clone`),
/// then the rest of the arguments are executed.
const NO_NAMESPACES_C: &str = r#"#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#define NS (CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (argc < 2 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        return 125;
    }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
"#;

/// Where namespaces are forbidden (a container's seccomp profile), a static program that
/// touches the view is not run blind: the command stops with one line naming the program and
/// `--isolate` (exit 126), while the dynamic programs of the same run are served as usual.
#[test]
fn static_programs_without_namespaces_stop_with_one_line() {
    let bb = std::path::Path::new("/bin/busybox");
    let Some(()) = need(bb.exists() && have("gcc"), "busybox-static and gcc") else {
        return;
    };
    let env = Env::new();
    let m = static_tree(&env);
    std::fs::write(env.path("nons.c"), NO_NAMESPACES_C).unwrap();
    compile_c(&env.path("nons.c"), &env.path("nons"));
    // The filter works: no namespace can be made under it.
    let o = Command::new(env.path("nons"))
        .args(["unshare", "--mount", "true"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "unshare worked under the filter");
    let o = output_within(
        Command::new(env.path("nons"))
            .arg(vrift_bin())
            .arg("--the-source-root")
            .arg(env.store())
            .args(["run", "--manifest"])
            .arg(&m)
            .args([
                "--",
                "sh",
                "-c",
                "cat v/a.txt; exec /bin/busybox cat v/sub/b.txt",
            ])
            .env_remove("VRIFT_MANIFESTS")
            .current_dir(env.root()),
        120,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alpha\n", "{err}");
    assert_eq!(o.status.code(), Some(126), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("busybox")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("statically linked") && lines[0].contains("vrift run --isolate"),
        "{err}"
    );
}

/// The same as an ordinary user (`nobody`): the program runs in a user namespace of its own
/// (mapped to the user's own uid), and its writes still land in the run.
#[test]
fn static_programs_run_rootless_in_a_user_namespace() {
    let bb = std::path::Path::new("/bin/busybox");
    let Some(()) = need(bb.exists(), "busybox-static (/bin/busybox)") else {
        return;
    };
    let Some(()) = can_run_as_nobody() else {
        return;
    };
    let env = Env::new();
    let m = static_tree(&env);
    let mut c = vrun_as_nobody(&env, &m, STATIC_SCRIPT, &env.root());
    // The whole test tree nobody's.
    let o = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(env.root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("chmod")
        .arg("755")
        .arg(env.root())
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = output_within(&mut c, 120);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), STATIC_EXPECTED, "{err}");
    assert!(o.status.success(), "{err}");
    assert!(
        !env.path("v").exists(),
        "nothing of the view reached the disk"
    );
}

/// esbuild — a Go binary, so static, from npm — bundles a project whose `node_modules` was
/// ingested and deleted, started both directly and through its node wrapper (`.bin/esbuild`,
/// node execs the Go binary), run from inside the view; the bundle is byte for byte the
/// native one, and the run's other processes read what it wrote.
#[test]
fn esbuild_bundles_a_deleted_tree() {
    let Some(()) = need(have("npm") && have("node"), "npm and node") else {
        return;
    };
    let env = Env::new();
    let proj = env.path("proj");
    std::fs::create_dir_all(proj.join("src")).unwrap();
    write(
        &proj.join("package.json"),
        r#"{"name":"bundle-me","version":"1.0.0","private":true}"#,
    );
    write(
        &proj.join("src/index.js"),
        "import dayjs from 'dayjs';\nimport { clsx } from 'clsx';\nconsole.log(clsx('a', { b: true }), dayjs('2020-01-02').format('YYYY/MM/DD'));\n",
    );
    let Some(()) = npm_install(&proj, &["esbuild@0.24.0", "dayjs@1.11.13", "clsx@2.1.1"]) else {
        return;
    };
    let esbuild = "node_modules/@esbuild/linux-x64/bin/esbuild";
    let script = format!(
        "cd proj && {esbuild} src/index.js --bundle --platform=node --outfile=dist/a.js --log-level=warning && \
         node_modules/.bin/esbuild src/index.js --bundle --platform=node --minify --outfile=dist/b.js --log-level=warning && \
         cat dist/a.js dist/b.js && node dist/a.js"
    );
    let native_copy = env.path("native");
    std::fs::create_dir_all(&native_copy).unwrap();
    let o = Command::new("cp")
        .arg("-a")
        .arg(&proj)
        .arg(&native_copy)
        .output()
        .unwrap();
    assert!(o.status.success());
    let native = ok_stdout(sh(&native_copy, &script, &[]), "native esbuild");
    assert!(native.contains("a b 2020/01/02"), "{native}");
    let m = env.ingest_and_remove("proj", "proj.vrm");
    let virt = vrun(&env, &[&m], &script, &[]);
    assert_eq!(virt, native);
    assert_eq!(visolate(&env, &[&m], &script, &[]), native, "--isolate");
    assert!(!env.path("proj").exists());
}

/// Identical files of a tree are separate files in the view, as they were on disk: `cp -a`
/// and `tar` inside the view make no hard links between them, and an edit of one copy leaves
/// the other alone (shim: an inode number per entry; `--isolate`: one inode per farm file).
#[test]
fn identical_files_stay_separate_in_copies_and_archives() {
    let env = Env::new();
    for (f, c) in [
        ("v/src/a.txt", "same\n"),
        ("v/src/b.txt", "same\n"),
        ("v/src/sub/c.txt", "same\n"),
        ("v/src/e1", ""),
        ("v/src/e2", ""),
    ] {
        let p = env.path(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, c).unwrap();
    }
    let script = "set -e; cp -a v/src v/copy; echo edited >> v/copy/a.txt; \
        cat v/copy/b.txt v/copy/sub/c.txt; \
        stat -c %i v/copy/a.txt v/copy/b.txt v/copy/sub/c.txt v/copy/e1 v/copy/e2 | sort -u | wc -l; \
        tar cf - -C v src | tar tvf - | grep -c '^h' || true";
    let native = ok_stdout(sh(&env.root(), script, &[]), "native");
    assert_eq!(native, "same\nsame\n5\n0\n");
    std::fs::remove_dir_all(env.path("v/copy")).unwrap();
    let m = env.ingest_and_remove("v", "v.vrm");
    assert_eq!(vrun(&env, &[&m], script, &[]), native, "shim");
    assert_eq!(visolate(&env, &[&m], script, &[]), native, "--isolate");
}

/// The `fs.watch` machinery as users meet it: `webpack --watch` (webpack 5 from npm) on a
/// project whose `node_modules` and sources were ingested and deleted builds once at start
/// (no spurious second build from times the view shows differently), once more after an
/// edit through the view, and the bundle has the edit — as natively, under the shim and
/// under `--isolate`.
#[test]
fn webpack_watch_builds_once_then_once_per_edit() {
    let Some(()) = need(have("npm") && have("node"), "npm and node") else {
        return;
    };
    let env = Env::new();
    let app = env.path("app");
    write(
        &app.join("package.json"),
        r#"{"name":"watch-me","version":"1.0.0","private":true}"#,
    );
    write(
        &app.join("src/index.js"),
        "import { x } from './b.js';\nconsole.log(x);\n",
    );
    write(&app.join("src/b.js"), "export const x = 42;\n");
    write(
        &app.join("webpack.config.js"),
        "let n = 0;\nmodule.exports = { plugins: [{ apply(c) { c.hooks.done.tap('count', () => \
         { n++; require('fs').appendFileSync(process.env.COUNT_FILE, 'build ' + n + '\\n'); }); } }] };\n",
    );
    let Some(()) = npm_install(&app, &["webpack@5.97.1", "webpack-cli@5.1.4"]) else {
        return;
    };
    // Waits (up to 60 s) for each build; the 2 s after each is the window in which a
    // spurious rebuild would show.
    let script = "cd app || exit 1; export COUNT_FILE=$PWD/count.txt; \
        node node_modules/webpack-cli/bin/cli.js --watch --mode development --entry ./src/index.js \
          -o dist --stats=none >/dev/null 2>&1 & pid=$!; \
        wait_for() { i=0; until grep -qx \"$1\" count.txt 2>/dev/null; do \
          sleep 0.2; i=$((i+1)); [ $i -gt 300 ] && break; done; sleep 2; }; \
        wait_for 'build 1'; echo 'export const x = 43;' > src/b.js; wait_for 'build 2'; \
        kill $pid; wait $pid 2>/dev/null; cat count.txt; node dist/main.js";
    let native_copy = env.path("native");
    std::fs::create_dir_all(&native_copy).unwrap();
    let o = Command::new("cp")
        .arg("-a")
        .arg(&app)
        .arg(&native_copy)
        .output()
        .unwrap();
    assert!(o.status.success());
    let native = ok_stdout(sh(&native_copy, script, &[]), "native webpack --watch");
    assert_eq!(native, "build 1\nbuild 2\n43\n");
    let m = env.ingest_and_remove("app", "app.vrm");
    assert_eq!(vrun(&env, &[&m], script, &[]), native, "shim");
    assert_eq!(visolate(&env, &[&m], script, &[]), native, "--isolate");
}

/// A store the user cannot write (a shared, root-owned store): the shim cannot keep its
/// validated manifest copy in `<store>/shim/`, so each process maps a sealed in-memory copy
/// (memfd) instead, and the view is served all the same.
#[test]
fn a_read_only_store_serves_the_view_from_memory_copies() {
    let Some(()) = can_run_as_nobody() else {
        return;
    };
    let env = Env::new();
    write(&env.path("v/a.txt"), "alpha\n");
    let m = env.ingest_and_remove("v", "v.vrm");
    let script = "cat v/a.txt; grep -c memfd /proc/self/maps";
    let mut c = vrun_as_nobody(&env, &m, script, Path::new("/tmp"));
    let o = Command::new("chmod")
        .args(["-R", "a+rX,go-w"])
        .arg(env.root())
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = output_within(&mut c, 120);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alpha\n1\n", "{err}");
    assert!(o.status.success(), "{err}");
    let shim_dir = env.store().join("shim");
    assert!(
        !shim_dir.exists() || std::fs::read_dir(&shim_dir).unwrap().next().is_none(),
        "nobody wrote into the store"
    );
}
