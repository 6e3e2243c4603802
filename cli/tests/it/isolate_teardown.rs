//! Lifecycle of `run --isolate`: exit codes and signals pass through; `kill -9` of CMD (or of
//! vrift) leaves no process, mount namespace, scratch directory or half-built farm behind;
//! `--keep` keeps the upper layer; concurrent runs share one farm; `gc --farms` manages the
//! cache; a kernel that forbids user namespaces gets an error naming the sysctls.

use crate::common;
use crate::isolate_support;

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use isolate_support::*;

fn app(env: &Env) -> PathBuf {
    env.write("app/hello.txt", b"hello\n", 0o644);
    let m = env.home.join("app.manifest");
    env.ingest(&env.home.join("app"), &m);
    m
}

fn sh_args(m: &PathBuf, script: &str) -> Vec<OsString> {
    vec![
        "--manifest".into(),
        m.into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
    ]
}

/// The inode of a process's mount namespace.
fn mnt_ns(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// Every host process in the given mount namespace.
fn processes_in(ns: &PathBuf) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&p| mnt_ns(p).as_ref() == Some(ns))
        .collect()
}

fn ppid(p: i32) -> Option<i32> {
    let st = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
    let after = &st[st.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn children_of(pid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&p| ppid(p) == Some(pid))
        .collect()
}

fn kill(pid: i32, sig: libc::c_int) {
    // SAFETY: signalling a process by pid.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid}");
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let Some(env) = Env::new() else { return };
    let m = app(&env);
    for (script, code) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("kill -TERM $$", 128 + libc::SIGTERM),
        ("kill -KILL $$", 128 + libc::SIGKILL),
    ] {
        let o = env.isolate(sh_args(&m, script));
        assert_eq!(o.status.code(), Some(code), "{script}\n{}", describe(&o));
    }
    let o = env.isolate([
        OsString::from("--manifest"),
        m.clone().into(),
        "--".into(),
        "/no/such/program".into(),
    ]);
    assert_eq!(o.status.code(), Some(127), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/no/such/program"),
        "{}",
        describe(&o)
    );

    // SIGTERM sent to vrift reaches CMD; CMD's trap decides the exit status.
    let child = env
        .isolate_cmd(sh_args(
            &m,
            "trap 'echo got TERM; exit 42' TERM; echo ready; /bin/sleep 4711 & wait",
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sleeper = wait_for_process("/bin/sleep 4711", 20);
    // vrift is the sleeper's great-grandparent: sleeper <- sh <- init <- vrift.
    let up = |p: i32| ppid(p).unwrap();
    let vrift = up(up(up(sleeper)));
    let comm = fs::read_to_string(format!("/proc/{vrift}/comm")).unwrap();
    assert_eq!(comm.trim(), "vrift");
    kill(vrift, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(42), "{}", describe(&o));
    assert!(stdout(&o).contains("got TERM"));
    // The background sleep died with the sandbox.
    assert!(pids_with_cmdline("/bin/sleep 4711").is_empty());
    env.assert_clean();
}

#[test]
fn kill_9_of_cmd_leaves_nothing_behind() {
    let Some(env) = Env::new() else { return };
    let m = app(&env);
    let child = env
        .isolate_cmd(sh_args(
            &m,
            "/bin/sleep 4242 & echo x > /tmp/scratch; exec /bin/sleep 4243",
        ))
        .spawn()
        .unwrap();
    let cmd = wait_for_process("/bin/sleep 4243", 20);
    let ns = mnt_ns(cmd).unwrap();
    // While it runs: the overlay exists in the sandbox's mount table, not in ours.
    let mounts = fs::read_to_string(format!("/proc/{cmd}/mountinfo")).unwrap();
    assert!(mounts.contains(" overlay "), "{mounts}");
    let ours = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!ours.contains(&*env.store.to_string_lossy()), "{ours}");
    let scratch: Vec<_> = fs::read_dir(env.store.join("isolate")).unwrap().collect();
    assert_eq!(scratch.len(), 1, "one scratch directory while running");
    assert!(processes_in(&ns).len() >= 3, "init, sleep 4242, sleep 4243");

    kill(cmd, libc::SIGKILL);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(137), "{}", describe(&o));
    // Nothing left: no process in the namespace (so no namespace, so no mounts), no
    // background child, no scratch directory, no stray farm.
    assert!(
        processes_in(&ns).is_empty(),
        "processes left in the sandbox"
    );
    assert!(pids_with_cmdline("/bin/sleep 4242").is_empty());
    env.assert_clean();
    assert_eq!(env.farms().len(), 1);
    let ours = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!ours.contains(" overlay "), "{ours}");
}

