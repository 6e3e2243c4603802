//! The remote tier end to end, against a real S3 server (`rclone serve s3` on loopback, see
//! `common/s3.rs`): push from one store, pull into another, checkout; the packed format on
//! the server (packs, their indexes, manifest bundles) checked from the outside; a killed
//! push resumed; packs damaged or truncated on the server; a remote of the first format (one
//! object per blob); wrong credentials; bad configuration; a server that answers 503.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::s3::{Fault, Proxy, S3Server, BUCKET, SECRET_KEY};
use common::*;
use serde_json::Value;

const PREFIX: &str = "ci/cache";

fn remote_url() -> String {
    format!("s3://{BUCKET}/{PREFIX}")
}

/// `vrift --the-source-root STORE --no-progress` talking to `s3`, remote given by flag.
fn vr(s3: &S3Server, store: &Path) -> Command {
    let mut c = vrift(store);
    s3.env(&mut c);
    c.arg("--no-progress").arg("--remote").arg(remote_url());
    c
}

fn run(cmd: &mut Command) -> Output {
    output_within(cmd, 300)
}

fn ok_json(cmd: &mut Command) -> Value {
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(0), "{cmd:?} failed\n{}", describe(&o));
    let v = json_of(&o);
    crate::cli_contract::assert_bytes_named_by_suffix(&v, cmd);
    v
}

fn push_json(s3: &S3Server, store: &Path, manifest: &Path, extra: &[&str]) -> Value {
    ok_json(
        vr(s3, store)
            .arg("--json")
            .arg("push")
            .arg(manifest)
            .args(extra),
    )
}

fn pull_json(s3: &S3Server, store: &Path, what: &str, out: &Path) -> Value {
    ok_json(vr(s3, store).args(["--json", "pull", what, "-o"]).arg(out))
}

/// The one line vrift printed on stderr for a failed command.
fn error_line(o: &Output) -> String {
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "expected one error line\n{}", describe(o));
    lines[0].to_string()
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    let p = p.as_ref();
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A blob's object in the FIRST remote format (one object per blob, the store's layout).
fn blob_key(content: &[u8]) -> String {
    let h = digest::hex(content);
    format!(
        "{PREFIX}/blake3/{}/{}/{h}_{}.bin",
        &h[..2],
        &h[2..4],
        content.len()
    )
}

fn pack_key(id: &str) -> String {
    format!("{PREFIX}/packs/{id}.pack")
}

/// The (hash, size) of every blob of a store.
fn blob_set(blobs: &[Blob]) -> BTreeSet<(String, u64)> {
    blobs.iter().map(|b| (b.hex.clone(), b.size)).collect()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// `len` random-looking bytes (BLAKE3 in XOF mode): incompressible, unlike [`pattern`].
fn noise(len: usize, seed: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// One entry of a pack index (format in `remote/src/pack.rs`).
#[derive(Debug, Clone)]
struct IdxEntry {
    hex: String,
    size: u64,
    frame_off: u64,
    frame_len: u64,
    frame_raw: u64,
    off: u64,
}

/// Parses a pack index as any client must read it: magic, checksum, length, order, and
/// every frame inside the pack and every blob inside its frame.
fn parse_index(b: &[u8], what: &str) -> (u64, Vec<IdxEntry>) {
    assert!(
        b.len() >= 24 + 32 && &b[..8] == b"VRPKIDX1",
        "{what}: not a pack index"
    );
    let (body, sum) = b.split_at(b.len() - 32);
    assert_eq!(blake3::hash(body).as_bytes(), sum, "{what}: index checksum");
    let u = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (pack_len, count) = (u(8), u(16) as usize);
    assert_eq!(body.len(), 24 + count * 72, "{what}: index length");
    let entries: Vec<IdxEntry> = (0..count)
        .map(|i| {
            let at = 24 + i * 72;
            let e = IdxEntry {
                hex: b[at..at + 32].iter().map(|x| format!("{x:02x}")).collect(),
                size: u(at + 32),
                frame_off: u(at + 40),
                frame_len: u(at + 48),
                frame_raw: u(at + 56),
                off: u(at + 64),
            };
            assert!(
                e.frame_len > 0 && e.frame_off + e.frame_len <= pack_len,
                "{what}: frame outside the pack: {e:?}"
            );
            assert!(
                e.off + e.size <= e.frame_raw,
                "{what}: blob outside its frame: {e:?}"
            );
            e
        })
        .collect();
    assert!(
        entries
            .windows(2)
            .all(|w| (&w[0].hex, w[0].size) < (&w[1].hex, w[1].size)),
        "{what}: entries out of order"
    );
    (pack_len, entries)
}

/// A pack on the server.
#[derive(Debug)]
struct RemotePack {
    id: String,
    path: PathBuf,
    len: u64,
    /// Its index: size of the object and its entries (`None`: no index, an unfinished push).
    index: Option<(u64, Vec<IdxEntry>)>,
}

impl RemotePack {
    fn entries(&self) -> &[IdxEntry] {
        &self.index.as_ref().expect("an indexed pack").1
    }
}

/// What the server holds under [`PREFIX`], checked against the packed layout: nothing but
/// `packs/<id>.pack`, `packs/<id>.idx` (never an index without its pack) and manifest bundles
/// `manifests/<name>.vrmz`, `manifests/blake3/<hex>.vrmz`; no object per blob. A pack's id
/// is the BLAKE3 of its bytes and its index says its length. Returns the packs and the
/// manifest keys (relative to the prefix).
fn remote_layout(s3: &S3Server) -> (Vec<RemotePack>, Vec<String>) {
    let objects = s3.objects(PREFIX);
    let mut packs = Vec::new();
    let mut idx = BTreeSet::new();
    let mut manifests = Vec::new();
    for (key, size) in &objects {
        if let Some(id) = key
            .strip_prefix("packs/")
            .and_then(|k| k.strip_suffix(".pack"))
            .filter(|id| is_hex64(id))
        {
            let path = s3.object(&format!("{PREFIX}/{key}"));
            let bytes = read(&path);
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                id,
                "{key}: a pack's name is the BLAKE3 of its bytes"
            );
            packs.push(RemotePack {
                id: id.to_string(),
                path,
                len: *size,
                index: None,
            });
        } else if let Some(id) = key
            .strip_prefix("packs/")
            .and_then(|k| k.strip_suffix(".idx"))
            .filter(|id| is_hex64(id))
        {
            idx.insert((id.to_string(), *size));
        } else if key
            .strip_prefix("manifests/")
            .and_then(|k| k.strip_suffix(".vrmz"))
            .is_some_and(|n| !n.contains('/') || n.strip_prefix("blake3/").is_some_and(is_hex64))
        {
            manifests.push(key.clone());
        } else {
            panic!("unexpected object {PREFIX}/{key} on a packed remote; all: {objects:?}");
        }
    }
    for (id, size) in idx {
        let p = packs
            .iter_mut()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("index {id}.idx without its pack: {objects:?}"));
        let key = format!("{PREFIX}/packs/{id}.idx");
        let (pack_len, entries) = parse_index(&read(s3.object(&key)), &key);
        assert_eq!(pack_len, p.len, "{key}: the index says the pack's length");
        p.index = Some((size, entries));
    }
    (packs, manifests)
}

