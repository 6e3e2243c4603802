//! The few `*at` system calls the store needs that `std` lacks (linking an open file by
//! descriptor, rename without replace, stat relative to a directory descriptor), in one
//! place and in one vocabulary: `rustix`, so this crate has no `unsafe` of its own. Every
//! call takes descriptors, never a path that may have changed since it was checked; the
//! current directory, where a caller means it, is [`CWD`].

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

/// What the store's `stat` calls return (the kernel's `struct stat`).
pub use rustix::fs::Stat;
/// The current directory, for the `*at` calls whose path is relative to it or absolute.
pub use rustix::fs::CWD;

pub fn cstring(path: &Path) -> io::Result<CString> {
    cbytes(path.as_os_str().as_bytes())
}

pub fn cbytes(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens a directory as an `O_PATH` handle so blob paths resolve relative to it.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `linkat(fd, "", dir, name, AT_EMPTY_PATH)`: links exactly the inode we hashed, even if the
/// path was replaced meanwhile.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::linkat(fd, c"", dir, name, AtFlags::EMPTY_PATH)?)
}

pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        old_dir,
        old,
        new_dir,
        new,
        AtFlags::empty(),
    )?)
}

/// An unnamed file in `dir` (`O_TMPFILE`), read-write, mode 0600: it has no directory entry
/// until [`link_fd`] or [`link_proc_fd`] gives it one, and vanishes if the process dies first.
pub fn open_tmpfile(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?)
}

/// Links `fd` as `dir/name` through `/proc/self/fd/N`: what an unprivileged process can use
/// where [`link_fd`] (`AT_EMPTY_PATH`) needs `CAP_DAC_READ_SEARCH`.
pub fn link_proc_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let path = cbytes(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    Ok(rustix::fs::linkat(
        CWD,
        &path,
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

/// Rename that fails with EEXIST instead of replacing: a blob is never replaced in place.
pub fn rename_noreplace(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        old_dir,
        old,
        new_dir,
        new,
        RenameFlags::NOREPLACE,
    )?)
}

pub fn renameat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    Ok(rustix::fs::renameat(old_dir, old, new_dir, new)?)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// `fstatat` without following a final symlink (the only way the store looks at names).
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?)
}

/// Whether this process may write into `path` (`access(W_OK)`: real ids, as a user would
/// expect `doctor` to judge).
pub fn writable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

/// (available to us, total) bytes of the file system holding `path`.
pub fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

/// Nanoseconds since the epoch of a stat's mtime, the resolution ext4 keeps.
#[allow(clippy::unnecessary_cast)] // st_mtime is a c_long: 32 bits on some targets
pub fn mtime_ns(st: &Stat) -> i64 {
    // Saturating: a file dated beyond 2262 must not wrap into another time.
    (st.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}
