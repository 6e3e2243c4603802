//! Keeping writes off the blobs that view fds point at.
//!
//! A virtual file is opened read-only as its blob (see `open.rs`), so the fd a program holds
//! *is* the store's inode. The write paths through a name are covered by copy-up; this module
//! covers the ones through that fd: `fchmod`/`fchown`/`futimens`/`f*xattr` on it, and
//! reopening `/proc/self/fd/N` (or `/dev/fd/N`) for writing. Each is turned into a copy-up of
//! the open fd — the slot `N` is re-pointed at the private copy with its flags and offset —
//! after which the change lands on the copy; where no copy-up is possible, `EROFS`.
//!
//! The decisions are plain functions in `vrift-shim-core` (unit-tested there); nothing here
//! allocates.

use libc::c_int;

use crate::fdtab::{self, Tag};
use crate::open::copy_up;
use crate::path::PBuf;
use crate::real;
use crate::state::State;
use crate::vfs::{self, Node};

use vrift_shim_core::FdTag;
pub use vrift_shim_core::{fmt_proc_fd, proc_fd, Plan};

fn fstat(fd: c_int) -> Option<libc::stat> {
    // SAFETY: valid out pointer.
    unsafe {
        let mut s: libc::stat = std::mem::zeroed();
        (real::fstat(fd, &mut s) == 0).then_some(s)
    }
}

/// Whether `st` (an fd's `fstat`) is a blob of this store: a regular file on the store's
/// device, sealed (see `vrift_cas::seal`) or linked from the blob directory.
fn is_blob(state: &State, st: &libc::stat, fd: c_int) -> bool {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_dev != state.store_dev {
        return false;
    }
    if vrift_shim_core::is_seal_nsec(st.st_mtime_nsec) {
        return true;
    }
    // Unsealed: ask where the fd points.
    let mut name = [0u8; 32];
    let n = fmt_proc_fd(fd, &mut name);
    let Some(proc) = PBuf::from(&name[..n]) else {
        return false;
    };
    let mut link = [0u8; 4096];
    // SAFETY: valid buffers of the given length.
    let got = unsafe { real::readlink(proc.as_ptr(), link.as_mut_ptr().cast(), link.len()) };
    if got <= 0 {
        return false;
    }
    let link = &link[..got as usize];
    let dir: &[u8] = &state.blob_dir;
    link.starts_with(dir) && link.get(dir.len()) == Some(&b'/')
}

/// The plan for `fd` in this process.
pub fn plan_for(st: &State, fd: c_int) -> Plan {
    let tag = fdtab::get(fd);
    let Some(s) = fstat(fd) else {
        return Plan::Pass;
    };
    // A tag is trusted only while the fd still points at the inode it was given for
    // (glibc or raw syscalls can close and reuse a number behind our back).
    let tag_valid = match tag {
        Some(Tag::File { layer, idx }) => vfs::entry(st, layer, idx)
            .and_then(|e| vfs::blob_path(st, &e))
            .and_then(|b| {
                // SAFETY: valid buffers.
                unsafe {
                    let mut bs: libc::stat = std::mem::zeroed();
                    (real::stat(b.as_ptr(), &mut bs) == 0).then_some(bs)
                }
            })
            .is_some_and(|bs| bs.st_dev == s.st_dev && bs.st_ino == s.st_ino),
        _ => true,
    };
    if !tag_valid {
        fdtab::clear(fd);
    }
    let tag = match tag {
        Some(Tag::File { layer, idx }) if tag_valid => FdTag::File { layer, idx },
        Some(Tag::Dir { .. }) => FdTag::Dir,
        _ => FdTag::Other,
    };
    vrift_shim_core::plan(tag, is_blob(st, &s, fd), st.upper.is_some())
}

