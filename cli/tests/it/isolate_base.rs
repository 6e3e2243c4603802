//! `run --isolate --base`: a busybox root made by `scripts/make-busybox-base.sh` plus an app
//! layer, as an ordinary user. The layers are the whole root; the host is not reachable;
//! writes are thrown away; blobs and the project keep their contents and modes; a static
//! and a dynamic program both run; the second start of the same layers reuses the farm.

use crate::common;
use crate::isolate_support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use isolate_support::*;

/// An app tree in `home/app`, ingested to `home/app.manifest`.
fn app(env: &Env) -> (PathBuf, PathBuf) {
    env.write("app/hello.txt", b"hello from the app\n", 0o644);
    env.write(
        "app/bin/run.sh",
        b"#!/bin/sh\necho \"script ran with $1\"\n",
        0o755,
    );
    env.write("app/lib/deep/data.json", b"{\"k\": 1}\n", 0o644);
    let dir = env.home.join("app");
    std::os::unix::fs::symlink("lib/deep", dir.join("current")).unwrap();
    env.give(&dir.join("current"));
    let m = env.home.join("app.manifest");
    env.ingest(&dir, &m);
    (dir, m)
}

/// (name, size, mode, inode) of every blob: what running a sandbox must not change.
fn blob_state(store: &Path) -> Vec<(String, u64, u32, u64)> {
    let mut v: Vec<_> = common::verify_store(store)
        .into_iter()
        .map(|b| (b.hex, b.size, b.mode, b.ino))
        .collect();
    v.sort();
    v
}

