//! Resolving directories of a tree relative to an open root, one component at a time, never
//! following a symlink.
//!
//! Whoever can write into a tree (its owner, while root ingests or restores it) can swap a
//! directory for a symlink between two system calls. So no operation here takes a path
//! longer than one component: each directory is opened `O_NOFOLLOW | O_DIRECTORY` relative
//! to its parent's descriptor, and callers act on `(parent fd, name)`. A swapped component
//! makes the open fail (`ELOOP`/`ENOTDIR`) instead of leading elsewhere.
//!
//! Trees are visited in manifest (component-wise) order, so consecutive paths share most of
//! their ancestors: the open chain is kept as a stack and only the components that differ
//! are opened again.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use vrift_manifest::order::is_ancestor;

/// Flags of every directory handle: a path handle (search permission suffices), never a
/// symlink, never anything but a directory.
const DIR_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The chain of open directories from a root down to the last directory asked for.
pub struct DirChain {
    root: OwnedFd,
    /// `(path relative to the root, handle)`, each entry the parent of the next.
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

impl DirChain {
    /// A chain rooted at the open directory `root`.
    pub fn new(root: OwnedFd) -> DirChain {
        DirChain {
            root,
            stack: Vec::new(),
        }
    }

    /// A chain of its own over the same root (for another thread).
    pub fn try_clone(&self) -> io::Result<DirChain> {
        Ok(DirChain::new(self.root.try_clone()?))
    }

    /// The root directory.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The directory `rel` (a well-formed relative path, `""` for the root), opened component
    /// by component from the root without following any symlink.
    pub fn dir(&mut self, rel: &[u8]) -> io::Result<BorrowedFd<'_>> {
        while let Some((top, _)) = self.stack.last() {
            if top.as_slice() == rel || is_ancestor(top, rel) {
                break;
            }
            self.stack.pop();
        }
        let have = self.stack.last().map_or(0, |(p, _)| p.len());
        if have < rel.len() {
            let start = if have == 0 { 0 } else { have + 1 };
            for comp in rel[start..].split(|&b| b == b'/') {
                let parent = match self.stack.last() {
                    Some((_, fd)) => fd.as_fd(),
                    None => self.root.as_fd(),
                };
                let fd = open_dir_at(parent, comp)?;
                let mut path = self
                    .stack
                    .last()
                    .map(|(p, _)| p.clone())
                    .unwrap_or_default();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(comp);
                self.stack.push((path, fd));
            }
        }
        Ok(match self.stack.last() {
            Some((_, fd)) => fd.as_fd(),
            None => self.root.as_fd(),
        })
    }

    /// A readable descriptor of the directory `rel` itself (the root for `""`), never
    /// through a symlink: for `fchmod`/`futimens`/`fstat` on what is really there.
    pub fn open_readable(&mut self, rel: &[u8]) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if rel.is_empty() {
            return Ok(rustix::fs::openat(self.root(), c".", flags, Mode::empty())?);
        }
        let (parent, name) = self.parent_of(rel)?;
        Ok(rustix::fs::openat(
            parent,
            name.as_c_str(),
            flags,
            Mode::empty(),
        )?)
    }

    /// The parent directory of `rel` and `rel`'s last component, ready for a `*at` call.
    pub fn parent_of(&mut self, rel: &[u8]) -> io::Result<(BorrowedFd<'_>, CString)> {
        let (parent, name) = split(rel);
        let name = c_name(name)?;
        Ok((self.dir(parent)?, name))
    }
}

/// `rel` as (parent, last component).
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// One path component as a C string (a validated manifest never holds a NUL).
pub fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// Opens the directory `name` of `parent` as a path handle, refusing a symlink.
pub fn open_dir_at(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let c = c_name(name)?;
    Ok(rustix::fs::openat(
        parent,
        c.as_c_str(),
        DIR_FLAGS,
        Mode::empty(),
    )?)
}

/// Opens the directory at `path` (the user's own argument: followed as given) as the root of
/// a chain.
pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        rustix::fs::CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn resolves_in_order_and_refuses_symlinked_components() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::create_dir_all(root.join("a/d")).unwrap();
        fs::create_dir_all(root.join("outside")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("a/link")).unwrap();
        let mut chain = DirChain::new(open_root(root).unwrap());
        for rel in [&b"a/b/c"[..], b"a/b", b"a/d", b"", b"a/b/c", b"a"] {
            chain.dir(rel).unwrap_or_else(|e| panic!("{rel:?}: {e}"));
        }
        let err = chain.dir(b"a/link").unwrap_err();
        // O_PATH | O_NOFOLLOW | O_DIRECTORY on a symlink: ENOTDIR (ELOOP without O_PATH).
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{err}"
        );
        // A directory swapped for a symlink after it was resolved once is refused too.
        chain.dir(b"a/d").unwrap();
        chain.dir(b"").unwrap();
        fs::remove_dir(root.join("a/d")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("a/d")).unwrap();
        assert!(chain.dir(b"a/d").is_err());
        let (_, name) = chain.parent_of(b"a/b/file").unwrap();
        assert_eq!(name.as_bytes(), b"file");
    }
}
