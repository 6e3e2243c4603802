//! The writable side of the view: a real directory (`VRIFT_UPPER`) that holds copies of
//! virtual files that were written to (copy-up), files and directories created inside
//! virtual directories, and whiteouts for deleted virtual entries.
//!
//! Layout of `<upper>`:
//! * `fs/<absolute virtual path>`: the mirror. A regular file or directory here wins over the
//!   manifest; a symlink whose target is [`WHITEOUT`] hides the path.
//! * `state`: a fixed-size open-addressing hash set, mmapped `MAP_SHARED` by every process
//!   of the run, of the (hashed) virtual paths that have anything in the mirror. A lookup only
//!   looks at the mirror when its path is in the set, so a run that never writes pays one
//!   load per lookup, and a child process sees its parent's writes at once.
//! * `empty/`: an empty directory; the real fd behind every virtual directory fd.
//! * `dl/<absolute virtual path>`: symlinks to blobs for `dlopen` (see the crate docs).
//! * `exec/`: executable copies of blobs that lack the execute bit.

use std::sync::atomic::AtomicU64;

use crate::path::PBuf;
use crate::real;

/// Symlink target that marks a deleted virtual path.
pub const WHITEOUT: &[u8] = upper_state::WHITEOUT;

use vrift_shim_core::upper_state;
/// Size of the `state` file.
pub const TABLE_BYTES: usize = upper_state::BYTES;

pub struct Upper {
    /// `<upper>` without trailing slash.
    pub dir: Box<[u8]>,
    /// `<upper>/fs`.
    pub mirror: Box<[u8]>,
    /// Write-through roots: a project run's own tree, which exists on disk. Below them the
    /// real directory *is* the mirror — what a command writes lands in the project, as it
    /// would without vrift, and a file on disk wins over the manifest — while whiteouts still
    /// go to the throwaway `fs/` (never into the user's tree).
    pub through: Vec<Box<[u8]>>,
    table: *const AtomicU64,
}

// SAFETY: the table pointer is a MAP_SHARED mapping that lives as long as the process and is
// only accessed through atomics.
unsafe impl Send for Upper {}
// SAFETY: as above.
unsafe impl Sync for Upper {}

