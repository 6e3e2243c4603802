//! The CI cache end to end, against a real S3 server (`rclone serve s3` on loopback, see
//! `common/s3.rs`; never a mock): `vrift restore` (miss, install and save, remote hit into an
//! empty store, local hit with no request, a stale tree replaced exactly, the restore-prefix
//! fallback), a broken remote being an error and never a miss, the shell snippet
//! `ci/vrift-cache.sh` as two CI jobs, `vrift remote ls`, and `vrift remote gc` (dry run,
//! two-phase deletion, repack, and a push racing a gc).
//!
//! The server's objects are plain files under `S3Server::bucket_dir()`: the tests read them to
//! see what is on the remote. rclone's listings are cached, so anything a test changes on the
//! server goes through S3 (rclone as a client), never through those files.

use crate::common;
use crate::run_support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::s3::{Fault, Proxy, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use common::*;
use serde_json::Value;

const PREFIX: &str = "ci/deps";

/// A real npm lock file (v3), and the same project one dependency later.
const LOCK_V1: &str = r#"{
  "name": "vrift-restore-e2e",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "vrift-restore-e2e",
      "version": "1.0.0",
      "dependencies": {
        "left-pad": "^1.3.0"
      }
    },
    "node_modules/left-pad": {
      "version": "1.3.0",
      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
      "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEd92UyV3JoNWtF4ViWpmqafIBm1eqPW3EN1FnXpZBFSt8g==",
      "deprecated": "use String.prototype.padStart()",
      "license": "WTFPL"
    }
  }
}
"#;

const LOCK_V2: &str = r#"{
  "name": "vrift-restore-e2e",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "vrift-restore-e2e",
      "version": "1.0.0",
      "dependencies": {
        "left-pad": "^1.3.0",
        "ms": "^2.1.3"
      }
    },
    "node_modules/left-pad": {
      "version": "1.3.0",
      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
      "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEd92UyV3JoNWtF4ViWpmqafIBm1eqPW3EN1FnXpZBFSt8g==",
      "deprecated": "use String.prototype.padStart()",
      "license": "WTFPL"
    },
    "node_modules/ms": {
      "version": "2.1.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
      "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==",
      "license": "MIT"
    }
  }
}
"#;

/// The install command of the restore tests (no output on stdout: see
/// `install_output_stays_out_of_the_json_and_shows_in_the_ci_log` for that). 303 files, 60
/// distinct contents among 240 of them, an executable, a symlink, an empty file, an empty
/// directory, a hidden directory, a file of ~110 KB; it also records its working directory.
const INSTALL: &str = r#"set -e
mkdir -p dep/pkg-a dep/pkg-b/lib dep/.bin dep/deep/er/still dep/empty-dir
i=0
while [ $i -lt 240 ]; do
  echo "module.exports = $((i % 60));" > dep/pkg-a/m$i.js
  i=$((i + 1))
done
i=0
while [ $i -lt 60 ]; do
  echo "lib $i" > dep/pkg-b/lib/l$i.js
  i=$((i + 1))
done
seq 1 20000 > dep/pkg-b/big.txt
printf '#!/bin/sh\necho tool\n' > dep/pkg-b/tool.sh
chmod 755 dep/pkg-b/tool.sh
ln -s ../pkg-b/tool.sh dep/.bin/tool
: > dep/deep/er/still/empty
pwd > cmd-cwd.txt
"#;

fn remote_url() -> String {
    format!("s3://{BUCKET}/{PREFIX}")
}

/// `<os>-<arch>`, as in the default key.
fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// `vrift --the-source-root STORE --no-progress --remote URL`, talking to `s3`.
fn vr(s3: &S3Server, store: &Path) -> Command {
    let mut c = vrift(store);
    s3.env(&mut c);
    c.arg("--no-progress").arg("--remote").arg(remote_url());
    c
}

fn run(cmd: &mut Command) -> Output {
    let o = output_within(cmd, 120);
    assert_no_panic(&o);
    o
}

#[track_caller]
fn ok_json(cmd: &mut Command) -> Value {
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(0), "{cmd:?} failed\n{}", describe(&o));
    json_of(&o)
}

/// `vrift --json restore dep --key-from package-lock.json ARGS...` with `cwd` as the
/// working directory (the install command's too).
fn restore(s3: &S3Server, store: &Path, cwd: &Path, args: &[&str]) -> Output {
    let mut c = vr(s3, store);
    c.current_dir(cwd)
        .args([
            "--json",
            "restore",
            "dep",
            "--key-from",
            "package-lock.json",
        ])
        .args(args);
    run(&mut c)
}

/// A restore that must exit with `code`; its JSON report.
#[track_caller]
fn restore_exit(s3: &S3Server, store: &Path, cwd: &Path, args: &[&str], code: i32) -> Value {
    let o = restore(s3, store, cwd, args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "restore {args:?} in {}\n{}",
        cwd.display(),
        describe(&o)
    );
    json_of(&o)
}

#[track_caller]
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("key {key} missing or not a string in {v}"))
}

#[track_caller]
fn flag(v: &Value, key: &str) -> bool {
    v.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("key {key} missing or not a bool in {v}"))
}

/// A job's checkout: a directory holding the lock file.
fn job_dir(root: &Path, name: &str, lock: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("package-lock.json"), lock).unwrap();
    d
}

/// `readable-<32 lowercase hex digits>`.
#[track_caller]
fn assert_key(key: &str, readable: &str) {
    let hex = key
        .strip_prefix(readable)
        .and_then(|r| r.strip_prefix('-'))
        .unwrap_or_else(|| panic!("key {key:?} does not start with {readable:?}-"));
    assert!(
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "key {key:?}: not {readable}-<32 hex digits>"
    );
}

/// Every file the server stores (path relative to the bucket → size, mtime).
fn bucket_files(s3: &S3Server) -> BTreeMap<String, (u64, SystemTime)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, SystemTime)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (md.len(), md.modified().unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    let root = s3.bucket_dir();
    walk(&root, &root, &mut out);
    out
}

/// Objects under `PREFIX` (keys relative to it).
fn objects(s3: &S3Server) -> BTreeSet<String> {
    let p = format!("{PREFIX}/");
    bucket_files(s3)
        .into_keys()
        .filter_map(|k| k.strip_prefix(&p).map(str::to_string))
        .collect()
}

fn bundle(name: &str) -> String {
    format!("manifests/{name}.vrmz")
}

/// By-hash manifest copies (`manifests/blake3/*.vrmz`) on the remote.
fn by_hash_copies(s3: &S3Server) -> BTreeSet<String> {
    objects(s3)
        .into_iter()
        .filter(|k| k.starts_with("manifests/blake3/"))
        .collect()
}

/// Packs on the remote: id → the suffixes present (`pack`, `idx`, `condemned`).
fn packs(s3: &S3Server) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in objects(s3) {
        if let Some((id, suffix)) = k.strip_prefix("packs/").and_then(|r| r.split_once('.')) {
            out.entry(id.to_string())
                .or_default()
                .insert(suffix.to_string());
        }
    }
    out
}

fn pack_count(s3: &S3Server) -> u64 {
    packs(s3).values().filter(|s| s.contains("pack")).count() as u64
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(std::string::ToString::to_string).collect()
}

fn object_size(s3: &S3Server, key: &str) -> u64 {
    std::fs::metadata(s3.object(&format!("{PREFIX}/{key}")))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .len()
}

