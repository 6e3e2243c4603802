//! Building manifests: collect entries in any order, then sort, complete and serialize.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::entry::{EntryInput, Kind};
use crate::format;
use crate::order::{check_rel_path, cmp_paths, is_ancestor};
use crate::schema::{EntryData, ManifestData};
use crate::{Manifest, ManifestError};

/// Collects entries (from parallel walkers, in any order) and produces a manifest file.
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    root: Vec<u8>,
    flags: u32,
    created_unix_ns: Option<i64>,
    entries: Vec<EntryInput>,
}

impl ManifestBuilder {
    /// A builder for a tree ingested from the absolute directory `root`.
    pub fn new(root: impl Into<Vec<u8>>) -> Self {
        Self::with_capacity(root, 0)
    }

    /// Like [`new`](Self::new), reserving room for `n` entries.
    pub fn with_capacity(root: impl Into<Vec<u8>>, n: usize) -> Self {
        ManifestBuilder {
            root: root.into(),
            flags: 0,
            created_unix_ns: None,
            entries: Vec::with_capacity(n),
        }
    }

    /// Sets the header flags (e.g. [`format::FLAG_PHANTOM`]).
    pub fn set_flags(&mut self, flags: u32) {
        self.flags = flags;
    }

    /// Current header flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Overrides the creation timestamp (default: the time of serialization), so tests and
    /// reproducible builds can produce byte-identical files.
    pub fn set_created_unix_ns(&mut self, ns: i64) {
        self.created_unix_ns = Some(ns);
    }

    /// Adds an entry. Order does not matter; a later push of the same path replaces the
    /// earlier one.
    pub fn push(&mut self, e: EntryInput) {
        self.entries.push(e);
    }

