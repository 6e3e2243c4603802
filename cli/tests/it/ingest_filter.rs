//! What the filter leaves out: secrets by default (listed with `--show-excluded`, kept with
//! `--no-security-filter`), version-control directories always, user `--exclude` globs; and
//! what it must keep (hidden files, `.bin`, files a package's `.gitignore` names).

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

/// Secrets the default filter must leave out (relative paths).
const SECRETS: &[&str] = &[
    ".env",
    ".env.local",
    "app/.env.production",
    ".envrc",
    "certs/server.pem",
    "certs/tls.key",
    "certs/bundle.p12",
    "home/.ssh/id_rsa",
    "home/.ssh/id_rsa.pub",
    "home/.ssh/config",
    "id_ed25519",
    "u/.aws/credentials",
    ".npmrc",
    ".netrc",
    ".git-credentials",
];

/// Look-alikes that must be kept.
const KEEP: &[&str] = &[
    "environment.js",
    "docs/keys.md",
    "src/env.ts",
    "pkg/.gitignore",
    "pkg/ignored-by-gitignore.js",
    "pkg/.npmignore",
    "node_modules/.bin/tool",
    ".hidden",
    "keynote.txt",
    "pem/readme.txt",
    "aws/credentials.md",
    // Key-named, but public: a CA bundle, a public key, a config without a token.
    "certs/ca-bundle.pem",
    "keys/id_ed25519.pub",
    "web/.npmrc",
];

/// What a file at `rel` holds: key-named files are secret by content (a private key block, a
/// registry token), so the secrets carry one and the public look-alikes do not.
fn content(rel: &str, i: usize, secret: bool) -> Vec<u8> {
    let name = rel.rsplit('/').next().unwrap();
    let key_named = name.ends_with(".pem") || name.ends_with(".key") || name.starts_with("id_");
    match (key_named, name == ".npmrc", secret) {
        (true, _, true) => format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn{i}\n-----END OPENSSH PRIVATE KEY-----\n"
        )
        .into_bytes(),
        (true, _, false) => {
            format!("-----BEGIN CERTIFICATE-----\nMIIB{i}\n-----END CERTIFICATE-----\n")
                .into_bytes()
        }
        (_, true, true) => format!("//registry.npmjs.org/:_authToken=npm_{i}\n").into_bytes(),
        (_, true, false) => b"registry=https://registry.npmjs.org/\n".to_vec(),
        _ if secret => format!("SECRET-{i}\n").into_bytes(),
        _ => format!("keep-{i}\n").into_bytes(),
    }
}

fn build(root: &Path) {
    for (i, s) in SECRETS.iter().enumerate() {
        write_file(&root.join(s), &content(s, i, true), 0o600);
    }
    for (i, k) in KEEP.iter().enumerate() {
        write_file(&root.join(k), &content(k, i, false), 0o644);
    }
    write_file(
        &root.join("pkg/.gitignore"),
        b"ignored-by-gitignore.js\n",
        0o644,
    );
    // VCS metadata, also nested inside a package.
    write_file(&root.join(".git/HEAD"), b"ref: refs/heads/main\n", 0o644);
    write_file(&root.join(".git/objects/ab/cdef"), b"blob", 0o444);
    write_file(&root.join("pkg/.git/config"), b"[core]\n", 0o644);
    write_file(&root.join("pkg/.hg/store"), b"hg\n", 0o644);
    write_file(&root.join("pkg/.svn/entries"), b"svn\n", 0o644);
}

fn paths(t: &Tree) -> BTreeSet<String> {
    t.iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect()
}

const VCS_FILES: usize = 5;