fn object_bytes(s3: &S3Server, key: &str) -> Vec<u8> {
    std::fs::read(s3.object(&format!("{PREFIX}/{key}"))).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Names `vrift remote ls --json` lists, checked against the objects on the server.
fn remote_ls(s3: &S3Server, store: &Path) -> BTreeSet<String> {
    let o = run(vr(s3, store).args(["--json", "remote", "ls"]));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON line\n{}", describe(&o));
    let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["version"], 2, "{v}");
    let list = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests list: {v}"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut names = BTreeSet::new();
    for m in list {
        let name = text(m, "name").to_string();
        assert_eq!(
            num(m, "size"),
            object_size(s3, &bundle(&name)),
            "size of {name}: {v}"
        );
        let t = m["modified"].as_i64().unwrap_or_else(|| panic!("{v}"));
        assert!(
            (now - 600..=now + 5).contains(&t),
            "modified of {name}: {t}, now {now}"
        );
        names.insert(name);
    }
    names
}

/// `vrift --json remote gc ARGS`.
fn remote_gc(s3: &S3Server, store: &Path, args: &[&str]) -> Value {
    ok_json(vr(s3, store).args(["--json", "remote", "gc"]).args(args))
}

#[track_caller]
fn dropped(r: &Value) -> Vec<String> {
    r["manifests_dropped"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests_dropped missing: {r}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// Ingests `src` into `store` and pushes it as `name`; the push report.
fn ingest_push(s3: &S3Server, store: &Path, src: &Path, name: &str) -> Value {
    let manifest = src.with_extension("vrm");
    ingest_ok(store, src, &manifest, &[]);
    ok_json(
        vr(s3, store)
            .args(["--json", "push"])
            .arg(&manifest)
            .args(["--name", name]),
    )
}

/// `vrift pull NAME` into a new, empty store, checked out and snapshotted.
fn pull_tree(s3: &S3Server, scratch: &Path, name: &str) -> Tree {
    let at = tempfile::Builder::new()
        .prefix("pull-")
        .tempdir_in(scratch)
        .unwrap()
        .keep();
    let (store, manifest, dest) = (at.join("store"), at.join("m.vrm"), at.join("tree"));
    let p = ok_json(
        vr(s3, &store)
            .args(["--json", "pull", name, "-o"])
            .arg(&manifest),
    );
    assert_eq!(num(&p, "blobs_present"), 0, "an empty store: {p}");
    checkout_ok(&store, &manifest, &dest);
    snapshot(&dest)
}

/// rclone as a second S3 client, for what a test does to the server behind vrift's back
/// (a late upload); `args` name objects as `vrs3:BUCKET/KEY`.
fn s3_client(s3: &S3Server, args: &[&str]) {
    let rclone = common::s3::rclone().expect("rclone (S3Server started, so it exists)");
    let mut c = Command::new(rclone);
    c.env("RCLONE_CONFIG_VRS3_TYPE", "s3")
        .env("RCLONE_CONFIG_VRS3_PROVIDER", "Other")
        .env("RCLONE_CONFIG_VRS3_ACCESS_KEY_ID", ACCESS_KEY)
        .env("RCLONE_CONFIG_VRS3_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RCLONE_CONFIG_VRS3_ENDPOINT", s3.endpoint())
        .env("RCLONE_CONFIG_VRS3_NO_CHECK_BUCKET", "true")
        .args(["--config", "/dev/null", "-q", "--retries", "1"])
        .args(["--low-level-retries", "1"])
        .args(args);
    let o = output_within(&mut c, 60);
    assert_eq!(
        o.status.code(),
        Some(0),
        "rclone {args:?}\n{}",
        describe(&o)
    );
}

fn client_key(key: &str) -> String {
    format!("vrs3:{BUCKET}/{key}")
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `error: ` lines vrift printed.
fn error_lines(o: &Output) -> String {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pushed manifest's `modified` is in whole seconds: the next push must be in a later
/// second for "newest" (`--keep-last`, `--restore-prefix`) to be well defined.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

// ---------------------------------------------------------------------------------------
// vrift restore
// ---------------------------------------------------------------------------------------

#[test]
fn restore_misses_saves_then_hits_remote_and_local_and_falls_back_to_a_prefix() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let readable = format!("dep-{}", platform());

    // 1. A miss without a command: exit 3, nothing restored, nothing sent.
    let w1 = job_dir(root, "job1", LOCK_V1);
    let s1 = root.join("store1");
    let v = restore_exit(&s3, &s1, &w1, &[], 3);
    assert_eq!(text(&v, "hit"), "miss", "{v}");
    let key1 = text(&v, "key").to_string();
    assert_key(&key1, &readable);
    assert!(v["restored_key"].is_null(), "{v}");
    assert!(!flag(&v, "saved") && !flag(&v, "pushed"), "{v}");
    assert_eq!(num(&v, "files"), 0, "{v}");
    assert_eq!(num(&v, "sent_bytes"), 0, "{v}");
    for k in [
        "hit",
        "key",
        "restored_key",
        "dir",
        "files",
        "saved",
        "pushed",
        "received_bytes",
        "sent_bytes",
        "requests",
        "seconds",
    ] {
        assert!(v.get(k).is_some(), "key {k} missing: {v}");
    }
    assert!(!w1.join("dep").exists(), "a miss made DIR");
    assert!(
        bucket_files(&s3).is_empty(),
        "a miss wrote to the remote: {:?}",
        bucket_files(&s3)
    );

    // 2. A miss with a command: it runs in the current directory, DIR is saved and pushed.
    //    A runner that keeps its store (`--link-mode hardlink`): saved through the store.
    let v = restore_exit(
        &s3,
        &s1,
        &w1,
        &["--link-mode", "hardlink", "--", "sh", "-c", INSTALL],
        0,
    );
    assert_eq!(text(&v, "hit"), "miss", "{v}");
    assert_eq!(text(&v, "key"), key1, "same lock file, same key: {v}");
    assert!(flag(&v, "saved") && flag(&v, "pushed"), "{v}");
    assert!(num(&v, "sent_bytes") > 0, "{v}");
    let made = snapshot(&w1.join("dep"));
    assert_eq!(file_count(&made), 303);
    assert_eq!(num(&v, "files"), 303, "{v}");
    assert_eq!(
        std::fs::read_to_string(w1.join("cmd-cwd.txt"))
            .unwrap()
            .trim(),
        w1.canonicalize().unwrap().display().to_string(),
        "the command runs in the current directory"
    );
    let on_remote = objects(&s3);
    assert!(on_remote.contains(&bundle(&key1)), "{on_remote:?}");
    let n_packs = pack_count(&s3);
    assert!(n_packs >= 1, "{on_remote:?}");
    assert!(
        s1.join("restore").join(format!("{key1}.vrm")).is_file(),
        "the saved tree is kept in the store"
    );
    let st = ok_json(vrift(&s1).args(["--json", "status"]));
    assert!(
        st["projects"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == key1.as_str())),
        "the saved tree is registered as project {key1}: {st}"
    );

    // 3. Again on this machine: a local hit, not one request.
    let v = restore_exit(&s3, &s1, &w1, &["--", "sh", "-c", "touch ran-install"], 0);
    assert_eq!(text(&v, "hit"), "local", "{v}");
    assert_eq!(text(&v, "restored_key"), key1, "{v}");
    assert_eq!(num(&v, "requests"), 0, "{v}");
    assert_eq!(num(&v, "received_bytes") + num(&v, "sent_bytes"), 0, "{v}");
    assert!(!flag(&v, "saved"), "{v}");
    assert!(!w1.join("ran-install").exists(), "a hit ran the command");
    assert_trees_equal(&made, &snapshot(&w1.join("dep")), "local hit");

    // 4. Another runner (an empty store): a remote hit, the exact tree, one request for the
    //    HEAD, one for the bundle, at most one per pack. The command does not run.
    let w2 = job_dir(root, "job2", LOCK_V1);
    let s2 = root.join("store2");
    let v = restore_exit(
        &s3,
        &s2,
        &w2,
        &["--", "sh", "-c", "touch ran-install; exit 7"],
        0,
    );
    assert_eq!(text(&v, "hit"), "remote", "{v}");
    assert_eq!(text(&v, "key"), key1, "{v}");
    assert_eq!(text(&v, "restored_key"), key1, "{v}");
    assert!(!flag(&v, "saved") && !flag(&v, "pushed"), "{v}");
    assert_eq!(num(&v, "files"), 303, "{v}");
    assert!(num(&v, "received_bytes") > 0, "{v}");
    assert!(
        num(&v, "requests") <= 2 + n_packs,
        "{n_packs} packs on the remote: {v}"
    );
    assert!(!w2.join("ran-install").exists(), "a hit ran the command");
    assert_trees_equal(&made, &snapshot(&w2.join("dep")), "remote hit");
    assert_eq!(objects(&s3), on_remote, "a hit changed the remote");

    // 5. DIR with stale content is replaced: what was not in the tree is gone, what was
    //    removed or changed is back, nothing is left beside it.
    let dep2 = w2.join("dep");
    std::fs::remove_file(dep2.join("pkg-a/m0.js")).unwrap();
    std::fs::remove_file(dep2.join("pkg-a/m1.js")).unwrap();
    write_file(&dep2.join("pkg-a/m1.js"), b"tampered\n", 0o644);
    write_file(&dep2.join("stale.txt"), b"from an older install\n", 0o644);
    write_file(&dep2.join("stale-dir/x/y.js"), b"old\n", 0o644);
    std::fs::remove_dir_all(dep2.join("deep")).unwrap();
    let v = restore_exit(&s3, &s2, &w2, &[], 0);
    assert!(
        ["local", "remote"].contains(&text(&v, "hit")),
        "an exact hit: {v}"
    );
    assert_trees_equal(&made, &snapshot(&dep2), "stale DIR replaced");
    let beside: BTreeSet<String> = std::fs::read_dir(&w2)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        beside,
        set(&["dep", "package-lock.json"]),
        "leftovers beside DIR"
    );

    // 6. Through the store (a link mode asked for): a remote hit, then a local one with no
    //    request, files hard-linked to the store; a stale DIR is replaced on a local hit too.
    let w3 = job_dir(root, "job3", LOCK_V1);
    let s3_store = root.join("store3");
    let hard = ["--link-mode", "hardlink"];
    let v = restore_exit(&s3, &s3_store, &w3, &hard, 0);
    assert_eq!(text(&v, "hit"), "remote", "{v}");
    assert!(num(&v, "requests") <= 2 + n_packs, "{v}");
    assert_trees_equal(&made, &snapshot(&w3.join("dep")), "remote hit (store)");
    let v = restore_exit(&s3, &s3_store, &w3, &hard, 0);
    assert_eq!(text(&v, "hit"), "local", "{v}");
    assert_eq!(num(&v, "requests"), 0, "{v}");
    assert_eq!(num(&v, "received_bytes"), 0, "{v}");
    let dep3 = w3.join("dep");
    let md = std::fs::metadata(dep3.join("pkg-b/big.txt")).unwrap();
    assert!(md.nlink() >= 2, "hardlink mode: a link to the store blob");
    // The executable too: a pulled blob carries its entry's mode, so it can be linked.
    let md = std::fs::metadata(dep3.join("pkg-b/tool.sh")).unwrap();
    assert!(
        md.nlink() >= 2 && md.mode() & 0o111 != 0,
        "an executable pulled into the store is linked, not copied: nlink {} mode {:o}",
        md.nlink(),
        md.mode()
    );
    std::fs::remove_file(dep3.join("pkg-b/big.txt")).unwrap();
    write_file(&dep3.join("pkg-b/big.txt"), b"truncated\n", 0o644);
    write_file(&dep3.join("junk/a.txt"), b"junk\n", 0o644);
    // A local gc keeps what restore registered.
    let o = run(vrift(&s3_store).args(["--json", "gc", "--delete"]));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = restore_exit(&s3, &s3_store, &w3, &hard, 0);
    assert_eq!(text(&v, "hit"), "local", "after a local gc: {v}");
    assert_trees_equal(&made, &snapshot(&dep3), "stale DIR replaced (local hit)");

    // 7. A changed lock file: a new key. With a restore prefix and no command, the newest
    //    tree under the prefix is restored (partial), exit 3; nothing is pushed.
    let w4 = job_dir(root, "job4", LOCK_V2);
    let s4 = root.join("store4");
    let prefixes = [
        "--restore-prefix",
        "nothing-here-",
        "--restore-prefix",
        "dep-",
    ];
    let v = restore_exit(&s3, &s4, &w4, &prefixes, 3);
    assert_eq!(text(&v, "hit"), "partial", "{v}");
    let key2 = text(&v, "key").to_string();
    assert_key(&key2, &readable);
    assert_ne!(key2, key1, "a changed lock file must change the key");
    assert_eq!(text(&v, "restored_key"), key1, "{v}");
    assert!(!flag(&v, "saved") && !flag(&v, "pushed"), "{v}");
    assert_trees_equal(&made, &snapshot(&w4.join("dep")), "partial restore");
    assert!(!objects(&s3).contains(&bundle(&key2)), "partial pushed");
    // Without a matching prefix it is a plain miss.
    let w4b = job_dir(root, "job4b", LOCK_V2);
    let v = restore_exit(&s3, &s4, &w4b, &["--restore-prefix", "other-"], 3);
    assert_eq!(text(&v, "hit"), "miss", "{v}");
    assert!(!w4b.join("dep").exists());

    // 8. The same with a command: it runs on top of the partial tree, which is saved and
    //    pushed under the new key.
    let add = "mkdir -p dep/ms && echo 'module.exports = 1000;' > dep/ms/index.js";
    let mut args = prefixes.to_vec();
    args.extend(["--", "sh", "-c", add]);
    let v = restore_exit(&s3, &s4, &w4, &args, 0);
    assert_eq!(text(&v, "hit"), "partial", "{v}");
    assert_eq!(text(&v, "key"), key2, "{v}");
    assert!(flag(&v, "saved") && flag(&v, "pushed"), "{v}");
    let made2 = snapshot(&w4.join("dep"));
    let mut expected2 = made.clone();
    expected2.insert(b"ms".to_vec(), made2[&b"ms".to_vec()].clone());
    expected2.insert(
        b"ms/index.js".to_vec(),
        Node::File {
            content: b"module.exports = 1000;\n".to_vec(),
            mode: 0o444,
        },
    );
    assert_trees_equal(&expected2, &made2, "partial tree plus the install");
    assert!(objects(&s3).contains(&bundle(&key2)));
    // ...and a runner with the new lock file gets exactly that.
    let w5 = job_dir(root, "job5", LOCK_V2);
    let v = restore_exit(&s3, &root.join("store5"), &w5, &[], 0);
    assert_eq!(text(&v, "hit"), "remote", "{v}");
    assert_eq!(text(&v, "key"), key2, "{v}");
    assert_trees_equal(&made2, &snapshot(&w5.join("dep")), "remote hit, new key");

    // 9. `remote ls` lists both keys (JSON and text).
    assert_eq!(remote_ls(&s3, &s1), set(&[&key1, &key2]));
    let o = run(vr(&s3, &s1).args(["remote", "ls"]));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for k in [&key1, &key2] {
        assert!(
            out.lines().any(|l| l.split_whitespace().next() == Some(k)),
            "{k} not listed:\n{out}"
        );
    }
    make_removable(root);
}

/// README: "What was restored or saved is kept as `<store>/restore/<key>.vrm` and registered
/// as a project": the next job on the same runner is a local hit with no request.
#[test]
fn a_fresh_runner_saves_and_gets_the_tree_straight_through_the_packs_and_keeps_nothing() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let w1 = job_dir(root, "job1", LOCK_V1);
    let v = restore_exit(
        &s3,
        &root.join("store1"),
        &w1,
        &["--", "sh", "-c", INSTALL],
        0,
    );
    assert!(flag(&v, "pushed"), "{v}");
    let key = text(&v, "key").to_string();
    let made = snapshot(&w1.join("dep"));
    // The save on a fresh runner packed straight from DIR: the store got no blob, DIR's
    // files are its own (writable, one link each), and the record is no local hit.
    let store1 = root.join("store1");
    assert_eq!(
        std::fs::read_dir(store1.join("blake3"))
            .map(std::iter::Iterator::count)
            .unwrap_or(0),
        0,
        "a direct save put blobs in the store"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(w1.join("dep/pkg-a/m0.js")).unwrap();
        assert_eq!(
            (md.nlink(), md.mode() & 0o200),
            (1, 0o200),
            "DIR was changed"
        );
    }
    let v = restore_exit(&s3, &store1, &w1, &[], 0);
    assert_eq!(
        (text(&v, "hit"), text(&v, "via")),
        ("remote", "direct"),
        "{v}"
    );
    assert_trees_equal(&made, &snapshot(&w1.join("dep")), "after a direct save");

    // A fresh runner (empty store, default link mode): the tree comes straight from the
    // packs, and the store stays empty (no blob, no record): a throwaway runner keeps
    // nothing it will not use, so its next job goes to the remote again.
    let w2 = job_dir(root, "job2", LOCK_V1);
    let store = root.join("runner");
    let v = restore_exit(&s3, &store, &w2, &[], 0);
    assert_eq!(text(&v, "hit"), "remote", "{v}");
    assert_eq!(text(&v, "via"), "direct", "{v}");
    assert_trees_equal(&made, &snapshot(&w2.join("dep")), "remote hit, direct");
    assert!(!store.join("restore").join(format!("{key}.vrm")).exists());
    let blobs = std::fs::read_dir(store.join("blake3"))
        .map(std::iter::Iterator::count)
        .unwrap_or(0);
    assert_eq!(blobs, 0, "a direct restore put blobs in the store");
    let v = restore_exit(&s3, &store, &w2, &[], 0);
    assert_eq!(
        (text(&v, "hit"), text(&v, "via")),
        ("remote", "direct"),
        "{v}"
    );
    assert_trees_equal(&made, &snapshot(&w2.join("dep")), "second direct restore");
    // A runner that keeps its store asks for it: through the store, then a local hit.
    let v = restore_exit(&s3, &store, &w2, &["--link-mode", "hardlink"], 0);
    assert_eq!(
        (text(&v, "hit"), text(&v, "via")),
        ("remote", "store"),
        "{v}"
    );
    let v = restore_exit(&s3, &store, &w2, &[], 0);
    assert!(
        text(&v, "hit") == "local" && num(&v, "requests") == 0,
        "after a restore through the store the next one is local: {v}"
    );
    assert_trees_equal(&made, &snapshot(&w2.join("dep")), "local hit");
    make_removable(root);
}