impl Upper {
    /// Opens (creating if needed) the upper dir's state table and empty dir.
    pub fn open(dir: &[u8], through: Vec<Box<[u8]>>) -> Option<Upper> {
        let dir = crate::path::normalize_abs(dir)?;
        let dir: Box<[u8]> = dir.as_bytes().into();
        let mut mirror = PBuf::from(&dir)?;
        mirror.push(b"/fs")?;
        mkdir_p(mirror.as_bytes());
        let mut empty = PBuf::from(&dir)?;
        empty.push(b"/empty")?;
        mkdir_p(empty.as_bytes());
        let mut st = PBuf::from(&dir)?;
        st.push(b"/state")?;
        // SAFETY: plain syscalls on our own NUL-terminated buffers.
        let table = unsafe {
            let fd = real::open(
                st.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                0o600,
            );
            if fd < 0 {
                return None;
            }
            // Blocks allocated, never a sparse file (see `upper_state`); no room → no upper
            // layer (writes to the view fail with an error, the program is not killed).
            let mut s: libc::stat = std::mem::zeroed();
            if real::fstat(fd, &mut s) != 0
                || ((s.st_size as usize) < TABLE_BYTES
                    && libc::posix_fallocate(fd, 0, TABLE_BYTES as libc::off_t) != 0)
            {
                real::close(fd);
                return None;
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                TABLE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            real::close(fd);
            if p == libc::MAP_FAILED {
                return None;
            }
            p as *const AtomicU64
        };
        Some(Upper {
            dir,
            mirror: mirror.as_bytes().into(),
            through,
            table,
        })
    }

    fn table(&self) -> &upper_state::Table {
        // SAFETY: the mapping holds HEADER_WORDS + SLOTS words for the process's lifetime.
        unsafe {
            std::slice::from_raw_parts(self.table, upper_state::HEADER_WORDS + upper_state::SLOTS)
        }
    }

    /// Whether `virt` lies in a write-through root (see [`Upper::through`]).
    #[inline]
    pub fn is_through(&self, virt: &[u8]) -> bool {
        self.through.iter().any(|r| {
            virt.starts_with(r) && (virt.len() == r.len() || virt.get(r.len()) == Some(&b'/'))
        })
    }

    /// True if the mirror may hold something for `virt` (no false negatives). Below a
    /// write-through root too only what the run wrote is flagged: the other files on disk
    /// are what the (freshly refreshed) manifest says, and are served from it.
    #[inline]
    pub fn flagged(&self, virt: &[u8]) -> bool {
        upper_state::flagged(self.table(), virt)
    }

    /// Flags `virt` and every ancestor up to `/`.
    pub fn flag_with_ancestors(&self, virt: &[u8]) {
        upper_state::flag_with_ancestors(self.table(), virt);
    }

    /// The mirror path of a virtual path: where what is written to it goes (the path itself
    /// below a write-through root).
    ///
    /// Below a write-through root, only where the real parent directory exists: a tree
    /// offloaded to the store (`rm -rf node_modules`, served by the view) is never re-created
    /// on disk piecemeal — what a run writes there goes to the throwaway layer — so a
    /// directory on disk always means the user's own, complete one.
    pub fn mirror_of(&self, virt: &[u8]) -> Option<PBuf> {
        if self.is_through(virt) && real_dir_exists(crate::path::parent(virt)) {
            return PBuf::from(virt);
        }
        self.hidden_of(virt)
    }

    /// Where a whiteout for `virt` lives: always in the throwaway `fs/`.
    pub fn hidden_of(&self, virt: &[u8]) -> Option<PBuf> {
        let mut p = PBuf::from(&self.mirror)?;
        if virt != b"/" {
            p.push(virt)?;
        }
        Some(p)
    }

    /// `real` inside the mirror → its virtual path.
    pub fn unmirror<'a>(&self, real: &'a [u8]) -> Option<&'a [u8]> {
        let rest = real.strip_prefix(&*self.mirror)?;
        if rest.is_empty() {
            return Some(b"/");
        }
        rest.starts_with(b"/").then_some(rest)
    }

    /// A path inside the upper dir (`<upper>/<name>`).
    pub fn sub(&self, name: &[u8]) -> Option<PBuf> {
        let mut p = PBuf::from(&self.dir)?;
        p.push(b"/")?;
        p.push(name)?;
        Some(p)
    }
}

