//! Re-hashing blobs against their names: catches content changed behind the store's back
//! (someone wrote into a hard-linked project file, a torn copy after a power cut).

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::scan::BlobInfo;
use crate::store::Cas;

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub corrupt: Vec<String>,
    pub unreadable: Vec<(String, String)>,
    pub repaired: u64,
}

/// Whether a blob's content still matches its name.
pub fn check_blob(cas: &Cas, b: &BlobInfo, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    check_and_seal(cas, b, buf, false)
}

/// [`check_blob`]; with `seal`, a blob that matches but is not sealed (made by an older
/// vrift) is sealed now (best effort: needs to own it).
fn check_and_seal(cas: &Cas, b: &BlobInfo, buf: &mut Vec<u8>, seal: bool) -> std::io::Result<bool> {
    let good = hash_matches(cas, b, buf)?;
    if good && seal {
        let f = cas.open_blob(&b.hash, b.size)?;
        let st = crate::sys::fstat(std::os::fd::AsFd::as_fd(&f))?;
        if !crate::seal::is_sealed(&st, b.size) || crate::seal::is_legacy(&st) {
            crate::seal::seal_fd(std::os::fd::AsFd::as_fd(&f), crate::sys::mtime_ns(&st))?;
        }
    }
    Ok(good)
}

fn hash_matches(cas: &Cas, b: &BlobInfo, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut f = File::open(cas.blob_path(&b.hash, b.size))?;
    let mut h = blake3::Hasher::new();
    buf.resize(1 << 20, 0);
    let mut total = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok(total == b.size && *h.finalize().as_bytes() == b.hash)
}

/// One thread's findings: corrupt paths, unreadable (path, error), number repaired.
type Part = (Vec<String>, Vec<(String, String)>, u64);

/// How far a [`verify`] is: blobs and bytes checked so far (for a progress line).
#[derive(Debug, Default)]
pub struct Done {
    pub blobs: AtomicU64,
    pub bytes: AtomicU64,
}

/// Checks `blobs` on `threads` threads; with `repair`, drops corrupt blobs so the next ingest
/// of a file with that content stores it afresh (the caller holds the exclusive lock).
pub fn verify(cas: &Cas, blobs: &[BlobInfo], threads: usize, repair: bool) -> VerifyReport {
    verify_counted(cas, blobs, threads, repair, &Done::default())
}

/// [`verify`], counting into `done` as it goes.
pub fn verify_counted(
    cas: &Cas,
    blobs: &[BlobInfo],
    threads: usize,
    repair: bool,
    done: &Done,
) -> VerifyReport {
    let bytes = &done.bytes;
    let chunk = blobs.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<Part> = std::thread::scope(|s| {
        let hs: Vec<_> = blobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut buf = Vec::new();
                    let (mut bad, mut unreadable, mut repaired) = (Vec::new(), Vec::new(), 0);
                    for b in part {
                        let path = cas.blob_path(&b.hash, b.size).display().to_string();
                        match check_and_seal(cas, b, &mut buf, true) {
                            Ok(true) => {}
                            Ok(false) => {
                                if repair && cas.remove_blob(&b.hash, b.size).is_ok() {
                                    repaired += 1;
                                }
                                bad.push(path);
                            }
                            Err(e) => unreadable.push((path, e.to_string())),
                        }
                        bytes.fetch_add(b.size, Ordering::Relaxed);
                        done.blobs.fetch_add(1, Ordering::Relaxed);
                    }
                    (bad, unreadable, repaired)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut r = VerifyReport {
        checked: blobs.len() as u64,
        bytes: bytes.load(Ordering::Relaxed),
        ..Default::default()
    };
    for (bad, unreadable, repaired) in parts {
        r.corrupt.extend(bad);
        r.unreadable.extend(unreadable);
        r.repaired += repaired;
    }
    r.corrupt.sort();
    r
}
