//! Thin, safe wrappers over the few `*at` system calls the store needs that `std` lacks
//! (linking an open file by descriptor, rename without replace, stat relative to a dirfd).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub fn cbytes(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens a directory as an `O_PATH` handle so blob paths resolve relative to it.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `linkat(fd, "", dir, name, AT_EMPTY_PATH)`: links exactly the inode we hashed, even if the
/// path was replaced meanwhile.
pub fn link_fd(fd: BorrowedFd<'_>, dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated strings.
    check(unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            dir,
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
}

pub fn linkat(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated strings.
    check(unsafe { libc::linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), 0) })
}

/// Rename that fails with EEXIST instead of replacing: a blob is never replaced in place.
pub fn rename_noreplace(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated strings.
    check(unsafe {
        libc::renameat2(
            old_dir,
            old.as_ptr(),
            new_dir,
            new.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
}

pub fn renameat(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated strings.
    check(unsafe { libc::renameat(old_dir, old.as_ptr(), new_dir, new.as_ptr()) })
}

pub fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated string.
    check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) })
}

pub fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated string.
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })
}

pub fn fstatat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out pointer of the right type.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so st is initialised.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out pointer of the right type.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so st is initialised.
    Ok(unsafe { st.assume_init() })
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}

pub fn fchmodat(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated string.
    check(unsafe { libc::fchmodat(dir, name.as_ptr(), mode as libc::mode_t, 0) })
}

/// Nanoseconds since the epoch of a stat's mtime, the resolution ext4 keeps.
pub fn mtime_ns(st: &libc::stat) -> i64 {
    st.st_mtime * 1_000_000_000 + st.st_mtime_nsec
}