#[test]
fn a_broken_remote_is_an_error_never_a_miss() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let w = job_dir(root, "job", LOCK_V1);
    let store = root.join("store");
    let install = [
        "--",
        "sh",
        "-c",
        "touch ran-install; mkdir dep; echo x > dep/x",
    ];
    let mut with_prefix = vec!["--restore-prefix", "dep-"];
    with_prefix.extend(install);

    // Refused credentials (a wrong secret, an unknown key): exit 1, said as such, and
    // neither a miss nor an install.
    for (var, value) in [
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all-0123456789"),
        ("AWS_ACCESS_KEY_ID", "nobody-knows-this-key"),
    ] {
        for args in [&install[..], &with_prefix[..], &[][..]] {
            let mut c = vr(&s3, &store);
            c.env(var, value)
                .current_dir(&w)
                .args([
                    "--json",
                    "restore",
                    "dep",
                    "--key-from",
                    "package-lock.json",
                ])
                .args(args);
            let o = run(&mut c);
            assert_eq!(o.status.code(), Some(1), "{var} {args:?}\n{}", describe(&o));
            let err = error_lines(&o);
            assert!(
                err.contains("refused the credentials") && err.contains("403"),
                "{}",
                describe(&o)
            );
            assert!(!err.contains(value), "never print a secret: {err}");
            assert!(
                !String::from_utf8_lossy(&o.stdout).contains("\"hit\""),
                "an error reported as a hit or miss\n{}",
                describe(&o)
            );
            assert!(!w.join("ran-install").exists(), "the install ran: {args:?}");
            assert!(!w.join("dep").exists());
        }
    }

    // Nothing listens at the endpoint: exit 1 naming it, after quick retries.
    let port = closed_port();
    let started = Instant::now();
    let mut c = vr(&s3, &store);
    c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .current_dir(&w)
        .args([
            "--json",
            "restore",
            "dep",
            "--key-from",
            "package-lock.json",
        ])
        .args(with_prefix.iter());
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        error_lines(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        describe(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!w.join("ran-install").exists(), "the install ran");
    assert!(!w.join("dep").exists());
    assert!(bucket_files(&s3).is_empty(), "{:?}", bucket_files(&s3));

    // Without any remote the store alone is the cache: a miss saves locally, exit 3
    // without a command.
    let local = root.join("local-store");
    let bare = |args: &[&str]| {
        let mut c = vrift(&local);
        c.env_remove("VR_REMOTE")
            .current_dir(&w)
            .args(["--no-progress", "--json", "restore", "dep"])
            .args(["--key-from", "package-lock.json"])
            .args(args);
        run(&mut c)
    };
    let o = bare(&[]);
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    let o = bare(&["--", "sh", "-c", INSTALL]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert!(flag(&v, "saved") && !flag(&v, "pushed"), "{v}");
    let made = snapshot(&w.join("dep"));
    // A local hit needs no network: a dead endpoint or refused credentials do not matter.
    for (var, value) in [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        (
            "AWS_SECRET_ACCESS_KEY",
            "not-the-secret-at-all-0123456789".into(),
        ),
    ] {
        let mut c = vr(&s3, &local);
        c.env(var, &value).current_dir(&w).args([
            "--json",
            "restore",
            "dep",
            "--key-from",
            "package-lock.json",
        ]);
        let v = ok_json(&mut c);
        assert_eq!(text(&v, "hit"), "local", "{var}: {v}");
        assert_eq!(num(&v, "requests"), 0, "{v}");
        assert_trees_equal(&made, &snapshot(&w.join("dep")), "local hit");
    }
    make_removable(root);
}

// ---------------------------------------------------------------------------------------
// ci/vrift-cache.sh
// ---------------------------------------------------------------------------------------

fn ci_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/vrift-cache.sh")
}

