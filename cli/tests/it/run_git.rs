//! `git status` of a repository whose working-tree files are virtual (the ingest leaves
//! `.git` out, so it stays real).

use crate::run_support;

use std::process::Command;

use run_support::*;

fn git(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

#[test]
fn git_status_of_virtual_working_tree() {
    let env = Env::new();
    let repo = env.path("repo");
    write(&repo.join("src/a.txt"), "a\n");
    write(&repo.join("lib/b.txt"), "b\n");
    write(&repo.join("README"), "readme\n");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "init"]);
    let o = env
        .vrift()
        .args(["ingest", "repo", "-o", "m.vrm", "--mode", "phantom"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for e in std::fs::read_dir(&repo).unwrap().flatten() {
        if e.file_name() != ".git" {
            let p = e.path();
            make_writable(&p);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let m = env.path("m.vrm");
    let out = env.run_ok(
        &[&m],
        &[
            "sh",
            "-c",
            "cd repo && git status --porcelain && echo clean && git ls-files | sort",
        ],
    );
    assert_eq!(out, "clean\nREADME\nlib/b.txt\nsrc/a.txt\n");
    let out = env.run_ok(&[&m], &["sh", "-c", "cd repo && echo more >> src/a.txt && rm lib/b.txt && echo n > new.txt && git status --porcelain"]);
    assert_eq!(out, " D lib/b.txt\n M src/a.txt\n?? new.txt\n");
}
