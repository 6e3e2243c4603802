//! What an ordinary (non-root) user can still do after an ingest: `rm -rf` the tree, replace
//! files by rename; and what they cannot: write through a project file into a shared blob.
//! Needs root to switch to `nobody`; skipped with a message otherwise.

use crate::common;

use std::fs;
use std::path::Path;

use common::*;

fn setup() -> Option<SharedDir> {
    if let Err(why) = can_run_as_nobody() {
        skip_unless_ci(&why);
        return None;
    }
    Some(SharedDir::new())
}

fn ingest_as_nobody(sh: &SharedDir, store: &Path, src: &Path, out: &Path, extra: &[&str]) {
    let o = sh
        .vrift_as_nobody(store)
        .arg("--json")
        .arg("ingest")
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "ingest as nobody\n{}",
        describe(&o)
    );
    assert_eq!(num(&json_of(&o), "errors"), 0, "{}", describe(&o));
}

fn rm_rf_after(extra: &[&str]) {
    let Some(sh) = setup() else { return };
    let home = sh.nobody_dir("home");
    let src = home.join("node_modules");
    build_tricky_tree(&src);
    // a second package sharing contents, so some files are replaced by links to blobs
    build_tricky_tree(&src.join("nested-copy"));
    chown_tree(&home);
    let original = snapshot(&src);
    let store = home.join("store");
    let out = home.join("m.vrm");
    ingest_as_nobody(&sh, &store, &src, &out, extra);
    verify_store(&store);

    if extra.is_empty() {
        // Replace-by-rename (what npm and editors do) works as the user...
        let f = src.join("node_modules/left-pad/index.js");
        let o = sh_as_nobody(
            r#"printf 'replaced\n' > "$1.tmp" && mv -f "$1.tmp" "$1""#,
            &[f.as_os_str()],
        );
        assert!(
            o.status.success(),
            "replace by rename as nobody\n{}",
            describe(&o)
        );
        assert_eq!(fs::read(&f).unwrap(), b"replaced\n");
        // ...but writing in place into a file that is a shared blob is refused.
        let shared = src.join("node_modules/left-pad/LICENSE");
        let o = sh_as_nobody(r#"printf 'corrupt' >> "$1""#, &[shared.as_os_str()]);
        assert!(!o.status.success(), "in-place write into a blob succeeded");
    }
    // The store is intact whatever the user did to the project.
    verify_store(&store);

    // rm -rf of the whole tree as the user.
    let o = sh_as_nobody(r#"rm -rf -- "$1""#, &[src.as_os_str()]);
    assert!(
        o.status.success(),
        "rm -rf as nobody failed\n{}",
        describe(&o)
    );
    assert!(!src.exists(), "tree still there after rm -rf");
    let blobs = verify_store(&store);
    assert_eq!(blobs.len(), distinct_contents(&original).len());

    // The user can restore it from the store.
    let restored = home.join("restored");
    let o = sh
        .vrift_as_nobody(&store)
        .arg("checkout")
        .arg(&out)
        .arg(&restored)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "checkout as nobody\n{}",
        describe(&o)
    );
    assert_trees_equal(&original, &snapshot(&restored), "restored by the user");
    let o = sh_as_nobody(r#"rm -rf -- "$1""#, &[restored.as_os_str()]);
    assert!(
        o.status.success(),
        "rm -rf of a checkout as nobody\n{}",
        describe(&o)
    );
}

#[test]
fn rm_rf_works_after_a_solid_ingest() {
    rm_rf_after(&[]);
}

#[test]
fn rm_rf_works_after_a_tier1_ingest() {
    rm_rf_after(&["--tier", "tier1"]);
}

#[test]
fn rm_rf_works_after_a_phantom_ingest() {
    rm_rf_after(&["--mode", "phantom"]);
}

/// A store the user may not write to: a clear error naming it, nothing changed in the tree.
#[test]
fn store_not_writable_by_the_user_is_a_clear_error() {
    let Some(sh) = setup() else { return };
    let home = sh.nobody_dir("home");
    let src = home.join("p");
    write_file(&src.join("a.txt"), b"a\n", 0o644);
    chown_tree(&home);
    let before = snapshot(&src);
    let store = sh.path().join("root-store"); // owned by root, 0755
    fs::create_dir_all(&store).unwrap();
    let o = sh
        .vrift_as_nobody(&store)
        .arg("ingest")
        .arg(&src)
        .arg("-o")
        .arg(home.join("m.vrm"))
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains(&*store.to_string_lossy()),
        "error does not name the store\n{}",
        describe(&o)
    );
    assert_trees_equal(&before, &snapshot(&src), "tree after the refused ingest");
}
