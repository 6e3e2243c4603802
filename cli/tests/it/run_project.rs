//! Project runs (issue 16, item 4): `vrift run -- CMD` in a project set up with `vrift init`
//! (or none at all). The view serves the project from the store, and:
//! * what the command writes lands in the project directory (a build's `dist/`, `target/`),
//!   as it would without vrift; `--ephemeral` sends it to a throwaway layer instead;
//! * an edit between two runs is seen by the second (the manifest is refreshed first);
//! * a directory removed from disk (offloaded: `rm -rf node_modules`) is still served, a file
//!   deleted from a directory that remains is gone;
//! * deleting a file the view serves never leaves vrift's markers in the user's tree.

use crate::run_support;

use std::path::Path;

use run_support::*;

fn run_in(env: &Env, dir: &Path, args: &[&str]) -> String {
    let o = env
        .vrift()
        .current_dir(dir)
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vrift run {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn project(env: &Env) -> std::path::PathBuf {
    let p = env.path("proj");
    write(&p.join("main.sh"), "echo v1\n");
    write(&p.join("src/lib.txt"), "lib\n");
    write(&p.join("deps/pkg/index.txt"), "dependency\n");
    let o = env.vrift().arg("init").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p
}

#[test]
fn writes_land_in_the_project_and_edits_are_seen() {
    let env = Env::new();
    let p = project(&env);
    let out = run_in(
        &env,
        &p,
        &[
            "--",
            "sh",
            "-c",
            "sh main.sh; mkdir -p dist && echo built > dist/out.txt; echo more >> src/lib.txt",
        ],
    );
    assert_eq!(out, "v1\n");
    assert_eq!(
        std::fs::read_to_string(p.join("dist/out.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("src/lib.txt")).unwrap(),
        "lib\nmore\n"
    );
    // The user edits between runs: the next run runs the new code.
    write(&p.join("main.sh"), "echo v2\n");
    assert_eq!(run_in(&env, &p, &["--", "sh", "main.sh"]), "v2\n");
    // The store still holds the original content, untouched.
    let blobs = blobs(&env.store());
    assert!(blobs.iter().any(|b| b == b"lib\n"), "a blob changed");
    assert!(!blobs.iter().any(|b| b == b"lib\nmore\nmodified"));
}

#[test]
fn ephemeral_runs_leave_the_project_alone() {
    let env = Env::new();
    let p = project(&env);
    let out = run_in(
        &env,
        &p,
        &[
            "--ephemeral",
            "--",
            "sh",
            "-c",
            "mkdir dist && echo x > dist/out.txt && cat dist/out.txt; echo more >> src/lib.txt",
        ],
    );
    assert_eq!(out, "x\n");
    assert!(!p.join("dist").exists());
    assert_eq!(
        std::fs::read_to_string(p.join("src/lib.txt")).unwrap(),
        "lib\n"
    );
}

#[test]
fn offloaded_directories_stay_deleted_files_go() {
    let env = Env::new();
    let p = project(&env);
    std::fs::remove_dir_all(p.join("deps")).unwrap();
    std::fs::remove_file(p.join("src/lib.txt")).unwrap();
    write(&p.join("src/new.txt"), "new\n");
    let out = run_in(
        &env,
        &p,
        &[
            "--",
            "sh",
            "-c",
            "cat deps/pkg/index.txt; ls src; test -e src/lib.txt || echo lib-gone",
        ],
    );
    assert_eq!(out, "dependency\nnew.txt\nlib-gone\n");
    // A run writes into the offloaded tree: seen by that run, kept off the disk (the tree is
    // not re-created piecemeal), and the next run still serves all of it.
    let out = run_in(
        &env,
        &p,
        &[
            "--",
            "sh",
            "-c",
            "echo cache > deps/pkg/.cache && cat deps/pkg/.cache",
        ],
    );
    assert_eq!(out, "cache\n");
    assert!(!p.join("deps").exists());
    let out = run_in(&env, &p, &["--", "sh", "-c", "cat deps/pkg/index.txt"]);
    assert_eq!(out, "dependency\n");
    // Deleting what only the view holds hides it; the user's tree gets no marker.
    let out = run_in(
        &env,
        &p,
        &[
            "--",
            "sh",
            "-c",
            "rm deps/pkg/index.txt && ls deps/pkg | wc -l",
        ],
    );
    assert_eq!(out.trim(), "0");
    let mut left = Vec::new();
    let mut stack = vec![p.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.file_type().is_symlink() {
                left.push(e.path());
            }
        }
    }
    assert!(left.is_empty(), "markers in the user's tree: {left:?}");
}

/// A file ingested with mode 000 shows 000 in the view (not a default).
#[test]
fn the_view_shows_recorded_modes_even_000() {
    let env = Env::new();
    let p = env.path("modes");
    write(&p.join("none.txt"), "x\n");
    write(&p.join("plain.txt"), "y\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.join("none.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let m = env.ingest_and_remove("modes", "modes.vrm");
    let out = env.run_ok(
        &[&m],
        &["stat", "-c", "%a", "modes/none.txt", "modes/plain.txt"],
    );
    assert_eq!(out, "0\n644\n");
}

/// `kill -9` of `vrift run`: the command dies with it, and the next run removes the
/// throwaway layer the killed one left.
#[test]
fn kill_9_of_vrift_run_takes_the_command_along() {
    let env = Env::new();
    let p = env.path("k");
    write(&p.join("f.txt"), "x\n");
    let m = env.ingest_and_remove("k", "k.vrm");
    // A duration no other process uses, to find this very `sleep`.
    let marker = format!("3.{}", std::process::id());
    let mut child = env
        .vrift()
        .arg("run")
        .arg("--manifest")
        .arg(&m)
        .args(["--", "sleep", &marker])
        .spawn()
        .unwrap();
    let vpid = child.id();
    let find = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.trim_end() == format!("sleep {marker}"))
            .collect()
    };
    let t = std::time::Instant::now();
    while find().is_empty() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!find().is_empty(), "the command never started");
    let uppers = |pid: u32| -> usize {
        ["/tmp", "/var/tmp", "/dev/shm"]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("vrift-upper-{pid}-"))
                    || n.starts_with(&format!("vrift-libs-{pid}-"))
            })
            .count()
    };
    // The upper layer and the loader's mirror directory.
    assert_eq!(uppers(vpid), 2);
    child.kill().unwrap();
    child.wait().unwrap();
    let t = std::time::Instant::now();
    while !find().is_empty() && t.elapsed().as_secs() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(find().is_empty(), "the command outlived vrift run");
    assert_eq!(env.run_ok(&[&m], &["cat", "k/f.txt"]), "x\n");
    assert_eq!(uppers(vpid), 0, "the killed run's scratch directory stayed");
    // The window a kill can hit, made certain: the command starts after its launcher is gone
    // (here: `VRIFT_PARENT` names a process that has exited). It dies at once.
    let shim = vrift_bin().with_file_name("libvrift_shim.so");
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let st = std::process::Command::new("sleep")
        .arg("30")
        .env("LD_PRELOAD", &shim)
        .env("VRIFT_PARENT", gone_pid.to_string())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "{st:?}");
    // While it lives, the command's own children run: bash keeps `VRIFT_PARENT` in what it
    // passes on (a constructor cannot take it out of bash's variables), and every external
    // command of a bash script was killed.
    if need(have("bash"), "bash").is_some() {
        let out = env.run_ok(
            &[&m],
            &[
                "bash",
                "-c",
                "/bin/true && cat k/f.txt && (ls k | wc -l) && echo done",
            ],
        );
        assert_eq!(out, "x\n1\ndone\n");
    }
}

