//! `run --isolate` without `--base`: the host is visible read-only, the manifest's tree
//! appears at its root path (throwaway writes), `/tmp` is private, a dynamic program from the
//! host (python3) runs, and a manifest whose root lies under `/tmp` still shows up.

use crate::common;
use crate::isolate_support;

use std::ffi::OsString;
use std::fs;

use isolate_support::*;

#[test]
fn python_from_the_host_sees_the_view_and_cannot_write_the_host() {
    let Some(env) = Env::new() else { return };
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 missing (.ci/apt-packages)"
        );
        eprintln!("SKIP: {python} missing");
        return;
    }
    env.write("app/pkg/data.txt", b"from the manifest\n", 0o644);
    let app = env.home.join("app");
    let m = env.home.join("app.manifest");
    env.ingest(&app, &m);
    // After the ingest the host copy changes; the view shows the manifest's version.
    fs::remove_file(app.join("pkg/data.txt")).unwrap();
    env.write("app/pkg/data.txt", b"changed on the host\n", 0o644);
    let host_file = env.write("outside.txt", b"outside\n", 0o644);

    let py = r#"
import os, sys
app, outside = sys.argv[1], sys.argv[2]
print(open("pkg/data.txt").read().strip())           # relative: cwd is inside the view
open(os.path.join(app, "pkg/new.txt"), "w").write("new")
print(open(os.path.join(app, "pkg/new.txt")).read())
with open(os.path.join(app, "pkg/data.txt"), "a") as f:
    f.write("appended\n")
print(open(os.path.join(app, "pkg/data.txt")).read().replace("\n", "|"))
print(open(outside).read().strip())                    # the host is visible...
for path in (outside, os.path.join(os.path.dirname(outside), "made-inside")):
    try:
        open(path, "a").write("x")
        print("WROTE", path)
    except OSError as e:
        print("refused", e.errno)                      # ...read-only
open("/tmp/private", "w").write("t")
print(sorted(os.listdir("/tmp")))
print(os.getuid() == int(sys.argv[3]))
"#;
    let uid = if env.as_nobody {
        NOBODY
    } else {
        // SAFETY: no preconditions.
        unsafe { libc::getuid() }
    };
    let o = env
        .isolate_cmd([
            OsString::from("--manifest"),
            m.clone().into(),
            "--".into(),
            python.into(),
            "-c".into(),
            py.into(),
            app.clone().into(),
            host_file.clone().into(),
            uid.to_string().into(),
        ])
        .current_dir(&app)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "from the manifest\nnew\nfrom the manifest|appended|\noutside\nrefused {e}\nrefused {e}\n['private']\nTrue\n",
            e = libc::EROFS
        ),
        "{}",
        describe(&o)
    );
    assert_eq!(
        fs::read(app.join("pkg/data.txt")).unwrap(),
        b"changed on the host\n"
    );
    assert!(!app.join("pkg/new.txt").exists());
    assert!(!env.home.join("made-inside").exists());
    assert_eq!(fs::read(&host_file).unwrap(), b"outside\n");
    common::verify_store(&env.store);
    env.assert_clean();
}

#[test]
fn a_manifest_rooted_under_tmp_appears_on_the_private_tmp() {
    let Some(env) = Env::new() else { return };
    let dir = tempfile::Builder::new()
        .prefix("vrift-isolate-tmp-")
        .tempdir_in("/tmp")
        .unwrap();
    let app = dir.path().join("app");
    fs::create_dir(&app).unwrap();
    fs::write(app.join("f"), b"under tmp\n").unwrap();
    env.give(dir.path());
    let m = env.home.join("tmp-app.manifest");
    env.ingest(&app, &m);
    let o = env.isolate([
        OsString::from("--manifest"),
        m.into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        "cat \"$1/f\"; ls /tmp | wc -l".into(),
        "sh".into(),
        app.clone().into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    // Only the path down to the manifest root exists in the private /tmp.
    assert_eq!(stdout(&o), "under tmp\n1\n", "{}", describe(&o));
    env.assert_clean();
    common::make_removable(dir.path());
}

/// `--isolate` is sold for code you do not trust: by default it gets a network namespace of
/// its own (loopback only), so it cannot reach a service on the host's 127.0.0.1;
/// `--network host` shares the host's network. Loopback inside the sandbox works.
#[test]
fn isolate_has_its_own_loopback_unless_network_host() {
    let Some(env) = Env::new() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let app = env.write("app/probe.txt", b"x", 0o644);
    let m = env.home.join("app.vrm");
    env.ingest(app.parent().unwrap(), &m);
    let probe = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.settimeout(2)\n\
         try:\n    s.connect(('127.0.0.1', {port})); print('host reachable')\n\
         except OSError as e: print('host unreachable')\n\
         srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n\
         c = socket.create_connection(srv.getsockname(), timeout=2); print('loopback works')\n"
    );
    let run = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec![os("--manifest"), m.clone().into_os_string()];
        args.extend(extra.iter().map(|a| os(a)));
        args.extend([os("--"), os("python3"), os("-c"), os(&probe)]);
        let o = env.isolate(args);
        assert!(o.status.success(), "{}", describe(&o));
        stdout(&o)
    };
    assert_eq!(run(&[]), "host unreachable\nloopback works\n");
    assert_eq!(
        run(&["--network", "host"]),
        "host reachable\nloopback works\n"
    );
}

