//! Read leases: how the place stage learns that nobody has a file open for writing at the
//! moment it becomes a blob.
//!
//! In solid mode (and phantom) the project file's inode *is* the blob. Stripping its write
//! bits stops new writers, but a process that opened the file for writing earlier (a build
//! still writing its output, a log) keeps its descriptor and would go on changing the blob
//! under its name. The kernel grants a read lease (`F_SETLEASE`, `F_RDLCK`) only when no
//! descriptor anywhere has the file open for writing, so taking one right after the write
//! bits are gone answers the question for good: refused means a writer exists, granted means
//! none does, and none can appear without write permission.
//!
//! Only the file's owner (or a holder of CAP_LEASE) may take a lease, and some file systems do
//! not support them; then the answer is "unknown" and the size/mtime check after linking is
//! all there is.
// File leases (F_SETLEASE) and SIGIO have no safe wrapper.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// What asking for a lease told us.
pub enum Lease<'a> {
    /// Granted: no writer anywhere. Released when dropped.
    Held(BorrowedFd<'a>),
    /// Not ours to ask (not the owner, no CAP_LEASE) or not supported here.
    Unknown,
    /// Refused because the file is open for writing somewhere.
    Writer,
}

impl<'a> Lease<'a> {
    pub fn take(fd: BorrowedFd<'a>) -> Lease<'a> {
        // SAFETY: fcntl on a descriptor we borrow; no pointers involved.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        if r == 0 {
            return Lease::Held(fd);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Lease::Writer,
            _ => Lease::Unknown,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Lease::Held(fd) = self {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        }
    }
}

/// While a lease is held, anyone opening the file for writing (root can, without write bits)
/// makes the kernel send the holder SIGIO, whose default action ends the process. The guard
/// ignores SIGIO for the ingest and puts back what was there before, so a command started
/// after an ingest (`vrift run`'s transient ingest) inherits the original disposition.
pub struct SigioIgnored {
    previous: libc::sigaction,
}

impl SigioIgnored {
    pub fn new() -> SigioIgnored {
        // SAFETY: plain sigaction calls with valid, zero-initialised structs.
        unsafe {
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGIO, &ignore, &mut previous);
            SigioIgnored { previous }
        }
    }
}

impl Default for SigioIgnored {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SigioIgnored {
    fn drop(&mut self) {
        // SAFETY: restores the struct sigaction filled in by `new`.
        unsafe { libc::sigaction(libc::SIGIO, &self.previous, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::fd::AsFd;

    #[test]
    fn a_lease_is_refused_while_someone_has_the_file_open_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let reader = File::open(&p).unwrap();
        {
            let writer = OpenOptions::new().append(true).open(&p).unwrap();
            assert!(matches!(Lease::take(reader.as_fd()), Lease::Writer));
            drop(writer);
        }
        // We own the file: with the writer gone the lease is granted, and released on drop.
        assert!(matches!(Lease::take(reader.as_fd()), Lease::Held(_)));
        assert!(matches!(Lease::take(reader.as_fd()), Lease::Held(_)));
    }
}
