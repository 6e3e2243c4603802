//! The virtual view never lets a program write the store (issue 12, items 6 and 16): metadata
//! changes through fds the shim handed out (`fchmod`, `futimens`, `fchown`, `fsetxattr`, the
//! same through `syscall()`), reopening `/proc/self/fd/N` for writing, `link` of a view file,
//! and the atomic "write a temp file beside the project, rename it over" of editors, npm and
//! pip. Each runs real Python under `vrift run` on a deleted tree, as root where CI runs it
//! (root ignores the blobs' missing write bits: the worst case).

use crate::run_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use run_support::*;

/// Every blob: path → (content, mode, nlink, mtime nanoseconds).
fn blob_state(store: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, u64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![store.join("blake3")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let md = std::fs::symlink_metadata(&p).unwrap();
                let c = std::fs::read(&p).unwrap();
                out.insert(p, (c, md.mode() & 0o7777, md.nlink(), md.mtime_nsec()));
            }
        }
    }
    out
}

fn tree(env: &Env) -> PathBuf {
    let p = env.path("proj");
    write(&p.join("a.txt"), "hello\n");
    write(&p.join("b.txt"), "bee\n");
    write(&p.join("sub/c.txt"), "sea\n");
    env.ingest_and_remove("proj", "m.vrm")
}

fn python(env: &Env, m: &Path, script: &str) -> String {
    assert!(
        have("python3"),
        "python3 is needed (listed in .ci/apt-packages)"
    );
    env.run_ok(&[m], &["python3", "-c", script])
}

#[test]
fn fd_metadata_changes_and_proc_reopens_never_reach_the_blob() {
    let env = Env::new();
    let m = tree(&env);
    let before = blob_state(&env.store());
    let out = python(
        &env,
        &m,
        r#"
import ctypes, os
fd = os.open("proj/a.txt", os.O_RDONLY)
os.fchmod(fd, 0o666)
os.utime(fd, (0, 0))
os.chown(fd, -1, -1)
try:
    os.setxattr(fd, "user.vrift-test", b"1")
except OSError as e:
    print("setxattr", e.errno)
with open(f"/proc/self/fd/{fd}", "w") as w:
    w.write("X")
print(open("proj/a.txt").read())
print(oct(os.stat("proj/a.txt").st_mode & 0o777))
# The same through syscall(), as runtimes that bypass libc wrappers do.
libc = ctypes.CDLL(None, use_errno=True)
fd2 = os.open("proj/b.txt", os.O_RDONLY)
SYS_fchmod = 91
print("syscall", libc.syscall(SYS_fchmod, fd2, 0o600))
print(oct(os.stat("proj/b.txt").st_mode & 0o777))
print(open(f"/proc/self/fd/{fd2}").read(), end="")
"#,
    );
    assert!(out.starts_with("X\n0o666\n"), "{out}");
    assert!(out.contains("syscall 0\n0o600\nbee\n"), "{out}");
    let after = blob_state(&env.store());
    assert_eq!(
        before, after,
        "a blob changed (content, mode, links or seal)"
    );
    for (p, (_, mode, _, nsec)) in &after {
        assert_eq!(mode & 0o222, 0, "{} writable", p.display());
        assert_eq!(*nsec, 999_999_000, "{} unsealed", p.display());
    }
}

