//! ENOSPC: a store on a tiny tmpfs fills up mid-ingest. Every file that does not fit is an
//! error naming its path, the rest goes on, nothing partial is left in the store, and the
//! source tree is untouched. Needs root (to mount a tmpfs); skipped otherwise.

use std::fs;
use std::path::Path;
use std::process::Command;

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_full_store_fails_files_not_the_run() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // 40 distinct 100 KiB files = 4 MB of content into a 1 MiB store.
    for i in 0..40u8 {
        fs::write(src.join(format!("f{i:02}.bin")), vec![i; 100 * 1024]).unwrap();
    }
    fs::write(src.join("small.txt"), b"fits").unwrap();
    let before: Vec<(String, Vec<u8>)> = (0..40u8)
        .map(|i| {
            let n = format!("f{i:02}.bin");
            let b = fs::read(src.join(&n)).unwrap();
            (n, b)
        })
        .collect();
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _m = Mount(store.clone());
    let out = Command::new(env!("CARGO_BIN_EXE_vrift"))
        .arg("--the-source-root")
        .arg(&store)
        .args(["--json", "ingest"])
        .arg(&src)
        .arg("-o")
        .arg(tmp.path().join("m.bin"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(&format!("error: {}/f", src.display())),
        "errors name the file: {stderr}"
    );
    // Nothing partial: every blob in the store matches its name, no temp files remain.
    for b in blob_files(&store.join("blake3")) {
        let data = fs::read(&b).unwrap();
        let name = b.file_name().unwrap().to_string_lossy().into_owned();
        let expect = format!("{}_{}.bin", blake3::hash(&data).to_hex(), data.len());
        assert_eq!(name, expect, "blob content matches its name");
    }
    assert_eq!(
        fs::read_dir(store.join("tmp"))
            .map(std::iter::Iterator::count)
            .unwrap_or(0),
        0,
        "no temp files left"
    );
    // The source is untouched.
    for (n, b) in before {
        assert_eq!(fs::read(src.join(&n)).unwrap(), b, "{n} unchanged");
    }
}
