//! The remote tier end to end, against a real S3 server (`rclone serve s3` on loopback, see
//! `common/s3.rs`): push from one store, pull into another, checkout; a killed push resumed;
//! corruption on the server; wrong credentials; bad configuration.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::s3::{FlakyProxy, S3Server, BUCKET, SECRET_KEY};
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
    json_of(&o)
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

/// The one line vrift printed on stderr for a failed command.
fn error_line(o: &Output) -> String {
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "expected one error line\n{}", describe(o));
    lines[0].to_string()
}

fn blob_key(content: &[u8]) -> String {
    let h = blake3_ref::hex(content);
    format!(
        "{PREFIX}/blake3/{}/{}/{h}_{}.bin",
        &h[..2],
        &h[2..4],
        content.len()
    )
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
    let blobs = list_blobs(&store_a);

    let first = push_json(&s3, &store_a, &manifest, &[]);
    assert_eq!(num(&first, "blobs_total"), blobs.len() as u64, "{first}");
    assert_eq!(num(&first, "blobs_uploaded"), blobs.len() as u64, "{first}");
    assert_eq!(num(&first, "blobs_present"), 0, "{first}");
    let total_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    assert_eq!(num(&first, "bytes_uploaded"), total_bytes, "{first}");
    assert_eq!(first["manifest_key"], format!("{PREFIX}/manifests/app.vrm"));
    assert!(num(&ingested, "files") > 600);
    // The remote mirrors the local layout, byte for byte.
    let landed = s3.blobs(PREFIX);
    assert_eq!(landed.len(), blobs.len());
    for b in &blobs {
        let rel = b.path.strip_prefix(&store_a).unwrap();
        let remote = s3.bucket_dir().join(PREFIX).join(rel);
        assert_eq!(
            std::fs::read(&remote).unwrap(),
            std::fs::read(&b.path).unwrap(),
            "{}",
            remote.display()
        );
    }
    assert_eq!(
        std::fs::read(s3.object(&format!("{PREFIX}/manifests/app.vrm"))).unwrap(),
        std::fs::read(&manifest).unwrap()
    );

    // Second push: nothing to upload, by every way of checking. `auto` trusts the manifest
    // already on the remote (pushed only after all its blobs).
    for (check, how) in [("auto", "manifest"), ("list", "list"), ("head", "head")] {
        let again = push_json(&s3, &store_a, &manifest, &["--check", check]);
        assert_eq!(num(&again, "blobs_uploaded"), 0, "{check}: {again}");
        assert_eq!(num(&again, "bytes_uploaded"), 0, "{check}: {again}");
        assert_eq!(
            num(&again, "blobs_present"),
            blobs.len() as u64,
            "{check}: {again}"
        );
        assert_eq!(again["check"], how, "{again}");
    }
    let again = push_json(&s3, &store_a, &manifest, &[]);
    assert_eq!(
        num(&again, "requests"),
        3,
        "one HEAD, the two manifest PUTs: {again}"
    );

    // A changed tree: the previous push of the name vouches for the unchanged blobs, only
    // the new one is checked and uploaded.
    let changed_tree = tmp.path().join("app2");
    build_many_files(&changed_tree, 600, 450, "rt");
    write_file(&changed_tree.join("new.js"), b"brand new content\n", 0o644);
    let changed = tmp.path().join("app2.vrm");
    ingest_ok(&store_a, &changed_tree, &changed, &[]);
    let p2 = push_json(&s3, &store_a, &changed, &["--name", "app"]);
    assert_eq!(p2["check"], "manifest+head", "{p2}");
    assert_eq!(num(&p2, "blobs_uploaded"), 1, "{p2}");
    // The original back under the name, for the pulls below.
    push_json(&s3, &store_a, &manifest, &["--name", "app"]);

    // Pull into an empty store, the remote given by VR_REMOTE this time. A half-downloaded
    // blob of a pull that was killed (its pid is gone) is swept on the way.
    std::fs::create_dir_all(store_b.join("tmp")).unwrap();
    std::fs::write(store_b.join("tmp/.pull-999999999-0"), b"half").unwrap();
    let pulled = tmp.path().join("pulled.vrm");
    let mut cmd = vrift(&store_b);
    s3.env(&mut cmd);
    cmd.env("VR_REMOTE", remote_url())
        .args(["--no-progress", "--json", "pull", "app", "-o"])
        .arg(&pulled);
    let p = ok_json(&mut cmd);
    assert_eq!(num(&p, "blobs_downloaded"), blobs.len() as u64, "{p}");
    assert_eq!(num(&p, "bytes_downloaded"), total_bytes, "{p}");
    assert_eq!(num(&p, "blobs_present"), 0, "{p}");
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&manifest).unwrap()
    );
    let got = verify_store(&store_b);
    assert_eq!(got.len(), blobs.len());
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
    let text = st.to_string();
    assert!(text.contains("\"app\""), "{text}");
    let gc = run(vrift(&store_b).args(["--json", "gc"]));
    assert_eq!(gc.status.code(), Some(0), "{}", describe(&gc));
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("\"orphans\":0")
            || json_of(&gc).to_string().contains(":0"),
        "{}",
        describe(&gc)
    );

    // Pulling again fetches no blob; by content hash and by full key work too.
    let again = ok_json(
        vr(&s3, &store_b)
            .args(["--json", "pull", "app", "-o"])
            .arg(&pulled),
    );
    assert_eq!(num(&again, "blobs_downloaded"), 0, "{again}");
    let hash_key = first["manifest_hash_key"].as_str().unwrap().to_string();
    let hex = hash_key
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".vrm");
    assert_eq!(hex, blake3_ref::hex(&std::fs::read(&manifest).unwrap()));
    let by_hash = tmp.path().join("by-hash.vrm");
    ok_json(
        vr(&s3, &store_b)
            .args(["--json", "pull", hex, "-o"])
            .arg(&by_hash),
    );
    assert_eq!(
        std::fs::read(&by_hash).unwrap(),
        std::fs::read(&manifest).unwrap()
    );
    let by_key = tmp.path().join("by-key.vrm");
    ok_json(
        vr(&s3, &store_b)
            .args(["--json", "pull", "manifests/app.vrm", "-o"])
            .arg(&by_key),
    );
    assert_eq!(
        std::fs::read(&by_key).unwrap(),
        std::fs::read(&manifest).unwrap()
    );

    // A name that was never pushed: exit 1, naming the key.
    let o = run(vr(&s3, &store_b)
        .args(["pull", "nope", "-o"])
        .arg(tmp.path().join("n.vrm")));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        error_line(&o).contains(&format!("{PREFIX}/manifests/nope.vrm: not on the remote")),
        "{}",
        describe(&o)
    );
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
    assert_eq!(num(&v["push"], "blobs_uploaded"), 120, "{v}");
    assert_eq!(
        v["push"]["manifest_key"],
        format!("{PREFIX}/manifests/web.vrm")
    );
    assert!(s3.object(&format!("{PREFIX}/manifests/web.vrm")).is_file());
    let text = std::fs::read_to_string(&prom).unwrap();
    for needle in [
        "vrift_ingest_files_total{project=\"web\",outcome=\"new_blob\"} 120",
        "vrift_remote_blobs_total{project=\"web\",outcome=\"uploaded\"} 120",
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
        122 + retried,
        "120 blobs + 2 manifest keys, plus retries"
    );
    assert_eq!(failed, retried, "every failed PUT was retried");
    assert!(num(&v["push"], "retries") >= retried, "{v}");
    let up = text
        .lines()
        .find(|l| l.starts_with("vrift_remote_bytes_total{project=\"web\",direction=\"upload\"}"))
        .unwrap();
    assert!(!up.ends_with(" 0"), "{up}");

    // A warm re-ingest with --push uploads nothing.
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
fn large_blobs_go_up_as_multipart_and_come_back_verified() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("big");
    let big = pattern((11 << 20) + 123, 9);
    write_file(&src.join("blob.dat"), &big, 0o644);
    write_file(&src.join("small.txt"), b"small\n", 0o644);
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("big.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    let prom = tmp.path().join("push.prom");
    let mut c = vr(&s3, &store);
    c.env("VRIFT_REMOTE_MULTIPART_THRESHOLD", (5 << 20).to_string())
        .env("VRIFT_REMOTE_PART_SIZE", (5 << 20).to_string())
        .args(["--json", "push"])
        .arg(&manifest)
        .arg("--metrics-textfile")
        .arg(&prom);
    let p = ok_json(&mut c);
    assert_eq!(num(&p, "blobs_uploaded"), 2, "{p}");
    let text = std::fs::read_to_string(&prom).unwrap();
    // create + 3 parts + complete, plus whatever the server made object_store retry.
    let mp = series(
        &text,
        "vrift_remote_requests_total{project=\"big\",op=\"multipart\"}",
    );
    let mp_retried = series(
        &text,
        "vrift_remote_retries_total{project=\"big\",op=\"multipart\"}",
    );
    assert_eq!(mp, 5 + mp_retried, "{text}");
    assert_eq!(std::fs::read(s3.object(&blob_key(&big))).unwrap(), big);

    let store2 = tmp.path().join("s2");
    let pulled = tmp.path().join("p.vrm");
    ok_json(
        vr(&s3, &store2)
            .args(["--json", "pull", "big", "-o"])
            .arg(&pulled),
    );
    let out = tmp.path().join("out");
    checkout_ok(&store2, &pulled, &out);
    assert_eq!(std::fs::read(out.join("blob.dat")).unwrap(), big);
    verify_store(&store2);
    make_removable(tmp.path());
}