#[test]
fn link_makes_names_in_the_view_or_fails_with_exdev() {
    let env = Env::new();
    let m = tree(&env);
    let before = blob_state(&env.store());
    let out = python(
        &env,
        &m,
        r#"
import errno, os
os.link("proj/a.txt", "proj/a2.txt")
with open("proj/a2.txt", "a") as f:
    f.write("more\n")
print(open("proj/a.txt").read(), end="")
print(os.stat("proj/a.txt").st_ino == os.stat("proj/a2.txt").st_ino)
for src, dst, follow in [("proj/b.txt", "outside.txt", False)]:
    try:
        os.link(src, dst, follow_symlinks=follow)
        print("linked out")
    except OSError as e:
        print("out", errno.errorcode[e.errno])
fd = os.open("proj/sub/c.txt", os.O_RDONLY)
try:
    os.link(f"/proc/self/fd/{fd}", "stolen.txt", follow_symlinks=True)
    print("stolen")
except OSError as e:
    print("proc", errno.errorcode[e.errno])
# git's way: a temp object in the view, linked to its final name.
with open("proj/sub/tmp_obj", "w") as f:
    f.write("obj\n")
os.link("proj/sub/tmp_obj", "proj/sub/final_obj")
os.unlink("proj/sub/tmp_obj")
print(open("proj/sub/final_obj").read(), end="")
"#,
    );
    assert_eq!(
        out, "hello\nmore\nTrue\nout EXDEV\nproc EXDEV\nobj\n",
        "unexpected output"
    );
    assert!(!env.path("outside.txt").exists());
    assert!(!env.path("stolen.txt").exists());
    assert_eq!(
        before,
        blob_state(&env.store()),
        "a blob gained a name or changed"
    );
}