/// The documented way: ingest, delete the tree, `run --isolate --manifest M`. The root the
/// tree had no longer exists on the read-only host; the sandbox makes it.
#[test]
fn isolate_runs_on_a_deleted_tree() {
    let Some(env) = Env::new() else { return };
    let f = env.write("gone/app/index.txt", b"still here\n", 0o644);
    let app = f.parent().unwrap().to_path_buf();
    let m = env.home.join("gone.vrm");
    env.ingest(&app, &m);
    fs::remove_dir_all(env.home.join("gone")).unwrap();
    let o = env.isolate([
        os("--manifest"),
        m.into_os_string(),
        os("--"),
        os("cat"),
        f.into_os_string(),
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "still here\n");
    assert!(!env.home.join("gone").exists(), "the host was changed");
}

/// A manifest root deep enough that its link farm's path is over 255 bytes (a monorepo's
/// nested package): overlayfs takes each layer by descriptor, not by a path string, which
/// `fsconfig` caps at 255 bytes. Both a root that exists and one deleted from the host.
#[test]
fn isolate_serves_a_root_whose_path_is_longer_than_255_bytes() {
    let Some(env) = Env::new() else { return };
    let deep: String = (0..6)
        .map(|i| format!("packages-{i}-with-a-rather-long-directory-name-of-forty"))
        .collect::<Vec<_>>()
        .join("/");
    assert!(deep.len() > 255);
    for gone in [false, true] {
        let top = format!("deep-{gone}");
        let f = env.write(&format!("{top}/{deep}/app/index.txt"), b"deep\n", 0o644);
        let app = f.parent().unwrap().to_path_buf();
        let m = env.home.join(format!("{top}.vrm"));
        env.ingest(&app, &m);
        if gone {
            fs::remove_dir_all(env.home.join(&top)).unwrap();
        }
        let o = env.isolate([
            os("--manifest"),
            m.into_os_string(),
            os("--"),
            os("cat"),
            f.into_os_string(),
        ]);
        assert!(o.status.success(), "gone={gone}: {}", describe(&o));
        assert_eq!(stdout(&o), "deep\n");
    }
}

/// `--bind DIR`: a cache a tool keeps across runs (jest's in `/tmp`, `~/.cargo`). What the
/// first run writes there is on the host afterwards and the second run reads it; the rest of
/// the host stays read-only, and a bound directory is writable at its own path even under
/// the private `/tmp`.
#[test]
fn bind_keeps_a_cache_across_isolated_runs() {
    let Some(env) = Env::new() else { return };
    let f = env.write("app/index.txt", b"view\n", 0o644);
    let app = f.parent().unwrap().to_path_buf();
    let m = env.home.join("app.vrm");
    env.ingest(&app, &m);
    let cache = env.home.join("cache");
    fs::create_dir(&cache).unwrap();
    env.give(&cache);
    let outside = env.write("outside.txt", b"outside\n", 0o644);
    let script = format!(
        "cat {c}/hit 2>/dev/null || echo miss; echo warm > {c}/hit; \
         (echo x >> {o}) 2>/dev/null && echo WROTE || echo refused; cat index.txt",
        c = cache.display(),
        o = outside.display()
    );
    let run = || {
        let o = env
            .isolate_cmd([
                os("--bind"),
                cache.clone().into_os_string(),
                os("--manifest"),
                m.clone().into_os_string(),
                os("--"),
                os("sh"),
                os("-c"),
                os(&script),
            ])
            .current_dir(&app)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", describe(&o));
        stdout(&o)
    };
    assert_eq!(run(), "miss\nrefused\nview\n");
    assert_eq!(fs::read_to_string(cache.join("hit")).unwrap(), "warm\n");
    assert_eq!(run(), "warm\nrefused\nview\n");
    assert_eq!(fs::read_to_string(&outside).unwrap(), "outside\n");
    // Not a directory: one line naming it, before anything runs.
    let o = env.isolate([
        os("--bind"),
        outside.clone().into_os_string(),
        os("--manifest"),
        m.into_os_string(),
        os("--"),
        os("true"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains(&format!("--bind {}: not a directory", outside.display())),
        "{}",
        describe(&o)
    );
    env.assert_clean();
}

/// A project run (`vrift run --isolate -- CMD` in the project, no `--manifest`) writes into
/// the project as it would without vrift, like the shim's project run: a build's output is
/// there afterwards. A file of the project that is a read-only hard link into the store (an
/// in-place solid ingest of `vendor/`) stays unwritable: the sandbox gives up its permission
/// override once a host directory is writable, so the blob behind the link is never changed.
#[test]
fn isolated_project_runs_write_into_the_project_but_never_into_blobs() {
    let Some(env) = Env::new() else { return };
    env.write("proj/main.sh", b"echo v1\n", 0o644);
    env.write("proj/vendor/lib.txt", b"vendored\n", 0o644);
    let proj = env.home.join("proj");
    env.ingest(&proj.join("vendor"), &env.home.join("vendor.vrm"));
    let lib = proj.join("vendor/lib.txt");
    {
        use std::os::unix::fs::MetadataExt;
        let md = fs::metadata(&lib).unwrap();
        assert_eq!((md.nlink(), md.mode() & 0o222), (2, 0), "not a store link");
    }
    let o = env
        .isolate_cmd([
            os("--"),
            os("sh"),
            os("-c"),
            os("mkdir -p dist && sh main.sh > dist/out.txt; \
                (echo tampered >> vendor/lib.txt) 2>/dev/null && echo WROTE || echo refused"),
        ])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "refused\n");
    assert_eq!(
        fs::read_to_string(proj.join("dist/out.txt")).unwrap(),
        "v1\n"
    );
    assert_eq!(fs::read_to_string(&lib).unwrap(), "vendored\n");
    let v = env.vrift().arg("verify").output().unwrap();
    assert!(v.status.success(), "{}", describe(&v));
    // --ephemeral: the project is the view again, writes are thrown away.
    let o = env
        .isolate_cmd([os("--ephemeral"), os("--"), os("touch"), os("gone.txt")])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    assert!(!proj.join("gone.txt").exists());
    env.assert_clean();
}

/// `--read-only`: the view is the link farm bound read-only (no overlay): reads serve the
/// manifest's tree, writes into it fail with EROFS, a bound directory still takes output.
#[test]
fn read_only_views_refuse_writes_and_bound_output_stays() {
    let Some(env) = Env::new() else { return };
    let f = env.write("gone/app/index.txt", b"from the view\n", 0o644);
    let app = f.parent().unwrap().to_path_buf();
    let m = env.home.join("gone.vrm");
    env.ingest(&app, &m);
    fs::remove_dir_all(env.home.join("gone")).unwrap();
    let out = env.home.join("out");
    fs::create_dir(&out).unwrap();
    env.give(&out);
    let script = format!(
        "cat {f}; (echo x >> {f}) 2>/dev/null && echo WROTE || echo refused; \
         (touch {a}/new) 2>/dev/null && echo WROTE || echo refused; cp {f} {o}/copy",
        f = f.display(),
        a = app.display(),
        o = out.display()
    );
    let o = env.isolate([
        os("--read-only"),
        os("--bind"),
        out.clone().into_os_string(),
        os("--manifest"),
        m.into_os_string(),
        os("--"),
        os("sh"),
        os("-c"),
        os(&script),
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "from the view\nrefused\nrefused\n");
    assert_eq!(
        fs::read_to_string(out.join("copy")).unwrap(),
        "from the view\n"
    );
    assert!(!env.home.join("gone").exists(), "the host was changed");
    env.assert_clean();
}

/// Binds that would break the sandbox's promises are refused before anything runs, naming
/// the path: one holding the store (blobs, farms and this run's own layers would be
/// writable), and one holding a manifest root gone from the host (its mount point would have
/// to be created in the user's directory).
#[test]
fn binds_over_the_store_or_a_deleted_root_are_refused() {
    let Some(env) = Env::new() else { return };
    let f = env.write("work/gone/app/index.txt", b"x\n", 0o644);
    let app = f.parent().unwrap().to_path_buf();
    let m = env.home.join("gone.vrm");
    env.ingest(&app, &m);
    fs::remove_dir_all(env.home.join("work/gone")).unwrap();
    let refused = |bind: &std::path::Path, says: &str| {
        let o = env.isolate([
            os("--bind"),
            bind.as_os_str().to_owned(),
            os("--manifest"),
            m.clone().into_os_string(),
            os("--"),
            os("true"),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("--bind {}", bind.display())) && err.contains(says),
            "{}",
            describe(&o)
        );
    };
    refused(&env.home, "the store");
    refused(&env.home.join("work"), "gone from the host");
    assert!(!env.home.join("work/gone").exists(), "the host was changed");
    env.assert_clean();
}

/// A project run whose view serves a directory gone from disk (offloaded after an ingest)
/// keeps serving it under `--isolate` (the project is then not bound: writes go to the
/// throwaway layer, and a line says so).
#[test]
fn isolated_project_runs_still_serve_offloaded_directories() {
    let Some(env) = Env::new() else { return };
    env.write("proj/main.sh", b"echo v1\n", 0o644);
    env.write("proj/deps/pkg/index.txt", b"dependency\n", 0o644);
    let proj = env.home.join("proj");
    let o = env.vrift().arg("init").arg(&proj).output().unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    // The first run records the tree; then the dependency directory is offloaded.
    let o = env
        .isolate_cmd([os("--"), os("true")])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    fs::remove_dir_all(proj.join("deps")).unwrap();
    let o = env
        .isolate_cmd([os("--"), os("cat"), os("deps/pkg/index.txt")])
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "dependency\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("served from the store"),
        "{}",
        describe(&o)
    );
    assert!(
        !proj.join("deps").exists(),
        "the offloaded directory came back"
    );
    env.assert_clean();
}

/// A mount never follows a symlink of the view: the manifest says `app/data` is a symlink
/// (to `/etc`), the host has a real `app/data/cache` there now, and `--bind` of it is refused
/// naming the symlink instead of mounting (or creating a directory) where it points.
#[test]
fn a_bind_below_a_symlink_of_the_view_is_refused() {
    let Some(env) = Env::new() else { return };
    env.write("app/index.txt", b"x\n", 0o644);
    let app = env.home.join("app");
    std::os::unix::fs::symlink("/etc", app.join("data")).unwrap();
    let m = env.home.join("app.vrm");
    let o = env
        .vrift()
        .args(["--no-progress", "ingest", "--mode", "copy"])
        .arg(&app)
        .arg("-o")
        .arg(&m)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    fs::remove_file(app.join("data")).unwrap();
    fs::create_dir_all(app.join("data/cache")).unwrap();
    env.give(&app);
    let o = env.isolate([
        os("--bind"),
        app.join("data/cache").into_os_string(),
        os("--manifest"),
        m.into_os_string(),
        os("--"),
        os("true"),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is a symlink inside the sandbox")
            && err.contains(&format!("--bind {}", app.join("data/cache").display())),
        "{}",
        describe(&o)
    );
    env.assert_clean();
}

/// Building a link farm shows a percent line on a terminal, taken off before the command
/// writes anything; in a pipe nothing of it appears.
#[test]
fn the_farm_build_shows_progress_on_a_terminal_only_and_before_the_command() {
    let Some(env) = Env::new() else { return };
    if !common::have_script() {
        return;
    }
    // Two trees, so each run builds a farm of its own; enough files for a visible build.
    for tree in ["piped", "tty"] {
        for i in 0..4000 {
            env.write(
                &format!("{tree}/pkg{}/f{i}.js", i % 40),
                format!("{tree} {i}").as_bytes(),
                0o644,
            );
        }
        env.ingest(
            &env.home.join(tree),
            &env.home.join(format!("{tree}.manifest")),
        );
    }
    let o = env.isolate(["--manifest", "piped.manifest", "--", "echo", "CMD-SAYS-HI"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("link farm"), "progress in a pipe: {err}");

    let line = format!(
        "{} --the-source-root {} run --isolate --manifest tty.manifest -- echo CMD-SAYS-HI",
        env.bin.display(),
        env.store.display()
    );
    let o = env
        .cmd("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let tty = String::from_utf8_lossy(&o.stdout);
    let drawn = tty.rfind("files and symlinks");
    let said = tty.find("CMD-SAYS-HI");
    assert!(
        tty.contains("link farm") && drawn.is_some(),
        "no progress line: {tty:?}"
    );
    assert!(
        drawn < said && said.is_some(),
        "the line was still drawn once the command wrote: {tty:?}"
    );
}
