//! Escape attempts from inside `run --isolate` must all fail: writing to (or chmod-ing) a
//! blob, mounting, remounting, unmounting, reading a host file by absolute path, `..` and
//! symlink traversal out of the root, `/proc/1/root`, nested namespaces. Afterwards every
//! blob still matches its name with its mode unchanged, and the host files are untouched.

use crate::common;
use crate::isolate_support;

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use isolate_support::*;

/// `try NAME CMD`: prints `ESCAPED: NAME` if CMD succeeds, `blocked: NAME` otherwise.
const TRY: &str = r#"
try() { if ( eval "$2" ) >/dev/null 2>&1; then echo "ESCAPED: $1"; else echo "blocked: $1"; fi; }
"#;

fn blob_state(store: &Path) -> Vec<(String, u32, u64)> {
    let mut v: Vec<_> = common::verify_store(store)
        .into_iter()
        .map(|b| (b.hex, b.mode, b.ino))
        .collect();
    v.sort();
    v
}

#[track_caller]
fn assert_all_blocked(out: &str, expected: usize, o: &std::process::Output) {
    assert!(
        !out.contains("ESCAPED"),
        "an escape worked\n{}",
        describe(o)
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("blocked: ")).count(),
        expected,
        "not every attempt ran\n{}",
        describe(o)
    );
    assert!(out.contains("finished\n"), "{}", describe(o));
}

