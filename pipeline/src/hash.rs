//! Stage 3: read each file once and BLAKE3 it, noticing files that change under us.
//!
//! Small files (the vast majority in `node_modules`) are read whole into a per-thread buffer;
//! large ones are streamed in 1 MiB reads. We deliberately do not `mmap`: a file truncated
//! by another process while mapped raises SIGBUS and would kill the whole ingest.
//! The open descriptor travels on to the place stage, which links *that* inode into the store,
//! so a path swapped between hashing and linking cannot smuggle in other content.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rustix::fs::{Mode, OFlags};

use flume::{Receiver, Sender};
use vrift_manifest::Hash;

use crate::item::{FileItem, Hashed, Stat};
use crate::report::{Counters, IssueKind};

/// Files up to this size are read in one go into a reused buffer.
const WHOLE_READ_MAX: u64 = 1 << 20;
const CHUNK: usize = 1 << 20;
/// How often a file that keeps changing is re-read before we give up on it.
const ATTEMPTS: usize = 3;

/// Runs one hash worker until the input channel closes.
pub fn hash_stage(
    rx: Receiver<Vec<FileItem>>,
    tx: Sender<Vec<Hashed>>,
    root: &Path,
    counters: &Counters,
) {
    let mut buf = Vec::new();
    for batch in &rx {
        if counters.quitting() {
            // Another stage failed: nothing of this run will be published.
            return;
        }
        let t = Instant::now();
        Counters::sub_queue(&counters.queue_hash, batch.len() as u64);
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            // The stage-failure tests need a stage that dies mid-run.
            #[cfg(test)]
            if item.rel.name_bytes() == crate::item::TEST_PANIC_NAME {
                panic!("injected by a test");
            }
            match hash_file(&item, &mut buf) {
                Ok((_, _, st)) if is_secret(&item, &st, &buf) => {
                    // A key file holding a private key (or registry config with a token):
                    // never stored, listed as excluded.
                    use std::sync::atomic::Ordering::Relaxed;
                    counters.files.fetch_sub(1, Relaxed);
                    counters.bytes.fetch_sub(st.size, Relaxed);
                    Counters::add(&counters.bytes_excluded, st.size);
                    counters.exclude(item.path(root), true);
                }
                Ok((hash, file, st)) => {
                    Counters::add(&counters.hashed_files, 1);
                    Counters::add(&counters.hashed_bytes, st.size);
                    out.push(Hashed {
                        item,
                        hash,
                        file,
                        st,
                    });
                }
                Err(e) => {
                    Counters::add(&counters.bytes_error, item.st.size);
                    counters.issue(e.kind(), item.path(root), e);
                }
            }
        }
        Counters::add(&counters.hash_ns, t.elapsed().as_nanos() as u64);
        if !out.is_empty() {
            Counters::add(&counters.queue_place, out.len() as u64);
            if tx.send(out).is_err() {
                return;
            }
        }
    }
}

/// Whether the filter asked to look inside `item` and what was read (still in `buf`: small
/// files are read whole) is a secret.
fn is_secret(item: &FileItem, st: &Stat, buf: &[u8]) -> bool {
    match item.inspect {
        Some(kind) if st.size <= WHOLE_READ_MAX => buf
            .get(..st.size as usize)
            .is_some_and(|content| kind.is_secret(content)),
        _ => false,
    }
}

/// Why a file could not be hashed; the message names no path (the caller adds it).
#[derive(Debug)]
pub enum HashError {
    Open(io::Error),
    Read(io::Error),
    NotRegular,
    Changed,
}

impl HashError {
    /// How the run counts it.
    pub fn kind(&self) -> IssueKind {
        match self {
            HashError::Open(_) | HashError::Read(_) => IssueKind::Unreadable,
            HashError::NotRegular | HashError::Changed => IssueKind::Changed,
        }
    }
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::Open(e) => write!(f, "cannot open: {e}"),
            HashError::Read(e) => write!(f, "cannot read: {e}"),
            HashError::NotRegular => write!(f, "is no longer a regular file"),
            HashError::Changed => {
                write!(f, "file kept changing while it was being hashed; skipped")
            }
        }
    }
}

fn fstat(file: &File) -> Result<Stat, HashError> {
    vrift_cas::sys::fstat(file.as_fd())
        .map(|st| Stat::from_rustix(&st))
        .map_err(HashError::Read)
}

/// Whether `O_NOATIME` may be asked for (only the file's owner or CAP_FOWNER may; the first
/// EPERM turns it off for the rest of the run).
static NOATIME: AtomicBool = AtomicBool::new(true);

/// Hashes one file found by the walk, opened by name relative to its directory.
///
/// Reading does not touch the file's atime (`O_NOATIME`): an ingest is not a use of the
/// file, and under `relatime` the first read of a freshly installed file would otherwise
/// dirty its inode (2% of an ingest's CPU here, in `touch_atime`).
pub fn hash_file(item: &FileItem, buf: &mut Vec<u8>) -> Result<(Hash, File, Stat), HashError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let open = |flags| rustix::fs::openat(item.dir.fd(), item.rel.name(), flags, Mode::empty());
    let opened = if NOATIME.load(Ordering::Relaxed) {
        match open(flags | OFlags::NOATIME) {
            Err(rustix::io::Errno::PERM) => {
                NOATIME.store(false, Ordering::Relaxed);
                open(flags)
            }
            other => other,
        }
    } else {
        open(flags)
    };
    let fd = opened.map_err(|e| HashError::Open(e.into()))?;
    hash_open(File::from(fd), item.st, buf)
}