#[test]
fn a_killed_push_resumes_without_uploading_again_what_landed() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("heavy");
    // 400 distinct blobs of 256 KiB: ~100 MB, one request at a time, so the kill lands
    // in the middle.
    for i in 0..400 {
        write_file(
            &src.join(format!("d{}/f{i}.bin", i % 7)),
            &pattern(256 << 10, 1000 + i),
            0o644,
        );
    }
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("heavy.vrm");
    ingest_ok(&store, &src, &manifest, &[]);

    let mut c = vr(&s3, &store);
    c.args(["push", "-j", "1"])
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if s3.blobs(PREFIX).len() >= 40 {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("push finished ({st}) before it could be killed; make the tree bigger");
        }
        assert!(Instant::now() < deadline, "push made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let st = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    // Let the server finish or drop the request that was cut off.
    std::thread::sleep(Duration::from_millis(500));
    let landed: BTreeMap<_, _> = s3
        .blobs(PREFIX)
        .into_iter()
        .map(|(p, _)| {
            let ino = std::fs::metadata(&p).unwrap().ino();
            (p, ino)
        })
        .collect();
    assert!(landed.len() >= 40 && landed.len() < 400, "{}", landed.len());
    // Blobs first, manifest last: no manifest on the remote yet.
    assert!(!s3.object(&format!("{PREFIX}/manifests/heavy.vrm")).exists());

    let r = push_json(&s3, &store, &manifest, &[]);
    assert_eq!(num(&r, "blobs_present"), landed.len() as u64, "{r}");
    assert_eq!(num(&r, "blobs_uploaded"), 400 - landed.len() as u64, "{r}");
    assert_eq!(
        num(&r, "bytes_uploaded"),
        (400 - landed.len() as u64) * (256 << 10),
        "{r}"
    );
    // What had landed was not written again.
    for (p, ino) in &landed {
        assert_eq!(
            std::fs::metadata(p).unwrap().ino(),
            *ino,
            "{} was uploaded again",
            p.display()
        );
    }
    assert_eq!(s3.blobs(PREFIX).len(), 400);
    assert!(s3
        .object(&format!("{PREFIX}/manifests/heavy.vrm"))
        .is_file());
    make_removable(tmp.path());
}