/// Ingest leaves directory times as they were (solid mode relinks duplicates, which moves a
/// directory's mtime); the manifest records them, with the directory's size, and the view and
/// a checkout show them.
#[test]
fn directory_times_and_sizes_survive_ingest_view_and_checkout() {
    let env = Env::new();
    let p = env.path("d");
    for i in 0..3 {
        write(&p.join(format!("dups/f{i}.txt")), "same content\n");
    }
    for i in 0..40 {
        write(
            &p.join(format!("big/a-rather-long-file-name-{i:03}.txt")),
            &format!("{i}\n"),
        );
    }
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for d in ["dups", "big"] {
        std::fs::File::open(p.join(d))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let size_of = |d: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p.join(d)).unwrap().size()
    };
    let big_size = size_of("big");
    let o = env
        .vrift()
        .args(["ingest", "d", "-o", "d.vrm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mtime = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap();
    assert_eq!(
        mtime(&p.join("dups")),
        old,
        "ingest moved the directory's mtime"
    );
    let out = env.run_ok(
        &[&env.path("d.vrm")],
        &["stat", "-c", "%Y %s", "d/dups", "d/big"],
    );
    assert_eq!(
        out,
        format!("1600000000 {}\n1600000000 {big_size}\n", size_of("dups"))
    );
    let back = env.path("back");
    let o = env
        .vrift()
        .arg("checkout")
        .arg("d.vrm")
        .arg(&back)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mtime(&back.join("dups")), old);
    assert_eq!(mtime(&back.join("big")), old);
}