/// Hashes an already open file (phantom mode's re-check of a file changed since the
/// manifest was written), `before` being its `fstat`.
pub fn hash_fd(
    file: File,
    before: Stat,
    buf: &mut Vec<u8>,
) -> Result<(Hash, File, Stat), HashError> {
    use std::io::Seek;
    (&file)
        .seek(io::SeekFrom::Start(0))
        .map_err(HashError::Read)?;
    hash_open(file, before, buf)
}

/// The walk's `stat` is the "before" picture when it is still the same inode; a fresh
/// `fstat` after reading is the "after" picture. Size or mtime moving between them means the
/// bytes we hashed may be a mix of old and new: read again.
fn hash_open(file: File, before: Stat, buf: &mut Vec<u8>) -> Result<(Hash, File, Stat), HashError> {
    let mut before = before;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            before = fstat(&file)?;
        }
        let (hash, read) = hash_contents(&file, before.size, buf)?;
        let after = fstat(&file)?;
        if after.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(HashError::NotRegular);
        }
        if after.ino == before.ino
            && after.size == before.size
            && after.mtime_ns == before.mtime_ns
            && read == after.size
        {
            return Ok((hash, file, after));
        }
        // Different inode at the path than the walk saw, or modified: take a fresh "before".
        use std::io::Seek;
        (&file)
            .seek(io::SeekFrom::Start(0))
            .map_err(HashError::Read)?;
    }
    Err(HashError::Changed)
}

fn hash_contents(file: &File, expect: u64, buf: &mut Vec<u8>) -> Result<(Hash, u64), HashError> {
    if expect <= WHOLE_READ_MAX {
        // Ask for one byte more than the walk saw: a single read() then returns the whole file
        // and a file that grew shows up as a full buffer. (`read_to_end` would add an fstat and
        // an lseek per file; the caller's fstat already confirms nothing moved.)
        let want = expect as usize + 1;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut n = 0;
        while n < want {
            match read_at_most(file, &mut buf[n..want])? {
                0 => break,
                k => n += k,
            }
            if n as u64 == expect {
                // Regular files return short reads only at EOF; the size check after
                // hashing catches a file that grew in between.
                break;
            }
        }
        Ok((*blake3::hash(&buf[..n]).as_bytes(), n as u64))
    } else {
        let mut hasher = blake3::Hasher::new();
        if buf.len() < CHUNK {
            buf.resize(CHUNK, 0);
        }
        let mut total = 0u64;
        loop {
            match read_at_most(file, &mut buf[..CHUNK])? {
                0 => break,
                n => {
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
            }
        }
        Ok((*hasher.finalize().as_bytes(), total))
    }
}

fn read_at_most(mut file: &File, buf: &mut [u8]) -> Result<usize, HashError> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn item(path: PathBuf) -> FileItem {
        let md = std::fs::symlink_metadata(&path).unwrap();
        let dir = crate::item::SourceDir::open(path.parent().unwrap()).unwrap();
        let name = path.file_name().unwrap().as_encoded_bytes();
        FileItem {
            dir: std::sync::Arc::new(dir),
            rel: crate::item::RelPath::child(b"", name),
            st: Stat::from_metadata(&md),
            inspect: None,
        }
    }

    #[test]
    fn small_and_large_files_hash_like_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        for size in [0usize, 1, 4096, (1 << 20) + 17, 3 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            std::fs::write(&p, &data).unwrap();
            let (h, _, st) = hash_file(&item(p), &mut buf).unwrap();
            assert_eq!(h, *blake3::hash(&data).as_bytes(), "size {size}");
            assert_eq!(st.size, size as u64);
        }
    }

    #[test]
    fn a_file_replaced_after_the_walk_is_hashed_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"old").unwrap();
        let it = item(p.clone());
        let q = dir.path().join("g");
        std::fs::write(&q, b"newer content").unwrap();
        std::fs::rename(&q, &p).unwrap();
        let (h, _, st) = hash_file(&it, &mut Vec::new()).unwrap();
        assert_eq!(h, *blake3::hash(b"newer content").as_bytes());
        assert_eq!(st.size, 13);
    }

    #[test]
    fn hashing_leaves_the_atime_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"content").unwrap();
        // An atime older than the mtime: under relatime, any plain read would bump it.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_accessed(old))
            .unwrap();
        let before = std::fs::metadata(&p).unwrap().atime();
        hash_file(&item(p.clone()), &mut Vec::new()).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().atime(), before);
    }

    #[test]
    fn unreadable_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gone");
        std::fs::write(&p, b"x").unwrap();
        let it = item(p.clone());
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            hash_file(&it, &mut Vec::new()),
            Err(HashError::Open(_))
        ));
    }
}