    /// Number of entries pushed so far (duplicates and synthesized parents not accounted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn error_path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(&self.root))
    }

    /// Sorts, removes exact-duplicate paths (last pushed wins), synthesizes missing parent
    /// directories (mode 0o755, mtime 0) and the root entry if absent, computes
    /// `subtree_end`, and serializes header + payload.
    ///
    /// Fails with [`ManifestError::Invalid`] on a malformed path (see
    /// [`check_rel_path`]), on a non-directory that has entries below it, on a root entry
    /// that is not a directory, or if the manifest would exceed the format's 32-bit limits.
    pub fn to_bytes(self) -> Result<Vec<u8>, ManifestError> {
        let path = self.error_path();
        let flags = self.flags;
        let data = self.into_data()?;
        format::encode(&data, flags, &path)
    }

    /// Builds and opens the result in memory (handy for tests and for callers that want
    /// to keep using the manifest they just wrote).
    pub fn build(self) -> Result<Manifest, ManifestError> {
        let path = self.error_path();
        let bytes = self.to_bytes()?;
        Manifest::from_bytes(bytes, &path)
    }

    /// Writes the manifest to `path` atomically: a temp file in the same directory is
    /// written, fsynced, renamed over `path`, and then the directory is fsynced. Readers
    /// (and a crash at any point) see either the old file or the complete new one, never
    /// a partial file — which matters because in phantom mode the manifest is the only
    /// record of the tree.
    pub fn write_atomic(self, path: &Path) -> Result<(), ManifestError> {
        let bytes = self.to_bytes()?;
        write_file_atomic(path, &bytes)
    }

    fn into_data(self) -> Result<ManifestData, ManifestError> {
        let err_path = self.error_path();
        let invalid = |p: &[u8], why: &str| {
            ManifestError::invalid(
                &err_path,
                format!("entry {:?}: {why}", String::from_utf8_lossy(p)),
            )
        };

        let mut input = self.entries;
        for e in &input {
            check_rel_path(&e.path).map_err(|why| invalid(&e.path, why))?;
            if e.kind == Kind::Symlink && (e.target.is_empty() || e.target.contains(&0)) {
                return Err(invalid(
                    &e.path,
                    "symlink target is empty or holds a NUL byte",
                ));
            }
        }
        // Stable sort, so among equal paths the last pushed stays last.
        input.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        let mut sorted: Vec<EntryInput> = Vec::with_capacity(input.len() + 1);
        for e in input {
            match sorted.last_mut() {
                Some(last) if last.path == e.path => *last = e,
                _ => sorted.push(e),
            }
        }

        let mut out: Vec<EntryInput> = Vec::with_capacity(sorted.len() + 1);
        let mut ends: Vec<u32> = Vec::with_capacity(sorted.len() + 1);
        // Indices into `out` of the chain of ancestors of the current entry.
        let mut stack: Vec<usize> = Vec::new();

        let mut iter = sorted.into_iter().peekable();
        match iter.peek() {
            Some(first) if first.path.is_empty() => {
                if first.kind != Kind::Dir {
                    return Err(invalid(b"", "the root entry must be a directory"));
                }
            }
            _ => {
                let mut root = EntryInput::dir(Vec::new());
                root.mode = 0o755;
                out.push(root);
                ends.push(0);
                stack.push(0);
            }
        }

        for e in iter {
            // Close every open entry that is not an ancestor of `e`.
            while let Some(&top) = stack.last() {
                if is_ancestor(&out[top].path, &e.path) {
                    break;
                }
                ends[top] =
                    u32::try_from(out.len()).map_err(|_| invalid(&e.path, "too many entries"))?;
                stack.pop();
            }
            if let Some(&top) = stack.last() {
                if out[top].kind != Kind::Dir {
                    return Err(invalid(&e.path, "parent is not a directory"));
                }
                // Synthesize the directories between the deepest existing ancestor and `e`.
                let have = out[top].path.len();
                let start = if have == 0 { 0 } else { have + 1 };
                let mut i = start;
                while let Some(rel) = e.path[i..].iter().position(|&b| b == b'/') {
                    let dir_end = i + rel;
                    let mut d = EntryInput::dir(e.path[..dir_end].to_vec());
                    d.mode = 0o755;
                    stack.push(out.len());
                    out.push(d);
                    ends.push(0);
                    i = dir_end + 1;
                }
            }
            stack.push(out.len());
            out.push(e);
            ends.push(0);
        }
        let total = u32::try_from(out.len()).map_err(|_| invalid(b"", "too many entries"))?;
        for top in stack {
            ends[top] = total;
        }

        let strings_len: usize = out.iter().map(|e| e.path.len() + e.target.len()).sum();
        let mut strings: Vec<u8> = Vec::with_capacity(strings_len);
        let mut entries: Vec<EntryData> = Vec::with_capacity(out.len());
        for (i, e) in out.into_iter().enumerate() {
            let is_symlink = e.kind == Kind::Symlink;
            let target: &[u8] = if is_symlink { &e.target } else { &[] };
            let path_off = strings.len();
            strings.extend_from_slice(&e.path);
            let target_off = strings.len();
            strings.extend_from_slice(target);
            let too_big = |_| invalid(&e.path, "string table exceeds 4 GiB");
            entries.push(EntryData {
                path_off: u32::try_from(path_off).map_err(too_big)?,
                path_len: u32::try_from(e.path.len()).map_err(too_big)?,
                target_off: u32::try_from(target_off).map_err(too_big)?,
                target_len: u32::try_from(target.len()).map_err(too_big)?,
                kind: e.kind as u8,
                mode: e.mode,
                size: e.size,
                mtime_ns: e.mtime_ns,
                hash: if e.kind.has_content() {
                    e.hash
                } else {
                    [0; 32]
                },
                dev: e.dev,
                ino: e.ino,
                cache_mtime_ns: e.cache_mtime_ns,
                subtree_end: if e.kind == Kind::Dir {
                    ends[i]
                } else {
                    i as u32 + 1
                },
            });
        }
        u32::try_from(strings.len()).map_err(|_| invalid(b"", "string table exceeds 4 GiB"))?;
        // rkyv relative pointers are 32-bit signed: keep the payload well below 2 GiB.
        let approx = entries.len() as u64 * 104 + strings.len() as u64 + self.root.len() as u64;
        if approx > (i32::MAX as u64) - 4096 {
            return Err(invalid(
                b"",
                "manifest would exceed the 2 GiB archive limit",
            ));
        }

        let created_unix_ns = self.created_unix_ns.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        });
        Ok(ManifestData {
            root: self.root,
            created_unix_ns,
            entries,
            strings,
        })
    }
}

/// The mode `open(O_CREAT, 0666)` would give a new file: 0666 less this process's umask (read
/// from `/proc/self/status`, which, unlike `umask(2)`, does not change it for other threads).
pub fn new_file_mode() -> u32 {
    use std::sync::OnceLock;
    static MODE: OnceLock<u32> = OnceLock::new();
    *MODE.get_or_init(|| {
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022);
        0o666 & !umask
    })
}