/// The indexed packs hold exactly `want`, each blob once.
#[track_caller]
fn assert_packs_hold(packs: &[RemotePack], want: &BTreeSet<(String, u64)>) {
    let mut seen = BTreeSet::new();
    for p in packs.iter().filter(|p| p.index.is_some()) {
        for e in p.entries() {
            assert!(
                seen.insert((e.hex.clone(), e.size)),
                "blob {}_{} is in two packs",
                e.hex,
                e.size
            );
        }
    }
    let missing: Vec<_> = want.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the packs' indexes do not list the store's blobs: missing {missing:?}, extra {extra:?}"
    );
}

/// The manifest bundle under `key` (relative to the bucket): a `VRMZ0001` object.
fn bundle_of(s3: &S3Server, key: &str) -> Vec<u8> {
    let b = read(s3.object(key));
    assert!(b.starts_with(b"VRMZ0001"), "{key} is not a manifest bundle");
    b
}

#[test]
fn push_then_pull_into_an_empty_store_checks_out_identical() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let (src, store_a, store_b) = (
        tmp.path().join("app"),
        tmp.path().join("a"),
        tmp.path().join("b"),
    );
    build_tricky_tree(&src);
    build_many_files(&src.join("many"), 600, 450, "rt");
    let original = snapshot(&src);
    let manifest = tmp.path().join("app.vrm");
    let ingested = ingest_ok(&store_a, &src, &manifest, &[]);
    assert!(num(&ingested, "files") > 600);
    let blobs = list_blobs(&store_a);
    let local = blob_set(&blobs);
    let n = blobs.len() as u64;
    let total_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let manifest_bytes = read(&manifest);
    let name_key = format!("{PREFIX}/manifests/app.vrmz");
    let hash_key = format!(
        "{PREFIX}/manifests/blake3/{}.vrmz",
        digest::hex(&manifest_bytes)
    );

    let first = push_json(&s3, &store_a, &manifest, &[]);
    for (k, want) in [
        ("blobs_total", n),
        ("total_bytes", total_bytes),
        ("blobs_uploaded", n),
        ("uploaded_bytes", total_bytes),
        ("blobs_present", 0),
        ("present_bytes", 0),
    ] {
        assert_eq!(num(&first, k), want, "{k}: {first}");
    }
    assert_eq!(first["check"], "index", "{first}");
    assert_eq!(first["manifest_key"], name_key.as_str(), "{first}");
    assert_eq!(first["manifest_hash_key"], hash_key.as_str(), "{first}");
    // On the server: packs with their indexes listing every blob once, the two bundles, and
    // nothing else (no object per blob).
    let (packs, manifests) = remote_layout(&s3);
    assert!(packs.iter().all(|p| p.index.is_some()), "{packs:?}");
    assert_packs_hold(&packs, &local);
    assert_eq!(num(&first, "packs_uploaded"), packs.len() as u64, "{first}");
    let mut want = vec![
        "manifests/app.vrmz".to_string(),
        hash_key
            .strip_prefix(&format!("{PREFIX}/"))
            .unwrap()
            .to_string(),
    ];
    want.sort();
    assert_eq!(manifests, want);
    let bundle = bundle_of(&s3, &name_key);
    assert_eq!(bundle_of(&s3, &hash_key), bundle, "the same bundle twice");
    // What went over the wire is exactly the packs, their indexes and the two bundles.
    let packed: u64 = packs
        .iter()
        .map(|p| p.len + p.index.as_ref().unwrap().0)
        .sum();
    assert_eq!(
        num(&first, "sent_bytes"),
        packed + 2 * bundle.len() as u64,
        "{first}"
    );
    // A HEAD for this manifest's bundle (not there yet), one listing of the packs, two PUTs
    // per pack, two for the bundles (and whatever object_store retried).
    assert_eq!(
        num(&first, "requests"),
        2 + 2 * packs.len() as u64 + 2 + num(&first, "retries"),
        "{first}"
    );

    // Second push: nothing to upload, by every way of checking. `auto` finds this exact
    // manifest's bundle (pushed only after all its packs) and only moves the name to it: a
    // HEAD, a GET and a PUT.
    for (check, how) in [("auto", "manifest"), ("list", "index"), ("head", "index")] {
        let again = push_json(&s3, &store_a, &manifest, &["--check", check]);
        for (k, want) in [
            ("blobs_uploaded", 0),
            ("uploaded_bytes", 0),
            ("packs_uploaded", 0),
            ("blobs_present", n),
            ("present_bytes", total_bytes),
        ] {
            assert_eq!(num(&again, k), want, "{check}: {k}: {again}");
        }
        assert_eq!(again["check"], how, "{check}: {again}");
        if check == "auto" {
            assert_eq!(
                num(&again, "requests") - num(&again, "retries"),
                3,
                "HEAD, GET, PUT: {again}"
            );
            assert_eq!(num(&again, "sent_bytes"), bundle.len() as u64, "{again}");
        } else {
            assert_eq!(
                num(&again, "sent_bytes"),
                2 * bundle.len() as u64,
                "only the bundles: {again}"
            );
        }
    }
    let ids = |p: &[RemotePack]| p.iter().map(|p| p.id.clone()).collect::<BTreeSet<_>>();
    let first_packs = ids(&packs);
    assert_eq!(ids(&remote_layout(&s3).0), first_packs, "no new pack");

    // A changed tree pushed under the same name: only the new blob goes up, in a new pack.
    let changed_tree = tmp.path().join("app2");
    build_many_files(&changed_tree, 600, 450, "rt");
    let new_content = b"brand new content\n";
    write_file(&changed_tree.join("new.js"), new_content, 0o644);
    let changed = tmp.path().join("app2.vrm");
    ingest_ok(&store_a, &changed_tree, &changed, &[]);
    let p2 = push_json(&s3, &store_a, &changed, &["--name", "app"]);
    assert_eq!(p2["check"], "index", "{p2}");
    assert_eq!(num(&p2, "blobs_uploaded"), 1, "{p2}");
    assert_eq!(num(&p2, "uploaded_bytes"), new_content.len() as u64, "{p2}");
    assert_eq!(
        num(&p2, "blobs_present"),
        num(&p2, "blobs_total") - 1,
        "{p2}"
    );
    assert_eq!(num(&p2, "packs_uploaded"), 1, "{p2}");
    let (packs2, _) = remote_layout(&s3);
    let added: Vec<&RemotePack> = packs2
        .iter()
        .filter(|p| !first_packs.contains(&p.id))
        .collect();
    assert_eq!(added.len(), 1, "{packs2:?}");
    let e = added[0].entries();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].hex.as_str(), e[0].size),
        (digest::hex(new_content).as_str(), new_content.len() as u64)
    );
    assert_ne!(bundle_of(&s3, &name_key), bundle, "the name moved");
    // The original back under the name, for the pulls below: its bundle is there already.
    let back = push_json(&s3, &store_a, &manifest, &["--name", "app"]);
    assert_eq!(back["check"], "manifest", "{back}");
    assert_eq!(bundle_of(&s3, &name_key), bundle, "the name moved back");

    // Pull into an empty store, the remote given by VR_REMOTE this time: one GET for the
    // bundle, one for each pack. A half-downloaded blob of a pull that was killed (its pid
    // is gone) is swept on the way.
    std::fs::create_dir_all(store_b.join("tmp")).unwrap();
    std::fs::write(store_b.join("tmp/.pull-999999999-0"), b"half").unwrap();
    let pulled = tmp.path().join("pulled.vrm");
    let mut cmd = vrift(&store_b);
    s3.env(&mut cmd);
    cmd.env("VR_REMOTE", remote_url())
        .args(["--no-progress", "--json", "pull", "app", "-o"])
        .arg(&pulled);
    let p = ok_json(&mut cmd);
    for (k, want) in [
        ("blobs_total", n),
        ("blobs_downloaded", n),
        ("downloaded_bytes", total_bytes),
        ("blobs_present", 0),
        ("present_bytes", 0),
    ] {
        assert_eq!(num(&p, k), want, "{k}: {p}");
    }
    assert_eq!(p["manifest_key"], name_key.as_str(), "{p}");
    assert_eq!(
        num(&p, "requests") - num(&p, "retries"),
        1 + packs.len() as u64,
        "the bundle, then each pack: {p}"
    );
    let pack_bytes: u64 = packs.iter().map(|p| p.len).sum();
    assert_eq!(
        num(&p, "received_bytes"),
        bundle.len() as u64 + pack_bytes,
        "{p}"
    );
    assert_eq!(read(&pulled), manifest_bytes);
    let got = verify_store(&store_b);
    assert_eq!(blob_set(&got), local);
    assert_no_leftovers(&store_b, &src);

    let restored = tmp.path().join("restored");
    checkout_ok(&store_b, &pulled, &restored);
    assert_trees_equal(
        &original,
        &snapshot(&restored),
        "checkout of the pulled manifest",
    );

    // The pulled project is registered: status and gc see it.
    let st = ok_json(vrift(&store_b).args(["--json", "status"]));
    let projects = st["projects"].as_array().expect("projects");
    assert_eq!(projects.len(), 1, "{st}");
    assert_eq!(projects[0]["name"], "app", "{st}");
    assert_eq!(num(&projects[0], "blobs"), n, "{st}");
    let gc = ok_json(vrift(&store_b).args(["--json", "gc"]));
    assert_eq!(num(&gc, "orphans"), 0, "{gc}");
    assert_eq!(num(&gc, "referenced_blobs"), n, "{gc}");

    // Pulling again fetches no blob: the bundle is the only request.
    let again = pull_json(&s3, &store_b, "app", &pulled);
    assert_eq!(num(&again, "blobs_downloaded"), 0, "{again}");
    assert_eq!(num(&again, "blobs_present"), n, "{again}");
    assert_eq!(
        num(&again, "requests") - num(&again, "retries"),
        1,
        "{again}"
    );
    assert_eq!(read(&pulled), manifest_bytes);
    // By content hash, by key (the first format's name or the bundle's full key), into an
    // empty store each time.
    let hex = digest::hex(&manifest_bytes);
    for (i, what) in [
        hex.clone(),
        "manifests/app.vrm".to_string(),
        name_key.clone(),
    ]
    .iter()
    .enumerate()
    {
        let store = tmp.path().join(format!("by-{i}"));
        let out = tmp.path().join(format!("by-{i}.vrm"));
        let p = pull_json(&s3, &store, what, &out);
        assert_eq!(num(&p, "blobs_downloaded"), n, "{what}: {p}");
        assert_eq!(read(&out), manifest_bytes, "{what}");
        assert_eq!(blob_set(&verify_store(&store)), local, "{what}");
    }

    // A name that was never pushed: exit 1, naming the key, nothing written.
    let out = tmp.path().join("n.vrm");
    let o = run(vr(&s3, &store_b).args(["pull", "nope", "-o"]).arg(&out));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert_no_panic(&o);
    let line = error_line(&o);
    assert!(
        line.contains(&format!("{PREFIX}/manifests/nope.vrm"))
            && line.contains("not on the remote"),
        "{line}"
    );
    assert!(!out.exists());
    make_removable(tmp.path());
}