#[test]
fn kill_9_of_vrift_takes_the_sandbox_down_and_the_next_run_sweeps() {
    let Some(env) = Env::new() else { return };
    let m = app(&env);
    let mut child = env
        .isolate_cmd(sh_args(&m, "exec /bin/sleep 4244"))
        .spawn()
        .unwrap();
    let cmd = wait_for_process("/bin/sleep 4244", 20);
    let ns = mnt_ns(cmd).unwrap();
    // The vrift process: as root, `child` is runuser and vrift its child.
    let vrift = if env.as_nobody {
        let kids = children_of(child.id() as i32);
        assert_eq!(kids.len(), 1, "runuser's children: {kids:?}");
        kids[0]
    } else {
        child.id() as i32
    };
    kill(vrift, libc::SIGKILL);
    let _ = child.wait();
    let t = Instant::now();
    while !processes_in(&ns).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sandbox outlived vrift"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // vrift could not clean up after itself; the next run does.
    let o = env.isolate(sh_args(&m, "true"));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    env.assert_clean();
}

#[test]
fn keep_keeps_the_upper_layer() {
    let Some(env) = Env::new() else { return };
    let m = app(&env);
    let app_dir = env.home.join("app");
    let mut args = vec![OsString::from("--keep")];
    args.extend(sh_args(
        &m,
        &format!("echo kept > {}/made-inside", app_dir.display()),
    ));
    let o = env.isolate(args);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let path = err
        .lines()
        .find_map(|l| {
            l.split(" at ")
                .nth(1)
                .filter(|_| l.contains("kept the upper layer"))
        })
        .unwrap_or_else(|| panic!("no kept path\n{}", describe(&o)));
    let kept = PathBuf::from(path.trim());
    assert_eq!(fs::read(kept.join("made-inside")).unwrap(), b"kept\n");
    assert!(!app_dir.join("made-inside").exists());
    env.assert_clean();
}

#[test]
fn concurrent_cold_runs_share_one_farm() {
    let Some(env) = Env::new() else { return };
    for i in 0..300 {
        env.write(
            &format!("app/f{:03}/{i}.txt", i % 17),
            format!("file {i}\n").as_bytes(),
            0o644,
        );
    }
    let m = env.home.join("app.manifest");
    env.ingest(&env.home.join("app"), &m);
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.isolate_cmd(sh_args(
                &m,
                &format!("cat {}/app/f003/20.txt", env.home.display()),
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        assert_eq!(stdout(&o), "file 20\n");
    }
    assert_eq!(env.farms().len(), 1);
    env.assert_clean();
}

#[test]
fn interrupted_farm_build_is_swept() {
    let Some(env) = Env::new() else { return };
    for i in 0..6000 {
        env.write(
            &format!("app/d{:02}/{i}", i % 50),
            format!("{i}").as_bytes(),
            0o644,
        );
    }
    let m = env.home.join("app.manifest");
    env.ingest(&env.home.join("app"), &m);
    let farms = env.store.join("farms");
    let mut interrupted = false;
    for _attempt in 0..3 {
        let mut child = env.isolate_cmd(sh_args(&m, "true")).spawn().unwrap();
        // Kill vrift the moment a build directory shows up.
        let t = Instant::now();
        let seen = loop {
            let building = fs::read_dir(&farms).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".build-"))
            });
            if building || t.elapsed() > Duration::from_secs(20) {
                break building;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let pids: Vec<i32> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|&p| {
                fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "vrift")
                    && fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == env.bin)
            })
            .collect();
        for p in pids {
            // SAFETY: signalling a process by pid.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // runuser (as root) reaps vrift and exits.
        let _ = child.wait();
        let left = fs::read_dir(&farms).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".build-"))
        });
        if seen && left && env.farms().is_empty() {
            interrupted = true;
            break;
        }
        // The build won the race: start again from an empty cache.
        let o = env
            .vrift()
            .args(["gc", "--farms", "--delete"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", describe(&o));
    }
    if !interrupted {
        eprintln!("note: could not interrupt a farm build; checking the sweep anyway");
    }
    let o = env.isolate(sh_args(&m, "true"));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    env.assert_clean();
    assert_eq!(env.farms().len(), 1);
}

