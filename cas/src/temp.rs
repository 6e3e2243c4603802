//! Files written before they become blobs.
//!
//! A blob enters the store only as a link of a complete file (see [`crate::store`]), so its
//! bytes are first written to a temp file under `<root>/tmp`. That file is unnamed
//! (`O_TMPFILE`) where the file system and the process's rights allow it, else named
//! `.WHAT-PID-N` and removed when dropped.
//!
//! Why unnamed first: a named temp file adds and removes an entry in the one `tmp` directory,
//! each under that directory's lock, and ext4 allocates the new inode while holding it. A
//! pull's writer threads all write there: in `perf` of a pull of 6,816 blobs, a third of all
//! samples were threads spinning on that lock. An unnamed file takes no lock on `tmp`, has no
//! entry to remove after it is linked into its shard, and a crash leaves nothing behind.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::sys;

/// How this process can give an unnamed file a name (decided once per store, by a probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// `linkat(fd, "", …, AT_EMPTY_PATH)`: needs `CAP_DAC_READ_SEARCH` on most kernels.
    EmptyPath,
    /// `linkat("/proc/self/fd/N", …, AT_SYMLINK_FOLLOW)`: needs `/proc`.
    Proc,
    /// No `O_TMPFILE` here (some file systems, old kernels), or no way to link one: named
    /// temp files.
    Named,
}

impl Naming {
    /// Tries both ways on a throw-away unnamed file in `tmp_dir`, linked as `probe_name`
    /// there and removed again.
    pub(crate) fn probe(tmp_dir: &Path, probe_name: &Path) -> Naming {
        let Ok(fd) = sys::open_tmpfile(tmp_dir) else {
            return Naming::Named;
        };
        let (Ok(dir), Some(name)) = (
            sys::open_dir_path(tmp_dir),
            probe_name
                .file_name()
                .and_then(|n| sys::cstring(Path::new(n)).ok()),
        ) else {
            return Naming::Named;
        };
        for (how, naming) in [
            (sys::link_fd as LinkFn, Naming::EmptyPath),
            (sys::link_proc_fd as LinkFn, Naming::Proc),
        ] {
            if how(fd.as_fd(), dir.as_fd(), &name).is_ok() {
                let _ = std::fs::remove_file(probe_name);
                return naming;
            }
        }
        Naming::Named
    }
}

type LinkFn = fn(BorrowedFd<'_>, BorrowedFd<'_>, &std::ffi::CStr) -> io::Result<()>;

/// A file on its way into the store.
pub(crate) struct TempFile {
    file: File,
    /// What error messages name: the named file, or `<root>/tmp` for an unnamed one.
    shown: PathBuf,
    /// How it gets its blob name: through its descriptor, or (named) by its path.
    naming: Naming,
}

impl TempFile {
    /// A new empty temp file in `tmp_dir` (read-write, mode 0600); `named` is the path a
    /// named one gets when `naming` says unnamed files cannot be linked.
    pub(crate) fn create(tmp_dir: &Path, named: PathBuf, naming: Naming) -> io::Result<TempFile> {
        if naming != Naming::Named {
            match sys::open_tmpfile(tmp_dir) {
                Ok(fd) => {
                    return Ok(TempFile {
                        file: File::from(fd),
                        shown: tmp_dir.to_path_buf(),
                        naming,
                    })
                }
                // The probe said yes; a file system that says no now (a store moved under
                // us) still gets a named file.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&named)?;
        Ok(TempFile {
            file,
            shown: named,
            naming: Naming::Named,
        })
    }

    /// An existing named file (a download written by the caller), removed when dropped.
    pub(crate) fn adopt(file: File, path: &Path) -> TempFile {
        TempFile {
            file,
            shown: path.to_path_buf(),
            naming: Naming::Named,
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The path error messages name.
    pub(crate) fn path(&self) -> &Path {
        &self.shown
    }

    /// Links this file as `dir/name`. EEXIST (the blob is there already) and ENOENT (no such
    /// shard) are the caller's to handle, as for any link.
    pub(crate) fn link_as(&self, dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
        match self.naming {
            Naming::EmptyPath => sys::link_fd(self.file.as_fd(), dir, name),
            Naming::Proc => sys::link_proc_fd(self.file.as_fd(), dir, name),
            Naming::Named => {
                let c = sys::cstring(&self.shown)?;
                sys::linkat(sys::CWD, &c, dir, name)
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.naming == Naming::Named {
            let _ = std::fs::remove_file(&self.shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Every way this machine offers makes a linkable file that leaves nothing behind,
    /// and a named one is removed when dropped.
    #[test]
    fn temp_files_link_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let out = sys::open_dir_path(d.path()).unwrap();
        let probed = Naming::probe(&tmp, &tmp.join(".probe"));
        assert!(names(&tmp).is_empty(), "the probe leaves nothing");
        // This machine (CI and development: Linux with ext4/tmpfs and /proc) has O_TMPFILE.
        if std::env::var_os("CI").is_some() {
            assert_ne!(probed, Naming::Named);
        }
        let mut ways = vec![Naming::Named];
        if probed != Naming::Named {
            ways.push(probed);
            ways.push(Naming::Proc);
        }
        for (i, naming) in ways.into_iter().enumerate() {
            let t = TempFile::create(&tmp, tmp.join(format!(".t-{i}")), naming).unwrap();
            t.file().write_all(b"bytes").unwrap();
            let name = std::ffi::CString::new(format!("linked-{i}")).unwrap();
            t.link_as(out.as_fd(), &name).unwrap();
            assert_eq!(
                t.link_as(out.as_fd(), &name).unwrap_err().raw_os_error(),
                Some(libc::EEXIST),
                "{naming:?}"
            );
            drop(t);
            assert_eq!(
                std::fs::read(d.path().join(format!("linked-{i}"))).unwrap(),
                b"bytes"
            );
            assert!(names(&tmp).is_empty(), "{naming:?} left a temp file");
        }
    }
}
