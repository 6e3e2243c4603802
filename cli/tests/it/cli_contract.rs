//! The command-line contract of DESIGN.md section 2 and issue 2: `--json` output shape,
//! flags, exit codes, no progress noise in pipes.

use crate::common;

use std::fs;

use common::*;

/// `vrift ARGS` with no store involved (help, completions, man, version): its output.
fn run_vrift(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap()
}

fn small_tree(root: &std::path::Path) {
    write_file(&root.join("a.txt"), b"a\n", 0o644);
    write_file(&root.join("dir/b.txt"), b"b\n", 0o644);
    write_file(&root.join("dir/dup.txt"), b"a\n", 0o644);
    write_file(&root.join(".bin/x"), b"#!/bin/sh\n", 0o755);
    symlink("a.txt", &root.join("link"));
    fs::create_dir_all(root.join("empty")).unwrap();
}

/// `--json` prints exactly one JSON object on stdout, with exactly the contract's keys.
#[test]
fn ingest_json_has_exactly_the_contract_keys() {
    let t = tempdir();
    let src = t.path().join("p");
    small_tree(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    for run in 0..2 {
        let o = ingest_raw(&store, &src, &out, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        let v = json_of(&o);
        let mut keys: Vec<&str> = v
            .as_object()
            .unwrap()
            .keys()
            .map(std::string::String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = JSON_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "run {run}: {v}");
        for k in JSON_KEYS {
            match k {
                "manifest" | "store" => assert!(v[k].is_string(), "{k}: {v}"),
                "project" => assert!(v[k].is_string() || v[k].is_null(), "{k}: {v}"),
                "excluded_paths" => assert!(v[k].is_array(), "{k}: {v}"),
                "issues" => {
                    // Every kind, zero or not: a consumer never meets a missing key.
                    let kinds = v[k].as_object().unwrap();
                    assert_eq!(kinds.len(), 11, "{v}");
                    assert!(kinds.values().all(serde_json::Value::is_u64), "{v}");
                }
                "seconds" | "files_per_sec" | "total_seconds" => {
                    assert!(v[k].as_f64().is_some_and(|x| x >= 0.0), "{k}: {v}");
                }
                _ => assert!(v[k].is_u64(), "{k} must be a count: {v}"),
            }
        }
        if run == 0 {
            // The key set as a snapshot, so a change to the contract is a visible decision.
            // (Inline, so it needs no snapshot file and no `cargo metadata` to be found.)
            insta::assert_snapshot!(keys.join(" "), @"blobs_new bytes dedup_hits dirs errors excluded excluded_paths files files_per_sec issues manifest project seconds skipped store symlinks total_seconds version");
            assert_eq!(num(&v, "files"), 4);
            assert_eq!(num(&v, "symlinks"), 1);
            assert_eq!(num(&v, "blobs_new"), 3);
            assert_eq!(num(&v, "dedup_hits"), 1);
            assert_eq!(num(&v, "bytes"), 2 + 2 + 2 + 10);
        } else {
            assert_eq!(num(&v, "skipped"), 4, "{v}");
        }
        // Pipes get no progress bar or escape codes.
        let e = stderr(&o);
        assert!(
            !e.contains('\r') && !e.contains('\x1b'),
            "control characters on stderr in a pipe: {e:?}"
        );
    }
}

/// Every `--json` answer is one object whose first key is `"version"` (the output's schema
/// version, 1), on success, on failure and for a usage error (exit 2).
#[test]
fn every_json_answer_carries_its_version_first() {
    let t = tempdir();
    let src = t.path().join("p");
    small_tree(&src);
    let store = t.path().join("store");
    let m = t.path().join("m.vrm");
    let out = t.path().join("out");
    let runs: Vec<(Vec<std::ffi::OsString>, i32)> = vec![
        (
            vec![
                "ingest".into(),
                src.clone().into(),
                "-o".into(),
                m.clone().into(),
            ],
            0,
        ),
        (
            vec!["checkout".into(), m.clone().into(), out.clone().into()],
            0,
        ),
        (vec!["status".into()], 0),
        (vec!["gc".into()], 0),
        (vec!["gc".into(), "--farms".into()], 0),
        (vec!["doctor".into()], 0),
        (vec!["verify".into()], 0),
        (vec!["registry".into()], 0),
        (
            vec![
                "checkout".into(),
                "/nonexistent.vrm".into(),
                out.clone().into(),
            ],
            1,
        ),
        (vec!["gc".into(), "--older-than".into(), "banana".into()], 2),
        (vec!["frobnicate".into()], 2),
    ];
    for (args, code) in runs {
        let o = vrift(&store).arg("--json").args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", describe(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.starts_with("{\"version\":2,"), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: one line: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_bytes_named_by_suffix(&v, &args);
        // One `version` key: `registry` once printed the file's own version as a second one.
        assert_eq!(text.matches("\"version\":").count(), 1, "{args:?}: {text}");
        if code != 0 {
            assert!(v["error"].is_string(), "{args:?}: {v}");
            assert_eq!(
                v["exit"], code,
                "{args:?}: the exit code is in the answer: {v}"
            );
        }
    }
}

/// `--json` failure: still exit 1, and stdout (if anything) is one JSON object.
#[test]
fn json_failure_is_still_json() {
    let t = tempdir();
    let missing = t.path().join("no-such-dir");
    let o = ingest_raw(&t.path().join("store"), &missing, &t.path().join("m"), &[]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    if !o.stdout.is_empty() {
        json_of(&o);
    }
    assert!(
        stderr(&o).contains(&*missing.to_string_lossy()),
        "{}",
        describe(&o)
    );
}

/// The human summary names every number of the report.
#[test]
fn human_summary_names_every_number() {
    let t = tempdir();
    let src = t.path().join("p");
    small_tree(&src);
    let o = vrift(&t.path().join("store"))
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(t.path().join("m.vrm"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let s = String::from_utf8_lossy(&o.stdout).to_lowercase();
    for word in [
        "files", "dirs", "symlinks", "new", "dedup", "skipped", "excluded", "errors", "files/s",
    ] {
        assert!(s.contains(word), "summary lacks {word:?}:\n{s}");
    }
    let e = stderr(&o);
    assert!(!e.contains('\x1b'), "escape codes in a pipe: {e:?}");
}

/// Every flag of the contract is accepted (help lists them) and misuse exits 2.
#[test]
fn flags_exist_and_usage_errors_exit_2() {
    let o = run_vrift(&["ingest", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--mode",
        "--tier",
        "--jobs",
        "-j",
        "--io-backend",
        "--no-security-filter",
        "--show-excluded",
        "--exclude",
        "--name",
        "--resume",
        "--no-cache",
        "--the-source-root",
        "--json",
        "--no-progress",
        "-o",
    ] {
        assert!(help.contains(flag), "ingest --help lacks {flag}:\n{help}");
    }
    for word in [
        "solid", "phantom", "tier1", "tier2", "auto", "uring", "threads",
    ] {
        assert!(help.contains(word), "ingest --help lacks {word}:\n{help}");
    }
    let o = run_vrift(&["checkout", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));

    let t = tempdir();
    for bad in [
        &["ingest"][..],                                 // no DIR, no -o
        &["ingest", "x"],                                // no -o
        &["ingest", "x", "-o", "m", "--mode", "liquid"], // bad value
        &["ingest", "x", "-o", "m", "--tier", "tier3"],
        &["ingest", "x", "-o", "m", "--io-backend", "magic"],
        &["ingest", "x", "-o", "m", "-j", "many"],
        &["checkout", "m"],
        &["frobnicate"],
        &["gc", "--older-than", "banana"], // durations are checked with the arguments
        &["gc", "--farms", "--older-than", "7 days"],
        &["remote", "gc", "--grace", "soon"],
    ] {
        let o = vrift(&t.path().join("store"))
            .args(bad)
            .current_dir(t.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}\n{}", describe(&o));
        assert_no_panic(&o);
    }
    assert!(
        !t.path().join("store").exists(),
        "a usage error must not create a store"
    );
}

/// `vrift completions SHELL` prints a completion script generated from the parser itself:
/// bash's parses, every shell's names the commands; an unknown shell is a usage error.
#[test]
fn completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run_vrift(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        for cmd in ["ingest", "checkout", "restore", "the-source-root"] {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
        if shell == "bash" {
            let mut check = std::process::Command::new("bash")
                .arg("-n")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            check
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(check.wait().unwrap().success(), "bash cannot parse it");
        }
    }
    let o = run_vrift(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// `vrift man` prints roff generated from the parser (the page of one command names its
/// flags); `--out` writes a page per command; an unknown command is an error.
#[test]
fn man_pages_are_generated_for_every_command() {
    let o = run_vrift(&["man", "restore"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH"),
        "not roff: {page}"
    );
    assert!(
        page.contains("vrift\\-restore") || page.contains("vrift-restore"),
        "{page}"
    );
    assert!(
        page.contains("key\\-from") || page.contains("key-from"),
        "{page}"
    );
    let t = tempdir();
    let o = std::process::Command::new(bin())
        .args(["man", "--out"])
        .arg(t.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    for name in [
        "vrift.1",
        "vrift-ingest.1",
        "vrift-run.1",
        "vrift-remote.1",
        "vrift-remote-gc.1",
    ] {
        let p = t.path().join(name);
        assert!(
            fs::metadata(&p).map(|m| m.len() > 100).unwrap_or(false),
            "{name} missing"
        );
    }
    let o = run_vrift(&["man", "frobnicate"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("frobnicate"));
}

/// The release archive (`scripts/release.sh`) unpacked on its own works: `bin/vrift`
/// ingests a tree and serves it through `vrift run` with the shim from `lib/` (nothing of
/// the build tree needed), and ships man pages, completions, licenses and a checksum.
#[test]
fn the_release_archive_runs_on_its_own() {
    let t = tempdir();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let exe = bin();
    let bin_dir = exe.parent().unwrap();
    let out = t.path().join("dist");
    let o = std::process::Command::new(repo.join("scripts/release.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let archive = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let name = archive.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&format!("vrift-{}-", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&name), "{sums}");
    let ok = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&out)
        .status()
        .unwrap();
    assert!(ok.success(), "the checksum does not match");
    let prefix = t.path().join("prefix");
    fs::create_dir_all(&prefix).unwrap();
    let ok = std::process::Command::new("tar")
        .args(["--strip-components=1", "-xzf"])
        .arg(&archive)
        .arg("-C")
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(ok.success());
    for f in [
        "bin/vrift",
        "lib/libvrift_shim.so",
        "share/man/man1/vrift.1",
        "share/man/man1/vrift-restore.1",
        "share/bash-completion/completions/vrift",
        "share/zsh/site-functions/_vrift",
        "share/fish/vendor_completions.d/vrift.fish",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "README.md",
    ] {
        assert!(prefix.join(f).is_file(), "{f} missing from the archive");
    }
    // The unpacked binary on a tree, with a store of its own and no build tree around.
    let vrift = prefix.join("bin/vrift");
    let src = t.path().join("tree");
    write_file(&src.join("hello.txt"), b"from the archive\n", 0o644);
    let store = t.path().join("store");
    let m = t.path().join("tree.vrm");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(&vrift)
            .env("VR_THE_SOURCE", &store)
            .env_remove("VRIFT_SHIM")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[
        "ingest".as_ref(),
        src.as_os_str(),
        "-o".as_ref(),
        m.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    fs::remove_dir_all(&src).unwrap();
    let hello = src.join("hello.txt");
    let o = run(&[
        "run".as_ref(),
        "--manifest".as_ref(),
        m.as_os_str(),
        "--".as_ref(),
        "cat".as_ref(),
        hello.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from the archive\n");
}

/// `-q` leaves stderr to errors (no note, wait or summary) and stdout to the data asked for;
/// `-v` adds ingest's stage timings; both together are a usage error.
#[test]
fn quiet_and_verbose() {
    let t = tempdir();
    let src = t.path().join("p");
    small_tree(&src);
    let store = t.path().join("store");
    let m = t.path().join("m.vrm");
    let run = |args: &[&std::ffi::OsStr]| vrift(&store).args(args).output().unwrap();
    let o = run(&[
        "-q".as_ref(),
        "ingest".as_ref(),
        src.as_os_str(),
        "-o".as_ref(),
        m.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "",
        "ingest -q wrote on stderr"
    );
    // Without -q the same ingest says something on stderr (the solid-mode note), so the
    // check above is not vacuous.
    let src2 = t.path().join("p2");
    small_tree(&src2);
    let m2 = t.path().join("m2.vrm");
    let o = run(&[
        "ingest".as_ref(),
        src2.as_os_str(),
        "-o".as_ref(),
        m2.as_os_str(),
    ]);
    assert!(!o.stderr.is_empty(), "{}", describe(&o));
    let out = t.path().join("out");
    let o = run(&[
        "checkout".as_ref(),
        "--quiet".as_ref(),
        m.as_os_str(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "",
        "checkout -q wrote on stderr"
    );
    let o = run(&["-q".as_ref(), "--json".as_ref(), "status".as_ref()]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        json_of(&o)["blobs"].as_u64().unwrap() > 0,
        "-q keeps the data"
    );
    // Errors still show.
    let o = run(&[
        "-q".as_ref(),
        "checkout".as_ref(),
        "/nonexistent.vrm".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent.vrm"),
        "{}",
        describe(&o)
    );
    let src3 = t.path().join("p3");
    small_tree(&src3);
    let m3 = t.path().join("m3.vrm");
    let o = run(&[
        "-v".as_ref(),
        "ingest".as_ref(),
        src3.as_os_str(),
        "-o".as_ref(),
        m3.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("walk") && err.contains("hash"),
        "-v shows stage timings: {err}"
    );
    let o = run(&["-q".as_ref(), "-v".as_ref(), "status".as_ref()]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// The user's config file gives defaults (store, link mode, jobs); a flag or its variable
/// wins; a typo'd key is a usage error naming the file.
#[test]
fn the_config_file_gives_defaults_that_flags_and_variables_override() {
    use std::os::unix::fs::MetadataExt;
    let t = tempdir();
    let src = t.path().join("p");
    small_tree(&src);
    let cfg_dir = t.path().join("xdg/vrift");
    fs::create_dir_all(&cfg_dir).unwrap();
    fs::write(
        cfg_dir.join("config.toml"),
        "store = \"store-from-config\"\nlink_mode = \"copy\"\njobs = 2\n",
    )
    .unwrap();
    let vrift = |extra_env: &[(&str, &std::path::Path)]| {
        let mut c = std::process::Command::new(bin());
        c.env_remove("VR_THE_SOURCE")
            .env_remove("VRIFT_CONFIG")
            .env("XDG_CONFIG_HOME", t.path().join("xdg"));
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c
    };
    let m = t.path().join("m.vrm");
    let o = vrift(&[])
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let store = cfg_dir.join("store-from-config");
    assert!(
        store.join("blake3").is_dir(),
        "the store of the config file (relative to it)"
    );
    // link_mode = "copy": files of their own.
    let out = t.path().join("copy");
    let o = vrift(&[])
        .arg("checkout")
        .arg(&m)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(fs::metadata(out.join("a.txt")).unwrap().nlink(), 1);
    // The flag wins over the file.
    let out = t.path().join("linked");
    let o = vrift(&[])
        .args(["checkout", "--link-mode", "hardlink"])
        .arg(&m)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(fs::metadata(out.join("a.txt")).unwrap().nlink() > 1);
    // The variable wins over the file: an empty store there.
    let other = t.path().join("other-store");
    let o = vrift(&[("VR_THE_SOURCE", &other)])
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(json_of(&o)["blobs"].as_u64(), Some(0), "{}", describe(&o));
    // A typo is refused, naming the file.
    let bad = t.path().join("bad.toml");
    fs::write(&bad, "lnk_mode = \"copy\"\n").unwrap();
    let o = vrift(&[("VRIFT_CONFIG", &bad)])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("lnk_mode"),
        "{err}"
    );
    // A file named by VRIFT_CONFIG must exist; the default place need not, nor be readable
    // (`runuser -u nobody` keeps root's HOME).
    let o = vrift(&[("VRIFT_CONFIG", &t.path().join("missing.toml"))])
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
    // A home nobody cannot look into (root's, kept by `runuser`) as the default place.
    match can_run_as_nobody() {
        Ok(()) => {
            let shared = SharedDir::new();
            let home = t.path().join("closed-home");
            fs::create_dir_all(home.join(".config/vrift")).unwrap();
            fs::write(home.join(".config/vrift/config.toml"), "jobs = 1\n").unwrap();
            fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
            let o = shared
                .vrift_as_nobody(&shared.path().join("not-made-yet"))
                .args(["--json", "status"])
                .env_remove("VRIFT_CONFIG")
                .env_remove("XDG_CONFIG_HOME")
                .env("HOME", &home)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        }
        Err(why) => skip_unless_ci(&why),
    }
}

/// Runs `vrift --the-source-root STORE ARGS` on a terminal (util-linux `script`), expects
/// exit 0, and returns what the terminal showed (stdout and stderr, escape codes and all).
fn on_a_terminal(store: &std::path::Path, args: &str) -> String {
    let line = format!(
        "{} --the-source-root {} {args}",
        bin().display(),
        store.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `verify` on a terminal shows how far it is in percent of the bytes, and clears the line
/// before its summary; in a pipe nothing of it appears.
#[test]
fn verify_shows_percent_on_a_terminal_only() {
    if !have_script() {
        return;
    }
    let t = tempdir();
    let src = t.path().join("p");
    // Enough to hash for a few redraws (ten a second).
    for i in 0..48u32 {
        let data: Vec<u8> = (0..(4u32 << 20))
            .map(|j| (j.wrapping_mul(2654435761) ^ i) as u8)
            .collect();
        write_file(&src.join(format!("f{i}.bin")), &data, 0o644);
    }
    let store = t.path().join("store");
    ingest_ok(&store, &src, &t.path().join("m.vrm"), &[]);
    let tty = on_a_terminal(&store, "verify -j 1");
    assert!(
        tty.contains("% ") && tty.contains("/48 blobs ("),
        "no progress line: {tty:?}"
    );
    assert!(tty.contains("Verified 48 blobs"), "{tty:?}");
    let o = vrift(&store).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains('%'),
        "{}",
        describe(&o)
    );
}

/// `gc` on a terminal says how far its scan of the store has got; in a pipe, nothing.
#[test]
fn gc_shows_its_scan_on_a_terminal_only() {
    if !have_script() {
        return;
    }
    let t = tempdir();
    let src = t.path().join("p");
    // Enough blobs (and so shard directories) that the scan outlasts the line's first draw.
    for i in 0..5000u32 {
        write_file(
            &src.join(format!("d{}/f{i}", i % 50)),
            format!("{i}").as_bytes(),
            0o644,
        );
    }
    let store = t.path().join("store");
    ingest_ok(&store, &src, &t.path().join("m.vrm"), &[]);
    let tty = on_a_terminal(&store, "gc");
    assert!(
        tty.contains("scanning the store") && tty.contains("% ("),
        "no progress line: {tty:?}"
    );
    assert!(tty.contains("0 orphan blobs"), "{tty:?}");
    let o = vrift(&store).arg("gc").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stderr(&o).is_empty(), "{}", describe(&o));
}

/// Every environment variable named in the sources (the crates, the scripts, CI) is in the
/// README's one list.
#[test]
fn every_environment_variable_is_documented() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let readme = fs::read_to_string(repo.join("README.md")).unwrap();
    let table = readme
        .split("## Environment variables")
        .nth(1)
        .and_then(|r| r.split("\n## ").next())
        .expect("README has an Environment variables section");
    let mut found = std::collections::BTreeSet::new();
    let mut todo = vec![repo.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name == "target" || name.starts_with('.') && name != ".ci" {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else if ["rs", "sh", "py", "yml"]
                .iter()
                .any(|x| name.ends_with(&format!(".{x}")))
                || name == "run"
            {
                let text = fs::read_to_string(&p).unwrap_or_default();
                let b = text.as_bytes();
                for (i, _) in text.match_indices("VR") {
                    let boundary =
                        i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                    let rest = &text[i..];
                    let prefix = if rest.starts_with("VRIFT_") {
                        6
                    } else if rest.starts_with("VR_") {
                        3
                    } else {
                        continue;
                    };
                    let len = rest[prefix..]
                        .bytes()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
                        .count();
                    if boundary && len > 0 {
                        let v = rest[..prefix + len].trim_end_matches('_');
                        found.insert(v.to_string());
                    }
                }
            }
        }
    }
    assert!(
        found.contains("VR_THE_SOURCE") && found.len() > 20,
        "{found:?}"
    );
    let missing: Vec<&String> = found
        .iter()
        .filter(|v| !table.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in README's list of environment variables: {missing:?}"
    );
}

/// `--version` says which commit and day the binary was built from.
#[test]
fn version_names_the_commit_and_build_date() {
    let o = std::process::Command::new(bin())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let want = format!("vrift {} (", env!("CARGO_PKG_VERSION"));
    let inner = v
        .strip_prefix(&want)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{v:?}"));
    let (commit, date) = inner.split_once(' ').unwrap_or_else(|| panic!("{v:?}"));
    let in_git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        assert!(
            commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{v:?}"
        );
    }
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d[0].len() == 4 && d.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())),
        "{v:?}"
    );
}

/// `status` where nothing was ingested yet: an empty store's answer (zeros, no projects),
/// exit 0, and no store created by asking; `--json` the same.
#[test]
fn status_of_a_store_not_made_yet_is_all_zeros() {
    let t = tempdir();
    let store = t.path().join("store");
    let o = vrift(&store).arg("status").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for line in [
        "Total Size:   0 B",
        "Total Blobs:  0",
        "Registered Projects: none",
        "Orphaned Blobs: 0",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    let o = vrift(&store).args(["--json", "status"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["blobs"], 0, "{v}");
    assert_eq!(v["projects"], serde_json::json!([]), "{v}");
    assert!(!store.exists(), "status created a store");
}

/// Without `HOME` there is no default store: one clear line and exit 2, never a store at
/// `/.vrift`; `VR_THE_SOURCE` still gives one.
#[test]
fn no_home_means_no_default_store() {
    let o = std::process::Command::new(bin())
        .env_remove("HOME")
        .env_remove("VR_THE_SOURCE")
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let e = stderr(&o);
    assert!(
        e.contains("HOME is not set") && e.contains("--the-source-root"),
        "{e}"
    );
    assert!(!std::path::Path::new("/.vrift").exists());
    // The variable names the store instead (not made yet: status shows it empty).
    let t = tempdir();
    let store = t.path().join("store");
    let o = std::process::Command::new(bin())
        .env_remove("HOME")
        .env("VR_THE_SOURCE", &store)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&store.display().to_string()),
        "{}",
        describe(&o)
    );
}

/// The store can be given through `VR_THE_SOURCE`; the flag wins over it.
#[test]
fn store_from_environment() {
    let t = tempdir();
    let src = t.path().join("p");
    small_tree(&src);
    let env_store = t.path().join("env-store");
    let o = std::process::Command::new(bin())
        .env("VR_THE_SOURCE", &env_store)
        .arg("--json")
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(t.path().join("m.vrm"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(verify_store(&env_store).len(), 3);
    let flag_store = t.path().join("flag-store");
    let o = std::process::Command::new(bin())
        .env("VR_THE_SOURCE", &env_store)
        .arg("--the-source-root")
        .arg(&flag_store)
        .arg("checkout")
        .arg(t.path().join("m.vrm"))
        .arg(t.path().join("restored"))
        .output()
        .unwrap();
    // flag store does not exist: checkout must not silently use the env store or create one
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains(&*flag_store.to_string_lossy()),
        "{}",
        describe(&o)
    );
    // Nothing lands outside the store root.
    let names: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["env-store", "m.vrm", "p"],
        "files outside the store root"
    );
}

/// Byte counts are `<what>_bytes` in every command's JSON (version 2), as in `status` and
/// the Prometheus metrics; a rate (`bytes_per_sec`) is the one `bytes_` prefix.
#[track_caller]
pub fn assert_bytes_named_by_suffix(v: &serde_json::Value, what: &dyn std::fmt::Debug) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                assert!(
                    !k.starts_with("bytes_") || k == "bytes_per_sec",
                    "{what:?}: key {k} (byte counts are named <what>_bytes)"
                );
                assert_bytes_named_by_suffix(x, what);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| assert_bytes_named_by_suffix(x, what)),
        _ => {}
    }
}