#[test]
fn gc_farms_lists_deletes_and_spares_farms_in_use() {
    let Some(env) = Env::new() else { return };
    let m = app(&env);
    let o = env.isolate(sh_args(&m, "true"));
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let farm = env.farms().pop().unwrap();

    let json = |args: &[&str]| {
        let o = env.vrift().arg("--json").args(args).output().unwrap();
        assert!(o.status.success(), "{}", describe(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v = json(&["gc", "--farms"]);
    assert_eq!(
        (v["farms"].as_u64(), v["removable"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["dry_run"], true);
    assert!(farm.exists());
    let v = json(&["gc", "--farms", "--delete", "--older-than", "1h"]);
    assert_eq!(v["too_young"].as_u64(), Some(1), "{v}");
    assert!(farm.exists());

    // In use: a running sandbox holds it.
    let mut child = env
        .isolate_cmd(sh_args(&m, "exec /bin/sleep 4245"))
        .spawn()
        .unwrap();
    let sleeper = wait_for_process("/bin/sleep 4245", 20);
    let v = json(&["gc", "--farms", "--delete"]);
    assert_eq!(
        (v["deleted"].as_u64(), v["in_use"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    assert!(farm.exists());
    kill(sleeper, libc::SIGKILL);
    let _ = child.wait();

    let v = json(&["gc", "--farms", "--delete"]);
    assert_eq!(v["deleted"].as_u64(), Some(1), "{v}");
    assert!(env.farms().is_empty());
    // The index that named the farm went with it.
    let index = env.store.join("farms/.index");
    assert_eq!(
        fs::read_dir(&index).map_or(0, std::iter::Iterator::count),
        0
    );
    // Blobs are untouched by dropping farms, and the next run rebuilds.
    common::verify_store(&env.store);
    let o = env.isolate(sh_args(
        &m,
        &format!("cat {}/app/hello.txt", env.home.display()),
    ));
    assert_eq!(stdout(&o), "hello\n", "{}", describe(&o));
    assert_eq!(env.farms().len(), 1);
    env.assert_clean();
}

#[test]
fn forbidden_user_namespaces_get_a_clear_error() {
    let Some(env) = Env::new() else { return };
    let m = app(&env);
    // Inside a user namespace whose user.max_user_namespaces is 0, vrift cannot make its own.
    let mut c = env.cmd("unshare");
    c.args(["-U", "-r", "sh", "-c"])
        .arg("echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec \"$@\"");
    c.arg("sh")
        .arg(&env.bin)
        .arg("--the-source-root")
        .arg(&env.store);
    c.args(["run", "--isolate", "--manifest"])
        .arg(&m)
        .args(["--", "true"]);
    let o = c.output().unwrap();
    if o.status.code() == Some(99) {
        assert!(
            std::env::var_os("CI").is_none(),
            "required in CI: lowering user.max_user_namespaces (root)"
        );
        eprintln!("SKIP: cannot lower user.max_user_namespaces here");
        return;
    }
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for s in [
        "kernel.unprivileged_userns_clone",
        "user.max_user_namespaces",
        "kernel.apparmor_restrict_unprivileged_userns",
        "user.max_user_namespaces=0",
    ] {
        assert!(err.contains(s), "error does not name {s}\n{}", describe(&o));
    }
    assert_eq!(err.lines().count(), 1, "one-line error\n{}", describe(&o));
    env.assert_clean();
}