fn real_dir_exists(p: &[u8]) -> bool {
    let Some(p) = PBuf::from(p) else {
        return false;
    };
    // SAFETY: valid buffer and out pointer.
    unsafe {
        let mut s: libc::stat = std::mem::zeroed();
        real::stat(p.as_ptr(), &mut s) == 0 && s.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// What the mirror says about a path (the symlink target lives inline on purpose: hooks do
/// not allocate).
pub use vrift_shim_core::resolve::Mirror;

/// Inspects `<mirror>/virt` with one `lstat` (plus a `readlink` for symlinks). Below a
/// write-through root, the whiteout location first, then the real path.
pub fn probe(up: &Upper, virt: &[u8]) -> Mirror {
    if up.is_through(virt) {
        if let Some(h) = up.hidden_of(virt) {
            if let Mirror::Whiteout = probe_at(&h) {
                return Mirror::Whiteout;
            }
        }
    }
    let Some(mp) = up.mirror_of(virt) else {
        return Mirror::Nothing;
    };
    probe_at(&mp)
}

fn probe_at(mp: &PBuf) -> Mirror {
    // SAFETY: valid buffers.
    unsafe {
        let mut s: libc::stat = std::mem::zeroed();
        if real::lstat(mp.as_ptr(), &mut s) != 0 {
            return Mirror::Nothing;
        }
        match s.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Mirror::Dir,
            libc::S_IFLNK => {
                let mut t = [0u8; crate::path::MAX];
                let n = real::readlink(mp.as_ptr(), t.as_mut_ptr().cast(), t.len());
                if n < 0 {
                    return Mirror::Nothing;
                }
                let t = &t[..n as usize];
                if t == WHITEOUT {
                    Mirror::Whiteout
                } else {
                    PBuf::from(t).map_or(Mirror::Nothing, Mirror::Symlink)
                }
            }
            _ => Mirror::Other,
        }
    }
}

/// `mkdir -p` with the real functions (errors ignored: the caller's next step reports).
pub fn mkdir_p(path: &[u8]) {
    let Some(full) = PBuf::from(path) else {
        return;
    };
    // SAFETY: valid NUL-terminated buffers.
    unsafe {
        if real::mkdir(full.as_ptr(), 0o755) == 0 || real::errno() == libc::EEXIST {
            return;
        }
        for (i, &b) in path.iter().enumerate().skip(1) {
            if b == b'/' {
                if let Some(p) = PBuf::from(&path[..i]) {
                    real::mkdir(p.as_ptr(), 0o755);
                }
            }
        }
        real::mkdir(full.as_ptr(), 0o755);
    }
}

/// Removes whiteouts in a mirror directory and the directory itself (for `rmdir`).
pub fn remove_dir_with_whiteouts(mp: &PBuf) -> bool {
    // SAFETY: real functions on valid buffers; the DIR is closed before returning.
    unsafe {
        let d = real::opendir(mp.as_ptr());
        if !d.is_null() {
            loop {
                let e = real::readdir64(d);
                if e.is_null() {
                    break;
                }
                let name = crate::path::cbytes((*e).d_name.as_ptr());
                if name == b"." || name == b".." {
                    continue;
                }
                let Some(mut c) = PBuf::from(mp.as_bytes()) else {
                    continue;
                };
                if c.push(b"/").is_none() || c.push(name).is_none() {
                    continue;
                }
                if matches!(probe_real_whiteout(&c), Some(true)) {
                    real::unlink(c.as_ptr());
                }
            }
            real::closedir(d);
        }
        real::rmdir(mp.as_ptr()) == 0 || real::errno() == libc::ENOENT
    }
}

fn probe_real_whiteout(p: &PBuf) -> Option<bool> {
    let mut t = [0u8; 64];
    // SAFETY: valid buffers.
    let n = unsafe { real::readlink(p.as_ptr(), t.as_mut_ptr().cast(), t.len()) };
    if n < 0 {
        return None;
    }
    Some(&t[..n as usize] == WHITEOUT)
}

/// Writes a whiteout for `virt` into the mirror (replacing whatever is there). Below a
/// write-through root the real file goes (the user deleted it) and the whiteout, which hides
/// the manifest's entry, goes to the throwaway `fs/`.
pub fn whiteout(up: &Upper, virt: &[u8]) -> bool {
    if up.is_through(virt) {
        if let Some(real_path) = PBuf::from(virt) {
            // SAFETY: valid buffer.
            unsafe {
                let mut s: libc::stat = std::mem::zeroed();
                if real::lstat(real_path.as_ptr(), &mut s) == 0
                    && s.st_mode & libc::S_IFMT != libc::S_IFDIR
                {
                    real::unlink(real_path.as_ptr());
                }
            }
        }
    }
    let Some(mp) = up.hidden_of(virt) else {
        return false;
    };
    // A directory there holds only the whiteouts of its (now removed) children.
    remove_dir_with_whiteouts(&mp);
    mkdir_p(crate::path::parent(mp.as_bytes()));
    let Some(t) = PBuf::from(WHITEOUT) else {
        return false;
    };
    // SAFETY: valid buffers.
    let ok = unsafe {
        real::unlink(mp.as_ptr());
        real::symlink(t.as_ptr(), mp.as_ptr()) == 0
    };
    if ok {
        up.flag_with_ancestors(virt);
    }
    ok
}