#[test]
fn escapes_from_a_busybox_root_fail() {
    let Some(env) = Env::new() else { return };
    if !need_busybox() {
        return;
    }
    let base = env.busybox_base();
    let secret = env.write("secret.txt", b"host secret\n", 0o644);
    let app = env.home.join("app");
    env.write("app/hello.txt", b"hello\n", 0o644);
    // Symlinks that point at the host file: absolute, and relative with too many `..`.
    std::os::unix::fs::symlink(&secret, app.join("abs-link")).unwrap();
    let mut rel = "../".repeat(20);
    rel.push_str(secret.strip_prefix("/").unwrap().to_str().unwrap());
    std::os::unix::fs::symlink(&rel, app.join("rel-link")).unwrap();
    env.give(&app);
    let m = env.home.join("app.manifest");
    env.ingest(&app, &m);
    let blob = common::blob_path_of(&env.store, b"hello\n");
    assert!(blob.is_file());
    let before = blob_state(&env.store);

    let script = format!(
        r#"{TRY}
B="$1"; S="$2"; A="$3"
try blob-write 'echo x >> "$B"'
try blob-chmod 'chmod 666 "$B"'
try blob-dir 'ls "$(dirname "$B")"'
try host-read 'cat "$S"'
try host-ls 'ls "$(dirname "$S")/store"'
try dotdot-path 'cat "/../../../../..$S"'
try dotdot-cd 'cd / && cd ../../../../.. && cat ".$S"'
try symlink-abs 'cat "$A/abs-link"'
try symlink-rel 'cat "$A/rel-link"'
try proc-root 'cat "/proc/1/root$S"'
try proc-cwd 'cat "/proc/self/cwd/../../../../../..$S"'
try mount-tmpfs 'mount -t tmpfs none /tmp'
try mount-bind 'mount -o bind / /tmp'
try remount-rw 'mount -o remount,rw /proc/sys'
try umount-proc 'umount /proc'
try umount-dev 'umount -l /dev/null'
try chroot 'chroot / /bin/true'
try mknod 'mknod /tmp/disk b 8 0'
try pivot 'pivot_root / /tmp'
try nested-userns-host 'unshare -r -m sh -c "cat $S"'
try sethostname 'hostname pwned'
try init-fds 'ls /proc/1/fd/'
try init-fd-dirs 'for f in /proc/1/fd/*; do ls "$f/" && exit 0; done; exit 1'
try init-fd-blob 'for n in 3 4 5 6 7 8 9; do echo x >> "/proc/1/fd/$n/${{B#*/blake3/}}" && exit 0; done; exit 1'
echo x >> "$A/hello.txt" && echo "copy-up: $(cat "$A/hello.txt" | tr '\n' ' ')"
echo finished
"#
    );
    let o = env.isolate([
        OsString::from("--base"),
        base.into(),
        "--manifest".into(),
        m.into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        blob.clone().into(),
        secret.clone().into(),
        app.clone().into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = stdout(&o);
    assert_all_blocked(&out, 24, &o);
    // Writing a view file is allowed — into the throwaway layer, not the blob.
    assert!(out.contains("copy-up: hello x \n"), "{}", describe(&o));
    assert_eq!(blob_state(&env.store), before, "blobs changed");
    assert_eq!(fs::read(&blob).unwrap(), b"hello\n");
    assert_eq!(fs::read(&secret).unwrap(), b"host secret\n");
    assert_eq!(fs::read(app.join("hello.txt")).unwrap(), b"hello\n");
    env.assert_clean();
}

#[test]
fn escapes_with_the_host_visible_fail() {
    let Some(env) = Env::new() else { return };
    let secret = env.write("secret.txt", b"host secret\n", 0o644);
    let app = env.home.join("app");
    env.write("app/hello.txt", b"hello\n", 0o644);
    let m = env.home.join("app.manifest");
    env.ingest(&app, &m);
    let blob = common::blob_path_of(&env.store, b"hello\n");
    let before = blob_state(&env.store);
    // Warm the farm so its path is known: the farm file is a hard link to the blob.
    let o = env.isolate([
        OsString::from("--manifest"),
        m.clone().into(),
        "--".into(),
        "true".into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let farm = env.farms().pop().unwrap();
    let farm_file = farm
        .join("root")
        .join(app.strip_prefix("/").unwrap())
        .join("hello.txt");
    assert!(farm_file.is_file());

    // Straight system calls, whatever `mount(8)` thinks of our uid.
    let python_mount = "import ctypes, sys; l = ctypes.CDLL(None, use_errno=True); \
        sys.exit(0 if l.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0 else 1)";
    let python_remount = "import ctypes, sys; l = ctypes.CDLL(None, use_errno=True); \
        sys.exit(0 if l.mount(None, b'/', None, 32 | 4096, None) == 0 else 1)";
    let script = format!(
        r#"{TRY}
B="$1"; S="$2"; H="$3"; F="$4"; A="$5"; P1="$6"; P2="$7"
cat "$S" >/dev/null || echo "host not readable"
try blob-write 'echo x >> "$B"'
try blob-truncate ': > "$B"'
try blob-chmod 'chmod u+w "$B"'
try blob-rm 'rm -f "$B"'
try farm-write 'echo x >> "$F"'
try farm-chmod 'chmod u+w "$F"'
try host-write 'echo x > "$H/new-file"'
try host-rm 'rm -f "$S"'
try host-touch 'touch "$S"'
try link-blob-to-tmp 'ln "$B" /tmp/blob-link'
try mount-syscall 'python3 -c "$P1"'
try remount-rw-syscall 'python3 -c "$P2"'
try nested-remount 'unshare -r -m sh -c "mount -o remount,bind,rw / && echo x > \"$H/nested\""'
try nested-blob-write 'unshare -r -m sh -c "echo x >> \"$B\""'
try init-fds 'ls /proc/1/fd/'
try init-fd-dirs 'for f in /proc/1/fd/*; do ls "$f/" && exit 0; done; exit 1'
try init-fd-blob 'for n in 3 4 5 6 7 8 9; do echo x >> "/proc/1/fd/$n/${{B#*/blake3/}}" && exit 0; done; exit 1'
try nested-umount-view 'unshare -r -m sh -c "umount -l \"$A\" && cat \"$A/host-only\""'
echo finished
"#
    );
    env.write("app/host-only", b"not in the manifest\n", 0o644);
    let o = env.isolate([
        OsString::from("--manifest"),
        m.into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        blob.clone().into(),
        secret.clone().into(),
        env.home.clone().into(),
        farm_file.into(),
        app.clone().into(),
        python_mount.into(),
        python_remount.into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = stdout(&o);
    assert!(!out.contains("host not readable"), "{}", describe(&o));
    assert_all_blocked(&out, 18, &o);
    assert_eq!(blob_state(&env.store), before, "blobs changed");
    assert_eq!(fs::read(&secret).unwrap(), b"host secret\n");
    assert!(!env.home.join("new-file").exists());
    assert!(!env.home.join("nested").exists());
    env.assert_clean();
}