#[test]
fn ingest_push_does_both_in_one_step_and_exports_remote_metrics() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("web").join("node_modules");
    build_many_files(&src, 300, 120, "ip");
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("web.vrm");
    let prom = tmp.path().join("vrift.prom");
    let o = run(vr(&s3, &store)
        .arg("--json")
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(&manifest)
        .arg("--push")
        .arg("--metrics-textfile")
        .arg(&prom));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    // The ingest's keys first, in their promised order, then the push's summary.
    let raw = String::from_utf8(o.stdout.clone()).unwrap();
    let mut at = 0;
    for k in JSON_KEYS.iter().chain(&["push"]) {
        let i = raw[at..]
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} missing or out of order: {raw}"));
        at += i;
    }
    assert_eq!(num(&v, "blobs_new"), 120, "{v}");
    let push = &v["push"];
    assert_eq!(num(push, "blobs_uploaded"), 120, "{v}");
    assert_eq!(push["manifest_key"], format!("{PREFIX}/manifests/web.vrmz"));
    bundle_of(&s3, &format!("{PREFIX}/manifests/web.vrmz"));
    let (packs, _) = remote_layout(&s3);
    assert_packs_hold(&packs, &blob_set(&list_blobs(&store)));
    assert_eq!(num(push, "packs_uploaded"), packs.len() as u64, "{v}");
    // Small files of one package compress together: the packs are far smaller than the
    // files (120 files of ~16 bytes).
    let pack_bytes: u64 = packs.iter().map(|p| p.len).sum();
    assert!(
        pack_bytes * 2 < num(push, "uploaded_bytes"),
        "{pack_bytes} bytes of packs for {v}"
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    for needle in [
        "vrift_ingest_files_total{project=\"web\",outcome=\"new_blob\"} 120",
        "vrift_remote_blobs_total{project=\"web\",outcome=\"uploaded\"} 120",
        "vrift_remote_blobs_total{project=\"web\",outcome=\"already_remote\"} 0",
        "vrift_remote_errors_total{project=\"web\",op=\"list\"} 0",
        "vrift_remote_last_run_success{project=\"web\",command=\"push\"} 1",
        "vrift_remote_request_duration_seconds_bucket{project=\"web\",op=\"put\"",
    ] {
        assert!(
            text.contains(needle),
            "{needle} not in\n{text}\nstderr: {}\nserver log:\n{}",
            describe(&o),
            s3.log()
        );
    }
    // rclone's server now and then answers a PUT into a directory another PUT is creating with
    // a 500 ("file does not exist"); object_store retries it. So the count is not fixed, but
    // the books must balance: every failed PUT was retried once and then landed.
    let put = series(
        &text,
        "vrift_remote_requests_total{project=\"web\",op=\"put\"}",
    );
    let retried = series(
        &text,
        "vrift_remote_retries_total{project=\"web\",op=\"put\"}",
    );
    let failed = series(
        &text,
        "vrift_remote_errors_total{project=\"web\",op=\"put\"}",
    );
    assert_eq!(
        put,
        2 * packs.len() as u64 + 2 + retried,
        "each pack and its index, the 2 manifest bundles, plus retries\n{text}"
    );
    assert_eq!(
        series(
            &text,
            "vrift_remote_requests_total{project=\"web\",op=\"list\"}"
        ),
        1,
        "one listing of the packs\n{text}"
    );
    assert_eq!(failed, retried, "every failed PUT was retried");
    assert!(num(push, "retries") >= retried, "{v}");
    assert_eq!(
        series(
            &text,
            "vrift_remote_bytes_total{project=\"web\",direction=\"upload\"}"
        ),
        num(push, "sent_bytes"),
        "{text}"
    );

    // A warm re-ingest with --push uploads nothing: the same manifest is on the remote.
    let again = ok_json(
        vr(&s3, &store)
            .arg("--json")
            .arg("ingest")
            .arg(&src)
            .arg("-o")
            .arg(&manifest)
            .arg("--push"),
    );
    assert_eq!(num(&again["push"], "blobs_uploaded"), 0, "{again}");
    assert_eq!(num(&again["push"], "blobs_present"), 120, "{again}");
    assert_eq!(again["push"]["check"], "manifest", "{again}");
    assert_eq!(
        num(&again["push"], "requests") - num(&again["push"], "retries"),
        3,
        "HEAD, GET, PUT: {again}"
    );
    make_removable(tmp.path());
}

