//! The store itself: opening it and the atomic ways a blob can enter it.
//!
//! A blob appears only by `link`/`rename` of a complete file, so a reader never sees a partial
//! blob, and an existing blob is never replaced (EEXIST is how a dedup hit shows up).

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use vrift_manifest::Hash;

use crate::error::{CasError, Result};
use crate::layout::{blob_rel_into, shard_index, BLOB_DIR, MAX_REL_LEN};
use crate::seal;
use crate::shard::ShardSet;
use crate::sys;
use crate::temp::{Naming, TempFile};

/// Write bits are stripped from every blob: a blob's name is its content, so nobody may write it.
pub const WRITE_BITS: u32 = 0o222;

/// Sub-directories of a store root. All state lives under the root, so one directory is one
/// complete store and a custom `--the-source-root` never scatters files into its parent.
pub const TMP_DIR: &str = "tmp";
pub const MANIFEST_DIR: &str = "manifests";
pub const LOCK_DIR: &str = "locks";
/// Marker file: every blob of the store is sealed (see [`Cas::all_sealed`]).
pub const SEALED_MARKER: &str = "sealed-v1";
/// Damaged blobs found by [`Cas::check_blob`] are moved here (see there).
pub const QUARANTINE_DIR: &str = "quarantine";

/// What [`Cas::check_blob`] found.
#[derive(Debug, Clone, Copy)]
pub enum BlobCheck {
    /// The blob holds what its name says (sealed, or re-hashed just now); its `lstat`.
    Sound(crate::sys::Stat),
    /// No such blob.
    Missing,
    /// The blob did not hold what its name says and has been quarantined.
    Damaged,
}

/// How a copy into the store was made, for metrics and the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Reflink,
    Copy,
    /// Another thread or process stored the same content first: nothing was added.
    Existed,
}

/// A content-addressable store rooted at one directory.
pub struct Cas {
    root: PathBuf,
    blob_dir: PathBuf,
    blob_fd: OwnedFd,
    shards: ShardSet,
    tmp_counter: AtomicU64,
    /// How temp files get their blob names here (probed on the first write).
    naming: std::sync::OnceLock<Naming>,
}

