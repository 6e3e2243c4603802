//! The blob seal: how the store tells, from the one `stat` it makes of a blob anyway, that
//! the blob has not been written since it was stored.
//!
//! A blob's name promises its content, but a blob is an ordinary inode: root ignores the
//! missing write bits, and in solid mode the blob *is* a project file, so `echo x >> file`
//! in a hard-linked checkout writes into the store. Re-hashing every blob before each use
//! would cost a full read per file on the hot paths (dedup, checkout, link farms, the shim,
//! push). Instead the store *seals* each blob when it enters: its mtime's nanoseconds are set
//! to [`SEAL_NSEC`], keeping the seconds (so tools that compare whole-second mtimes, such as
//! Python's `.pyc` check, see no change, and a file only ever moves forward within its second).
//! The value is a whole microsecond short of the next second, not one nanosecond: Python reads
//! `st_mtime` as a double, where `.999999999` rounds up to the next second (every `.pyc` of a
//! `--isolate` view looked stale: imports 3.9× slower), while `.999999` stays below it up to
//! the year 2106 (a double's step there is under 0.5 µs); file systems with microsecond
//! timestamps can store it too. Blobs sealed by earlier versions ([`LEGACY_SEAL_NSEC`]) count
//! as sealed and are moved to the new value when next checked.
//! Any write through any link sets the mtime to the current time, whose nanoseconds are
//! practically never exactly `SEAL_NSEC`; a truncation or append also changes the size, which
//! the name records. So `size == name's size && mtime_nsec == SEAL_NSEC`, read from a `stat`
//! the caller already makes, says "not written since sealed".
//!
//! What it does not catch: a deliberate `utimensat` back to the sealed time after an edit, or
//! damage below the file system (bit rot). `vrift verify` re-hashes for those. A blob that is
//! not sealed (a store made by an older vrift, a file system without nanosecond timestamps,
//! a blob another user owns) is not trusted either: it is re-hashed before use and sealed if
//! it matches ([`crate::Cas::check_blob`]).

use std::io;
use std::os::fd::BorrowedFd;

/// The nanoseconds field of every sealed blob's mtime.
pub const SEAL_NSEC: i64 = 999_999_000;

/// The seal of vrift 0.x stores made before [`SEAL_NSEC`] changed: as strong a proof, but
/// Python rounds it into the next second.
pub const LEGACY_SEAL_NSEC: i64 = 999_999_999;

/// The mtime (ns since the epoch) a file with mtime `mtime_ns` has once sealed: same second,
/// nanoseconds [`SEAL_NSEC`].
pub fn sealed_mtime_ns(mtime_ns: i64) -> i64 {
    mtime_ns.div_euclid(1_000_000_000) * 1_000_000_000 + SEAL_NSEC
}

/// Whether a blob named for `size` bytes, as `st` describes it, is a sealed regular file
/// of that size.
pub fn is_sealed(st: &crate::sys::Stat, size: u64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
        && st.st_size as u64 == size
        && (st.st_mtime_nsec as i64 == SEAL_NSEC || st.st_mtime_nsec as i64 == LEGACY_SEAL_NSEC)
}

/// Whether a sealed blob carries the old seal and should be sealed again (see the module).
pub fn is_legacy(st: &crate::sys::Stat) -> bool {
    st.st_mtime_nsec as i64 == LEGACY_SEAL_NSEC
}

/// Seals the open file `fd` whose current mtime is `mtime_ns` (atime untouched). Needs the
/// caller to own the file (or `CAP_FOWNER`), as any explicit `utimensat` does.
pub fn seal_fd(fd: BorrowedFd<'_>, mtime_ns: i64) -> io::Result<()> {
    let sealed = sealed_mtime_ns(mtime_ns);
    let times = [
        rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        rustix::fs::Timespec {
            tv_sec: sealed.div_euclid(1_000_000_000),
            tv_nsec: SEAL_NSEC,
        },
    ];
    rustix::fs::futimens(
        fd,
        &rustix::fs::Timestamps {
            last_access: times[0],
            last_modification: times[1],
        },
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn stat(f: &std::fs::File) -> crate::sys::Stat {
        crate::sys::fstat(f.as_fd()).unwrap()
    }

    #[test]
    fn sealing_keeps_the_second_and_a_write_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, b"content").unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        let before = stat(&f);
        assert!(!is_sealed(&before, 7) || before.st_mtime_nsec as i64 == SEAL_NSEC);
        seal_fd(f.as_fd(), crate::sys::mtime_ns(&before)).unwrap();
        let sealed = stat(&f);
        assert!(is_sealed(&sealed, 7));
        assert!(!is_sealed(&sealed, 8), "the size is part of the seal");
        assert_eq!(sealed.st_mtime, before.st_mtime, "same second");
        std::thread::sleep(std::time::Duration::from_millis(5));
        f.write_all(b"!").unwrap();
        assert!(!is_sealed(&stat(&f), 7));
        assert!(
            !is_sealed(&stat(&f), 8),
            "a write moves the mtime off the seal"
        );
    }

    #[test]
    fn sealed_times() {
        assert_eq!(sealed_mtime_ns(1_500_000_000), 1_999_999_000);
        assert_eq!(sealed_mtime_ns(2_000_000_000), 2_999_999_000);
        assert_eq!(sealed_mtime_ns(-1), -1_000);
        assert_eq!(sealed_mtime_ns(-1_000_000_001), -1_000_001_000);
    }

    /// What Python's `.pyc` check computes, `int(st_mtime)` with `st_mtime` a double, keeps
    /// the sealed second for every time a 32-bit `.pyc` field can hold (the old seal did not).
    #[test]
    fn a_double_keeps_the_sealed_second() {
        for sec in [0i64, 1, 1_796_520_359, (1 << 31) - 1, (1 << 32) - 1] {
            let as_double = sec as f64 + SEAL_NSEC as f64 / 1e9;
            assert_eq!(as_double as i64, sec, "{sec}");
        }
        let old = 1_796_520_359f64 + LEGACY_SEAL_NSEC as f64 / 1e9;
        assert_eq!(old as i64, 1_796_520_360, "why the seal changed");
    }
}