#[test]
fn profiles_and_the_config_file_configure_the_remote() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("lib");
    build_many_files(&src, 40, 40, "pf");
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("lib.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    // Credentials and endpoint only in a profile, the URL only in <store>/remote.toml.
    let creds = tmp.path().join("credentials");
    let conf = tmp.path().join("config");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [ci]\naws_access_key_id = {}\naws_secret_access_key = {SECRET_KEY}\n",
            common::s3::ACCESS_KEY
        ),
    )
    .unwrap();
    std::fs::write(
        &conf,
        format!(
            "[profile ci]\nregion = us-east-1\nendpoint_url = {}\n",
            s3.endpoint()
        ),
    )
    .unwrap();
    std::fs::write(
        store.join("remote.toml"),
        format!("url = \"{}\"\njobs = 4\n", remote_url()),
    )
    .unwrap();
    let profiled = |store: &Path| {
        let mut c = vrift(store);
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "VR_REMOTE",
        ] {
            c.env_remove(k);
        }
        c.env("AWS_PROFILE", "ci")
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", &conf)
            .arg("--no-progress");
        c
    };
    let p = ok_json(profiled(&store).args(["--json", "push"]).arg(&manifest));
    assert_eq!(num(&p, "blobs_uploaded"), 40, "{p}");
    // The default profile's keys are wrong: without AWS_PROFILE the server refuses them.
    let mut c = profiled(&store);
    c.env_remove("AWS_PROFILE").arg("push").arg(&manifest);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    // A profile that exists nowhere is named in the error.
    let mut c = profiled(&store);
    c.env("AWS_PROFILE", "typo").arg("push").arg(&manifest);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(error_line(&o).contains("\"typo\""), "{}", describe(&o));
    make_removable(tmp.path());
}

