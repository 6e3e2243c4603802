//! Materializing a manifest as a real tree: hard links to blobs ("restore node_modules in CI").
//!
//! Links cost no data copy. Where one inode cannot serve (the blob is on another filesystem,
//! has reached the 65,000-link cap, or its mode differs from the entry's exec bit) the file is
//! copied instead. A missing blob is an error naming the path and the blob; the rest of the
//! tree is still written.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vrift_cas::Cas;
use vrift_manifest::{Entry, Kind, Manifest};

use crate::error::PipelineError;
use crate::report::Counters;
use crate::walk::rel_os;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckoutReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub linked: u64,
    pub copied: u64,
    pub errors: u64,
    pub seconds: f64,
}

/// Writes the tree of `manifest` at `dest`, which must not exist or be an empty directory.
pub fn checkout(
    cas: &Cas,
    manifest: &Manifest,
    dest: &Path,
    threads: usize,
    counters: &Counters,
) -> Result<CheckoutReport, PipelineError> {
    let t = std::time::Instant::now();
    match fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(PipelineError::io(
                    dest,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "destination exists and is not empty",
                    ),
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| PipelineError::io(dest, e))?;
        }
        Err(e) => return Err(PipelineError::io(dest, e)),
    }
    let mut report = CheckoutReport::default();
    let target = |e: &Entry<'_>| -> PathBuf {
        if e.path().is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rel_os(e.path()))
        }
    };
    // Directories first, parents before children (manifest order guarantees it).
    for e in manifest.iter().filter(|e| e.kind() == Kind::Dir) {
        if e.path().is_empty() {
            continue;
        }
        let p = target(&e);
        match fs::create_dir(&p) {
            Ok(()) => report.dirs += 1,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => counters.error(&p, format!("cannot create directory: {err}")),
        }
    }
    let leaves: Vec<usize> = manifest
        .iter()
        .filter(|e| matches!(e.kind(), Kind::File | Kind::Executable | Kind::Symlink))
        .map(|e| e.index())
        .collect();
    let chunk = leaves.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<CheckoutReport> = std::thread::scope(|s| {
        let handles: Vec<_> = leaves
            .chunks(chunk)
            .map(|idx| {
                let target = &target;
                s.spawn(move || {
                    let mut r = CheckoutReport::default();
                    for &i in idx {
                        let Some(e) = manifest.entry(i) else { continue };
                        let p = target(&e);
                        if let Err(msg) = place_leaf(cas, &e, &p, &mut r) {
                            counters.error(&p, msg);
                            r.errors += 1;
                        }
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for p in parts {
        report.files += p.files;
        report.symlinks += p.symlinks;
        report.linked += p.linked;
        report.copied += p.copied;
        report.errors += p.errors;
    }
    // Directory modes last (a read-only directory would refuse its children), deepest first.
    for e in manifest
        .iter()
        .filter(|e| e.kind() == Kind::Dir)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let p = target(&e);
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(e.mode() & 0o7777));
    }
    report.seconds = t.elapsed().as_secs_f64();
    Ok(report)
}

fn place_leaf(cas: &Cas, e: &Entry<'_>, p: &Path, r: &mut CheckoutReport) -> Result<(), String> {
    if e.kind() == Kind::Symlink {
        std::os::unix::fs::symlink(rel_os(e.target()), p)
            .map_err(|err| format!("cannot create symlink: {err}"))?;
        r.symlinks += 1;
        return Ok(());
    }
    let (hash, size) = (e.hash(), e.size());
    let blob = cas.blob_stat(hash, size).map_err(|err| {
        format!(
            "blob {} unavailable: {err}",
            vrift_cas::blob_rel(hash, size)
        )
    })?;
    // One inode has one mode: link only when the blob's mode is the entry's (write bits
    // aside, which no blob has); otherwise copy so a 0600 file stays 0600.
    let linked = link_or_copy(cas, e, blob.st_mode, p)?;
    r.files += 1;
    if linked {
        r.linked += 1;
    } else {
        r.copied += 1;
    }
    Ok(())
}

/// Puts a file entry at `p` as a hard link to its blob when one inode can serve (same mode,
/// write bits aside, which no blob has); otherwise — mode differs, EMLINK, EXDEV, EPERM —
/// as a copy with the entry's mode. Returns whether it linked. Shared by checkout and the
/// isolation link farms so both keep a 0600 file 0600.
pub fn link_or_copy(cas: &Cas, e: &Entry<'_>, blob_mode: u32, p: &Path) -> Result<bool, String> {
    let (hash, size) = (e.hash(), e.size());
    let keep = 0o7777 & !vrift_cas::WRITE_BITS;
    if blob_mode & keep == e.mode() & keep {
        match cas.link_out(hash, size, p) {
            Ok(()) => return Ok(true),
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EMLINK) | Some(libc::EXDEV) | Some(libc::EPERM)
                ) => {}
            Err(err) => return Err(format!("cannot link from store: {err}")),
        }
    }
    fs::copy(cas.blob_path(hash, size), p)
        .map_err(|err| format!("cannot copy from store: {err}"))?;
    fs::set_permissions(p, fs::Permissions::from_mode(e.mode() & 0o7777))
        .map_err(|err| format!("cannot set mode: {err}"))?;
    Ok(false)
}