/// The install command of the CI jobs (bash; nothing on stdout).
const NPM_CI: &str = r#"set -e
mkdir -p node_modules/left-pad node_modules/.bin node_modules/pad-utils/lib
for i in $(seq 0 119); do
  echo "export const v$((i % 30)) = $((i % 30));" > node_modules/pad-utils/lib/m$i.js
done
printf 'module.exports = (s, n) => String(s).padStart(n);\n' > node_modules/left-pad/index.js
printf '#!/usr/bin/env node\nrequire("./index.js");\n' > node_modules/left-pad/cli.js
chmod 755 node_modules/left-pad/cli.js
ln -s ../left-pad/cli.js node_modules/.bin/left-pad
echo '{"lockfileVersion":3}' > node_modules/.package-lock.json
"#;

/// One CI job: `ci/vrift-cache.sh` in `cwd`, with a store of its own, the remote from
/// `VR_REMOTE`, the built vrift and `GITHUB_OUTPUT`; `vars` on top.
fn ci_job(s3: &S3Server, store: &Path, cwd: &Path, vars: &[(&str, &str)]) -> (Output, String) {
    let gho = cwd.join(".github-output");
    let _ = std::fs::remove_file(&gho);
    let mut c = Command::new("bash");
    c.arg(ci_script());
    s3.env(&mut c);
    for k in [
        "VRIFT_CACHE_PATH",
        "VRIFT_CACHE_KEY_FROM",
        "VRIFT_CACHE_RUN",
        "VRIFT_CACHE_RESTORE_PREFIX",
        "VRIFT_CACHE_KEY",
    ] {
        c.env_remove(k);
    }
    c.current_dir(cwd)
        .env("VRIFT", bin())
        .env("VR_THE_SOURCE", store)
        .env("VR_REMOTE", remote_url())
        .env("GITHUB_OUTPUT", &gho)
        .env("VRIFT_CACHE_PATH", "node_modules")
        .env("VRIFT_CACHE_KEY_FROM", "package-lock.json .npmrc");
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = run(&mut c);
    let out = std::fs::read_to_string(&gho).unwrap_or_default();
    (o, out)
}