#[test]
fn large_blobs_go_up_in_frames_of_their_own_and_come_back_verified() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("big");
    // Incompressible, so its pack is above the multipart threshold set below (8 MiB).
    let big = pattern((17 << 20) + 123, 9);
    let small = b"small\n";
    write_file(&src.join("blob.dat"), &big, 0o644);
    write_file(&src.join("small.txt"), small, 0o644);
    let original = snapshot(&src);
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("big.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let local = blob_set(&list_blobs(&store));
    // Through a recording proxy: the pack goes up in parts of 5 MiB (S3's minimum), the
    // small objects (index, bundles) in one PUT each.
    let proxy = Proxy::start(s3.port, Fault::None);
    let p = ok_json(
        vr(&s3, &store)
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("VRIFT_REMOTE_MULTIPART_THRESHOLD", (8u64 << 20).to_string())
            .env("VRIFT_REMOTE_PART_SIZE", (5u64 << 20).to_string())
            .args(["--json", "push"])
            .arg(&manifest),
    );
    let seen = proxy.forwarded();
    let parts = seen
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("partNumber=") && r.contains(".pack"))
        .count();
    assert_eq!(parts, 4, "17 MiB in parts of 5 MiB: {seen:#?}");
    let created = seen
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains(".pack?uploads"))
        .count();
    let completed = seen
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains(".pack?uploadId="))
        .count();
    assert_eq!((created, completed), (1, 1), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|r| r.starts_with("PUT ") && r.contains(".idx") && !r.contains("partNumber")),
        "the index went up in parts: {seen:#?}"
    );
    assert_eq!(num(&p, "blobs_uploaded"), 2, "{p}");
    assert_eq!(
        num(&p, "uploaded_bytes"),
        (big.len() + small.len()) as u64,
        "{p}"
    );
    let (packs, _) = remote_layout(&s3);
    assert_packs_hold(&packs, &local);
    // The large blob has a frame of its own (a pull of its neighbour need not fetch it).
    let big_hex = digest::hex(&big);
    let e = packs
        .iter()
        .flat_map(RemotePack::entries)
        .find(|e| e.hex == big_hex)
        .unwrap();
    assert_eq!((e.off, e.frame_raw), (0, big.len() as u64), "{e:?}");

    // Into an empty store: both, verified.
    let store2 = tmp.path().join("s2");
    let pulled = tmp.path().join("p.vrm");
    let l = pull_json(&s3, &store2, "big", &pulled);
    assert_eq!(num(&l, "blobs_downloaded"), 2, "{l}");
    assert_eq!(
        num(&l, "downloaded_bytes"),
        (big.len() + small.len()) as u64,
        "{l}"
    );
    assert_eq!(blob_set(&verify_store(&store2)), local);
    let out = tmp.path().join("out");
    checkout_ok(&store2, &pulled, &out);
    assert_trees_equal(&original, &snapshot(&out), "large blobs pulled");
    make_removable(tmp.path());
}

#[test]
fn a_pull_fetches_only_the_frames_the_store_lacks_with_merged_ranged_gets() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("part");
    // Frames in manifest order: a (1.5 MiB), b (3 MiB), c (1.5 MiB), then d (small); each
    // large blob alone in its frame, all incompressible.
    let (a, b, c) = (
        pattern(3 << 19, 21),
        pattern(3 << 20, 22),
        pattern(3 << 19, 23),
    );
    let d = b"the small one\n";
    write_file(&src.join("a.bin"), &a, 0o644);
    write_file(&src.join("b.bin"), &b, 0o644);
    write_file(&src.join("c.bin"), &c, 0o644);
    write_file(&src.join("d.txt"), d, 0o644);
    let original = snapshot(&src);
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("part.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let local = blob_set(&list_blobs(&store));
    push_json(&s3, &store, &manifest, &[]);
    let (packs, _) = remote_layout(&s3);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let entry = |content: &[u8]| {
        let h = digest::hex(content);
        packs[0]
            .entries()
            .iter()
            .find(|e| e.hex == h)
            .unwrap()
            .clone()
    };
    let (ea, eb, ec, ed) = (entry(&a), entry(&b), entry(&c), entry(d));
    assert!(
        ea.frame_off < eb.frame_off && eb.frame_off < ec.frame_off && ec.frame_off < ed.frame_off,
        "frames out of manifest order: {:?}",
        packs[0].entries()
    );
    let bundle = bundle_of(&s3, &format!("{PREFIX}/manifests/part.vrmz"));

    // A store that has b already: a, c and d come in two ranged GETs (c and d are adjacent,
    // so merged; a lies 3 MiB before them), b's 3 MiB stay on the server.
    let store2 = tmp.path().join("s2");
    let has_b = tmp.path().join("has-b");
    write_file(&has_b.join("x.bin"), &b, 0o644);
    ingest_ok(&store2, &has_b, &tmp.path().join("has-b.vrm"), &[]);
    let pulled = tmp.path().join("p.vrm");
    let o = run(vr(&s3, &store2)
        .args(["--json", "pull", "part", "-o"])
        .arg(&pulled));
    assert_eq!(
        o.status.code(),
        Some(0),
        "a pull into a store that has some of the blobs (ranged GETs) failed\n{}",
        describe(&o)
    );
    let l = json_of(&o);
    assert_eq!(num(&l, "blobs_downloaded"), 3, "{l}");
    assert_eq!(
        num(&l, "downloaded_bytes"),
        (a.len() + c.len() + d.len()) as u64,
        "{l}"
    );
    assert_eq!(num(&l, "blobs_present"), 1, "{l}");
    // Ranged GETs: the bundle and two ranges, exactly the frames needed. `rclone serve s3`
    // (1.75) answers a range with `200` and the range's bytes, which the S3 client refuses:
    // vrift then reads whole packs for the rest of the run, the bytes before the frames
    // skipped. The pack's second range waits for the first one's answer, so the pack comes
    // once: the bundle, the refused range, one whole GET (it used to come once per range in
    // flight). Either way the pull succeeds and stores exactly a, c and d.
    let exact = bundle.len() as u64 + ea.frame_len + (ed.frame_off + ed.frame_len - ec.frame_off);
    let requests = num(&l, "requests") - num(&l, "retries");
    let received = num(&l, "received_bytes");
    if received == exact {
        assert_eq!(requests, 3, "the bundle and two ranges: {l}");
    } else {
        assert_eq!(
            requests, 3,
            "the bundle, a refused range, then the whole pack once for both ranges: {l}"
        );
        assert!(
            received < bundle.len() as u64 + 2 * packs[0].len,
            "the pack came more than once ({} bytes): {l}",
            packs[0].len
        );
    }
    assert_eq!(blob_set(&verify_store(&store2)), local);
    let out = tmp.path().join("out");
    checkout_ok(&store2, &pulled, &out);
    assert_trees_equal(&original, &snapshot(&out), "partial pull");
    make_removable(tmp.path());
}