#[test]
fn a_blob_corrupted_on_the_server_is_rejected_and_never_lands() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempdir();
    let src = tmp.path().join("proj");
    let victim = b"the original content of one file\n".to_vec();
    let short = pattern(70_000, 5);
    write_file(&src.join("victim.js"), &victim, 0o644);
    write_file(&src.join("short.bin"), &short, 0o644);
    build_many_files(&src.join("rest"), 50, 50, "cr");
    let store = tmp.path().join("s");
    let manifest = tmp.path().join("proj.vrm");
    ingest_ok(&store, &src, &manifest, &[]);
    push_json(&s3, &store, &manifest, &[]);

    // Same size, one byte changed.
    let key = blob_key(&victim);
    let mut bad = victim.clone();
    bad[4] ^= 0x20;
    std::fs::write(s3.object(&key), &bad).unwrap();

    let store2 = tmp.path().join("s2");
    let out = tmp.path().join("pulled.vrm");
    let o = run(vr(&s3, &store2).args(["pull", "proj", "-o"]).arg(&out));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert_no_panic(&o);
    let line = error_line(&o);
    assert!(line.contains(&key), "the error names the key: {line}");
    assert!(line.contains("does not match its name"), "{line}");
    assert!(
        !blob_path_of(&store2, &victim).exists(),
        "corrupt content landed"
    );
    assert!(!blob_path_of(&store2, &bad).exists());
    assert!(!out.exists(), "no manifest without all of its blobs");
    // Everything that did land is a valid blob, and no temp file is left.
    let good = verify_store(&store2);
    assert_eq!(good.len(), 51, "the other blobs arrived (and are correct)");
    assert_no_leftovers(&store2, &src);

    // Truncated on the server: also rejected, naming it (into a third, empty store: the
    // second one already holds that blob).
    let short_key = blob_key(&short);
    std::fs::write(s3.object(&short_key), &short[..1000]).unwrap();
    std::fs::write(s3.object(&key), &victim).unwrap();
    let store3 = tmp.path().join("s3");
    let o = run(vr(&s3, &store3).args(["pull", "proj", "-o"]).arg(&out));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let line = error_line(&o);
    assert!(line.contains(&short_key), "{line}");
    assert!(!blob_path_of(&store3, &short).exists());
    assert!(!out.exists());
    assert_no_leftovers(&store3, &src);

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
    assert_eq!(s3.blobs(PREFIX).len(), 0, "nothing was uploaded");
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
    // Every 7th request gets a 503 SlowDown instead of reaching the server.
    let proxy = FlakyProxy::start(s3.port, 7);
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
        c.env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("VRIFT_REMOTE_MULTIPART_THRESHOLD", (5 << 20).to_string())
            .env("VRIFT_REMOTE_PART_SIZE", (5 << 20).to_string());
        c
    };
    let prom = tmp.path().join("flaky.prom");
    let p = ok_json(
        through_proxy(&store)
            .args(["--json", "push"])
            .arg(&manifest)
            .arg("--metrics-textfile")
            .arg(&prom),
    );
    assert_eq!(num(&p, "blobs_uploaded"), 151, "{p}");
    assert!(num(&p, "retries") > 0, "{p}");
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) > 0);
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
    assert_eq!(s3.blobs(PREFIX).len(), 151);

    let store2 = tmp.path().join("s2");
    let pulled = tmp.path().join("pulled.vrm");
    let l = ok_json(
        through_proxy(&store2)
            .args(["--json", "pull", "flaky", "-o"])
            .arg(&pulled),
    );
    assert_eq!(num(&l, "blobs_downloaded"), 151, "{l}");
    assert!(num(&l, "retries") > 0, "{l}");
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