/// Copies the view file behind `fd` up and re-points `fd` at the copy (same status flags,
/// offset and close-on-exec flag), so whatever is done through `fd` next lands on the copy.
/// What cannot follow: the offset stays shared only with this slot (dups of the old
/// description keep reading the blob), and locks held on the blob are not carried over.
pub fn fd_copy_up(st: &State, fd: c_int, layer: usize, idx: usize) -> Result<(), c_int> {
    let e = vfs::entry(st, layer, idx).ok_or(libc::EBADF)?;
    let mut virt = vfs::entry_abs(st, layer, &e).ok_or(libc::ENAMETOOLONG)?;
    let up = st.upper.as_ref().ok_or(libc::EROFS)?;
    let r = vfs::resolve(st, &mut virt, false);
    let mp = match r.node {
        Node::V { layer: l, idx: i } if l == layer && i == idx => {
            copy_up(st, r.path.as_bytes(), &e, false)?
        }
        Node::Upper => up.mirror_of(r.path.as_bytes()).ok_or(libc::ENAMETOOLONG)?,
        _ => return Err(libc::EROFS),
    };
    // SAFETY: fcntl/lseek/open/dup3/close on fds we own or the caller's `fd`.
    unsafe {
        let fl = real::fcntl(fd, libc::F_GETFL, 0);
        let fdf = real::fcntl(fd, libc::F_GETFD, 0);
        if fl < 0 || fdf < 0 {
            return Err(real::errno());
        }
        let off = libc::lseek(fd, 0, libc::SEEK_CUR);
        let keep = fl
            & (libc::O_ACCMODE
                | libc::O_APPEND
                | libc::O_NONBLOCK
                | libc::O_DIRECT
                | libc::O_SYNC
                | libc::O_DSYNC
                | libc::O_LARGEFILE
                | libc::O_PATH);
        let nfd = real::openat(
            libc::AT_FDCWD,
            mp.as_ptr(),
            keep | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0,
        );
        if nfd < 0 {
            return Err(real::errno());
        }
        if off > 0 {
            libc::lseek(nfd, off, libc::SEEK_SET);
        }
        let cloexec = if fdf & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        let rc = real::dup3(nfd, fd, cloexec);
        let err = real::errno();
        real::close(nfd);
        if rc < 0 {
            return Err(err);
        }
        if fl & libc::O_ASYNC != 0 {
            real::fcntl(fd, libc::F_SETFL, libc::c_long::from(fl));
        }
    }
    fdtab::clear(fd);
    Ok(())
}

/// Shared by the fd hooks (`fchmod`, `fchown`, `futimens`, `fsetxattr`, ...): `op` runs on
/// `fd` once it no longer points at a blob. `None`: not ours, the real call.
pub fn meta_fd(fd: c_int, op: &dyn Fn(c_int) -> c_int) -> Option<c_int> {
    crate::guarded(|st| meta_fd_in(st, fd, op))
}

/// [`meta_fd`] for callers already inside a hook.
pub fn meta_fd_in(st: &State, fd: c_int, op: &dyn Fn(c_int) -> c_int) -> Option<c_int> {
    match plan_for(st, fd) {
        Plan::Pass => None,
        Plan::Ignore => Some(0),
        Plan::Refuse => crate::fail(libc::EROFS),
        Plan::CopyUp { layer, idx } => match fd_copy_up(st, fd, layer, idx) {
            Ok(()) => Some(op(fd)),
            Err(e) => crate::fail(e),
        },
    }
}

/// A write-mode open of `/proc/self/fd/N`: the file behind `N`, if it is a view file, is
/// copied up first (and `N` re-pointed), then the caller's open goes to the copy; a blob we
/// cannot copy up is `EROFS`. `None`: not a view fd, the real open.
pub fn reopen_for_write(st: &State, n: c_int, flags: c_int, mode: libc::c_uint) -> Option<c_int> {
    match plan_for(st, n) {
        Plan::Pass | Plan::Ignore => None,
        Plan::Refuse => crate::fail(libc::EROFS),
        Plan::CopyUp { layer, idx } => {
            if let Err(e) = fd_copy_up(st, n, layer, idx) {
                return crate::fail(e);
            }
            // `n` is the copy now: reopening it through /proc gives the copy.
            let mut name = [0u8; 32];
            let len = fmt_proc_fd(n, &mut name);
            let p = PBuf::from(&name[..len])?;
            let f = flags & !(libc::O_CREAT | libc::O_EXCL);
            // SAFETY: valid buffer.
            Some(unsafe { real::openat(libc::AT_FDCWD, p.as_ptr(), f, mode) })
        }
    }
}

/// Before a blob is served: one `fstat` of the fd just opened. A size other than the entry's,
/// or (in a store whose every blob is sealed) a broken seal, means the blob was written since
/// it was stored: `EIO`, and one line on stderr naming it, instead of wrong bytes.
pub fn check_served(
    st: &State,
    fd: c_int,
    e: &crate::mf::Entry<'_>,
    blob: &PBuf,
) -> Result<(), c_int> {
    let Some(s) = fstat(fd) else {
        return Ok(());
    };
    let sealed = vrift_shim_core::is_seal_nsec(s.st_mtime_nsec);
    if s.st_size as u64 == e.size() && (sealed || !st.all_sealed) {
        return Ok(());
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        let head = b"vrift: refusing a damaged blob (written to after it was stored): ";
        let tail = b"\n  run `vrift verify --repair`, then ingest or pull the tree again\n";
        // SAFETY: writes of our own buffers to stderr.
        unsafe {
            real::write(2, head.as_ptr().cast(), head.len());
            real::write(2, blob.as_ptr().cast(), blob.len());
            real::write(2, tail.as_ptr().cast(), tail.len());
        }
    }
    Err(libc::EIO)
}