#[test]
fn a_killed_push_resumes_without_uploading_again_what_landed() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("heavy");
    // 192 distinct, incompressible blobs of 256 KiB (48 MiB): two packs (one closes at
    // 32 MiB).
    const N: u64 = 192;
    const SIZE: usize = 256 << 10;
    for i in 0..N {
        write_file(
            &src.join(format!("d{}/f{i:03}.bin", i % 7)),
            &pattern(SIZE, 1000 + i),
            0o644,
        );
    }
    let original = snapshot(&src);
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("heavy.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let local = blob_set(&list_blobs(&store));

    // The server stops answering at the second pack's index: the first pack and its index
    // have landed, the second pack too but not its index. The push is killed there.
    let gate = Proxy::start(
        s3.port,
        Fault::HoldFrom {
            needle: ".idx ".into(),
            nth: 2,
        },
    );
    let mut c = vr(&s3, &store);
    c.env("AWS_ENDPOINT_URL", gate.endpoint())
        .args(["push", "-j", "1"])
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gate.held() == 0 {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "push finished ({st}) before it could be killed; requests: {:?}",
                gate.forwarded()
            );
        }
        assert!(
            Instant::now() < deadline,
            "push made no progress: {:?}",
            gate.forwarded()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let st = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    let (packs, manifests) = remote_layout(&s3);
    // Packs first, manifest last: no manifest on the remote yet.
    assert!(manifests.is_empty(), "{manifests:?}");
    assert_eq!(packs.len(), 2, "{:?}", gate.forwarded());
    let landed: Vec<&RemotePack> = packs.iter().filter(|p| p.index.is_some()).collect();
    assert_eq!(landed.len(), 1, "{packs:?}");
    let landed = landed[0];
    let landed_blobs = landed.entries().len() as u64;
    assert!(landed_blobs > 0 && landed_blobs < N, "{landed_blobs}");
    let landed_mtime = std::fs::metadata(&landed.path).unwrap().modified().unwrap();

    // The rerun (its requests recorded) sends only what no index vouches for: the blobs of
    // the unindexed pack are sent again, those of the indexed one are not.
    let rec = Proxy::start(s3.port, Fault::None);
    let mut c = vr(&s3, &store);
    c.env("AWS_ENDPOINT_URL", rec.endpoint())
        .args(["--json", "push"])
        .arg(&manifest);
    let r = ok_json(&mut c);
    assert_eq!(r["check"], "index", "{r}");
    assert_eq!(num(&r, "blobs_present"), landed_blobs, "{r}");
    assert_eq!(num(&r, "blobs_uploaded"), N - landed_blobs, "{r}");
    assert_eq!(
        num(&r, "uploaded_bytes"),
        (N - landed_blobs) * SIZE as u64,
        "{r}"
    );
    let puts: Vec<String> = rec
        .forwarded()
        .into_iter()
        .filter(|l| l.starts_with("PUT "))
        .collect();
    assert!(
        !puts.iter().any(|l| l.contains(&landed.id)),
        "the landed pack was sent again: {puts:?}"
    );
    assert_eq!(
        puts.len() as u64,
        2 * num(&r, "packs_uploaded") + 2 + num(&r, "retries"),
        "new packs, their indexes, the bundles: {puts:?}"
    );
    assert_eq!(
        std::fs::metadata(&landed.path).unwrap().modified().unwrap(),
        landed_mtime,
        "the landed pack was written again"
    );
    let (packs, manifests) = remote_layout(&s3);
    assert_packs_hold(&packs, &local);
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    assert!(manifests.contains(&"manifests/heavy.vrmz".to_string()));

    // And the manifest pulls into an empty store and checks out identical.
    let store2 = tmp.path().join("s2");
    let pulled = tmp.path().join("pulled.vrm");
    let l = pull_json(&s3, &store2, "heavy", &pulled);
    assert_eq!(num(&l, "blobs_downloaded"), N, "{l}");
    assert_eq!(blob_set(&verify_store(&store2)), local);
    let out = tmp.path().join("out");
    checkout_ok(&store2, &pulled, &out);
    assert_trees_equal(&original, &snapshot(&out), "pulled after a resumed push");
    make_removable(tmp.path());
}

#[test]
fn a_pack_damaged_on_the_server_is_rejected_and_never_lands() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("proj");
    // Two blobs of more than a frame (1 MiB), each alone in its frame, after small files
    // that share one. The victim is random bytes: zstd stores them as they are, so a byte
    // flipped in its frame still decodes, to the wrong content, which only the BLAKE3 check
    // of the blob can catch.
    let victim = noise((3 << 19) + 7, b"victim");
    let tail = pattern((5 << 18) + 3, 6);
    write_file(&src.join("m-victim.bin"), &victim, 0o644);
    write_file(&src.join("z-tail.bin"), &tail, 0o644);
    build_many_files(&src.join("a-rest"), 50, 50, "cr");
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("proj.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let local = blob_set(&list_blobs(&store));
    push_json(&s3, &store, &manifest, &[]);
    let (packs, _) = remote_layout(&s3);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack = &packs[0];
    let key = pack_key(&pack.id);
    let good = read(&pack.path);
    let entries = pack.entries().to_vec();
    let frame_of = |content: &[u8]| {
        let h = digest::hex(content);
        entries.iter().find(|e| e.hex == h).unwrap().clone()
    };
    // The blobs sharing a frame with `e` (`e`'s included).
    let frame_mates = |e: &IdxEntry| -> BTreeSet<(String, u64)> {
        entries
            .iter()
            .filter(|x| x.frame_off == e.frame_off)
            .map(|x| (x.hex.clone(), x.size))
            .collect()
    };
    let out = tmp.path().join("pulled.vrm");
    // Pulls into a new, empty store; the failure must name the pack, leave no manifest and
    // no temp file, and every blob that landed must be sound. Returns what landed.
    let failed_pull = |store: &Path| -> (String, BTreeSet<(String, u64)>) {
        let o = run(vr(&s3, store).args(["pull", "proj", "-o"]).arg(&out));
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        assert_no_panic(&o);
        let line = error_line(&o);
        assert!(line.contains(&key), "the error names the pack: {line}");
        assert!(!out.exists(), "no manifest without all of its blobs");
        assert_no_leftovers(store, &src);
        (line, blob_set(&verify_store(store)))
    };

    // One byte of the victim's frame flipped (same size, same listing), 64 KiB in: inside
    // the first zstd block's bytes, clear of the frame's and the blocks' headers.
    let v = frame_of(&victim);
    assert_eq!(frame_mates(&v).len(), 1, "the victim is alone in its frame");
    let mut bad = good.clone();
    bad[(v.frame_off + (64 << 10) + 17) as usize] ^= 0x20;
    std::fs::write(&pack.path, &bad).unwrap();
    let store2 = tmp.path().join("s2");
    let (line, landed) = failed_pull(&store2);
    assert!(line.contains("does not match its name"), "{line}");
    assert!(
        !blob_path_of(&store2, &victim).exists(),
        "corrupt content landed"
    );
    // All but the victim landed: their frames are intact.
    let want: BTreeSet<_> = local.difference(&frame_mates(&v)).cloned().collect();
    assert_eq!(landed, want);

    // A byte flipped in the compressed frame of the small files: whatever it decodes to (if
    // anything) is refused; the two large blobs, in frames of their own, land.
    let small = frame_of(b"cr content 0\n");
    assert!(frame_mates(&small).len() > 1, "{entries:?}");
    let mut bad = good.clone();
    bad[(small.frame_off + small.frame_len / 2) as usize] ^= 0x01;
    std::fs::write(&pack.path, &bad).unwrap();
    let (_, landed) = failed_pull(&tmp.path().join("s3"));
    let want: BTreeSet<_> = local.difference(&frame_mates(&small)).cloned().collect();
    assert!(landed.is_superset(&want), "{landed:?}");
    assert!(landed.is_subset(&local), "{landed:?}");
    assert!(landed.len() < local.len());

    // Truncated on the server, in the middle of its last frame: also rejected, naming the
    // pack. The frames before the cut are good and land.
    let last = entries.iter().max_by_key(|e| e.frame_off).unwrap().clone();
    assert_eq!(last.frame_off + last.frame_len, pack.len);
    let cut = (last.frame_off + last.frame_len / 2) as usize;
    std::fs::write(&pack.path, &good[..cut]).unwrap();
    let (_, landed) = failed_pull(&tmp.path().join("s4"));
    let want: BTreeSet<_> = local.difference(&frame_mates(&last)).cloned().collect();
    assert_eq!(landed, want);
    make_removable(tmp.path());
}

