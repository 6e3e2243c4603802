//! Bad input: a clear message naming the path, the rest of the work goes on, exit status 1 if
//! anything failed, and no half-written blob or manifest left visible.

use crate::common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A small healthy tree the failing entries sit in.
fn healthy(root: &Path) {
    write_file(&root.join("ok/a.js"), b"a\n", 0o644);
    write_file(&root.join("ok/b.js"), b"b\n", 0o644);
    write_file(&root.join("ok/dup.js"), b"a\n", 0o644);
    write_file(&root.join(".bin/x"), b"#!/bin/sh\necho x\n", 0o755);
    symlink("ok/a.js", &root.join("link"));
}

/// The tree without the entries named in `drop` (and anything under them).
fn without(t: &Tree, drop: &[&[u8]]) -> Tree {
    t.iter()
        .filter(|(k, _)| {
            !drop
                .iter()
                .any(|d| k.as_slice() == *d || (k.starts_with(d) && k.get(d.len()) == Some(&b'/')))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Unreadable files and directories (only meaningful for an ordinary user)
// ---------------------------------------------------------------------------------------

fn unreadable(mode: &str) {
    if let Err(why) = can_run_as_nobody() {
        skip_unless_ci(&why);
        return;
    }
    let sh = SharedDir::new();
    let home = sh.nobody_dir("home");
    let src = home.join("p");
    healthy(&src);
    write_file(
        &src.join("secret-ish/locked.txt"),
        b"cannot read me\n",
        0o644,
    );
    write_file(&src.join("locked-dir/inside.txt"), b"inside\n", 0o644);
    chown_tree(&home);
    let original = snapshot(&src);
    fs::set_permissions(
        src.join("secret-ish/locked.txt"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    let store = home.join("store");
    let out = home.join("m.vrm");
    let o = sh
        .vrift_as_nobody(&store)
        .arg("--json")
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .args(["--mode", mode])
        .output()
        .unwrap();
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "errors"), 2, "{v}");
    // Counted by kind: both are unreadable, nothing else went wrong.
    let kinds = v["issues"].as_object().unwrap();
    for (k, n) in kinds {
        let want = if k == "unreadable" { 2 } else { 0 };
        assert_eq!(n.as_u64(), Some(want), "{mode}: issues.{k}: {v}");
    }
    let e = stderr(&o);
    for p in ["secret-ish/locked.txt", "locked-dir"] {
        assert!(
            e.contains(&*src.join(p).to_string_lossy()),
            "error does not name {p}\n{e}"
        );
    }
    // The unreadable file is untouched; the rest went through.
    let md = fs::symlink_metadata(src.join("secret-ish/locked.txt")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.permissions().mode() & 0o777, 0);
    assert_no_leftovers(&store, &src);
    verify_store(&store);
    let restored = home.join("restored");
    checkout_ok(&store, &out, &restored);
    let mut got = snapshot(&restored);
    // An unreadable directory may or may not be recorded (as a directory); its content is not.
    if let Some(Node::Dir { .. }) = got.get(&b"locked-dir"[..]) {
        got.remove(&b"locked-dir"[..]);
    }
    assert_trees_equal(
        &without(&original, &[b"secret-ish/locked.txt", b"locked-dir"]),
        &got,
        "everything readable was ingested",
    );
}

#[test]
fn unreadable_file_and_directory_solid() {
    unreadable("solid");
}

#[test]
fn unreadable_file_and_directory_phantom() {
    unreadable("phantom");
}

// ---------------------------------------------------------------------------------------
// Symlinks, arguments
// ---------------------------------------------------------------------------------------

/// A dangling symlink is an ordinary entry (npm trees have them), not an error.
#[test]
fn dangling_symlinks_are_stored_not_errors() {
    let t = tempdir();
    let src = t.path().join("p");
    healthy(&src);
    symlink("missing/target.js", &src.join("dangling-rel"));
    symlink("/no/such/absolute", &src.join("dangling-abs"));
    symlink("self-loop", &src.join("self-loop"));
    symlink("loop-b", &src.join("loop-a"));
    symlink("loop-a", &src.join("loop-b"));
    let original = snapshot(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let o = ingest_raw(&store, &src, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "errors"), 0, "{v}");
    assert_eq!(num(&v, "symlinks"), 6, "{v}");
    // Each is a counted warning of its own kind, and the human summary says so.
    assert_eq!(v["issues"]["dangling"].as_u64(), Some(5), "{v}");
    let human = vrift(&store)
        .args(["ingest", "--no-cache"])
        .arg(&src)
        .arg("-o")
        .arg(t.path().join("m2.vrm"))
        .output()
        .unwrap();
    assert_eq!(human.status.code(), Some(0), "{}", describe(&human));
    let summary = String::from_utf8_lossy(&human.stdout);
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("  warnings")
                && l.trim_end().ends_with("5  (5 dangling symlinks)")),
        "{summary}"
    );
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    assert_trees_equal(&original, &snapshot(&restored), "dangling symlinks");
}

#[test]
fn missing_dir_argument_is_a_clear_error() {
    let t = tempdir();
    let missing = t.path().join("does-not-exist");
    let out = t.path().join("m.vrm");
    let o = vrift(&t.path().join("store"))
        .arg("ingest")
        .arg(&missing)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&*missing.to_string_lossy()),
        "path not named:\n{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "one clear line:\n{e}");
    assert!(!out.exists(), "no manifest for a failed ingest");
}

