//! Layer precedence and whiteouts under `run --isolate`: later layers win, a whiteout hides a
//! path and its subtree, a recreated directory above a whiteout shows only its own children;
//! for `--base` layers (all mapped to `/`) and `--manifest` layers (at their root), with and
//! without a base.

use crate::isolate_support;

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use isolate_support::*;
use vrift_manifest::{EntryInput, ManifestBuilder};

struct Layers {
    app: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
    wh: PathBuf,
    /// Hides all of `d/`.
    wd: PathBuf,
}

/// v1 and v2 of `home/app` (same root), and a whiteout layer for it.
fn layers(env: &Env) -> Layers {
    let app = env.home.join("app");
    env.write("app/a", b"v1 a", 0o644);
    env.write("app/b", b"v1 b", 0o644);
    env.write("app/only1", b"only in v1", 0o644);
    env.write("app/d/x", b"v1 d/x", 0o644);
    env.write("app/keep/k", b"k", 0o644);
    let v1 = env.home.join("v1.manifest");
    env.ingest(&app, &v1);
    // v2: the same project later: a changed, b and only1 and d/x and keep gone, new things.
    for p in ["a", "b", "only1", "d/x"] {
        fs::remove_file(app.join(p)).unwrap();
    }
    fs::remove_dir_all(app.join("keep")).unwrap();
    env.write("app/a", b"v2 a", 0o644);
    env.write("app/new2", b"only in v2", 0o644);
    env.write("app/d/y", b"v2 d/y", 0o644);
    let v2 = env.home.join("v2.manifest");
    env.ingest(&app, &v2);
    // Whiteouts at the same root: hide b, the whole keep/ subtree and d/x.
    let mut b = ManifestBuilder::new(app.as_os_str().as_bytes());
    for p in ["b", "keep", "d/x"] {
        b.push(EntryInput::whiteout(p));
    }
    let wh = env.home.join("wh.manifest");
    b.write_atomic(&wh).unwrap();
    env.give(&wh);
    let mut b = ManifestBuilder::new(app.as_os_str().as_bytes());
    b.push(EntryInput::whiteout("d"));
    let wd = env.home.join("wd.manifest");
    b.write_atomic(&wd).unwrap();
    env.give(&wd);
    // The host tree now has something no layer has: it must not show through a view.
    env.write("app/host-only", b"host", 0o644);
    Layers {
        app,
        v1,
        v2,
        wh,
        wd,
    }
}

const PROBE: &str = r#"
cd "$1" || exit 9
for f in a b only1 new2 d/x d/y keep/k host-only; do
    if [ -e "$f" ]; then echo "$f=$(cat "$f")"; else echo "$f=-"; fi
done
"#;

fn probe(env: &Env, layer_args: &[(&str, &Path)], sh: &str, app: &Path) -> String {
    let mut args: Vec<OsString> = Vec::new();
    for (flag, p) in layer_args {
        args.push(flag.into());
        args.push(p.into());
    }
    args.extend([
        OsString::from("--"),
        sh.into(),
        "-c".into(),
        PROBE.into(),
        "sh".into(),
        app.into(),
    ]);
    let o = env.isolate(&args);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    stdout(&o)
}

const TOP_WINS: &str =
    "a=v2 a\nb=-\nonly1=only in v1\nnew2=only in v2\nd/x=-\nd/y=v2 d/y\nkeep/k=-\nhost-only=-\n";
const V1_WINS: &str = "a=v1 a\nb=v1 b\nonly1=only in v1\nnew2=only in v2\nd/x=v1 d/x\nd/y=v2 d/y\nkeep/k=k\nhost-only=-\n";