fn ci_checkout(root: &Path, name: &str, lock: &str) -> PathBuf {
    let d = job_dir(root, name, lock);
    std::fs::write(d.join(".npmrc"), "fund=false\naudit=false\n").unwrap();
    d
}

#[test]
fn the_ci_snippet_installs_and_saves_in_job_1_and_restores_in_job_2() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let readable = format!("node_modules-{}", platform());

    // Job 1, a fresh runner: a miss; the install runs, the tree is saved and pushed.
    let w1 = ci_checkout(root, "job1", LOCK_V1);
    let (o, gho) = ci_job(
        &s3,
        &root.join("store1"),
        &w1,
        &[("VRIFT_CACHE_RUN", NPM_CI)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(gho, "hit=miss\n", "GITHUB_OUTPUT\n{}", describe(&o));
    assert!(
        stderr(&o).contains("vrift cache: miss (exit 0)"),
        "{}",
        describe(&o)
    );
    let made = snapshot(&w1.join("node_modules"));
    assert_eq!(file_count(&made), 123);
    let names = remote_ls(&s3, &root.join("store1"));
    assert_eq!(names.len(), 1, "{names:?}");
    let key = names.first().unwrap().clone();
    assert_key(&key, &readable);

    // Job 2, another fresh runner: a remote hit, the same tree; the install does not run.
    let w2 = ci_checkout(root, "job2", LOCK_V1);
    let run2 = [("VRIFT_CACHE_RUN", "touch ran-install; exit 9")];
    let (o, gho) = ci_job(&s3, &root.join("store2"), &w2, &run2);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(gho, "hit=remote\n", "{}", describe(&o));
    assert!(!w2.join("ran-install").exists(), "the install ran on a hit");
    assert_trees_equal(&made, &snapshot(&w2.join("node_modules")), "job 2");
    // The snippet's key is the one `vrift restore` makes of the same files.
    let mut c = vr(&s3, &root.join("store2"));
    c.current_dir(&w2)
        .args(["--json", "restore", "node_modules"])
        .args(["--key-from", "package-lock.json", "--key-from", ".npmrc"]);
    let v = ok_json(&mut c);
    assert_eq!(text(&v, "key"), key, "{v}");

    // Job 3, the lock file changed, no install command: a fallback under the prefix is
    // restored, exit 3.
    let w3 = ci_checkout(root, "job3", LOCK_V2);
    let prefix = format!("{readable}- other-");
    let (o, gho) = ci_job(
        &s3,
        &root.join("store3"),
        &w3,
        &[("VRIFT_CACHE_RESTORE_PREFIX", &prefix)],
    );
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert_eq!(gho, "hit=partial\n", "{}", describe(&o));
    assert_trees_equal(&made, &snapshot(&w3.join("node_modules")), "job 3");
    // ...nor a prefix: a miss, exit 3.
    let w3b = ci_checkout(root, "job3b", LOCK_V2);
    let (o, gho) = ci_job(&s3, &root.join("store3"), &w3b, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert_eq!(gho, "hit=miss\n", "{}", describe(&o));

    // Job 4: a key of its own (VRIFT_CACHE_KEY), saved under it.
    let w4 = ci_checkout(root, "job4", LOCK_V2);
    let (o, gho) = ci_job(
        &s3,
        &root.join("store4"),
        &w4,
        &[("VRIFT_CACHE_KEY", "deps"), ("VRIFT_CACHE_RUN", NPM_CI)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(gho, "hit=miss\n", "{}", describe(&o));
    let names = remote_ls(&s3, &root.join("store4"));
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&key), "{names:?}");
    let own = names.iter().find(|n| **n != key).unwrap();
    assert_key(own, "deps");

    // Job 5: refused credentials: exit 1, `hit=error`, no install.
    let w5 = ci_checkout(root, "job5", LOCK_V2);
    let (o, gho) = ci_job(
        &s3,
        &root.join("store5"),
        &w5,
        &[
            ("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all-0123456789"),
            ("VRIFT_CACHE_RUN", "touch ran-install"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert_eq!(gho, "hit=error\n", "{}", describe(&o));
    assert!(
        stderr(&o).contains("refused the credentials"),
        "{}",
        describe(&o)
    );
    assert!(!w5.join("ran-install").exists());
    make_removable(root);
}

/// The install command's output belongs in the job's log, and `--json` means one JSON object
/// on stdout (what the snippet parses).
#[test]
fn install_output_stays_out_of_the_json_and_shows_in_the_ci_log() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let mut problems = Vec::new();

    let w = job_dir(root, "direct", LOCK_V1);
    let install = "echo 'added 1 package in 1s (npm says, on stdout)'; mkdir dep; echo x > dep/x";
    let o = restore(&s3, &root.join("s1"), &w, &["--", "sh", "-c", install]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 || serde_json::from_str::<Value>(lines[0]).is_err() {
        problems.push(format!(
            "`vrift --json restore ... -- CMD`: stdout is not one JSON object, CMD's stdout \
             is mixed in:\n{out}"
        ));
    }

    let w = ci_checkout(root, "ci", LOCK_V1);
    let npm = "echo 'added 123 packages in 2s (npm says, on stdout)'\n".to_string() + NPM_CI;
    let (o, gho) = ci_job(&s3, &root.join("s2"), &w, &[("VRIFT_CACHE_RUN", &npm)]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(gho, "hit=miss\n", "{}", describe(&o));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !log.contains("added 123 packages") {
        problems.push(format!(
            "ci/vrift-cache.sh: the install command's stdout is not in the job's log (stdout \
             and stderr of the script):\n{log}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    make_removable(root);
}

// ---------------------------------------------------------------------------------------
// vrift remote gc
// ---------------------------------------------------------------------------------------

#[test]
fn remote_gc_dry_run_changes_nothing_then_deletes_in_two_phases() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let (pusher, janitor) = (root.join("pusher"), root.join("janitor"));
    let (a, b) = (root.join("a"), root.join("b"));
    build_many_files(&a, 300, 120, "gc-a");
    build_many_files(&b, 300, 120, "gc-b");
    let tb = snapshot(&b);

    ingest_push(&s3, &pusher, &a, "gc-a");
    let pa: Vec<String> = packs(&s3).into_keys().collect();
    assert_eq!(pa.len(), 1, "{:?}", packs(&s3));
    let pa = pa[0].clone();
    let pa_size = object_size(&s3, &format!("packs/{pa}.pack"));
    let pa_index = object_bytes(&s3, &format!("packs/{pa}.idx"));
    next_second();
    let pushed_b = ingest_push(&s3, &pusher, &b, "gc-b");
    assert_eq!(num(&pushed_b, "blobs_present"), 0, "A and B share nothing");
    let pb: Vec<String> = packs(&s3).into_keys().filter(|p| *p != pa).collect();
    assert_eq!(pb.len(), 1, "{:?}", packs(&s3));
    let pb = pb[0].clone();
    assert_eq!(remote_ls(&s3, &janitor), set(&["gc-a", "gc-b"]));
    let both = set(&["pack", "idx"]);

    // Dry run: the report says what would go; nothing on the server changes.
    let before = bucket_files(&s3);
    let r = remote_gc(&s3, &janitor, &["--keep-last", "1", "--grace", "0s"]);
    assert!(flag(&r, "dry_run"), "{r}");
    assert_eq!(num(&r, "manifests"), 2, "{r}");
    assert_eq!(dropped(&r), ["gc-a"], "the older one goes: {r}");
    assert_eq!(num(&r, "packs"), 2, "{r}");
    assert_eq!(num(&r, "packs_live"), 1, "{r}");
    assert_eq!(num(&r, "packs_condemned"), 1, "{r}");
    assert_eq!(num(&r, "packs_deleted"), 0, "{r}");
    assert_eq!(
        num(&r, "total_bytes"),
        pa_size + object_size(&s3, &format!("packs/{pb}.pack")),
        "{r}"
    );
    for k in ["deleted_bytes", "packs_restored", "packs_repacked"] {
        assert_eq!(num(&r, k), 0, "{k}: {r}");
    }
    assert_eq!(bucket_files(&s3), before, "a dry run changed the server");

    // --delete with the default grace (1 h): the manifest goes, but its pack is younger than
    // the grace period and is not touched.
    let r = remote_gc(&s3, &janitor, &["--keep-last", "1", "--delete"]);
    assert!(!flag(&r, "dry_run"), "{r}");
    assert_eq!(dropped(&r), ["gc-a"], "{r}");
    assert_eq!(
        num(&r, "packs_condemned"),
        0,
        "a young pack was condemned: {r}"
    );
    assert_eq!(num(&r, "packs_deleted"), 0, "{r}");
    assert_eq!(remote_ls(&s3, &janitor), set(&["gc-b"]));
    assert_eq!(packs(&s3)[&pa], both, "{:?}", packs(&s3));
    assert_eq!(packs(&s3)[&pb], both);

    // Grace 0: the pack only A used is unindexed (its index kept in the marker), not deleted.
    let r = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    assert_eq!(num(&r, "manifests"), 1, "{r}");
    assert!(dropped(&r).is_empty(), "{r}");
    assert_eq!(num(&r, "packs_live"), 1, "{r}");
    assert_eq!(num(&r, "packs_condemned"), 1, "{r}");
    assert_eq!(num(&r, "packs_deleted"), 0, "{r}");
    assert_eq!(packs(&s3)[&pa], set(&["pack", "condemned"]));
    assert_eq!(packs(&s3)[&pb], both);
    assert_eq!(
        object_bytes(&s3, &format!("packs/{pa}.condemned")),
        pa_index,
        "the marker holds the index"
    );
    assert_eq!(
        by_hash_copies(&s3),
        set(&[text(&pushed_b, "manifest_hash_key")
            .strip_prefix(&format!("{PREFIX}/"))
            .unwrap()]),
        "the by-hash copy of the dropped manifest goes, the kept one's stays"
    );

    // A later run deletes it.
    let r = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    assert_eq!(num(&r, "packs_deleted"), 1, "{r}");
    assert_eq!(num(&r, "deleted_bytes"), pa_size, "{r}");
    assert_eq!(num(&r, "packs_condemned"), 0, "{r}");
    assert!(!packs(&s3).contains_key(&pa), "{:?}", packs(&s3));
    assert_eq!(packs(&s3)[&pb], both);
    // Nothing left to do.
    let r = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    for k in [
        "packs_condemned",
        "packs_deleted",
        "packs_restored",
        "packs_repacked",
    ] {
        assert_eq!(num(&r, k), 0, "{k}: {r}");
    }

    // B still pulls, exactly; A is gone.
    assert_trees_equal(
        &tb,
        &pull_tree(&s3, root, "gc-b"),
        "pull of the kept manifest",
    );
    let o = run(vr(&s3, &root.join("empty"))
        .args(["pull", "gc-a", "-o"])
        .arg(root.join("a2.vrm")));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(error_lines(&o).contains("gc-a"), "{}", describe(&o));
    make_removable(root);
}

#[test]
fn remote_gc_repacks_a_mostly_dead_pack_and_kept_manifests_still_pull() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let (pusher, janitor) = (root.join("pusher"), root.join("janitor"));
    // R: four incompressible blobs of 1.2 MB (a frame each) and small files; K, pushed
    // later, shares one of the big blobs with R and nothing else.
    let (r, k) = (root.join("r"), root.join("k"));
    for i in 0..4u64 {
        write_file(
            &r.join(format!("big-{i}.bin")),
            &pattern(1_200_000, 10 + i),
            0o644,
        );
    }
    build_many_files(&r.join("small"), 60, 60, "rp-r");
    write_file(&k.join("vendored.bin"), &pattern(1_200_000, 10), 0o644);
    build_many_files(&k.join("small"), 60, 60, "rp-k");
    let tk = snapshot(&k);

    ingest_push(&s3, &pusher, &r, "rp-r");
    let pr: Vec<String> = packs(&s3).into_keys().collect();
    assert_eq!(pr.len(), 1, "{:?}", packs(&s3));
    let pr = pr[0].clone();
    let pr_size = object_size(&s3, &format!("packs/{pr}.pack"));
    assert!(pr_size > 4_800_000, "incompressible: {pr_size}");
    next_second();
    let pushed_k = ingest_push(&s3, &pusher, &k, "rp-k");
    assert_eq!(
        num(&pushed_k, "blobs_present"),
        1,
        "the shared blob: {pushed_k}"
    );
    let before_packs: BTreeSet<String> = packs(&s3).into_keys().collect();
    assert_eq!(before_packs.len(), 2);
    let k_bundle = object_bytes(&s3, &bundle("rp-k"));

    // Dry run: R goes, its pack would be repacked (K uses a quarter of it); nothing changes.
    // (`--grace 0s`: a pack younger than the grace period is never repacked.)
    let before = bucket_files(&s3);
    let rep = remote_gc(&s3, &janitor, &["--keep-last", "1", "--grace", "0s"]);
    assert!(flag(&rep, "dry_run"), "{rep}");
    assert_eq!(dropped(&rep), ["rp-r"], "{rep}");
    assert_eq!(num(&rep, "packs_repacked"), 1, "{rep}");
    assert_eq!(num(&rep, "packs_live"), 2, "{rep}");
    assert_eq!(bucket_files(&s3), before, "a dry run changed the server");

    // Delete: the live blob moves to a new pack, K's bundle points at it, the old pack is
    // unindexed (still there: a pull with the old bundle would find its blob again).
    let rep = remote_gc(
        &s3,
        &janitor,
        &["--keep-last", "1", "--delete", "--grace", "0s"],
    );
    assert_eq!(dropped(&rep), ["rp-r"], "{rep}");
    assert_eq!(num(&rep, "packs_repacked"), 1, "{rep}");
    assert_eq!(num(&rep, "packs_deleted"), 0, "{rep}");
    let now = packs(&s3);
    assert_eq!(now[&pr], set(&["pack", "condemned"]), "{now:?}");
    let new: Vec<&String> = now.keys().filter(|p| !before_packs.contains(*p)).collect();
    assert_eq!(new.len(), 1, "one new pack: {now:?}");
    let pn = new[0].clone();
    assert_eq!(now[&pn], set(&["pack", "idx"]));
    let pn_size = object_size(&s3, &format!("packs/{pn}.pack"));
    assert!(
        pn_size < pr_size / 2 && pn_size > 1_100_000,
        "new pack {pn_size} bytes, old {pr_size}"
    );
    assert_ne!(
        object_bytes(&s3, &bundle("rp-k")),
        k_bundle,
        "K's bundle was not rewritten"
    );
    assert_eq!(remote_ls(&s3, &janitor), set(&["rp-k"]));
    assert_trees_equal(&tk, &pull_tree(&s3, root, "rp-k"), "pull after the repack");

    // The old pack goes; K still pulls into an empty store, exactly; nothing more to repack.
    let rep = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    assert_eq!(num(&rep, "packs_deleted"), 1, "{rep}");
    assert_eq!(num(&rep, "deleted_bytes"), pr_size, "{rep}");
    assert_eq!(num(&rep, "packs_repacked"), 0, "{rep}");
    assert!(!packs(&s3).contains_key(&pr), "{:?}", packs(&s3));
    assert_trees_equal(
        &tk,
        &pull_tree(&s3, root, "rp-k"),
        "pull after the old pack went",
    );
    let rep = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    assert_eq!(num(&rep, "packs_repacked"), 0, "{rep}");
    assert_eq!(num(&rep, "packs_deleted"), 0, "{rep}");
    make_removable(root);
}

/// After a pack is unindexed, a push that needs its blobs uploads them again rather than
/// pointing at a pack about to go; the next gc deletes the old pack and loses nothing.
#[test]
fn a_push_after_a_condemnation_uploads_again_and_loses_nothing() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    // The pusher's index cache holds the old pack's index: it must not be trusted.
    let (pusher, janitor) = (root.join("pusher"), root.join("janitor"));
    let (a, b, d) = (root.join("a"), root.join("b"), root.join("d"));
    build_many_files(&a, 200, 80, "cond-a");
    build_many_files(&b, 100, 50, "cond-b");
    build_many_files(&d, 200, 80, "cond-a");
    write_file(&d.join("new.js"), b"only in d\n", 0o644);
    let (tb, td) = (snapshot(&b), snapshot(&d));

    ingest_push(&s3, &pusher, &a, "cond-a");
    let pa = packs(&s3).into_keys().next().unwrap();
    next_second();
    ingest_push(&s3, &pusher, &b, "cond-b");
    let r = remote_gc(
        &s3,
        &janitor,
        &["--keep-last", "1", "--delete", "--grace", "0s"],
    );
    assert_eq!(dropped(&r), ["cond-a"], "{r}");
    assert_eq!(num(&r, "packs_condemned"), 1, "{r}");
    assert_eq!(packs(&s3)[&pa], set(&["pack", "condemned"]));

    let p = ingest_push(&s3, &pusher, &d, "cond-d");
    assert_eq!(num(&p, "blobs_total"), 81, "{p}");
    assert_eq!(
        num(&p, "blobs_present"),
        0,
        "a push relied on an unindexed pack: {p}"
    );
    assert_eq!(num(&p, "blobs_uploaded"), 81, "{p}");
    assert!(num(&p, "packs_uploaded") >= 1, "{p}");

    let r = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    assert!(dropped(&r).is_empty(), "{r}");
    assert_eq!(num(&r, "packs_deleted"), 1, "{r}");
    assert_eq!(num(&r, "packs_restored"), 0, "{r}");
    assert!(!packs(&s3).contains_key(&pa), "{:?}", packs(&s3));
    assert_trees_equal(
        &td,
        &pull_tree(&s3, root, "cond-d"),
        "pull of the new manifest",
    );
    assert_trees_equal(
        &tb,
        &pull_tree(&s3, root, "cond-b"),
        "pull of the other one",
    );
    make_removable(root);
}

/// The race itself: a push reads the indexes, a gc unindexes a pack the push relies on, then
/// the push's bundle lands. The next gc must give the pack its index back, not delete it.
/// (The late bundle is simulated deterministically: the push's bundle objects are taken off
/// the server before the gc and put back after it, through S3.)
#[test]
fn a_gc_racing_a_push_gives_the_pack_back_its_index() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let (pusher, janitor) = (root.join("pusher"), root.join("janitor"));
    let (a, b, c, e) = (
        root.join("a"),
        root.join("b"),
        root.join("c"),
        root.join("e"),
    );
    build_many_files(&a, 200, 80, "race-a");
    build_many_files(&b, 100, 50, "race-b");
    build_many_files(&c, 100, 80, "race-a"); // every blob of C is one of A's
    build_many_files(&e, 150, 80, "race-a");
    let tc = snapshot(&c);

    ingest_push(&s3, &pusher, &a, "race-a");
    let pa = packs(&s3).into_keys().next().unwrap();
    let pc = ingest_push(&s3, &pusher, &c, "race-c");
    assert_eq!(num(&pc, "blobs_uploaded"), 0, "{pc}");
    assert_eq!(packs(&s3).len(), 1, "C lives in A's pack");

    // C's push "has not finished": its bundles are not on the server yet.
    let saved = root.join("late");
    std::fs::create_dir_all(&saved).unwrap();
    let late: Vec<(String, PathBuf)> = ["manifest_key", "manifest_hash_key"]
        .iter()
        .enumerate()
        .map(|(i, k)| (text(&pc, k).to_string(), saved.join(format!("{i}.vrmz"))))
        .collect();
    for (key, file) in &late {
        s3_client(&s3, &["copyto", &client_key(key), file.to_str().unwrap()]);
        s3_client(&s3, &["deletefile", &client_key(key)]);
    }
    next_second();
    ingest_push(&s3, &pusher, &b, "race-b");
    assert_eq!(remote_ls(&s3, &janitor), set(&["race-a", "race-b"]));

    // The gc: A is dropped, its pack (which C, unseen, relies on) unindexed.
    let r = remote_gc(
        &s3,
        &janitor,
        &["--keep-last", "1", "--delete", "--grace", "0s"],
    );
    assert_eq!(dropped(&r), ["race-a"], "{r}");
    assert_eq!(num(&r, "packs_condemned"), 1, "{r}");
    assert_eq!(packs(&s3)[&pa], set(&["pack", "condemned"]));

    // C's bundles land.
    for (key, file) in &late {
        s3_client(&s3, &["copyto", file.to_str().unwrap(), &client_key(key)]);
    }
    assert_eq!(remote_ls(&s3, &janitor), set(&["race-b", "race-c"]));

    // The next gc sees a kept manifest using the pack: its index comes back, nothing goes.
    let r = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    assert!(dropped(&r).is_empty(), "{r}");
    assert_eq!(num(&r, "packs_restored"), 1, "{r}");
    assert_eq!(num(&r, "packs_deleted"), 0, "{r}");
    assert_eq!(packs(&s3)[&pa], set(&["pack", "idx"]), "{:?}", packs(&s3));
    assert_trees_equal(
        &tc,
        &pull_tree(&s3, root, "race-c"),
        "pull of the late manifest",
    );
    // Pushes find those blobs again.
    let pe = ingest_push(&s3, &pusher, &e, "race-e");
    assert_eq!(num(&pe, "blobs_uploaded"), 0, "{pe}");
    let r = remote_gc(&s3, &janitor, &["--delete", "--grace", "0s"]);
    for k in ["packs_condemned", "packs_deleted", "packs_restored"] {
        assert_eq!(num(&r, k), 0, "{k}: {r}");
    }
    assert_trees_equal(
        &tc,
        &pull_tree(&s3, root, "race-c"),
        "pull after another gc",
    );
    make_removable(root);
}

/// What users bring: a `node_modules` installed from the npm registry (webpack and
/// webpack-cli: ~3,000 files, `.bin` symlinks, executables, package-lock.json) goes through
/// the CI cache as a CI job would — saved by a miss, restored on a fresh runner straight from
/// the packs, and through a store on a runner that keeps one — and comes back exactly as npm
/// made it, executables runnable.
#[test]
fn a_node_modules_from_the_registry_round_trips_through_the_cache() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let src = root.join("app");
    std::fs::create_dir_all(&src).unwrap();
    let Some(()) = run_support::npm_install(&src, &["webpack@5.97.1", "webpack-cli@5.1.4"]) else {
        return;
    };
    let want = snapshot(&src.join("node_modules"));
    assert!(want.len() > 1000, "a real tree: {} entries", want.len());
    // Job 1: a miss; the "install" is a copy of what npm made.
    let job1 = root.join("job1");
    std::fs::create_dir_all(&job1).unwrap();
    std::fs::copy(
        src.join("package-lock.json"),
        job1.join("package-lock.json"),
    )
    .unwrap();
    let install = format!("cp -a {}/node_modules node_modules", src.display());
    let mut c = vr(&s3, &root.join("store1"));
    c.current_dir(&job1).args([
        "--json",
        "restore",
        "node_modules",
        "--key-from",
        "package-lock.json",
        "--",
        "sh",
        "-c",
        &install,
    ]);
    let v = ok_json(&mut c);
    assert!(flag(&v, "pushed"), "{v}");
    // Job 2 on a fresh runner (direct), job 3 through a store: the same tree.
    for (n, extra) in [(2, &[][..]), (3, &["--link-mode", "hardlink"][..])] {
        let job = root.join(format!("job{n}"));
        std::fs::create_dir_all(&job).unwrap();
        std::fs::copy(src.join("package-lock.json"), job.join("package-lock.json")).unwrap();
        let mut c = vr(&s3, &root.join(format!("store{n}")));
        c.current_dir(&job)
            .args([
                "--json",
                "restore",
                "node_modules",
                "--key-from",
                "package-lock.json",
            ])
            .args(extra);
        let v = ok_json(&mut c);
        assert_eq!(text(&v, "hit"), "remote", "{v}");
        let via = if n == 2 { "direct" } else { "store" };
        assert_eq!(text(&v, "via"), via, "{v}");
        assert_trees_equal(&want, &snapshot(&job.join("node_modules")), "restored tree");
        let o = Command::new(job.join("node_modules/.bin/webpack"))
            .arg("--version")
            .current_dir(&job)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the restored .bin/webpack runs: {}",
            describe(&o)
        );
        let o = Command::new("node")
            .args(["-e", "console.log(require('webpack/package.json').version)"])
            .current_dir(&job)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "5.97.1\n",
            "{}",
            describe(&o)
        );
    }
    make_removable(root);
}

/// A cache whose pack was damaged on the server: the restore fails naming the pack (exit 1,
/// never a miss) and the tree already in DIR stays exactly as it was, whether it was to be
/// written straight from the packs (a fresh runner) or through the store.
#[test]
fn a_damaged_pack_fails_the_restore_and_leaves_dir_as_it_was() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let root = tmp.path();
    let w1 = job_dir(root, "job1", LOCK_V1);
    restore_exit(
        &s3,
        &root.join("store1"),
        &w1,
        &["--", "sh", "-c", INSTALL],
        0,
    );
    // One byte flipped in the middle of the largest pack (its size stays).
    let pack = packs(&s3)
        .keys()
        .map(|id| s3.object(&format!("{PREFIX}/packs/{id}.pack")))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&pack, &bytes).unwrap();
    let w2 = job_dir(root, "job2", LOCK_V1);
    write_file(&w2.join("dep/before.txt"), b"the tree before\n", 0o644);
    let before = snapshot(&w2.join("dep"));
    for (n, extra) in [(0, &[][..]), (1, &["--link-mode", "hardlink"][..])] {
        let o = restore(&s3, &root.join(format!("fresh{n}")), &w2, extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", describe(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(".pack"),
            "the error names the pack: {}",
            describe(&o)
        );
        assert_trees_equal(
            &before,
            &snapshot(&w2.join("dep")),
            "DIR after a failed restore",
        );
        let beside: Vec<String> = std::fs::read_dir(&w2)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".vrift-"))
            .collect();
        assert!(beside.is_empty(), "left beside DIR: {beside:?}");
    }
    make_removable(root);
}