#[test]
fn a_remote_of_the_first_format_still_pulls_and_checks_out_identical() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("old");
    build_tricky_tree(&src);
    build_many_files(&src.join("many"), 100, 80, "old");
    let original = snapshot(&src);
    let store_a = tmp.path().join("a");
    let manifest = tmp.path().join("old.vrm");
    ingest_ok(&store_a, &src, &manifest, &[]);
    let blobs = list_blobs(&store_a);
    let local = blob_set(&blobs);
    let n = blobs.len() as u64;
    let total_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let manifest_bytes = read(&manifest);
    let hex = digest::hex(&manifest_bytes);

    // The first format, laid out on the server's disk before any request: one object per
    // blob mirroring the store's layout, the raw manifest under its name and its hash.
    let put = |key: &str, bytes: &[u8]| {
        let p = s3.object(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    for b in &blobs {
        let rel = b.path.strip_prefix(&store_a).unwrap().to_str().unwrap();
        put(&format!("{PREFIX}/{rel}"), &read(&b.path));
    }
    put(&format!("{PREFIX}/manifests/old.vrm"), &manifest_bytes);
    put(
        &format!("{PREFIX}/manifests/blake3/{hex}.vrm"),
        &manifest_bytes,
    );
    let victim = pattern(1025, 2); // sizes/1025 of the tricky tree
    let big = pattern((3 << 20) + 17, 3); // sizes/big.bin
    assert!(s3.object(&blob_key(&victim)).is_file());
    assert!(s3.object(&blob_key(&big)).is_file());

    // By name into an empty store: no bundle, so the manifest, then one GET per blob.
    let store_b = tmp.path().join("b");
    let pulled = tmp.path().join("pulled.vrm");
    let p = pull_json(&s3, &store_b, "old", &pulled);
    for (k, want) in [
        ("blobs_total", n),
        ("blobs_downloaded", n),
        ("downloaded_bytes", total_bytes),
        ("blobs_present", 0),
    ] {
        assert_eq!(num(&p, k), want, "{k}: {p}");
    }
    assert_eq!(p["manifest_key"], format!("{PREFIX}/manifests/old.vrm"));
    assert_eq!(
        num(&p, "requests") - num(&p, "retries"),
        2 + n,
        "the missing bundle, the manifest, each blob: {p}"
    );
    assert_eq!(read(&pulled), manifest_bytes);
    assert_eq!(blob_set(&verify_store(&store_b)), local);
    assert_no_leftovers(&store_b, &src);
    let restored = tmp.path().join("restored");
    checkout_ok(&store_b, &pulled, &restored);
    assert_trees_equal(&original, &snapshot(&restored), "first-format pull");
    let st = ok_json(vrift(&store_b).args(["--json", "status"]));
    let projects = st["projects"].as_array().expect("projects");
    assert_eq!(projects.len(), 1, "{st}");
    assert_eq!(projects[0]["name"], "old", "{st}");
    assert_eq!(num(&projects[0], "blobs"), n, "{st}");
    // By hash and by key too (nothing left to download).
    for what in [hex.as_str(), "manifests/old.vrm"] {
        let out = tmp.path().join("again.vrm");
        let p = pull_json(&s3, &store_b, what, &out);
        assert_eq!(num(&p, "blobs_downloaded"), 0, "{what}: {p}");
        assert_eq!(read(&out), manifest_bytes, "{what}");
    }

    // A blob object damaged on the server (same size, one byte changed): refused, naming
    // its key; the others land.
    let mut bad = victim.clone();
    bad[4] ^= 0x20;
    put(&blob_key(&victim), &bad);
    let store_c = tmp.path().join("c");
    let out = tmp.path().join("c.vrm");
    let o = run(vr(&s3, &store_c).args(["pull", "old", "-o"]).arg(&out));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert_no_panic(&o);
    let line = error_line(&o);
    assert!(line.contains(&blob_key(&victim)), "{line}");
    assert!(line.contains("does not match its name"), "{line}");
    assert!(!blob_path_of(&store_c, &victim).exists());
    assert!(!out.exists());
    let mut want = local.clone();
    want.remove(&(digest::hex(&victim), victim.len() as u64));
    assert_eq!(blob_set(&verify_store(&store_c)), want);
    assert_no_leftovers(&store_c, &src);

    // Truncated on the server: also refused, naming it.
    put(&blob_key(&victim), &victim);
    put(&blob_key(&big), &big[..1000]);
    let store_d = tmp.path().join("d");
    let o = run(vr(&s3, &store_d).args(["pull", "old", "-o"]).arg(&out));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(error_line(&o).contains(&blob_key(&big)), "{}", describe(&o));
    assert!(!blob_path_of(&store_d, &big).exists());
    assert!(!out.exists());
    assert_no_leftovers(&store_d, &src);
    make_removable(tmp.path());
}

#[test]
fn wrong_credentials_give_a_clear_error() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("c");
    build_many_files(&src, 10, 10, "cred");
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("c.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    for args in [
        vec!["push".to_string(), manifest.display().to_string()],
        vec!["pull".to_string(), "c".to_string()],
    ] {
        let mut c = vr(&s3, &store);
        c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
            .args(&args);
        let o = run(&mut c);
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        assert_no_panic(&o);
        let line = error_line(&o);
        assert!(line.contains("refused the credentials"), "{line}");
        assert!(line.contains("403"), "{line}");
        if args[0] == "pull" {
            // A GET's answer has a body that says why (a HEAD's cannot).
            assert!(line.contains("SignatureDoesNotMatch"), "{line}");
        }
        assert!(
            !line.contains("not-the-secret-at-all"),
            "never print the secret: {line}"
        );
    }
    let mut c = vr(&s3, &store);
    c.env("AWS_ACCESS_KEY_ID", "nobody-knows-this-key")
        .arg("push")
        .arg(&manifest);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        error_line(&o).contains("refused the credentials"),
        "{}",
        describe(&o)
    );
    let mut c = vr(&s3, &store);
    c.env("AWS_ACCESS_KEY_ID", "nobody-knows-this-key")
        .args(["pull", "c"]);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        error_line(&o).contains("InvalidAccessKeyId"),
        "{}",
        describe(&o)
    );
    assert_eq!(s3.objects(PREFIX), vec![], "nothing was uploaded");
    make_removable(tmp.path());
}