/// errno after calls that succeed is what it would be without the shim: the hooks' own probes
/// (upper layer, lookups) never leak an errno into a program that reads it after a success —
/// a `readdir` loop ends at errno 0, not ENOENT.
#[test]
fn errno_after_successful_calls_is_left_alone() {
    let env = Env::new();
    let p = project(&env);
    write(
        &p.join("errno.c"),
        "#include <dirent.h>\n#include <errno.h>\n#include <fcntl.h>\n#include <stdio.h>\n\
         #include <sys/stat.h>\n#include <unistd.h>\n\
         #define SHOW(what, ok) printf(\"%s %d errno %d\\n\", what, ok, errno); errno = 0\n\
         int main(void) {\n\
           struct stat s; errno = 0;\n\
           SHOW(\"stat\", stat(\"src/lib.txt\", &s) == 0);\n\
           DIR *d = opendir(\"src\"); int n = 0;\n\
           while (readdir(d)) n++;\n\
           SHOW(\"readdir\", n);\n\
           closedir(d); errno = 0;\n\
           FILE *f = fopen(\"src/new.txt\", \"w\");\n\
           SHOW(\"fopen-w\", f != 0);\n\
           fclose(f); errno = 0;\n\
           int fd = open(\"src/lib.txt\", O_RDWR);\n\
           SHOW(\"open-rw\", fd >= 0);\n\
           close(fd); errno = 0;\n\
           SHOW(\"mkdir\", mkdir(\"src/d\", 0755) == 0);\n\
           SHOW(\"rename\", rename(\"src/new.txt\", \"src/d/n.txt\") == 0);\n\
           SHOW(\"unlink\", unlink(\"src/d/n.txt\") == 0);\n\
           SHOW(\"access\", access(\"src/lib.txt\", R_OK) == 0);\n\
           SHOW(\"chdir\", chdir(\"src\") == 0);\n\
           SHOW(\"lstat\", lstat(\"lib.txt\", &s) == 0);\n\
           return 0;\n\
         }\n",
    );
    compile_c(&p.join("errno.c"), &env.path("errno"));
    let prog = env.path("errno");
    let native = std::process::Command::new(&prog)
        .current_dir(&p)
        .output()
        .unwrap();
    let native = String::from_utf8(native.stdout).unwrap();
    assert_eq!(
        native,
        "stat 1 errno 0\nreaddir 3 errno 0\nfopen-w 1 errno 0\nopen-rw 1 errno 0\n\
         mkdir 1 errno 0\nrename 1 errno 0\nunlink 1 errno 0\naccess 1 errno 0\n\
         chdir 1 errno 0\nlstat 1 errno 0\n"
    );
    // Undo the native run's changes (the directory it made), then the same through the view.
    std::fs::remove_dir(p.join("src/d")).unwrap();
    let virt = run_in(&env, &p, &["--", prog.to_str().unwrap()]);
    assert_eq!(virt, native);
}