/// DIR that is neither a directory nor a regular file (a character device, a fifo).
#[test]
fn special_file_argument_is_a_clear_error() {
    let t = tempdir();
    let fifo = t.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for arg in [Path::new("/dev/null"), &fifo] {
        let out = t.path().join("m.vrm");
        let o = ingest_raw(&t.path().join("store"), arg, &out, &[]);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        assert!(
            stderr(&o).contains(&*arg.to_string_lossy()),
            "{}",
            describe(&o)
        );
        assert!(!out.exists());
    }
}

/// Ingesting one regular file gives a one-file manifest that checks out.
#[test]
fn single_file_argument() {
    for mode in ["solid", "phantom"] {
        let t = tempdir();
        let dir = t.path().join("dir");
        write_file(&dir.join("only.js"), b"console.log('only')\n", 0o755);
        write_file(&dir.join("sibling.js"), b"not me\n", 0o644);
        let store = t.path().join("store");
        let out = t.path().join("one.vrm");
        let v = ingest_ok(&store, &dir.join("only.js"), &out, &["--mode", mode]);
        assert_eq!(num(&v, "files"), 1, "{mode}: {v}");
        assert_eq!(num(&v, "blobs_new"), 1, "{mode}: {v}");
        assert_eq!(verify_store(&store).len(), 1);
        assert!(dir.join("sibling.js").is_file(), "{mode}: sibling touched");
        assert_eq!(fs::read(dir.join("sibling.js")).unwrap(), b"not me\n");
        let restored = t.path().join("restored");
        checkout_ok(&store, &out, &restored);
        let got = snapshot(&restored);
        let want: Tree = [(
            b"only.js".to_vec(),
            Node::File {
                content: b"console.log('only')\n".to_vec(),
                mode: 0o555,
            },
        )]
        .into_iter()
        .collect();
        assert_trees_equal(&want, &got, mode);
    }
}

/// An empty directory gives an empty (but valid) manifest.
#[test]
fn empty_directory_argument() {
    let t = tempdir();
    let src = t.path().join("empty");
    fs::create_dir(&src).unwrap();
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let v = ingest_ok(&store, &src, &out, &[]);
    assert_eq!(num(&v, "files"), 0, "{v}");
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    assert!(snapshot(&restored).is_empty());
}

/// `-o` where no manifest can be written: a clear error naming it; (phantom) nothing moved.
#[test]
fn unwritable_output_is_a_clear_error() {
    let t = tempdir();
    let src = t.path().join("p");
    healthy(&src);
    let original = snapshot(&src);
    let store = t.path().join("store");
    fs::create_dir(t.path().join("a-directory")).unwrap();
    for (what, out) in [
        ("a directory", t.path().join("a-directory")),
        ("missing parent", t.path().join("no/such/dir/m.vrm")),
        ("parent is a file", src.join("ok/a.js/m.vrm")),
    ] {
        let o = ingest_raw(&store, &src, &out, &["--mode", "phantom"]);
        assert_no_panic(&o);
        if o.status.code() == Some(0) {
            // Creating missing parents is acceptable; then it must be a real manifest.
            assert!(
                out.is_file(),
                "{what}: exit 0 but no manifest at {}",
                out.display()
            );
            panic!("{what}: unexpectedly succeeded; adjust this test if that is intended");
        }
        assert_eq!(o.status.code(), Some(1), "{what}\n{}", describe(&o));
        assert!(
            stderr(&o).contains(&*out.to_string_lossy())
                || stderr(&o).contains(&*out.parent().unwrap().to_string_lossy()),
            "{what}: error does not name the output\n{}",
            describe(&o)
        );
        assert_trees_equal(&original, &snapshot(&src), &format!("{what}: source after"));
    }
}

// ---------------------------------------------------------------------------------------
// Long names and paths
// ---------------------------------------------------------------------------------------

