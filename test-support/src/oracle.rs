//! What the pipeline's integration tests compare manifests by: a manifest's entries, and
//! what a plain `std::fs` walk with the `blake3` crate says they must be.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use vrift_manifest::Manifest;

/// Path → (kind, mode, size, mtime of non-directories, hash, symlink target).
pub type Seen = BTreeMap<Vec<u8>, (u8, u32, u64, i64, [u8; 32], Vec<u8>)>;

/// A manifest's entries as [`Seen`].
pub fn entries(m: &Manifest) -> Seen {
    m.iter()
        .map(|e| {
            (
                e.path().to_vec(),
                (
                    e.kind() as u8,
                    e.mode(),
                    e.size(),
                    // A directory's mtime moves when ingest replaces a duplicate in it, at
                    // whatever moment that happened: not part of the comparison.
                    if e.is_dir() { 0 } else { e.mtime_ns() },
                    *e.hash(),
                    e.target().to_vec(),
                ),
            )
        })
        .collect()
}

/// The oracle: what the manifest of `root` must say, read with `std::fs` one path at a time
/// (kind, mode, size, mtime of non-directories, BLAKE3 of the content, symlink target).
pub fn expected(root: &Path) -> Seen {
    use std::os::unix::fs::MetadataExt;
    let mut out = Seen::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
            let mode = md.mode() & 0o7777;
            let v = if md.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                let t = t.as_os_str().as_bytes().to_vec();
                (3u8, mode, t.len() as u64, mtime, [0u8; 32], t)
            } else if md.is_dir() {
                stack.push(p.clone());
                (0u8, mode, md.size(), 0, [0u8; 32], Vec::new())
            } else {
                let kind = if mode & 0o111 != 0 { 2u8 } else { 1u8 };
                let hash = *blake3::hash(&fs::read(&p).unwrap()).as_bytes();
                (kind, mode, md.size(), mtime, hash, Vec::new())
            };
            out.insert(rel, v);
        }
    }
    out
}

pub fn assert_same(a: &Seen, b: &Seen, what: &str) {
    let only_a: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    let differ: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
        .map(|(k, v)| (String::from_utf8_lossy(k), v, &b[k]))
        .collect();
    assert!(
        only_a.is_empty() && only_b.is_empty() && differ.is_empty(),
        "{what}: only in first {only_a:?}, only in second {only_b:?}, differ {differ:?}"
    );
}