/// `vrift restore ARGS` in `cwd` on a terminal (util-linux `script`), progress on; what the
/// terminal showed.
fn restore_on_a_tty(s3: &S3Server, endpoint: &str, store: &Path, cwd: &Path, args: &str) -> String {
    let line = format!(
        "{} --the-source-root {} --remote {} restore dep --key-from package-lock.json {args}",
        common::bin().display(),
        store.display(),
        remote_url()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]).current_dir(cwd);
    c.env_remove("VR_THE_SOURCE").env("TERM", "xterm");
    s3.env(&mut c);
    c.env("AWS_ENDPOINT_URL", endpoint);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(0), "{line}\n{}", describe(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// On a terminal a restore shows how far the transfer is, in percent of the bytes; while the
/// install command runs the line is off the terminal, so the command's own lines come through
/// whole.
#[test]
fn restore_shows_percent_on_a_terminal_and_keeps_off_the_install_output() {
    let Some(s3) = S3Server::start() else { return };
    if !common::have_script() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let w1 = job_dir(root, "job1", LOCK_V1);
    std::fs::write(w1.join("install.sh"), INSTALL).unwrap();
    // Slow enough for the line to be drawn (it redraws ten times a second).
    // The line is drawn before the command starts (a pause first) and after it (a pause
    // after): the test cannot pass by the line never having been there.
    let install =
        "'sleep 0.5 && sh install.sh && echo install-says-hello-in-one-piece && sleep 0.5'";
    let tty = restore_on_a_tty(
        &s3,
        &s3.endpoint(),
        &root.join("s1"),
        &w1,
        &format!("-- sh -c {install}"),
    );
    // What a terminal shows of each line: the text after the last carriage return, with
    // the progress line's "clear line" sequences gone.
    let shown: Vec<String> = tty
        .split('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            l.rsplit('\r').next().unwrap_or("").replace("\u{1b}[2K", "")
        })
        .collect();
    assert!(
        shown.iter().any(|l| l == "install-says-hello-in-one-piece"),
        "the install command's line was broken up: {shown:#?}\n{tty:?}"
    );
    let w2 = job_dir(root, "job2", LOCK_V1);
    // Over a slow link (each request 300 ms late) the transfer lasts long enough to be drawn.
    let slow = Proxy::start(s3.port, Fault::Delay(Duration::from_millis(300)));
    let tty = restore_on_a_tty(&s3, &slow.endpoint(), &root.join("s2"), &w2, "");
    assert!(
        tty.contains("% ") && tty.contains(" blobs, ") && tty.contains("restore"),
        "no percent on the terminal:\n{tty:?}"
    );
    assert!(tty.contains("hit on the remote"), "{tty:?}");
    make_removable(root);
}