#[test]
fn names_at_name_max() {
    let t = tempdir();
    let src = t.path().join("p");
    let ascii = "n".repeat(255);
    // 85 three-byte characters = 255 bytes
    let wide = "語".repeat(85);
    assert_eq!(wide.len(), 255);
    write_file(&src.join(&ascii), b"same content\n", 0o644);
    write_file(&src.join(&wide), b"same content\n", 0o644); // a dedup hit: temp name beside it
    write_file(
        &src.join(format!("{}/inner.txt", "d".repeat(255))),
        b"inner\n",
        0o644,
    );
    symlink("x".repeat(255), &src.join(format!("l{}", "k".repeat(254))));
    let original = snapshot(&src);
    for tier in ["tier2", "tier1"] {
        let store = t.path().join(format!("store-{tier}"));
        let out = t.path().join(format!("m-{tier}.vrm"));
        let v = ingest_ok(&store, &src, &out, &["--tier", tier]);
        assert_eq!(num(&v, "files"), 3, "{v}");
        assert_no_leftovers(&store, &src);
        let restored = t.path().join(format!("restored-{tier}"));
        checkout_ok(&store, &out, &restored);
        assert_trees_equal(&original, &snapshot(&restored), tier);
    }
}

/// Makes `levels` nested directories of 200-byte names under `base` (beyond PATH_MAX when
/// long enough) with a file at the bottom, using *at calls as std needs full paths.
fn make_deep(base: &Path, levels: usize) -> PathBuf {
    let name = "d".repeat(200);
    let cname = CString::new(name.as_bytes()).unwrap();
    let cbase = CString::new(base.as_os_str().as_bytes()).unwrap();
    let mut full = base.to_path_buf();
    // SAFETY: plain *at syscalls on descriptors we own and NUL-terminated strings.
    unsafe {
        let mut fd = libc::open(cbase.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
        assert!(fd >= 0);
        for _ in 0..levels {
            assert_eq!(libc::mkdirat(fd, cname.as_ptr(), 0o755), 0);
            let next = libc::openat(fd, cname.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            assert!(next >= 0);
            libc::close(fd);
            fd = next;
            full.push(&name);
        }
        let f = libc::openat(
            fd,
            c"deep.txt".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        );
        assert!(f >= 0);
        let data = b"beyond PATH_MAX\n";
        assert_eq!(
            libc::write(f, data.as_ptr().cast(), data.len()),
            data.len() as isize
        );
        libc::close(f);
        libc::close(fd);
    }
    full.join("deep.txt")
}

/// A path longer than PATH_MAX: either handled (and restored), or an error naming it while
/// the rest of the tree is ingested; never a crash, never a partial result.
#[test]
fn path_beyond_path_max() {
    let t = tempdir();
    let src = t.path().join("p");
    healthy(&src);
    let original = snapshot(&src);
    let deep = make_deep(&src, 22);
    assert!(deep.as_os_str().len() > 4096);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let o = ingest_raw(&store, &src, &out, &[]);
    assert_no_panic(&o);
    let v = json_of(&o);
    let restored = t.path().join("restored");
    match o.status.code() {
        Some(0) => {
            assert_eq!(num(&v, "errors"), 0);
            assert_eq!(num(&v, "files"), file_count(&original) as u64 + 1, "{v}");
            // Restoring it needs *at calls too; at least the rest must come back.
            let co = checkout_raw(&store, &out, &restored);
            assert_no_panic(&co);
        }
        Some(1) => {
            assert!(num(&v, "errors") >= 1, "{v}");
            let e = stderr(&o);
            assert!(
                e.contains(&*src.join("d".repeat(200)).to_string_lossy()),
                "the error does not name the long path\n{e}"
            );
            checkout_ok(&store, &out, &restored);
        }
        other => panic!("exit {other:?}\n{}", describe(&o)),
    }
    // Everything else is restored.
    let got: Tree = snapshot_shallow(&restored);
    assert_trees_equal(&original, &got, "the rest of the tree");
    verify_store(&store);
    assert_no_leftovers(&store, &src);
}

/// Snapshot leaving out the deep `ddd...` directory.
fn snapshot_shallow(root: &Path) -> Tree {
    let deep = "d".repeat(200);
    let moved = root.join(&deep);
    let tmp = root.with_file_name("deep-aside");
    let had = moved.exists();
    if had {
        fs::rename(&moved, &tmp).unwrap();
    }
    let t = snapshot(root);
    if had {
        fs::rename(&tmp, &moved).unwrap();
    }
    t
}

// ---------------------------------------------------------------------------------------
// ENOSPC
// ---------------------------------------------------------------------------------------

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The store on a tiny tmpfs that fills up: errors name the files, the run goes on, exit 1,
/// no partial blob is visible and every blob still matches its name.
#[test]
fn store_runs_out_of_space() {
    if !is_root() {
        skip_unless_ci("mounting a small tmpfs needs root");
        return;
    }
    let t = tempdir();
    let mnt = t.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip_unless_ci("cannot mount a tmpfs here");
        return;
    }
    let _guard = Mount(mnt.clone());
    let src = t.path().join("p");
    healthy(&src);
    for i in 0..12 {
        write_file(
            &src.join(format!("big/{i}.bin")),
            &pattern(200_000, 100 + i),
            0o644,
        );
    }
    let original = snapshot(&src);
    let store = mnt.join("store");
    let out = t.path().join("m.vrm");
    let o = ingest_raw(&store, &src, &out, &[]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let e = stderr(&o);
    assert!(e.contains("No space left"), "ENOSPC not reported\n{e}");
    assert!(
        e.contains(&*src.join("big").to_string_lossy()),
        "no path named\n{e}"
    );
    // Nothing partial: every blob complete and named by its content, no temp files.
    verify_store(&store);
    assert_no_leftovers(&store, &src);
    // The source is intact (the store was on another filesystem: copies only).
    assert_trees_equal(&original, &snapshot(&src), "source after ENOSPC");
    // If a manifest was written, what it lists checks out correctly.
    if out.exists() {
        let restored = t.path().join("restored");
        let co = checkout_raw(&store, &out, &restored);
        assert_no_panic(&co);
        assert_eq!(co.status.code(), Some(0), "{}", describe(&co));
        for (k, n) in snapshot(&restored) {
            assert_eq!(original.get(&k), Some(&n), "{} restored wrongly", show(&k));
        }
    }
}

/// A file another process holds open and keeps appending to while it is ingested. The
/// file's inode would become the blob (solid links it, phantom moves it), and the writer's
/// descriptor would go on changing the blob under its name: so it is refused, as an error
/// naming it (exit status 1), left in place with everything written to it, and not in the
/// manifest. The rest of the tree goes in, and the store stays valid.
#[test]
fn a_file_that_keeps_changing_while_ingested() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    for mode in ["solid", "phantom"] {
        let t = tempdir();
        let src = t.path().join("p");
        healthy(&src);
        let growing = src.join("logs/growing.log");
        // Larger than one whole-file read, so every attempt takes a while to read.
        let start = 4usize << 20;
        write_file(&growing, &vec![b'x'; start], 0o644);
        let original = snapshot(&src);
        let stop = Arc::new(AtomicBool::new(false));
        let mut f = fs::OpenOptions::new().append(true).open(&growing).unwrap();
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(b"y").unwrap();
                    n += 1;
                }
                n
            })
        };
        // Let the appends start before the walk stats the file.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let store = t.path().join("store");
        let out = t.path().join("m.vrm");
        let o = ingest_raw(&store, &src, &out, &["--mode", mode]);
        stop.store(true, Ordering::Relaxed);
        let appended = writer.join().unwrap();
        assert_no_panic(&o);
        let v = json_of(&o);
        assert_eq!(o.status.code(), Some(1), "{mode}: {}", describe(&o));
        assert_eq!(num(&v, "errors"), 1, "{mode}: {v}");
        // Caught while hashed (changed) or at the link (another writer holds it: busy).
        let caught =
            v["issues"]["changed"].as_u64().unwrap() + v["issues"]["busy"].as_u64().unwrap();
        assert_eq!(caught, 1, "{mode}: {v}");
        let e = stderr(&o);
        assert!(
            e.contains(&*growing.to_string_lossy())
                && (e.contains("open for writing") || e.contains("changing")),
            "{mode}: the error does not name the file\n{e}"
        );
        assert_no_leftovers(&store, &src);
        verify_store(&store);
        let restored = t.path().join("restored");
        let c = checkout_raw(&store, &out, &restored);
        assert_eq!(
            c.status.code(),
            Some(0),
            "{mode}: the manifest references a missing blob\n{}\ningest: {}",
            describe(&c),
            describe(&o)
        );
        let got = snapshot(&restored);
        let want = without(&original, &[b"logs/growing.log"]);
        assert_trees_equal(&want, &got, mode);
        let md = fs::symlink_metadata(&growing).unwrap();
        assert!(md.is_file(), "{mode}: not left in place");
        assert_eq!(
            md.len(),
            (start + appended) as u64,
            "{mode}: the file was touched"
        );
        assert_ne!(
            md.permissions().mode() & 0o200,
            0,
            "{mode}: write bit not given back"
        );
    }
}
