//! Velo Rift's test support, shared by the workspace's integration tests: a private store per
//! test ([`TestContext`]), the `vrift` binary under test, awkward trees, exact snapshots and
//! comparisons of trees, the store's invariants checked from the outside (blob names re-hashed
//! with an independent BLAKE3: [`digest`]), a real S3 server ([`s3`]), the installed corpora,
//! and the pipeline's manifest oracle ([`oracle`]).
//!
//! A capability a test needs and this machine lacks (a tool, a privilege, a kernel feature)
//! fails the test under `CI` ([`skip_unless_ci`]): CI installs everything, so nothing passes
//! there without running.
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
// Tests set up identities with libc directly (`geteuid`).
#![allow(unsafe_code)]

pub mod digest;
pub mod oracle;
pub mod s3;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The keys `vrift ingest --json` promises, in order.
pub const JSON_KEYS: [&str; 18] = [
    "version",
    "files",
    "dirs",
    "symlinks",
    "bytes",
    "blobs_new",
    "dedup_hits",
    "skipped",
    "excluded",
    "errors",
    "seconds",
    "files_per_sec",
    "manifest",
    "issues",
    "excluded_paths",
    "project",
    "store",
    "total_seconds",
];

/// The binary under test: this build's (`target/<profile>/vrift`, beside the test binary's
/// `deps/`), or `VRIFT_TEST_BIN` (to show that a test fails on an older build, e.g. the one
/// before a security fix).
pub fn bin() -> PathBuf {
    std::env::var_os("VRIFT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("vrift"))
}

/// One test's own world: a temp directory holding a private store, and the binary under test
/// run against it.
pub struct TestContext {
    dir: tempfile::TempDir,
    /// `<dir>/store`, made on first use by the binary.
    pub store: PathBuf,
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestContext {
    pub fn new() -> TestContext {
        let dir = tempdir();
        let store = dir.path().join("store");
        TestContext { dir, store }
    }

    /// The temp directory (removed with the context).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` under the temp directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `vrift --the-source-root STORE`, with no store variable from the environment.
    pub fn vrift(&self) -> Command {
        vrift(&self.store)
    }

    /// `vrift ingest SRC -o OUT --json EXTRA...`, which must succeed without per-file errors;
    /// its JSON report.
    pub fn ingest(&self, src: &Path, out: &Path, extra: &[&str]) -> Value {
        ingest_ok(&self.store, src, out, extra)
    }

    /// `vrift checkout MANIFEST DEST`, which must succeed.
    pub fn checkout(&self, manifest: &Path, dest: &Path) {
        checkout_ok(&self.store, manifest, dest);
    }

    /// A real S3 server on loopback (see [`s3::S3Server`]); `None` only where
    /// `VRIFT_SKIP_S3_TESTS=1` allows it.
    pub fn s3(&self) -> Option<s3::S3Server> {
        s3::S3Server::start()
    }
}

/// The installed corpus `name` (`xsmall`, `small`, …: a `node_modules` with its lock file,
/// from `../shared/bench/make-corpus.sh`): `VRIFT_TEST_CORPUS` for `xsmall`, else
/// `../corpora/NAME` beside the repository or `/work/corpora/NAME`. `None` when it is not
/// installed.
pub fn corpus(name: &str) -> Option<PathBuf> {
    if name == "xsmall" {
        if let Some(p) = std::env::var_os("VRIFT_TEST_CORPUS") {
            return Some(PathBuf::from(p));
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        repo.join("../corpora").join(name),
        PathBuf::from("/work/corpora").join(name),
    ]
    .into_iter()
    .find(|c| c.join("node_modules").is_dir() && c.join("package-lock.json").is_file())
}

/// A test that cannot run on this machine (a missing tool, privilege or kernel feature):
/// fails under `CI`, where `.ci/run` provides everything the suite needs, so a test never
/// passes there without running; elsewhere it says so on stderr and the test returns.
pub fn skip_unless_ci(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "required in CI, missing here: {why}"
    );
    eprintln!("SKIP: {why}");
}

/// Whether util-linux `script` is here to give a command a terminal (a test that needs one
/// skips without it, or fails under CI, which installs it).
pub fn have_script() -> bool {
    let ok = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_unless_ci("util-linux `script` for a terminal");
    }
    ok
}

/// `vrift --the-source-root STORE` with a clean environment for the store variable.
pub fn vrift(store: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_remove("VR_THE_SOURCE");
    c.arg("--the-source-root").arg(store);
    c
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vrift-e2e-")
        .tempdir()
        .expect("tempdir")
}

/// Printable form of a command's result for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout must be exactly one JSON object (one line, nothing else).
pub fn json_of(o: &Output) -> Value {
    let s = std::str::from_utf8(&o.stdout).expect("stdout is UTF-8");
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must hold exactly one JSON line\n{}",
        describe(o)
    );
    let v: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", describe(o)));
    assert!(v.is_object(), "not a JSON object\n{}", describe(o));
    v
}

pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("key {key} missing or not a u64 in {v}"))
}

/// `vrift ingest SRC -o OUT --json EXTRA...`, whatever the outcome.
pub fn ingest_raw(store: &Path, src: &Path, out: &Path, extra: &[&str]) -> Output {
    vrift(store)
        .arg("--json")
        .arg("ingest")
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("spawn vrift")
}

/// An ingest that must succeed with no per-file errors; returns its JSON report.
pub fn ingest_ok(store: &Path, src: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = ingest_raw(store, src, out, extra);
    assert_eq!(o.status.code(), Some(0), "ingest failed\n{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(
        num(&v, "errors"),
        0,
        "ingest reported errors\n{}",
        describe(&o)
    );
    v
}

pub fn checkout_raw(store: &Path, manifest: &Path, dest: &Path) -> Output {
    vrift(store)
        .arg("checkout")
        .arg(manifest)
        .arg(dest)
        .output()
        .expect("spawn vrift")
}

pub fn checkout_ok(store: &Path, manifest: &Path, dest: &Path) {
    let o = checkout_raw(store, manifest, dest);
    assert_eq!(
        o.status.code(),
        Some(0),
        "checkout failed\n{}",
        describe(&o)
    );
}

/// A process that panicked exits 101 and says so; vrift must never do that.
pub fn assert_no_panic(o: &Output) {
    let e = stderr(o);
    assert!(
        o.status.code() != Some(101) && !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "vrift panicked\n{}",
        describe(o)
    );
    assert!(
        o.status.code().is_some(),
        "killed by a signal\n{}",
        describe(o)
    );
}

// ---------------------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------------------

/// One entry of a tree, as far as a user can tell: kind, content, permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Directory with its permission bits.
    Dir {
        mode: u32,
    },
    /// Regular file: content and its read/exec bits (write bits are vrift's to strip).
    File {
        content: Vec<u8>,
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// Relative path (raw bytes, `/`-separated) → node. The root itself is not included.
pub type Tree = BTreeMap<Vec<u8>, Node>;

/// Read and exec bits of a file mode: what must survive ingest and checkout.
pub const RX_BITS: u32 = 0o555;

pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

pub fn show(rel: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(rel))
}

/// Snapshot of everything under `root` (never following symlinks).
pub fn snapshot(root: &Path) -> Tree {
    let mut t = Tree::new();
    snap_dir(root, &mut Vec::new(), &mut t);
    t
}

fn snap_dir(dir: &Path, rel: &mut Vec<u8>, t: &mut Tree) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for ent in rd {
        let ent = ent.expect("dir entry");
        let name = ent.file_name();
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let p = ent.path();
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        if ft.is_dir() {
            t.insert(
                rel.clone(),
                Node::Dir {
                    mode: md.mode() & 0o7777,
                },
            );
            snap_dir(&p, rel, t);
        } else if ft.is_symlink() {
            let target = fs::read_link(&p).expect("readlink").into_os_string();
            t.insert(
                rel.clone(),
                Node::Symlink {
                    target: target.into_vec(),
                },
            );
        } else if ft.is_file() {
            let content = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            t.insert(
                rel.clone(),
                Node::File {
                    content,
                    mode: md.mode() & RX_BITS,
                },
            );
        } else {
            panic!("unexpected special file {}", p.display());
        }
        rel.truncate(len);
    }
}