#[test]
fn secrets_and_vcs_are_excluded_by_default_and_listed_on_request() {
    let t = tempdir();
    let src = t.path().join("p");
    build(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");

    // --show-excluded, human output: one line per excluded path on stdout.
    let o = vrift(&store)
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("--show-excluded")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    for s in SECRETS {
        assert!(
            listed.contains(&*src.join(s).to_string_lossy()),
            "--show-excluded does not list {s}\n{}",
            describe(&o)
        );
    }
    for k in KEEP {
        assert!(
            !listed.contains(&format!("excluded: {}\n", src.join(k).display())),
            "{k} listed as excluded"
        );
    }

    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    let got = paths(&snapshot(&restored));
    let want: BTreeSet<String> = KEEP.iter().map(std::string::ToString::to_string).collect();
    assert_eq!(
        got, want,
        "exactly the non-secret, non-VCS files are restored"
    );
    // No secret content reached the store.
    for (i, s) in SECRETS.iter().enumerate() {
        let c = content(s, i, true);
        assert!(
            !blob_path_of(&store, &c).exists(),
            "secret #{i} is in the store"
        );
    }
    assert_eq!(
        verify_store(&store).len(),
        KEEP.len(),
        "one blob per kept file"
    );

    // --json: the count; the list (if any) never pollutes stdout.
    let v = ingest_ok(
        &t.path().join("store2"),
        &src,
        &t.path().join("m2.vrm"),
        &["--show-excluded"],
    );
    // The secrets plus the VCS directories (counted once each, as directories are not entered).
    let ex = num(&v, "excluded") as usize;
    assert!(
        ex >= SECRETS.len() && ex <= SECRETS.len() + VCS_FILES,
        "excluded = {ex}: {v}"
    );
    assert_eq!(num(&v, "files") as usize, KEEP.len(), "{v}");
}

#[test]
fn no_security_filter_keeps_secrets_but_not_vcs() {
    let t = tempdir();
    let src = t.path().join("p");
    build(&src);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let v = ingest_ok(&store, &src, &out, &["--no-security-filter"]);
    assert_eq!(num(&v, "files") as usize, KEEP.len() + SECRETS.len(), "{v}");
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    let got = paths(&snapshot(&restored));
    let want: BTreeSet<String> = KEEP
        .iter()
        .chain(SECRETS)
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(got, want);
    // Secrets come back with their content and owner-only permissions.
    let tree = snapshot(&restored);
    let Some(Node::File { content, mode }) = tree.get(&b".env"[..]) else {
        panic!(".env not restored")
    };
    assert_eq!(content, b"SECRET-0\n");
    assert_eq!(
        mode & 0o077,
        0,
        ".env readable by others after checkout: {mode:o}"
    );
}

#[test]
fn user_exclude_globs() {
    let t = tempdir();
    let src = t.path().join("p");
    write_file(&src.join("keep.js"), b"k\n", 0o644);
    write_file(&src.join("debug.log"), b"l1\n", 0o644);
    write_file(&src.join("a/b/trace.log"), b"l2\n", 0o644);
    write_file(&src.join("target/x.o"), b"o\n", 0o644);
    write_file(&src.join("crates/c/target/y.o"), b"o2\n", 0o644);
    write_file(&src.join("build/out/z.js"), b"z\n", 0o644);
    write_file(&src.join("src/build/out/kept.js"), b"kept\n", 0o644);
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let v = ingest_ok(
        &store,
        &src,
        &out,
        &[
            "--exclude",
            "*.log",
            "--exclude",
            "target",
            "--exclude",
            "/build/out",
        ],
    );
    assert_eq!(num(&v, "files"), 2, "{v}");
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    let got = paths(&snapshot(&restored));
    let want: BTreeSet<String> = ["keep.js", "src/build/out/kept.js"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(got, want);
}

/// `vrift ingest DIR` honours `DIR/.vriftignore` (what `vrift init` writes) on top of
/// `--exclude`; comments and blank lines in it mean nothing.
#[test]
fn vriftignore_of_the_ingested_dir_applies() {
    let t = tempdir();
    let src = t.path().join("p");
    write_file(&src.join("keep.js"), b"k\n", 0o644);
    write_file(&src.join("target/x.o"), b"o\n", 0o644);
    write_file(&src.join("a/trace.log"), b"l\n", 0o644);
    write_file(&src.join("notes.tmp"), b"t\n", 0o644);
    write_file(
        &src.join(".vriftignore"),
        b"# build outputs\n\ntarget/\n*.log\n",
        0o644,
    );
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let v = ingest_ok(&store, &src, &out, &["--exclude", "*.tmp"]);
    assert_eq!(num(&v, "files"), 2, "{v}");
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    let got = paths(&snapshot(&restored));
    let want: BTreeSet<String> = [".vriftignore", "keep.js"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(got, want);
}

/// A bad glob is a usage problem with a clear message, not a panic.
#[test]
fn bad_exclude_glob_is_a_clear_error() {
    let t = tempdir();
    let src = t.path().join("p");
    write_file(&src.join("a"), b"a", 0o644);
    let o = ingest_raw(
        &t.path().join("store"),
        &src,
        &t.path().join("m"),
        &["--exclude", "a[b"],
    );
    assert_no_panic(&o);
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(stderr(&o).contains("a[b"), "{}", describe(&o));
    assert!(!t.path().join("m").exists(), "no manifest on failure");
}

/// Special files (fifo, socket) are skipped with a warning naming them; the run succeeds.
#[test]
fn special_files_are_skipped_with_a_warning() {
    let t = tempdir();
    let src = t.path().join("p");
    write_file(&src.join("a.txt"), b"a\n", 0o644);
    let fifo = src.join("pipe");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let sock_path = src.join("sock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let store = t.path().join("store");
    let out = t.path().join("m.vrm");
    let o = ingest_raw(&store, &src, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v = json_of(&o);
    assert_eq!(num(&v, "files"), 1, "{v}");
    assert_eq!(num(&v, "errors"), 0, "{v}");
    let e = stderr(&o);
    assert!(e.contains(&*fifo.to_string_lossy()), "fifo not named:\n{e}");
    assert!(
        e.contains(&*sock_path.to_string_lossy()),
        "socket not named:\n{e}"
    );
    let restored = t.path().join("restored");
    checkout_ok(&store, &out, &restored);
    assert_eq!(
        paths(&snapshot(&restored)),
        BTreeSet::from(["a.txt".to_string()])
    );
}