impl Cas {
    /// Opens a store, creating its skeleton on first use (but not the 65,536 shard directories,
    /// which appear on demand).
    pub fn open(root: &Path) -> Result<Cas> {
        let fresh = !root.join(BLOB_DIR).is_dir();
        for sub in [BLOB_DIR, TMP_DIR, MANIFEST_DIR, LOCK_DIR] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| CasError::io(&p, e))?;
        }
        let cas = Self::open_existing(root)?;
        if fresh {
            // Every blob of a store made by this version is sealed when it enters.
            cas.mark_all_sealed()?;
        }
        Ok(cas)
    }

    /// Whether every blob of this store is sealed (it was made by a vrift that seals, or a
    /// `vrift verify` checked and sealed every older blob): then a blob that is not sealed is
    /// damaged, and the shim, which cannot re-hash, refuses to serve it.
    pub fn all_sealed(&self) -> bool {
        self.root.join(SEALED_MARKER).exists()
    }

    /// Records that every blob is sealed (see [`all_sealed`](Self::all_sealed)).
    pub fn mark_all_sealed(&self) -> Result<()> {
        let p = self.root.join(SEALED_MARKER);
        fs::write(
            &p,
            b"every blob of this store is sealed (mtime nanoseconds .999999999)\n",
        )
        .map_err(|e| CasError::io(&p, e))
    }

    /// Opens a store that must already exist; maintenance commands use this so a mistyped
    /// root is an error instead of a new empty store.
    pub fn open_existing(root: &Path) -> Result<Cas> {
        let root = fs::canonicalize(root).map_err(|e| CasError::io(root, e))?;
        let blob_dir = root.join(BLOB_DIR);
        if !blob_dir.is_dir() {
            return Err(CasError::NotAStore { path: root });
        }
        let blob_fd = sys::open_dir_path(&blob_dir).map_err(|e| CasError::io(&blob_dir, e))?;
        let shards = ShardSet::default();
        // 256 names at most: which `ab/` exist tells which shards certainly do not.
        let tops = fs::read_dir(&blob_dir).map_err(|e| CasError::io(&blob_dir, e))?;
        for ent in tops.flatten() {
            if let Some(top) = hex_pair(ent.file_name().as_bytes()) {
                shards.set_top(top);
            }
        }
        Ok(Cas {
            root,
            blob_dir,
            blob_fd,
            shards,
            tmp_counter: AtomicU64::new(0),
            naming: std::sync::OnceLock::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this process can write what an ingest writes (blobs, temp files, manifests,
    /// the registry): checked before any source file is touched, so a store shared with too
    /// few rights fails up front instead of after stripping the user's write bits.
    pub fn check_writable(&self) -> std::result::Result<(), (PathBuf, io::Error)> {
        for dir in [BLOB_DIR, TMP_DIR, MANIFEST_DIR] {
            let p = self.root.join(dir);
            rustix::fs::access(
                &p,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            )
            .map_err(|e| (p.clone(), io::Error::from(e)))?;
        }
        let reg = crate::registry::registry_path(&self.root);
        match fs::OpenOptions::new().append(true).open(&reg) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                rustix::fs::access(&self.root, rustix::fs::Access::WRITE_OK)
                    .map_err(|e| (self.root.clone(), io::Error::from(e)))?;
            }
            Err(e) => return Err((reg, e)),
        }
        Ok(())
    }

    pub fn blob_dir(&self) -> &Path {
        &self.blob_dir
    }

    /// Absolute path of a blob (which may or may not exist).
    pub fn blob_path(&self, hash: &Hash, size: u64) -> PathBuf {
        let mut rel = Vec::with_capacity(MAX_REL_LEN);
        blob_rel_into(hash, size, &mut rel);
        self.blob_dir.join(std::ffi::OsStr::from_bytes(&rel))
    }

    /// The blob's path relative to the blob directory, for `*at` calls (io_uring backends).
    pub fn blob_rel_c(hash: &Hash, size: u64) -> CString {
        Self::rel_c(hash, size)
    }

    /// The blob directory as a raw fd, for `*at` calls relative to it (stays open as long as
    /// the `Cas`).
    pub fn blob_dir_fd(&self) -> RawFd {
        self.blob_fd.as_raw_fd()
    }

    /// The blob directory, for `*at` calls relative to it.
    pub fn blob_fd(&self) -> BorrowedFd<'_> {
        self.blob_fd.as_fd()
    }

    /// Whether this process already knows the `ab/cd/` shard of `hash` exists.
    pub fn shard_known(&self, hash: &Hash) -> bool {
        self.shards.has_leaf(shard_index(hash))
    }

    /// Records that the shard (and its parent) of `hash` exists, e.g. after another engine
    /// created it.
    pub fn mark_shard(&self, hash: &Hash) {
        let idx = shard_index(hash);
        self.shards.set_top(idx >> 8);
        self.shards.set_leaf(idx);
    }

    /// Whether the parent `ab/` of the shard of `hash` is known to exist.
    pub fn shard_parent_known(&self, hash: &Hash) -> bool {
        self.shards.has_top(shard_index(hash) >> 8)
    }

    /// Relative names of the shard's parent (`ab`) and the shard itself (`ab/cd`).
    pub fn shard_names(hash: &Hash) -> (CString, CString) {
        let mut hex = [0u8; 64];
        vrift_manifest::hex_into(hash, &mut hex);
        let top = sys::cbytes(&hex[0..2]).expect("ascii");
        let mut leaf = [0u8; 5];
        leaf[..2].copy_from_slice(&hex[0..2]);
        leaf[2] = b'/';
        leaf[3..].copy_from_slice(&hex[2..4]);
        (top, sys::cbytes(&leaf).expect("ascii"))
    }

    fn rel_c(hash: &Hash, size: u64) -> CString {
        let mut rel = Vec::with_capacity(MAX_REL_LEN + 1);
        blob_rel_into(hash, size, &mut rel);
        // hex digits and ASCII only: no interior NUL.
        CString::new(rel).expect("blob names are ASCII")
    }

    fn bfd(&self) -> BorrowedFd<'_> {
        self.blob_fd.as_fd()
    }

    /// Learns which shards under the `ab/` of `hash` exist, listing it once per process.
    /// Afterwards [`shard_known`](Self::shard_known) is accurate for them (up to concurrent
    /// creators, whose work shows up as a harmless EEXIST).
    pub fn learn_shards(&self, hash: &Hash) {
        let top = shard_index(hash) >> 8;
        if !self.shards.has_top(top) || self.shards.is_listed(top) {
            return;
        }
        let mut hex = [0u8; 64];
        vrift_manifest::hex_into(hash, &mut hex);
        let dir = self.blob_dir.join(std::ffi::OsStr::from_bytes(&hex[0..2]));
        if let Ok(rd) = fs::read_dir(&dir) {
            for ent in rd.flatten() {
                if let Some(leaf) = hex_pair(ent.file_name().as_bytes()) {
                    self.shards.set_leaf((top << 8) | leaf);
                }
            }
            self.shards.set_listed(top);
        }
    }

    /// Makes sure the `ab/cd/` directory for `hash` exists. Cheap after the first call per
    /// shard; safe to race with other threads and processes.
    pub fn ensure_shard(&self, hash: &Hash) -> Result<()> {
        let idx = shard_index(hash);
        if self.shards.has_leaf(idx) {
            return Ok(());
        }
        self.learn_shards(hash);
        if self.shards.has_leaf(idx) {
            return Ok(());
        }
        let mut hex = [0u8; 64];
        vrift_manifest::hex_into(hash, &mut hex);
        let top = idx >> 8;
        if !self.shards.has_top(top) {
            let name = sys::cbytes(&hex[0..2]).expect("ascii");
            match sys::mkdirat(self.bfd(), &name, 0o777) {
                // Made by us, so empty: nothing to list.
                Ok(()) => self.shards.set_listed(top),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CasError::io(self.blob_dir.join(name.to_str().unwrap()), e)),
            }
            self.shards.set_top(top);
        }
        let mut leaf = [0u8; 5];
        leaf[..2].copy_from_slice(&hex[0..2]);
        leaf[2] = b'/';
        leaf[3..].copy_from_slice(&hex[2..4]);
        let name = sys::cbytes(&leaf).expect("ascii");
        match sys::mkdirat(self.bfd(), &name, 0o777) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CasError::io(self.blob_dir.join(name.to_str().unwrap()), e)),
        }
        self.shards.set_leaf(idx);
        Ok(())
    }

    /// Runs `op` on the blob's relative name once its shard exists. If the shard vanished
    /// anyway (ENOENT), it is created again and `op` retried once.
    fn with_shard<T>(
        &self,
        hash: &Hash,
        size: u64,
        mut op: impl FnMut(&CString) -> io::Result<T>,
    ) -> io::Result<T> {
        let rel = Self::rel_c(hash, size);
        // Keep the errno (ENOSPC creating a shard is the store's problem, not the file's).
        let shard_err = |e: CasError| match e.raw_os_error() {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::other(e.to_string()),
        };
        self.ensure_shard(hash).map_err(shard_err)?;
        match op(&rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.shards.clear_leaf(shard_index(hash));
                self.ensure_shard(hash).map_err(shard_err)?;
                op(&rel)
            }
            other => other,
        }
    }

    /// Hard-links an open file (the inode that was hashed) in as the blob.
    /// `Err(EEXIST)` means the blob already exists: a dedup hit. EXDEV, EMLINK and EPERM are
    /// returned as is, so the caller can fall back to a copy. `src_dir`/`src_name` name the
    /// file for kernels that refuse to link by descriptor.
    pub fn link_in(
        &self,
        file: BorrowedFd<'_>,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        hash: &Hash,
        size: u64,
    ) -> io::Result<()> {
        self.with_shard(hash, size, |rel| {
            match sys::link_fd(file, self.bfd(), rel) {
                // AT_EMPTY_PATH refused (no CAP_DAC_READ_SEARCH on older kernels: ENOENT):
                // link by name instead.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM | libc::EINVAL | libc::ENOENT)
                    ) =>
                {
                    sys::linkat(src_dir, src_name, self.bfd(), rel)
                }
                other => other,
            }
        })
    }

    /// Moves a source file in as the blob (phantom mode). Never replaces an existing blob.
    pub fn rename_in(&self, src: &Path, hash: &Hash, size: u64) -> io::Result<()> {
        let c = sys::cstring(src)?;
        self.with_shard(hash, size, |rel| {
            sys::rename_noreplace(sys::CWD, &c, self.bfd(), rel)
        })
    }

    /// Copies the open file `src` into the store as the blob `hash`/`size`, for the cases a
    /// link cannot serve: another file system (EXDEV), a full inode (EMLINK), a file we may
    /// not link (EPERM). The copy is made from the descriptor that was hashed — never by
    /// path, which may name something else by now — into a temp file, re-hashed as it is
    /// written, and linked in (read-only, sealed) only if it holds exactly what `hash` says;
    /// else [`CasError::Changed`] naming `origin` and nothing enters the store.
    pub fn copy_in_fd(
        &self,
        src: BorrowedFd<'_>,
        origin: &Path,
        hash: &Hash,
        size: u64,
        mode: u32,
    ) -> Result<CopyKind> {
        let t = self.temp_file("copy")?;
        let out = t.file();
        let reflinked = rustix::fs::ioctl_ficlone(out, src).is_ok();
        let (got, len) = if reflinked {
            hash_fd(out.as_fd(), &mut Vec::new()).map_err(|e| CasError::io(t.path(), e))?
        } else {
            copy_hashing(src, out).map_err(|e| match e {
                CopyError::Read(e) => CasError::io(origin, e),
                CopyError::Write(e) => CasError::io(t.path(), e),
            })?
        };
        if len != size || got != *hash {
            return Err(CasError::Changed {
                path: origin.to_path_buf(),
            });
        }
        let kind = if reflinked {
            CopyKind::Reflink
        } else {
            CopyKind::Copy
        };
        self.link_temp(&t, origin, hash, size, mode, kind)
    }

    /// Makes `tmp`, a complete file under `<root>/tmp` whose content the caller has just
    /// verified against `hash`/`size` (a download from a remote tier), the blob: read-only
    /// and sealed first, then linked into place, so the blob appears whole or not at all.
    /// `tmp` is removed either way. `Existed` means another process stored the same content
    /// first.
    pub fn insert_verified(
        &self,
        tmp: &Path,
        hash: &Hash,
        size: u64,
        mode: u32,
    ) -> Result<CopyKind> {
        let f = match File::open(tmp) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(tmp);
                return Err(CasError::io(tmp, e));
            }
        };
        let t = TempFile::adopt(f, tmp);
        self.link_temp(&t, tmp, hash, size, mode, CopyKind::Copy)
    }

    /// Stores `data`, which the caller has just checked against `hash`/`size` (a blob
    /// decoded from a remote pack), the way [`insert_verified`](Self::insert_verified) does.
    pub fn insert_bytes(&self, hash: &Hash, size: u64, data: &[u8], mode: u32) -> Result<CopyKind> {
        use std::io::Write;
        let t = self.temp_file("unpack")?;
        t.file()
            .write_all(data)
            .map_err(|e| CasError::io(t.path(), e))?;
        self.link_temp(&t, t.path(), hash, size, mode, CopyKind::Copy)
    }

    /// The shared tail of [`copy_in_fd`](Self::copy_in_fd) and
    /// [`insert_verified`](Self::insert_verified): size check, strip write bits, seal, link.
    fn link_temp(
        &self,
        t: &TempFile,
        origin: &Path,
        hash: &Hash,
        size: u64,
        mode: u32,
        kind: CopyKind,
    ) -> Result<CopyKind> {
        let (f, tmp) = (t.file(), t.path());
        let st = sys::fstat(f.as_fd()).map_err(|e| CasError::io(tmp, e))?;
        if st.st_size as u64 != size {
            return Err(CasError::Changed {
                path: origin.to_path_buf(),
            });
        }
        sys::fchmod(f.as_fd(), mode & 0o7777 & !WRITE_BITS).map_err(|e| CasError::io(tmp, e))?;
        seal::seal_fd(f.as_fd(), sys::mtime_ns(&st)).map_err(|e| CasError::io(tmp, e))?;
        match self.with_shard(hash, size, |rel| t.link_as(self.bfd(), rel)) {
            Ok(()) => Ok(kind),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(CopyKind::Existed),
            Err(e) => Err(CasError::io(self.blob_path(hash, size), e)),
        }
    }

    /// Looks at a blob before it is used (linked to a user's path, served, pushed, trusted
    /// as a dedup target): one `fstatat` when the blob is sealed (see [`seal`]). A blob that
    /// is not is read and hashed: if it holds what its name says it is sealed (when this
    /// process may) and sound, else it is moved to `<store>/quarantine/` so nobody uses it
    /// again and the next ingest of that content stores it afresh.
    pub fn check_blob(&self, hash: &Hash, size: u64) -> io::Result<BlobCheck> {
        let rel = Self::rel_c(hash, size);
        let st = match sys::lstatat(self.bfd(), &rel) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(BlobCheck::Missing),
            Err(e) => return Err(e),
        };
        if seal::is_sealed(&st, size) {
            if seal::is_legacy(&st) {
                return Ok(BlobCheck::Sound(self.reseal(hash, size, st)));
            }
            return Ok(BlobCheck::Sound(st));
        }
        self.rehash_blob(hash, size)
    }

    /// Moves a blob with the old seal to the new one (see `seal`); best effort: a blob
    /// another user owns keeps the old seal, which is as strong. Its `stat` after.
    fn reseal(&self, hash: &Hash, size: u64, st: crate::sys::Stat) -> crate::sys::Stat {
        let Ok(f) = self.open_blob(hash, size) else {
            return st;
        };
        // The name may have been replaced since the caller's `stat`: reseal only that inode.
        match sys::fstat(f.as_fd()) {
            Ok(now)
                if now.st_ino == st.st_ino && now.st_dev == st.st_dev && seal::is_legacy(&now) => {}
            _ => return st,
        }
        match seal::seal_fd(f.as_fd(), sys::mtime_ns(&st)) {
            Ok(()) => sys::fstat(f.as_fd()).unwrap_or(st),
            Err(_) => st,
        }
    }

    /// The slow half of [`check_blob`](Self::check_blob): reads the whole blob.
    pub fn rehash_blob(&self, hash: &Hash, size: u64) -> io::Result<BlobCheck> {
        let rel = Self::rel_c(hash, size);
        let f = match self.open_blob(hash, size) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(BlobCheck::Missing),
            Err(e) => return Err(e),
        };
        let st = sys::fstat(f.as_fd())?;
        let good = st.st_mode & libc::S_IFMT == libc::S_IFREG && {
            let (got, len) = hash_fd(f.as_fd(), &mut Vec::new())?;
            len == size && got == *hash
        };
        if !good {
            self.quarantine(&rel, &st)?;
            return Ok(BlobCheck::Damaged);
        }
        // Best effort: a blob another user owns cannot be sealed by us; it stays sound for
        // this use and is hashed again next time.
        let _ = seal::seal_fd(f.as_fd(), sys::mtime_ns(&st));
        Ok(BlobCheck::Sound(sys::fstat(f.as_fd())?))
    }

    /// Opens a blob for reading, never following a symlink planted in its place.
    pub fn open_blob(&self, hash: &Hash, size: u64) -> io::Result<File> {
        let rel = Self::rel_c(hash, size);
        let fd = rustix::fs::openat(
            self.blob_fd.as_fd(),
            rel.as_c_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Moves the damaged blob `rel` (as `st` describes it) out of `blake3/` into
    /// `<store>/quarantine/`, if the name still refers to that inode. Kept, not deleted: it
    /// may be the only trace of what was there; `gc --delete` empties the quarantine.
    fn quarantine(&self, rel: &CStr, st: &crate::sys::Stat) -> io::Result<()> {
        let now = sys::lstatat(self.bfd(), rel);
        match now {
            Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {}
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
        let dir = self.root.join(QUARANTINE_DIR);
        fs::create_dir_all(&dir)?;
        let name = rel
            .to_bytes()
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or_default();
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let mut dest = name.to_vec();
        dest.extend_from_slice(format!(".{}-{n}", pid()).as_bytes());
        let dest = dir.join(std::ffi::OsStr::from_bytes(&dest));
        let d = sys::cstring(&dest)?;
        sys::rename_noreplace(self.bfd(), rel, sys::CWD, &d)
    }

    /// A fresh name under `<root>/tmp`, unique across threads and processes.
    /// A new temp file for a blob's bytes (see [`crate::temp`]).
    fn temp_file(&self, what: &str) -> Result<TempFile> {
        let dir = self.root.join(TMP_DIR);
        let naming = *self
            .naming
            .get_or_init(|| Naming::probe(&dir, &self.temp_path("probe")));
        let named = self.temp_path(what);
        TempFile::create(&dir, named, naming).map_err(|e| CasError::io(&dir, e))
    }

    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(TMP_DIR)
            .join(format!(".{what}-{}-{n}", pid()))
    }

    /// `lstat` of a blob, or the error (ENOENT when absent).
    pub fn blob_stat(&self, hash: &Hash, size: u64) -> io::Result<crate::sys::Stat> {
        let rel = Self::rel_c(hash, size);
        sys::lstatat(self.bfd(), &rel)
    }

    pub fn has_blob(&self, hash: &Hash, size: u64) -> bool {
        self.blob_stat(hash, size).is_ok()
    }

    /// Removes write bits from a blob left writable (e.g. by a crash between link and chmod).
    pub fn protect_blob(&self, hash: &Hash, size: u64, mode: u32) -> io::Result<()> {
        let rel = Self::rel_c(hash, size);
        sys::fchmodat(self.bfd(), &rel, mode & 0o7777 & !WRITE_BITS)
    }

    /// Hard-links a blob to `dest` (which must not exist). EMLINK/EXDEV are returned so the
    /// caller can copy instead.
    pub fn link_out(&self, hash: &Hash, size: u64, dest: &Path) -> io::Result<()> {
        let rel = Self::rel_c(hash, size);
        let d = sys::cstring(dest)?;
        sys::linkat(self.bfd(), &rel, sys::CWD, &d)
    }

    /// Atomically replaces `dest` by a hard link to the blob: link to a temp name beside it,
    /// then rename over it. At no moment is `dest` missing or partial.
    pub fn replace_with_blob(&self, hash: &Hash, size: u64, dest: &Path) -> io::Result<()> {
        let parent = dest.parent().unwrap_or(Path::new("."));
        let dir = sys::open_dir_path(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })?;
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let name = sys::cbytes(name.as_bytes())?;
        self.replace_with_blob_at(hash, size, dir.as_fd(), &name)
    }

    /// [`replace_with_blob`](Self::replace_with_blob) for the entry `name` of the open
    /// directory `dir`: every step resolves one name.
    pub fn replace_with_blob_at(
        &self,
        hash: &Hash,
        size: u64,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> io::Result<()> {
        let rel = Self::rel_c(hash, size);
        let tmp = sibling_temp_name(self.tmp_counter.fetch_add(1, Ordering::Relaxed));
        let d = dir;
        sys::linkat(self.bfd(), &rel, d, &tmp)?;
        if let Err(e) = sys::renameat(d, &tmp, d, name) {
            let _ = sys::unlinkat(d, &tmp);
            return Err(e);
        }
        // POSIX: renaming one link of an inode over another link of the same inode succeeds
        // and does nothing (a concurrent ingest linked `dest` first). Drop the temp name then.
        match sys::unlinkat(d, &tmp) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes back a blob this process has just linked or moved in, when its inode turned out
    /// to change after it was hashed (a writer that had the file open before the ingest stripped
    /// its write bits): the blob's name no longer says what it holds. The name is removed only
    /// while it still refers to inode `dev`/`ino`, so a blob stored by anyone else stays.
    /// `Ok(false)`: the name was gone or was another inode.
    pub fn withdraw_blob(&self, hash: &Hash, size: u64, dev: u64, ino: u64) -> io::Result<bool> {
        let rel = Self::rel_c(hash, size);
        match sys::lstatat(self.bfd(), &rel) {
            Ok(st) if st.st_dev == dev && st.st_ino == ino => {
                sys::unlinkat(self.bfd(), &rel)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a blob (gc, verify --repair). Other hard links to the inode are untouched.
    pub fn remove_blob(&self, hash: &Hash, size: u64) -> io::Result<()> {
        let rel = Self::rel_c(hash, size);
        sys::unlinkat(self.bfd(), &rel)
    }
}

/// Prefix of the temp names put beside project files; the walker ignores them, so a crash
/// between link and rename never adds a stray entry to a manifest.
pub const SIBLING_TEMP_PREFIX: &[u8] = b".vrift-tmp-";

/// The process id, asked of the kernel once (it is part of every temp name).
pub fn pid() -> u32 {
    use std::sync::OnceLock;
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// A temp name for beside a project file, unique across threads and processes.
pub fn sibling_temp_name(n: u64) -> CString {
    let mut name = SIBLING_TEMP_PREFIX.to_vec();
    name.extend_from_slice(format!("{}-{n}", pid()).as_bytes());
    CString::new(name).expect("prefix and digits hold no NUL")
}

/// BLAKE3 and length of everything `fd` holds, read from offset 0 (whatever the descriptor's
/// file position: the hash stage has already read it to the end).
pub fn hash_fd(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<(Hash, u64)> {
    const CHUNK: usize = 1 << 20;
    if buf.len() < CHUNK {
        buf.resize(CHUNK, 0);
    }
    let mut h = blake3::Hasher::new();
    let mut off = 0u64;
    loop {
        let n = match rustix::io::pread(fd, &mut buf[..CHUNK], off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok((*h.finalize().as_bytes(), off))
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies everything `src` holds (from offset 0) to `out`, hashing what it writes.
fn copy_hashing(src: BorrowedFd<'_>, out: &File) -> std::result::Result<(Hash, u64), CopyError> {
    use std::io::Write;
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut h = blake3::Hasher::new();
    let mut off = 0u64;
    let mut w = out;
    loop {
        let n = match rustix::io::pread(src, &mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(CopyError::Read(e.into())),
        };
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        off += n as u64;
    }
    Ok((*h.finalize().as_bytes(), off))
}

/// `ab` as a lowercase hex byte (0..256), or `None` for any other name.
fn hex_pair(name: &[u8]) -> Option<usize> {
    let v = |c: u8| match c {
        b'0'..=b'9' => Some((c - b'0') as usize),
        b'a'..=b'f' => Some((c - b'a' + 10) as usize),
        _ => None,
    };
    match name {
        [a, b] => Some(v(*a)? << 4 | v(*b)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn hash_of(b: &[u8]) -> Hash {
        *blake3::hash(b).as_bytes()
    }

    #[test]
    fn link_in_then_dedup_is_eexist() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"same").unwrap();
        let b = dir.path().join("b");
        fs::write(&b, b"same").unwrap();
        let h = hash_of(b"same");
        let d = sys::open_dir_path(dir.path()).unwrap();
        let fa = File::open(&a).unwrap();
        cas.link_in(fa.as_fd(), d.as_fd(), c"a", &h, 4).unwrap();
        assert_eq!(fs::read(cas.blob_path(&h, 4)).unwrap(), b"same");
        let fb = File::open(&b).unwrap();
        let err = cas.link_in(fb.as_fd(), d.as_fd(), c"b", &h, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        cas.replace_with_blob(&h, 4, &b).unwrap();
        assert_eq!(
            fs::metadata(&b).unwrap().ino(),
            fs::metadata(cas.blob_path(&h, 4)).unwrap().ino()
        );
        // no temp files left beside b
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn rename_in_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let h = hash_of(b"x");
        let a = dir.path().join("a");
        fs::write(&a, b"x").unwrap();
        cas.rename_in(&a, &h, 1).unwrap();
        assert!(!a.exists());
        let b = dir.path().join("b");
        fs::write(&b, b"y").unwrap();
        let err = cas.rename_in(&b, &h, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(cas.blob_path(&h, 1)).unwrap(), b"x");
    }

    #[test]
    fn copy_in_is_read_only_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"content").unwrap();
        let h = hash_of(b"content");
        let fa = File::open(&a).unwrap();
        cas.copy_in_fd(fa.as_fd(), &a, &h, 7, 0o755).unwrap();
        let p = cas.blob_path(&h, 7);
        assert_eq!(fs::read(&p).unwrap(), b"content");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o555
        );
        assert_ne!(
            fs::metadata(&p).unwrap().ino(),
            fs::metadata(&a).unwrap().ino()
        );
        // a second copy of the same content is a no-op, not an error
        assert_eq!(
            cas.copy_in_fd(fa.as_fd(), &a, &h, 7, 0o644).unwrap(),
            CopyKind::Existed
        );
        assert!(seal::is_sealed(&cas.blob_stat(&h, 7).unwrap(), 7));
        assert_eq!(fs::read_dir(cas.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn insert_verified_links_read_only_and_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let h = hash_of(b"pulled");
        let tmp = cas.temp_path("pull");
        fs::write(&tmp, b"pulled").unwrap();
        assert_eq!(
            cas.insert_verified(&tmp, &h, 6, 0o644).unwrap(),
            CopyKind::Copy
        );
        let p = cas.blob_path(&h, 6);
        assert_eq!(fs::read(&p).unwrap(), b"pulled");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert!(!tmp.exists());
        let tmp2 = cas.temp_path("pull");
        fs::write(&tmp2, b"pulled").unwrap();
        assert_eq!(
            cas.insert_verified(&tmp2, &h, 6, 0o644).unwrap(),
            CopyKind::Existed
        );
        // a short file never becomes the blob
        let h2 = hash_of(b"whole");
        let tmp3 = cas.temp_path("pull");
        fs::write(&tmp3, b"who").unwrap();
        assert!(cas.insert_verified(&tmp3, &h2, 5, 0o644).is_err());
        assert!(!cas.has_blob(&h2, 5));
        assert_eq!(fs::read_dir(cas.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn copy_in_notices_size_change() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"longer content").unwrap();
        let fa = File::open(&a).unwrap();
        let h = hash_of(b"short");
        assert!(matches!(
            cas.copy_in_fd(fa.as_fd(), &a, &h, 5, 0o644),
            Err(CasError::Changed { .. })
        ));
        assert!(!cas.has_blob(&h, 5));
        // Same size, other bytes: the copy is re-hashed and refused.
        let h = hash_of(b"LONGER CONTENT");
        assert!(matches!(
            cas.copy_in_fd(fa.as_fd(), &a, &h, 14, 0o644),
            Err(CasError::Changed { .. })
        ));
        assert!(!cas.has_blob(&h, 14));
        assert_eq!(fs::read_dir(cas.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    /// A blob sealed by an earlier version (`.999999999`) is trusted without a re-hash and
    /// moved to the current seal, keeping its second (so Python's `.pyc` check holds).
    #[test]
    fn check_blob_moves_a_legacy_seal_to_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"content").unwrap();
        let h = hash_of(b"content");
        let fa = File::open(&a).unwrap();
        cas.copy_in_fd(fa.as_fd(), &a, &h, 7, 0o644).unwrap();
        let p = cas.blob_path(&h, 7);
        let legacy = std::time::UNIX_EPOCH
            + std::time::Duration::new(1_796_520_359, seal::LEGACY_SEAL_NSEC as u32);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(legacy)
            .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
        let before = cas.blob_stat(&h, 7).unwrap();
        assert!(seal::is_sealed(&before, 7) && seal::is_legacy(&before));
        let BlobCheck::Sound(after) = cas.check_blob(&h, 7).unwrap() else {
            panic!("a legacy-sealed blob is sound");
        };
        assert_eq!(after.st_mtime, 1_796_520_359, "same second");
        assert_eq!(after.st_mtime_nsec as i64, seal::SEAL_NSEC);
        assert_eq!(after.st_ino, before.st_ino, "the same inode, not a copy");
    }

    #[test]
    fn check_blob_trusts_seals_rehashes_the_rest_and_quarantines_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(&dir.path().join("store")).unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"content").unwrap();
        let h = hash_of(b"content");
        let fa = File::open(&a).unwrap();
        cas.copy_in_fd(fa.as_fd(), &a, &h, 7, 0o644).unwrap();
        assert!(matches!(
            cas.check_blob(&h, 7).unwrap(),
            BlobCheck::Sound(_)
        ));
        let p = cas.blob_path(&h, 7);
        // An old store's blob: right content, no seal. Re-hashed, then sealed.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let f = File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500))
            .unwrap();
        assert!(!seal::is_sealed(&cas.blob_stat(&h, 7).unwrap(), 7));
        assert!(matches!(
            cas.check_blob(&h, 7).unwrap(),
            BlobCheck::Sound(_)
        ));
        assert!(seal::is_sealed(&cas.blob_stat(&h, 7).unwrap(), 7));
        // Written in place (same size): found, quarantined, gone from blake3/.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::os::unix::fs::FileExt::write_at(&f, b"CONTENT", 0).unwrap();
        assert!(matches!(cas.check_blob(&h, 7).unwrap(), BlobCheck::Damaged));
        assert!(!cas.has_blob(&h, 7));
        assert!(matches!(cas.check_blob(&h, 7).unwrap(), BlobCheck::Missing));
        let q: Vec<_> = fs::read_dir(cas.root().join(QUARANTINE_DIR))
            .unwrap()
            .collect();
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_reopened_store_learns_its_shards_by_listing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let h = hash_of(b"x");
        {
            let cas = Cas::open(&root).unwrap();
            cas.ensure_shard(&h).unwrap();
        }
        let cas = Cas::open(&root).unwrap();
        assert!(cas.shard_parent_known(&h), "tops are read at open");
        assert!(!cas.shard_known(&h), "leaves only once their top is listed");
        cas.learn_shards(&h);
        assert!(cas.shard_known(&h));
        // Same top, other leaf: known to be missing, created on demand.
        let mut other = h;
        other[1] ^= 1;
        assert!(!cas.shard_known(&other));
        cas.ensure_shard(&other).unwrap();
        assert!(cas.blob_path(&other, 1).parent().unwrap().is_dir());
    }

    #[test]
    fn open_existing_refuses_non_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Cas::open_existing(dir.path()),
            Err(CasError::NotAStore { .. })
        ));
    }
}
