//! `vrift run` with the LD_PRELOAD shim: shell, coreutils, writes, exec chains, exit status,
//! signals, `vrift init` and the transient ingest. Every test ingests a real tree, deletes
//! it, and runs real programs on the virtual view.

use crate::run_support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use run_support::*;

/// A small tree with the shapes programs care about.
fn make_tree(env: &Env) {
    let p = env.path("proj");
    write(&p.join("a.txt"), "hello\n");
    write(&p.join("sub/b.txt"), "bee\n");
    write(&p.join("sub/deep/c.txt"), "sea\n");
    write(&p.join("empty.txt"), "");
    write_exec(
        &p.join("bin/hello.sh"),
        "#!/bin/sh\nd=$(dirname \"$0\")\necho \"hello from $0 args=$*\"\ncat \"$d/../sub/b.txt\"\n",
    );
    write(
        &p.join("lib/helper.sh"),
        "helper() { echo \"helper says $1\"; }\n",
    );
    std::fs::create_dir_all(p.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("a.txt", p.join("link")).unwrap();
    std::os::unix::fs::symlink("sub", p.join("sublink")).unwrap();
    std::os::unix::fs::symlink("../bin/hello.sh", p.join("sub/run-hello")).unwrap();
}

#[test]
fn shell_script_cat_and_exec_chains_on_a_deleted_tree() {
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    let out = env.run_ok(
        &[&m],
        &[
            "sh",
            "-c",
            "cat proj/a.txt proj/link proj/sublink/deep/c.txt; \
             proj/bin/hello.sh one two; \
             proj/sub/run-hello three; \
             . proj/lib/helper.sh && helper four; \
             sh -c 'sh -c \"cat proj/sub/b.txt\"'; \
             env sh -c 'bash -c \"cat proj/sub/deep/c.txt\"'; \
             echo proj/a.txt | xargs cat",
        ],
    );
    let want = "hello\nhello\nsea\n\
         hello from proj/bin/hello.sh args=one two\nbee\n\
         hello from proj/sub/run-hello args=three\nbee\n\
         helper says four\nbee\nsea\nhello\n";
    assert_eq!(out, want);
    // The command itself may be a virtual file.
    let out = env.run_ok(&[&m], &["proj/bin/hello.sh", "direct"]);
    assert_eq!(out, "hello from proj/bin/hello.sh args=direct\nbee\n");
}

/// Listing, stat and find answer exactly as on the original tree.
#[test]
fn ls_stat_find_match_the_original_tree() {
    let env = Env::new();
    make_tree(&env);
    let probe = "find proj -printf '%p %y %m %s %l\\n' | LC_ALL=C sort; \
                 find proj -exec stat -c '%n %F %a %s %Y %N' {} + | LC_ALL=C sort; \
                 ls -la --time-style=+%s proj proj/sub proj/sublink/ | awk '$NF != \".\" && $NF != \"..\" {$2=\"\"; print}'; \
                 find proj -name '*.txt' -size -1k | LC_ALL=C sort; \
                 find proj -type l | LC_ALL=C sort; find proj -empty | LC_ALL=C sort";
    let real = Command::new("sh")
        .arg("-c")
        .arg(probe)
        .current_dir(env.root())
        .output()
        .unwrap();
    assert!(real.status.success());
    let real = String::from_utf8(real.stdout).unwrap();
    let m = env.ingest_and_remove("proj", "m.vrm");
    let virt = env.run_ok(&[&m], &["sh", "-c", probe]);
    assert_eq!(virt, real);
    assert!(virt.contains("proj/sub/deep/c.txt f 644 4"), "{virt}");
}

/// `..` out of a directory that exists only in the manifest: the kernel cannot walk through
/// it (`ls -la` of a deleted root printed `cannot access 'proj/..'` and exited 1).
#[test]
fn dotdot_out_of_a_deleted_tree() {
    let env = Env::new();
    make_tree(&env);
    std::fs::write(env.root().join("outside.txt"), "next to proj\n").unwrap();
    let probe = "ls -la proj | awk '$NF == \"..\" {print $1, $NF}'; \
                 stat -c '%n %F' proj/.. proj/sub/../a.txt proj/../outside.txt; \
                 cat proj/sub/../../outside.txt; \
                 cd proj/sub/deep && cat ../../../outside.txt && ls ../../.. | grep -c outside; \
                 python3 -c 'import os; print(os.path.isfile(\"../../../outside.txt\"))'";
    let real = Command::new("sh")
        .arg("-c")
        .arg(probe)
        .current_dir(env.root())
        .output()
        .unwrap();
    assert!(real.status.success(), "{real:?}");
    let real = String::from_utf8(real.stdout).unwrap();
    let m = env.ingest_and_remove("proj", "m.vrm");
    let virt = env.run_ok(&[&m], &["sh", "-c", &format!("set -e; {probe}")]);
    assert_eq!(virt, real);
    assert!(
        virt.contains("next to proj\nnext to proj\n1\nTrue"),
        "{virt}"
    );
}

#[test]
fn writes_copy_up_and_never_touch_the_blob() {
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    let out = env.run_ok(
        &[&m],
        &[
            "sh",
            "-c",
            "echo more >> proj/a.txt; cat proj/a.txt; \
             sed -i s/bee/BEE/ proj/sub/b.txt; cat proj/sub/b.txt; \
             echo replaced > proj/sub/deep/c.txt; cat proj/sub/deep/c.txt; \
             chmod 600 proj/empty.txt; stat -c %a proj/empty.txt; \
             cat proj/link",
        ],
    );
    assert_eq!(out, "hello\nmore\nBEE\nreplaced\n600\nhello\nmore\n");
    let blobs = blobs(&env.store());
    for want in ["hello\n", "bee\n", "sea\n"] {
        assert!(
            blobs.iter().any(|b| b == want.as_bytes()),
            "blob {want:?} changed or missing"
        );
    }
    for bad in ["hello\nmore\n", "BEE\n", "replaced\n"] {
        assert!(
            !blobs.iter().any(|b| b == bad.as_bytes()),
            "a blob was modified to {bad:?}"
        );
    }
    // A fresh run sees the manifest again (the default upper dir is per run).
    assert_eq!(env.run_ok(&[&m], &["cat", "proj/a.txt"]), "hello\n");
    assert!(
        !env.path("proj").exists(),
        "nothing was written at the real path"
    );
}

#[test]
fn create_and_delete_inside_virtual_directories() {
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    let out = env.run_ok(
        &[&m],
        &[
            "sh",
            "-c",
            "echo new > proj/sub/new.txt && cat proj/sub/new.txt && ls proj/sub; \
             rm proj/a.txt && test ! -e proj/a.txt && echo gone; cat proj/a.txt 2>/dev/null || echo unreadable; ls proj; \
             mkdir proj/newdir && touch proj/newdir/x && ls proj/newdir; \
             mv proj/sub/b.txt proj/moved.txt && cat proj/moved.txt && ls proj/sub; \
             rm -r proj/sub/deep && ls proj/sub; \
             cd proj/sub && pwd && echo in-sub > here.txt && cat ../sub/here.txt && ls",
        ],
    );
    let root = env.root().display().to_string();
    let want = format!(
        "new\nb.txt\ndeep\nnew.txt\nrun-hello\n\
         gone\nunreadable\nbin\nempty.txt\nemptydir\nlib\nlink\nsub\nsublink\n\
         x\n\
         bee\ndeep\nnew.txt\nrun-hello\n\
         new.txt\nrun-hello\n\
         {root}/proj/sub\nin-sub\nhere.txt\nnew.txt\nrun-hello\n"
    );
    assert_eq!(out, want);
    // With a user-chosen upper dir the changes persist into the next run.
    let upper = env.path("upper");
    let o = env
        .vrift()
        .env("VRIFT_UPPER", &upper)
        .args(["run", "--manifest"])
        .arg(&m)
        .args(["--", "sh", "-c", "rm proj/a.txt; echo kept > proj/k.txt"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = env
        .vrift()
        .env("VRIFT_UPPER", &upper)
        .args(["run", "--manifest"])
        .arg(&m)
        .args([
            "--",
            "sh",
            "-c",
            "cat proj/k.txt; test -e proj/a.txt || echo a-gone",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "kept\na-gone\n");
}

#[test]
fn processes_that_do_not_touch_the_root_are_unaffected() {
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    let probe = "ls -la /usr/bin/env /etc/passwd; stat -c '%n %s %i %d' /etc/passwd /usr/bin; \
                 find /usr/share/doc/coreutils 2>/dev/null | LC_ALL=C sort | head -20; \
                 cat /etc/hostname; readlink -f /proc/self/cwd; pwd; \
                 test -e proj/a.txt && echo sees-proj || echo no-proj";
    let plain = Command::new("sh")
        .arg("-c")
        .arg(probe)
        .current_dir(env.root())
        .output()
        .unwrap();
    let virt = env.run_ok(&[&m], &["sh", "-c", probe]);
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert_eq!(virt.replace("sees-proj", "no-proj"), plain);
    assert!(virt.ends_with("sees-proj\n"));
    assert!(plain.ends_with("no-proj\n"));
}

#[test]
fn exit_status_and_signals_are_the_commands() {
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    assert_eq!(
        env.run(&[&m], &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(env.run(&[&m], &["false"]).status.code(), Some(1));
    let st = env.run(&[&m], &["sh", "-c", "kill -TERM $$"]).status;
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
    let nf = env.run(&[&m], &["no-such-program-vrift"]);
    assert_eq!(nf.status.code(), Some(127));
    // A signal sent to `vrift run` reaches the command.
    let mut child = env
        .vrift()
        .args(["run", "--manifest"])
        .arg(&m)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(st.code(), Some(42));
}

#[test]
fn init_writes_filter_and_manifest_and_run_uses_it() {
    let env = Env::new();
    let p = env.path("crate");
    write(
        &p.join("Cargo.toml"),
        "[package]\nname = \"x\"\nversion = \"0.1.0\"\n",
    );
    write(&p.join("src/main.rs"), "fn main() {}\n");
    write(&p.join("target/debug/junk"), "build output\n");
    write(&p.join(".env"), "SECRET=1\n");
    let o = env.vrift().arg("init").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let filter = std::fs::read_to_string(p.join(".vriftignore")).unwrap();
    assert!(filter.lines().any(|l| l == "/target"), "{filter}");
    assert!(p.join("vrift.manifest").is_file());
    // Source files are served from the manifest once removed; excluded ones are not there.
    std::fs::remove_dir_all(p.join("src")).unwrap();
    std::fs::remove_dir_all(p.join("target")).unwrap();
    std::fs::remove_file(p.join(".env")).unwrap();
    let o = env
        .vrift()
        .current_dir(&p)
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "cat src/main.rs; ls -a; test -e target || echo no-target",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("fn main() {}\n"), "{out}");
    assert!(
        out.contains("src\n") && out.ends_with("no-target\n"),
        "{out}"
    );
    assert!(!out.contains(".env"), "{out}");
}

#[test]
fn transient_ingest_without_a_manifest() {
    let env = Env::new();
    let p = env.path("plain");
    write(&p.join("data/x.txt"), "transient\n");
    write(&p.join(".vriftignore"), "/skipme\n");
    write(&p.join("skipme/y.txt"), "real only\n");
    let o = env
        .vrift()
        .current_dir(&p)
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "cat data/x.txt; stat -c %D data/x.txt; stat -c %D skipme/y.txt",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "transient");
    assert_eq!(lines[1], "7f76", "served from the manifest: {out}");
    assert_ne!(lines[2], "7f76", "excluded by .vriftignore, so real: {out}");
    // Nothing was registered by the transient ingest.
    let st = env.vrift().args(["status", "--json"]).output().unwrap();
    let s = String::from_utf8_lossy(&st.stdout);
    assert!(!s.contains("\"plain\""), "{s}");
}

/// A manifest run against a store without its blobs (made with another store; a new shell
/// without `VR_THE_SOURCE`) stops before the program starts, naming the store used and how
/// many files have no blob — instead of a program dying on `ENOENT` for a file it can list.
#[test]
fn a_store_without_the_manifests_blobs_is_refused_at_start() {
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    let other = env.path("other-store");
    let o = Command::new(vrift_bin())
        .arg("--the-source-root")
        .arg(&other)
        .args(["--no-progress", "run", "--manifest"])
        .arg(&m)
        .args(["--", "echo", "ran"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(o.stdout.is_empty(), "the program ran");
    assert!(
        err.contains("have no blob in the store") && err.contains(&other.display().to_string()),
        "{err}"
    );
    // With the store it was made in, it runs.
    assert_eq!(env.run_ok(&[&m], &["echo", "ran"]), "ran\n");
}

/// `vrift` alone, with no `libvrift_shim.so` beside it (what `cargo install` leaves), serves
/// views with the library built into it: written once to the user's cache (private, exactly
/// the built-in bytes), rewritten when someone changed it, refused in a directory others may
/// write.
#[test]
fn the_binary_alone_serves_views_with_its_built_in_shim() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    make_tree(&env);
    let m = env.ingest_and_remove("proj", "m.vrm");
    let alone = env.path("installed/bin/vrift");
    std::fs::create_dir_all(alone.parent().unwrap()).unwrap();
    std::fs::copy(vrift_bin(), &alone).unwrap();
    std::fs::set_permissions(&alone, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = env.path("cache");
    let run = || {
        let mut c = env.vrift();
        c.env_remove("VRIFT_SHIM")
            .env("XDG_CACHE_HOME", &cache)
            .arg("run")
            .arg("--manifest")
            .arg(&m)
            .args(["--", "cat"])
            .arg(env.path("proj/sub/deep/c.txt"));
        let mut c2 = Command::new(&alone);
        c2.args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => c2.env(k, v),
                None => c2.env_remove(k),
            };
        }
        c2.current_dir(env.root()).output().unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "sea\n");
    let dirs: Vec<_> = std::fs::read_dir(cache.join("vrift/shim"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let lib = dirs[0].join("libvrift_shim.so");
    let md = std::fs::metadata(&lib).unwrap();
    assert_eq!(md.mode() & 0o777, 0o500);
    assert_eq!(std::fs::metadata(&dirs[0]).unwrap().mode() & 0o777, 0o700);
    let written = std::fs::read(&lib).unwrap();
    assert!(written.starts_with(b"\x7fELF"), "not a shared library");

    // Someone changed the copy: it is written again, never loaded as it is.
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(&lib, b"not the shim").unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o500)).unwrap();
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&lib).unwrap(), written);

    // A directory others may write is refused, with a line saying what to do.
    std::fs::set_permissions(&dirs[0], std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::remove_file(&lib).unwrap();
    let o = run();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("VRIFT_SHIM") && err.contains(&*dirs[0].to_string_lossy()),
        "{err}"
    );
}