#[test]
fn bad_remote_configuration_is_a_clear_error() {
    let tmp = tempdir();
    let src = tmp.path().join("u");
    build_many_files(&src, 3, 3, "url");
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("u.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let bare = |store: &Path| {
        let mut c = vrift(store);
        c.env_remove("VR_REMOTE").arg("--no-progress");
        c
    };
    for (url, says) in [
        ("http://bucket/x", "scheme \"http\" is not supported"),
        ("s3://", "no bucket"),
        ("s3://Upper/x", "bucket names"),
        ("bucket/x", "invalid remote"),
    ] {
        for cmd in [vec!["push", manifest.to_str().unwrap()], vec!["pull", "u"]] {
            let o = run(bare(&store).arg("--remote").arg(url).args(&cmd));
            assert_eq!(o.status.code(), Some(2), "{url}\n{}", describe(&o));
            let line = error_line(&o);
            assert!(line.contains(says) && line.contains(url), "{url}: {line}");
        }
    }
    // ingest --push refuses before ingesting anything.
    let other = tmp.path().join("s-other");
    let o = run(bare(&other)
        .arg("--remote")
        .arg("ftp://x")
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(tmp.path().join("x.vrm"))
        .arg("--push"));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(!tmp.path().join("x.vrm").exists());

    // No remote anywhere.
    let o = run(bare(&store).arg("push").arg(&manifest));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(error_line(&o).contains("remote.toml"), "{}", describe(&o));
    // A broken config file names itself.
    std::fs::write(store.join("remote.toml"), "url = 3\n").unwrap();
    let o = run(bare(&store).arg("push").arg(&manifest));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(error_line(&o).contains("remote.toml"), "{}", describe(&o));
    std::fs::remove_file(store.join("remote.toml")).unwrap();

    // Nothing listens at the endpoint: a failure (after a few quick retries), naming it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = bare(&store);
    c.env("AWS_ACCESS_KEY_ID", "k-k-k-k-k-k")
        .env("AWS_SECRET_ACCESS_KEY", "s-s-s-s-s-s")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .args(["--remote", "s3://bucket/x", "push"])
        .arg(&manifest);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        error_line(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        describe(&o)
    );
    // A malformed endpoint is a usage error.
    let mut c = bare(&store);
    c.env("AWS_ENDPOINT_URL", "127.0.0.1:9000")
        .args(["--remote", "s3://bucket/x", "push"])
        .arg(&manifest);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    make_removable(tmp.path());
}

#[test]
fn transient_server_errors_are_retried_with_backoff_and_counted() {
    let Some(s3) = S3Server::start() else { return };
    // Every 2nd request gets a 503 SlowDown instead of reaching the server. With one request
    // in flight (-j 1), every request but the very first is refused once, then retried.
    let proxy = Proxy::flaky(s3.port, 2);
    let tmp = tempdir();
    let src = tmp.path().join("flaky");
    build_many_files(&src, 200, 150, "fl");
    write_file(&src.join("big.bin"), &pattern((6 << 20) + 5, 4), 0o644);
    let original = snapshot(&src);
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("flaky.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let through_proxy = |store: &Path| {
        let mut c = vr(&s3, store);
        c.env("AWS_ENDPOINT_URL", proxy.endpoint());
        c
    };
    let prom = tmp.path().join("flaky.prom");
    let p = ok_json(
        through_proxy(&store)
            .args(["--json", "push", "-j", "1"])
            .arg(&manifest)
            .arg("--metrics-textfile")
            .arg(&prom),
    );
    let injected = proxy.injected();
    assert_eq!(num(&p, "blobs_uploaded"), 151, "{p}");
    // HEAD of the bundle, listing, pack, index, two bundles: all but the first refused once.
    assert!(injected >= 4, "{injected} injected: {p}");
    assert!(num(&p, "retries") >= injected, "{injected} injected: {p}");
    // Each retry waited at least the first backoff (100 ms), one after the other.
    let seconds = p["seconds"].as_f64().unwrap();
    assert!(
        seconds >= 0.1 * injected as f64,
        "{injected} retries in {seconds} s: no backoff? {p}"
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        series(&text, "vrift_remote_retries_total"),
        num(&p, "retries"),
        "{text}"
    );
    assert!(
        series(&text, "vrift_remote_errors_total") >= series(&text, "vrift_remote_retries_total"),
        "{text}"
    );
    // Everything landed intact despite the errors.
    let (packs, _) = remote_layout(&s3);
    assert_packs_hold(&packs, &blob_set(&list_blobs(&store)));

    let store2 = tmp.path().join("s2");
    let pulled = tmp.path().join("pulled.vrm");
    let l = ok_json(
        through_proxy(&store2)
            .args(["--json", "pull", "flaky", "-j", "1", "-o"])
            .arg(&pulled),
    );
    let injected = proxy.injected() - injected;
    assert_eq!(num(&l, "blobs_downloaded"), 151, "{l}");
    assert!(injected >= 1, "{l}");
    assert!(num(&l, "retries") >= injected, "{injected} injected: {l}");
    let out = tmp.path().join("out");
    checkout_ok(&store2, &pulled, &out);
    assert_trees_equal(&original, &snapshot(&out), "pulled through a flaky proxy");
    verify_store(&store2);
    make_removable(tmp.path());
}

/// The sum of the Prometheus text-format samples whose line starts with `prefix` (one series
/// when `prefix` carries its labels, a whole family without them).
fn series(text: &str, prefix: &str) -> u64 {
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!values.is_empty(), "no {prefix} series in\n{text}");
    values.iter().sum()
}