fn brief(n: &Node) -> String {
    match n {
        Node::Dir { mode } => format!("dir {mode:o}"),
        Node::File { content, mode } => format!(
            "file {mode:o} {} bytes blake3 {}",
            content.len(),
            &digest::hex(content)[..12]
        ),
        Node::Symlink { target } => format!("symlink -> {}", show(target)),
    }
}

/// Lists every difference between two trees (empty when they are equal).
pub fn diff_trees(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => out.push(format!("missing {}: {}", show(k), brief(v))),
            Some(a) if a != v => out.push(format!(
                "differs {}: expected {}, got {}",
                show(k),
                brief(v),
                brief(a)
            )),
            _ => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            out.push(format!("extra {}: {}", show(k), brief(v)));
        }
    }
    out
}

#[track_caller]
pub fn assert_trees_equal(expected: &Tree, actual: &Tree, what: &str) {
    let d = diff_trees(expected, actual);
    if !d.is_empty() {
        let n = d.len();
        let shown: Vec<String> = d.into_iter().take(40).collect();
        panic!(
            "{what}: trees differ in {n} entries:\n  {}",
            shown.join("\n  ")
        );
    }
}

/// Distinct contents of the regular files of a tree.
pub fn distinct_contents(t: &Tree) -> BTreeSet<Vec<u8>> {
    t.values()
        .filter_map(|n| match n {
            Node::File { content, .. } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

pub fn file_count(t: &Tree) -> usize {
    t.values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count()
}

pub fn write_file(path: &Path, content: &[u8], mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn symlink(target: impl AsRef<OsStr>, path: &Path) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    std::os::unix::fs::symlink(target.as_ref(), path)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
}

/// Depth of the deep path in [`build_tricky_tree`].
pub const DEEP_LEVELS: usize = 40;

/// A tree with every awkward thing a real `node_modules` (or a hostile user) contains.
/// Nothing in it is excluded by the default filter, and no two files share content while
/// differing in their exec bit (that case has tests of its own).
pub fn build_tricky_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let w = |rel: &str, content: &[u8], mode: u32| write_file(&root.join(rel), content, mode);

    // An npm-like package.
    w(
        "node_modules/left-pad/package.json",
        br#"{"name":"left-pad","version":"1.3.0","bin":{"left-pad":"cli.js"}}"#,
        0o644,
    );
    w(
        "node_modules/left-pad/index.js",
        b"module.exports = (s, n) => String(s).padStart(n);\n",
        0o644,
    );
    w(
        "node_modules/left-pad/cli.js",
        b"#!/bin/sh\necho left-pad-ok \"$@\"\n",
        0o755,
    );
    w("node_modules/left-pad/README.md", b"# left-pad\n", 0o644);
    w(
        "node_modules/left-pad/LICENSE",
        b"MIT License\n\nCopyright (c) left-pad\n",
        0o644,
    );
    // Same content as another package's files: in-tree duplicates.
    w(
        "node_modules/right-pad/LICENSE",
        b"MIT License\n\nCopyright (c) left-pad\n",
        0o644,
    );
    w(
        "node_modules/right-pad/index.js",
        b"module.exports = (s, n) => String(s).padEnd(n);\n",
        0o644,
    );
    w("node_modules/right-pad/README.md", b"# left-pad\n", 0o644);
    // The package's own .gitignore names files it still ships: all must be ingested.
    w(
        "node_modules/right-pad/.gitignore",
        b"ignored.txt\n*.log\nbuild/\n",
        0o644,
    );
    w("node_modules/right-pad/.npmignore", b"test/\n", 0o644);
    w(
        "node_modules/right-pad/ignored.txt",
        b"shipped although gitignored\n",
        0o644,
    );
    w("node_modules/right-pad/debug.log", b"also shipped\n", 0o644);
    w("node_modules/right-pad/build/out.js", b"// built\n", 0o644);
    w("node_modules/right-pad/test/t.js", b"// test\n", 0o644);
    // .bin with an executable script and symlinks into packages.
    w(
        "node_modules/.bin/run-me",
        b"#!/bin/sh\necho bin-ok\n",
        0o755,
    );
    symlink(
        "../left-pad/cli.js",
        &root.join("node_modules/.bin/left-pad"),
    );
    w(
        "node_modules/.package-lock.json",
        b"{\"lockfileVersion\":3}\n",
        0o644,
    );
    // Hidden files and directories.
    w(".hidden", b"hidden file\n", 0o644);
    w(".config/settings.json", b"{}\n", 0o644);
    w(
        "node_modules/left-pad/.eslintrc",
        b"{\"root\":true}\n",
        0o644,
    );
    // Empty files (several: all share the empty blob) and empty directories.
    w("empty.txt", b"", 0o644);
    w("node_modules/left-pad/empty", b"", 0o644);
    w("node_modules/right-pad/.keep", b"", 0o644);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("nested/empty/dirs/all/the/way")).unwrap();
    // Private and read-only files.
    w("private.txt", b"only for the owner\n", 0o600);
    w("readonly.txt", b"read only\n", 0o444);
    w("tools/build.sh", b"#!/bin/sh\nexit 0\n", 0o700);
    // Symlinks: relative, absolute (outside and inside the tree), dangling, to a directory,
    // a chain, and a link whose target has odd bytes.
    symlink("index.js", &root.join("node_modules/left-pad/main.js"));
    symlink("/etc/hostname", &root.join("abs-outside"));
    symlink(
        root.join("node_modules/left-pad/index.js"),
        &root.join("abs-inside"),
    );
    symlink("does/not/exist", &root.join("dangling"));
    symlink("/nonexistent/absolute/dangling", &root.join("dangling-abs"));
    symlink("node_modules/left-pad", &root.join("dir-link"));
    symlink("abs-inside", &root.join("link-to-link"));
    symlink(
        OsStr::from_bytes(b"odd \n\xff target"),
        &root.join("odd-target"),
    );
    // Names: non-UTF-8, unicode, newline, spaces, leading dash, glob characters, backslash.
    let names: [&[u8]; 12] = [
        b"bad-\xff\xfe-utf8.txt",
        b"latin1-caf\xe9.txt",
        "ünïcødé-日本語-файл.txt".as_bytes(),
        "emoji 🎉.js".as_bytes(),
        b"new\nline.txt",
        b"with space.txt",
        b" leading and trailing space ",
        b"-rf",
        b"[glob]*?.txt",
        b"back\\slash",
        b"tab\there",
        b"quote\"'.txt",
    ];
    let odd = root.join("odd-names");
    fs::create_dir_all(&odd).unwrap();
    for (i, n) in names.iter().enumerate() {
        let content = format!("odd name #{i}\n");
        write_file(&odd.join(OsStr::from_bytes(n)), content.as_bytes(), 0o644);
    }
    let odd_dir = odd.join(OsStr::from_bytes(b"dir \xff\nname"));
    write_file(
        &odd_dir.join("inside.txt"),
        b"inside an odd directory\n",
        0o644,
    );
    fs::create_dir_all(odd.join("ünï dir/empty")).unwrap();
    // A hard-linked pair (pnpm-style trees are full of them).
    fs::hard_link(
        root.join("node_modules/right-pad/index.js"),
        root.join("node_modules/right-pad/index-hardlink.js"),
    )
    .unwrap();
    // 40 levels deep.
    let mut deep = root.join("deep");
    for i in 0..DEEP_LEVELS {
        deep.push(format!("level-{i:02}"));
    }
    write_file(&deep.join("bottom.txt"), b"40 levels down\n", 0o644);
    symlink("../../../../up.txt", &deep.join("up-link"));
    // Bigger files: exactly one chunk, just above, and streamed (> 1 MiB).
    w("sizes/1024", &pattern(1024, 1), 0o644);
    w("sizes/1025", &pattern(1025, 2), 0o644);
    w("sizes/big.bin", &pattern((3 << 20) + 17, 3), 0o644);
    w("sizes/one-byte", b"x", 0o644);
}

/// Deterministic non-repeating-ish bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree of `n` small files spread over directories, `distinct` different contents.
pub fn build_many_files(root: &Path, n: usize, distinct: usize, tag: &str) {
    for i in 0..n {
        let dir = root.join(format!("pkg-{:03}", i / 200));
        if i % 200 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let c = format!("{tag} content {}\n", i % distinct.max(1));
        fs::write(dir.join(format!("f{i:05}.js")), c).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The store, seen from outside
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Blob {
    pub path: PathBuf,
    pub hex: String,
    pub size: u64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
    pub nlink: u64,
}

/// Every blob under `<store>/blake3`, checking the layout on the way: only `xx/yy/` shard
/// directories, only `<hex>_<size>.bin` regular files inside them.
pub fn list_blobs(store: &Path) -> Vec<Blob> {
    let top = store.join("blake3");
    let mut out = Vec::new();
    for a in fs::read_dir(&top).unwrap_or_else(|e| panic!("{}: {e}", top.display())) {
        let a = a.unwrap();
        let an = a.file_name().into_string().expect("shard name is ASCII");
        assert!(
            is_hex(&an, 2),
            "stray entry {} in blake3/",
            a.path().display()
        );
        assert!(
            a.file_type().unwrap().is_dir(),
            "{} is not a dir",
            a.path().display()
        );
        for b in fs::read_dir(a.path()).unwrap() {
            let b = b.unwrap();
            let bn = b.file_name().into_string().expect("shard name is ASCII");
            assert!(is_hex(&bn, 2), "stray entry {}", b.path().display());
            for f in fs::read_dir(b.path()).unwrap() {
                let f = f.unwrap();
                let p = f.path();
                let name = f
                    .file_name()
                    .into_string()
                    .unwrap_or_else(|n| panic!("non-ASCII name in the store: {n:?}"));
                let (hex, size) = parse_blob_name(&name)
                    .unwrap_or_else(|| panic!("not a blob name: {}", p.display()));
                assert_eq!(&hex[..2], an, "blob {} in the wrong shard", p.display());
                assert_eq!(&hex[2..4], bn, "blob {} in the wrong shard", p.display());
                let md = fs::symlink_metadata(&p).unwrap();
                assert!(
                    md.file_type().is_file(),
                    "blob {} is not a regular file",
                    p.display()
                );
                out.push(Blob {
                    path: p,
                    hex,
                    size,
                    ino: md.ino(),
                    dev: md.dev(),
                    mode: md.mode() & 0o7777,
                    nlink: md.nlink(),
                });
            }
        }
    }
    out
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn parse_blob_name(name: &str) -> Option<(String, u64)> {
    let stem = name.strip_suffix(".bin")?;
    let (hex, size) = stem.split_once('_')?;
    if !is_hex(hex, 64) || size.is_empty() || !size.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((hex.to_string(), size.parse().ok()?))
}

/// Checks every blob: name = BLAKE3 and size of its bytes, no write bits. Returns the blobs.
pub fn verify_store(store: &Path) -> Vec<Blob> {
    let blobs = list_blobs(store);
    for b in &blobs {
        let bytes = fs::read(&b.path).unwrap();
        assert_eq!(
            bytes.len() as u64,
            b.size,
            "blob {} has the wrong size",
            b.path.display()
        );
        assert_eq!(
            digest::hex(&bytes),
            b.hex,
            "blob {} does not match its name",
            b.path.display()
        );
        assert_eq!(
            b.mode & 0o222,
            0,
            "blob {} is writable ({:o})",
            b.path.display(),
            b.mode
        );
    }
    blobs
}

/// Blob path for some content, whether or not it exists.
pub fn blob_path_of(store: &Path, content: &[u8]) -> PathBuf {
    let h = digest::hex(content);
    store
        .join("blake3")
        .join(&h[..2])
        .join(&h[2..4])
        .join(format!("{h}_{}.bin", content.len()))
}

/// No half-finished work may stay visible: nothing in `<store>/tmp`, no `.vrift-tmp-*`
/// beside the project's files.
#[track_caller]
pub fn assert_no_leftovers(store: &Path, src: &Path) {
    let tmp = store.join("tmp");
    if tmp.exists() {
        let left: Vec<OsString> = fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "temp files left in {}: {left:?}",
            tmp.display()
        );
    }
    let mut found = Vec::new();
    find_sibling_temps(src, &mut found);
    assert!(
        found.is_empty(),
        "vrift temp files left in the source: {found:?}"
    );
}

fn find_sibling_temps(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_name().as_bytes().starts_with(b".vrift-tmp-") {
            found.push(e.path());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_sibling_temps(&e.path(), found);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running as an ordinary user
// ---------------------------------------------------------------------------------------

pub const NOBODY_UID: u32 = 65534;
pub const NOBODY_GID: u32 = 65534;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether tests may switch to `nobody` (root, `runuser` present, the user exists).
pub fn can_run_as_nobody() -> Result<(), String> {
    if !is_root() {
        return Err("not running as root: cannot switch to an ordinary user".into());
    }
    let ok = Command::new("runuser")
        .args(["-u", "nobody", "--", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err("`runuser -u nobody -- true` does not work here".into())
    }
}

/// A root-created temp dir every user may enter, holding a copy of the binary `nobody` can run
/// (the build directory may not be reachable for other users).
pub struct SharedDir {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

impl Default for SharedDir {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedDir {
    pub fn new() -> SharedDir {
        let dir = tempdir();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("vrift");
        fs::copy(self::bin(), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        SharedDir { dir, bin }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A directory owned by `nobody` inside the shared dir.
    pub fn nobody_dir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir_all(&p).unwrap();
        chown(&p);
        p
    }

    /// `runuser -u nobody -- vrift --the-source-root STORE ...`
    pub fn vrift_as_nobody(&self, store: &Path) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&self.bin);
        c.env_remove("VR_THE_SOURCE");
        c.arg("--the-source-root").arg(store);
        c
    }
}

pub fn chown(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY_UID), Some(NOBODY_GID))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

/// Gives a whole tree (not following symlinks) to `nobody`.
pub fn chown_tree(p: &Path) {
    chown(p);
    let md = fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

/// `runuser -u nobody -- sh -c SCRIPT` with `$1`.. as arguments.
pub fn sh_as_nobody(script: &str, args: &[&OsStr]) -> Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .expect("spawn runuser")
}

/// Makes every directory and file of a tree writable again so a temp dir can be removed
/// (blobs and ingested files have no write bits; that is fine for root, but not for
/// directories we made read-only ourselves).
pub fn make_removable(p: &Path) {
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if md.is_dir() {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                make_removable(&e.path());
            }
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*) so random delays are reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_time() -> Rng {
        let seed = std::env::var("VRIFT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed {seed} (rerun with VRIFT_TEST_SEED={seed})");
        Rng(seed | 1)
    }

    // A draw, not an iterator: the tests call it as `rng.next()`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Runs a command, failing (and killing it) if it does not finish within `secs`: a hang must
/// be a test failure, not a stuck CI job.
pub fn output_within(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
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
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: t1.join().unwrap(),
                stderr: t2.join().unwrap(),
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s (hung?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