/// Atomically replaces `path` with `bytes` (temp file + fsync + rename + directory fsync).
///
/// Exposed so that callers that copy a manifest (e.g. the CAS's cached manifest copies)
/// get the same never-partial guarantee.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    use std::os::unix::fs::PermissionsExt;

    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".vrift-manifest.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| ManifestError::io(dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let io = |e| ManifestError::io(&tmp_path, e);
    tmp.write_all(bytes).map_err(io)?;
    // tempfile creates 0600; a manifest is not secret and other tools (and users) read it:
    // the mode a new file gets here (0666 less the umask), so a store shared by a group
    // (umask 002) stays writable for the group.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(new_file_mode()))
        .map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    // On failure the NamedTempFile inside the error is dropped, which removes the temp file.
    tmp.persist(path)
        .map_err(|e| ManifestError::io(path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ManifestError::io(dir, e))?;
    Ok(())
}

/// Directory holding `path` (`.` for a bare file name), where the temp file must go so
/// that the final rename stays within one filesystem.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: Vec<EntryInput>) -> Result<ManifestData, ManifestError> {
        let mut b = ManifestBuilder::new("/r");
        for e in entries {
            b.push(e);
        }
        b.into_data()
    }

    fn paths(d: &ManifestData) -> Vec<(String, u32, u8)> {
        d.entries
            .iter()
            .map(|e| {
                let p = &d.strings[e.path_off as usize..(e.path_off + e.path_len) as usize];
                (
                    String::from_utf8_lossy(p).into_owned(),
                    e.subtree_end,
                    e.kind,
                )
            })
            .collect()
    }

    #[test]
    fn temp_file_goes_beside_the_target() {
        assert_eq!(parent_dir(Path::new("m.vrm")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/m.vrm")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/m.vrm")), Path::new("/"));
    }

    #[test]
    fn empty_builder_has_root() {
        let d = data(vec![]).unwrap();
        assert_eq!(paths(&d), vec![("".into(), 1, 0)]);
    }

    #[test]
    fn synthesizes_parents_and_subtree_ends() {
        let d = data(vec![
            EntryInput::file("a/b/c.txt", 1, [1; 32]),
            EntryInput::file("a.txt", 1, [2; 32]),
            EntryInput::file("a/b.txt", 1, [3; 32]),
            EntryInput::dir("z"),
        ])
        .unwrap();
        assert_eq!(
            paths(&d),
            vec![
                ("".into(), 7, 0),
                ("a".into(), 5, 0),
                ("a/b".into(), 4, 0),
                ("a/b/c.txt".into(), 4, 1),
                ("a/b.txt".into(), 5, 1),
                ("a.txt".into(), 6, 1),
                ("z".into(), 7, 0),
            ]
        );
        let a = &d.entries[1];
        assert_eq!((a.mode, a.mtime_ns), (0o755, 0));
    }

    #[test]
    fn last_duplicate_wins_and_root_kept() {
        let mut root = EntryInput::dir("");
        root.mode = 0o700;
        let d = data(vec![
            EntryInput::file("x", 1, [1; 32]),
            root,
            EntryInput::file("x", 2, [2; 32]),
        ])
        .unwrap();
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.entries[0].mode, 0o700);
        assert_eq!(d.entries[1].size, 2);
        assert_eq!(d.entries[1].hash, [2; 32]);
    }

    #[test]
    fn non_files_have_zero_hash_and_only_symlinks_targets() {
        let mut dir = EntryInput::dir("d");
        dir.hash = [9; 32];
        dir.target = b"junk".to_vec();
        let d = data(vec![dir, EntryInput::symlink("l", "/abs/t")]).unwrap();
        assert_eq!(d.entries[1].hash, [0; 32]);
        assert_eq!(d.entries[1].target_len, 0);
        assert_eq!(d.entries[2].target_len, 6);
    }

    #[test]
    fn rejects_bad_trees() {
        for bad in [
            vec![
                EntryInput::file("f", 0, [0; 32]),
                EntryInput::file("f/g", 0, [0; 32]),
            ],
            vec![EntryInput::symlink("l", "x"), EntryInput::dir("l/d/e")],
            vec![EntryInput::whiteout("w"), EntryInput::dir("w/x")],
            vec![EntryInput::file("", 0, [0; 32])],
            vec![EntryInput::dir("a/")],
            vec![EntryInput::dir("/a")],
            vec![EntryInput::dir("a//b")],
            vec![EntryInput::dir("a/../b")],
        ] {
            let err = data(bad.clone()).unwrap_err();
            assert!(
                matches!(err, ManifestError::Invalid { .. }),
                "{bad:?}: {err}"
            );
            assert_eq!(err.path(), Path::new("/r"));
        }
    }
}