/// The atomic save: a temp file written beside the project (outside the view), renamed over
/// a view file. With the default upper layer (on the project's file system) and with one on
/// another file system (`VRIFT_UPPER` on /dev/shm: the shim copies across).
#[test]
fn rename_from_outside_over_a_view_file_replaces_it() {
    let env = Env::new();
    let m = tree(&env);
    let script = r#"
import os
with open("new.tmp", "w") as f:
    f.write("saved\n")
os.replace("new.tmp", "proj/a.txt")
print(open("proj/a.txt").read(), end="")
print(os.path.exists("new.tmp"))
os.symlink("../b.txt", "ln.tmp")
os.rename("ln.tmp", "proj/sub/ln")
print(open("proj/sub/ln").read(), end="")
"#;
    let out = python(&env, &m, script);
    assert_eq!(out, "saved\nFalse\nbee\n");
    let shm = tempfile::Builder::new()
        .prefix("vrift-upper-test")
        .tempdir_in("/dev/shm")
        .unwrap();
    let o = env
        .vrift()
        .env("VRIFT_UPPER", shm.path())
        .args(["run", "--manifest"])
        .arg(&m)
        .args(["--", "python3", "-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "saved\nFalse\nbee\n");
}

/// `vrift run -- CMD` in a project with no manifest (the usage guide's first command), and the
/// `vrift.manifest` of `vrift init`: the user's tree is left exactly as it was — modes, link
/// counts, content — so an editor still saves in place and root never writes the store.
#[test]
fn a_project_run_leaves_the_users_tree_as_it_was() {
    let env = Env::new();
    let p = env.path("proj");
    write(
        &p.join("main.py"),
        "print(open('data.txt').read().strip())\n",
    );
    write(&p.join("data.txt"), "from the view\n");
    write(&p.join("lib/util.py"), "X = 1\n");
    let snap = |p: &Path| -> BTreeMap<PathBuf, (u32, u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for rel in ["main.py", "data.txt", "lib/util.py"] {
            let f = p.join(rel);
            let md = std::fs::metadata(&f).unwrap();
            out.insert(
                f.clone(),
                (md.mode() & 0o7777, md.nlink(), std::fs::read(&f).unwrap()),
            );
        }
        out
    };
    let before = snap(&p);
    let o = env
        .vrift()
        .current_dir(&p)
        .args(["run", "--", "python3", "main.py"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from the view\n");
    assert_eq!(snap(&p), before, "the transient run changed the project");
    let o = env.vrift().current_dir(&p).arg("init").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(snap(&p), before, "vrift init changed the project");
    // And the store holds copies: no blob shares an inode with a project file.
    let inodes: Vec<u64> = ["main.py", "data.txt", "lib/util.py"]
        .iter()
        .map(|r| std::fs::metadata(p.join(r)).unwrap().ino())
        .collect();
    let mut stack = vec![env.store().join("blake3")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                assert!(
                    !inodes.contains(&md.ino()),
                    "{} is a project file",
                    e.path().display()
                );
            }
        }
    }
}

/// A blob written in place (same size, as root editing a hard-linked checkout would) is not
/// served by the view: reading that file fails with EIO and one line naming the blob; the
/// other files read as ever.
#[test]
fn the_view_refuses_a_damaged_blob() {
    let env = Env::new();
    let m = tree(&env);
    let blob = blob_state(&env.store())
        .into_iter()
        .find(|(_, (c, ..))| c == b"hello\n")
        .map(|(p, _)| p)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(&blob, "HELLO\n").unwrap_or_else(|_| {
        make_writable(&blob);
        std::fs::write(&blob, "HELLO\n").unwrap();
    });
    let o = env.run(&[&m], &["sh", "-c", "cat proj/b.txt; cat proj/a.txt"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bee\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("damaged blob") && err.contains(blob.to_str().unwrap()),
        "{err}"
    );
}

/// The upper layer's state on a full tmpfs (`/dev/shm` is 64 MiB in Docker): `vrift run`
/// says so in one line naming the directory; the user's program is never killed by SIGBUS at
/// its first write. Runs inside a user+mount namespace holding a 1 MiB tmpfs.
#[test]
fn a_full_tmpfs_for_the_upper_layer_is_an_error_not_a_sigbus() {
    let env = Env::new();
    write(&env.path("v/a.txt"), "a\n");
    let m = env.ingest_and_remove("v", "v.vrm");
    let tiny = env.path("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs '{t}' || exit 99\n\
         head -c 2M /dev/zero > '{t}/fill' 2>/dev/null\n\
         VRIFT_UPPER='{t}/up' '{bin}' run --manifest '{m}' -- sh -c 'echo hi > v/new.txt; cat v/new.txt'\n",
        t = tiny.display(),
        bin = vrift_bin().display(),
        m = m.display(),
    );
    let o = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .current_dir(env.root())
        .env("VR_THE_SOURCE", env.store())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(
        o.status.code(),
        Some(99),
        "cannot mount a tmpfs in a user namespace here: {err}"
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no room for the upper layer") && err.contains("tiny/up"),
        "{err}"
    );
    assert!(!err.contains("Bus error"), "{err}");
}

/// A manifest rewritten in place while a run uses it (`cp new.vrm m.vrm` truncates the file
/// it maps): the run goes on with the tree it started with, in processes already running and
/// in those started afterwards; nothing dies of SIGBUS.
#[test]
fn a_manifest_truncated_during_a_run_kills_nothing() {
    let env = Env::new();
    for i in 0..200 {
        write(
            &env.path(&format!("v/d{}/f{i}.txt", i % 10)),
            &format!("{i}\n"),
        );
    }
    let m = env.ingest_and_remove("v", "v.vrm");
    let script = format!(
        "import os, subprocess\n\
         print(open('v/d3/f3.txt').read().strip())\n\
         open('{m}', 'w').close()\n\
         print(sum(len(os.listdir('v/d' + str(i))) for i in range(10)))\n\
         print(open('v/d7/f197.txt').read().strip())\n\
         print(subprocess.run(['cat', 'v/d5/f25.txt'], capture_output=True, text=True).stdout.strip())\n",
        m = m.display()
    );
    let out = env.run_ok(&[&m], &["python3", "-c", &script]);
    assert_eq!(out, "3\n200\n197\n25\n");
}

/// The copy the shim maps lives in `<store>/shim/`, one per manifest file: reused while the
/// manifest is unchanged, replaced when it changes (the view shows the new tree).
#[test]
fn the_view_copy_of_a_manifest_follows_its_file() {
    let env = Env::new();
    write(&env.path("v/a.txt"), "one\n");
    let m = env.ingest_and_remove("v", "v.vrm");
    let copies = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(env.store().join("shim"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "vrm"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(env.run_ok(&[&m], &["cat", "v/a.txt"]), "one\n");
    let first = copies();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(env.run_ok(&[&m], &["cat", "v/a.txt"]), "one\n");
    assert_eq!(copies(), first, "an unchanged manifest is not copied again");
    // A new version of the tree, ingested to the same manifest file.
    write(&env.path("v/a.txt"), "two\n");
    let m2 = env.ingest_and_remove("v", "v.vrm");
    assert_eq!(m2, m);
    assert_eq!(env.run_ok(&[&m], &["cat", "v/a.txt"]), "two\n");
    let second = copies();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
}