#[test]
fn later_manifests_win_and_whiteouts_hide_with_the_host_visible() {
    let Some(env) = Env::new() else { return };
    let l = layers(&env);
    let got = probe(
        &env,
        &[
            ("--manifest", &l.v1),
            ("--manifest", &l.v2),
            ("--manifest", &l.wh),
        ],
        "/bin/sh",
        &l.app,
    );
    assert_eq!(got, TOP_WINS);
    let got = probe(
        &env,
        &[("--manifest", &l.v2), ("--manifest", &l.v1)],
        "/bin/sh",
        &l.app,
    );
    assert_eq!(got, V1_WINS);
    // A directory recreated above a whiteout shows only its own children...
    let got = probe(
        &env,
        &[
            ("--manifest", &l.v1),
            ("--manifest", &l.wd),
            ("--manifest", &l.v2),
        ],
        "/bin/sh",
        &l.app,
    );
    assert_eq!(
        got,
        "a=v2 a\nb=v1 b\nonly1=only in v1\nnew2=only in v2\nd/x=-\nd/y=v2 d/y\nkeep/k=k\nhost-only=-\n"
    );
    // ...and a whiteout on top hides the directory whatever is below.
    let got = probe(
        &env,
        &[
            ("--manifest", &l.v1),
            ("--manifest", &l.v2),
            ("--manifest", &l.wd),
        ],
        "/bin/sh",
        &l.app,
    );
    assert_eq!(
        got,
        "a=v2 a\nb=v1 b\nonly1=only in v1\nnew2=only in v2\nd/x=-\nd/y=-\nkeep/k=k\nhost-only=-\n"
    );
    env.assert_clean();
    // Four distinct layer lists, four farms.
    assert_eq!(env.farms().len(), 4);
}

#[test]
fn later_layers_win_and_whiteouts_hide_in_a_busybox_root() {
    let Some(env) = Env::new() else { return };
    if !need_busybox() {
        return;
    }
    let bb = env.busybox_base();
    let l = layers(&env);
    let got = probe(
        &env,
        &[
            ("--base", &bb),
            ("--manifest", &l.v1),
            ("--manifest", &l.v2),
            ("--manifest", &l.wh),
        ],
        "/bin/sh",
        &l.app,
    );
    assert_eq!(got, TOP_WINS);
    let got = probe(
        &env,
        &[
            ("--base", &bb),
            ("--manifest", &l.v2),
            ("--manifest", &l.v1),
        ],
        "/bin/sh",
        &l.app,
    );
    assert_eq!(got, V1_WINS);

    // Base layers: all at `/`, later ones win, whiteouts hide.
    env.write("over.root/etc/passwd", b"over:x:1:1::/:/bin/sh\n", 0o644);
    env.write("over.root/etc/extra", b"extra\n", 0o644);
    let over = env.home.join("over.manifest");
    env.ingest(&env.home.join("over.root"), &over);
    let mut b = ManifestBuilder::new("/");
    b.push(EntryInput::whiteout("usr/bin/wc"));
    b.push(EntryInput::whiteout("etc/extra"));
    let hide = env.home.join("hide.manifest");
    b.write_atomic(&hide).unwrap();
    env.give(&hide);
    let script = "cat /etc/passwd; [ -e /usr/bin/wc ] && echo wc=yes || echo wc=no; \
                  [ -e /etc/extra ] && echo extra=yes || echo extra=no; \
                  echo one two | /bin/busybox wc -w";
    let run = |layers: &[&Path]| {
        let mut args: Vec<OsString> = Vec::new();
        for p in layers {
            args.push("--base".into());
            args.push(p.into());
        }
        args.extend([
            OsString::from("--"),
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
        ]);
        let o = env.isolate(&args);
        assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
        stdout(&o)
    };
    let out = run(&[&bb, &over]);
    assert!(
        out.starts_with("over:x:1:1::/:/bin/sh\nwc=yes\nextra=yes\n"),
        "{out}"
    );
    let out = run(&[&bb, &over, &hide]);
    assert!(
        out.starts_with("over:x:1:1::/:/bin/sh\nwc=no\nextra=no\n"),
        "{out}"
    );
    assert!(out.ends_with("2\n"), "{out}");
    let out = run(&[&over, &bb]);
    assert!(
        out.starts_with("root:x:0:0:"),
        "the lower base's passwd wins: {out}"
    );
    env.assert_clean();
}