#[test]
fn busybox_root_with_an_app_layer() {
    let Some(env) = Env::new() else { return };
    if !need_busybox() {
        return;
    }
    let base = env.busybox_base();
    let (app, m) = app(&env);
    let secret = env.write("secret.txt", b"host only\n", 0o644);
    let app_before = common::snapshot(&app);
    let blobs_before = blob_state(&env.store);

    let script = r#"
set -e
cd "$1"
cat hello.txt
./bin/run.sh arg1
cat current/data.json
echo written > "$1/new.txt"; cat "$1/new.txt"
echo more >> "$1/hello.txt"; cat "$1/hello.txt"
echo motd > /etc/motd; cat /etc/motd
mkdir -p /opt/x && echo y > /opt/x/y && cat /opt/x/y
echo "ROOT: $(ls -a / | tr '\n' ' ')"
echo "IDS: $(id -u) $(id -g)"
echo "TMP: $(stat -c %a /tmp)"
for p in "$2" "$3" /work /usr/bin/python3 /etc/os-release /root/.cargo; do
    if [ -e "$p" ]; then echo "VISIBLE $p"; fi
done
echo done
"#;
    let o = env.isolate([
        OsString::from("--base"),
        base.clone().into(),
        "--manifest".into(),
        m.clone().into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        app.clone().into(),
        secret.clone().into(),
        env.store.clone().into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = stdout(&o);
    for want in [
        "hello from the app\n",
        "script ran with arg1\n",
        "{\"k\": 1}\n",
        "written\n",
        "hello from the app\nmore\n",
        "motd\n",
        "y\n",
        "done\n",
    ] {
        assert!(out.contains(want), "missing {want:?}\n{}", describe(&o));
    }
    assert!(
        !out.contains("VISIBLE"),
        "host paths visible\n{}",
        describe(&o)
    );
    // `/` is exactly the busybox root, the top of the app's path, and what CMD created.
    let mut want: BTreeSet<String> = fs::read_dir(env.home.join("busybox.root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.extend([".", "..", "opt"].map(String::from));
    let top = app.components().nth(1).unwrap();
    want.insert(top.as_os_str().to_string_lossy().into_owned());
    let line = out.lines().find(|l| l.starts_with("ROOT: ")).unwrap();
    let got: BTreeSet<String> = line["ROOT: ".len()..]
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(got, want, "listing of /\n{}", describe(&o));
    // CMD runs as the caller, not as root.
    let (uid, gid) = if env.as_nobody {
        (NOBODY, NOBODY)
    } else {
        // SAFETY: no preconditions.
        unsafe { (libc::getuid(), libc::getgid()) }
    };
    assert!(
        out.contains(&format!("IDS: {uid} {gid}\n")),
        "{}",
        describe(&o)
    );

    // Nothing reached the host: the project, the base tree and every blob are as before.
    common::assert_trees_equal(&app_before, &common::snapshot(&app), "app after the run");
    assert!(!app.join("new.txt").exists());
    assert!(!env.home.join("busybox.root/etc/motd").exists());
    assert_eq!(blob_state(&env.store), blobs_before, "blobs changed");
    assert_eq!(fs::read(&secret).unwrap(), b"host only\n");
    env.assert_clean();
}

#[test]
fn static_and_dynamic_programs_run() {
    let Some(env) = Env::new() else { return };
    if !need_busybox() {
        return;
    }
    let base = env.busybox_base();
    let (app, m) = app(&env);
    let hello = app.join("hello.txt");

    // A static binary: busybox itself.
    let o = env.isolate([
        OsString::from("--base"),
        base.clone().into(),
        "--".into(),
        "/bin/busybox".into(),
        "echo".into(),
        "static ok".into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(stdout(&o), "static ok\n");

    // A dynamic one: node and the libraries it links, as a second base layer.
    let Some(node) = env.dynamic_layer("/usr/bin/node", "node") else {
        let msg = "/usr/bin/node missing: install nodejs (listed in .ci/apt-packages)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIP (dynamic part): {msg}");
        return;
    };
    let js = "const fs = require('fs'); \
              process.stdout.write(fs.readFileSync(process.argv[1], 'utf8')); \
              fs.writeFileSync(process.argv[1] + '.node', 'x'); \
              console.log(fs.existsSync('/usr/bin/python3') ? 'host python visible' : 'sealed');";
    let o = env.isolate([
        OsString::from("--base"),
        base.into(),
        "--base".into(),
        node.into(),
        "--manifest".into(),
        m.into(),
        "--".into(),
        "/usr/bin/node".into(),
        "-e".into(),
        js.into(),
        hello.clone().into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(
        stdout(&o),
        "hello from the app\nsealed\n",
        "{}",
        describe(&o)
    );
    assert!(!app.join("hello.txt.node").exists());
    common::verify_store(&env.store);
    env.assert_clean();
}

#[test]
fn second_start_reuses_the_link_farm() {
    let Some(env) = Env::new() else { return };
    if !need_busybox() {
        return;
    }
    let base = env.busybox_base();
    let (_app, m) = app(&env);
    let run = || {
        let t = std::time::Instant::now();
        let o = env
            .isolate_cmd([
                OsString::from("--base"),
                base.clone().into(),
                "--manifest".into(),
                m.clone().into(),
                "--".into(),
                "/bin/true".into(),
            ])
            .env("VRIFT_ISOLATE_STATS", "1")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        let stats = String::from_utf8_lossy(&o.stderr)
            .lines()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap_or_else(|| panic!("no stats line\n{}", describe(&o)));
        (stats, t.elapsed())
    };
    let (cold, t_cold) = run();
    assert!(cold["farm_built"].is_object(), "first run builds: {cold}");
    let farms = env.farms();
    assert_eq!(farms.len(), 1);
    let (warm, t_warm) = run();
    assert!(warm["farm_built"].is_null(), "second run reuses: {warm}");
    assert_eq!(env.farms(), farms);
    eprintln!(
        "cold start {:.1} ms, warm start {:.1} ms (wall, including runuser)",
        t_cold.as_secs_f64() * 1e3,
        t_warm.as_secs_f64() * 1e3
    );
    env.assert_clean();
}
