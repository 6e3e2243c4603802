//! The archived (rkyv) payload schema.
//!
//! Deliberately flat: one vector of fixed-size entries plus one byte string table.
//! Validating such an archive is a handful of bounds checks (no per-entry pointers
//! to chase), which keeps `Manifest::open` cheap even for 100k+ entries, and every
//! field can be read straight out of the mmap.
//!
//! Changing anything here changes the on-disk format: bump [`crate::format::VERSION`].

use rkyv::{Archive, Serialize};

/// One entry as stored. Paths and symlink targets live in [`ManifestData::strings`];
/// `*_off`/`*_len` are byte ranges into it.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryData {
    /// Start of the relative path in the string table.
    pub path_off: u32,
    /// Length of the relative path.
    pub path_len: u32,
    /// Start of the symlink target in the string table (empty for non-symlinks).
    pub target_off: u32,
    /// Length of the symlink target.
    pub target_len: u32,
    /// [`crate::Kind`] as its `u8` discriminant.
    pub kind: u8,
    /// Unix mode bits as recorded at ingest.
    pub mode: u32,
    /// Size in bytes (files; informational for other kinds).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// BLAKE3 of the content for files, all zero otherwise.
    pub hash: [u8; 32],
    /// Re-ingest cache: device of the file as left on disk after ingest.
    pub dev: u64,
    /// Re-ingest cache: inode of the file as left on disk after ingest.
    pub ino: u64,
    /// Re-ingest cache: mtime (ns) of the file as left on disk after ingest.
    pub cache_mtime_ns: i64,
    /// Index one past this entry's last descendant (`index + 1` for non-directories).
    pub subtree_end: u32,
}

/// The whole archived payload.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestData {
    /// Absolute directory the tree was ingested from (raw bytes).
    pub root: Vec<u8>,
    /// When the manifest was built, nanoseconds since the Unix epoch.
    pub created_unix_ns: i64,
    /// Entries in component-wise path order; entry 0 is the root directory (`""`).
    pub entries: Vec<EntryData>,
    /// Concatenated path and target bytes.
    pub strings: Vec<u8>,
}

// The archived layout is part of the file format. These fail to compile if a workspace
// feature (e.g. rkyv's `big_endian`, `unaligned` or `pointer_width_64`) changes it.
const _: () = assert!(std::mem::size_of::<ArchivedEntryData>() == 104);
const _: () = assert!(std::mem::align_of::<ArchivedEntryData>() == 8);
const _: () = assert!(std::mem::size_of::<ArchivedManifestData>() == 32);
