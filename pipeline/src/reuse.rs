//! Taking whole directories from the tree a checkout replaces.
//!
//! A CI runner that keeps its store and its `node_modules` between jobs restores the next
//! lock file's tree over the previous one (`restore`, `checkout --replace`). Most packages
//! are the same in both: linking each of their files again and deleting each old link cost
//! more than the pull of what changed (24,259 links built and 16,971 removed for a lock
//! change that brings 6,816 new blobs). So a directory of the old tree that already holds
//! exactly what the new manifest says is moved into the new tree in one `rename`, and is not
//! deleted with the rest of the old tree.
//!
//! "Exactly" is checked on the old tree itself, never assumed from a manifest it was once
//! made from (a build step may have patched a file, `npm` may have added one):
//! * the directory holds the same names as the manifest says, nothing more or less;
//! * every file is the blob's own inode (same device and inode as the blob, which is checked
//!   as for any link) and has the mode and time a checkout would have linked it with, so its
//!   content is the blob's; a copy could hold anything and is never taken;
//! * every symlink has the manifest's target;
//! * every subdirectory matches the same way (its mode and time are set afterwards, as for
//!   every directory).
//!
//! Only a hard-linking checkout reuses (`--link-mode auto|hardlink`): a copy was asked to be
//! independent of the store and of the old tree. Everything is opened relative to its
//! parent's descriptor without following symlinks, as [`crate::dirs`] does for the new tree.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use vrift_cas::{BlobCheck, Cas, WRITE_BITS};
use vrift_manifest::order::is_ancestor;
use vrift_manifest::Kind;

use crate::dirs::{c_name, split};
use crate::materialize::{LinkMode, Node, Options, SETID_BITS};

/// Directories of the old tree that can be moved into the new one whole.
#[derive(Debug, Default)]
pub struct Reusable {
    /// Indices (into the nodes) of the topmost matching directories, in node order.
    pub dirs: Vec<usize>,
}

/// Whether this checkout may take files from the tree it replaces (see the module docs).
pub fn applies(opts: &Options) -> bool {
    matches!(opts.link_mode, LinkMode::Auto | LinkMode::Hardlink) && !opts.distinct_inodes
}

/// Finds what of the old tree (its root opened as `old_root`) matches `nodes` (a validated
/// manifest's, in component-wise order; the root `""` may be among them). Anything that
/// cannot be read or looks different is simply not reused.
pub fn find<P: AsRef<[u8]>>(
    cas: &Cas,
    old_root: BorrowedFd<'_>,
    nodes: &[(P, Node<'_>)],
    opts: &Options,
) -> Reusable {
    let mut out = Reusable::default();
    if !applies(opts) {
        return out;
    }
    let Ok(root) = reopen_readable(old_root) else {
        return out;
    };
    let start = usize::from(nodes.first().is_some_and(|(p, _)| p.as_ref().is_empty()));
    let ctx = Ctx { cas, nodes, opts };
    let mut found = Vec::new();
    // The root itself is never moved: only what it holds.
    ctx.check_dir(root.as_fd(), b"", start, nodes.len(), &mut found);
    found.sort_unstable();
    out.dirs = found;
    out
}

struct Ctx<'a, 'n, P> {
    cas: &'a Cas,
    nodes: &'a [(P, Node<'n>)],
    opts: &'a Options,
}

impl<P: AsRef<[u8]>> Ctx<'_, '_, P> {
    /// Whether the old directory `fd` matches the children of `dir` (the nodes
    /// `start..end`, its whole subtree). Subdirectories that match under a directory that
    /// does not are pushed to `found` (topmost only: a matching directory's subtree moves
    /// with it).
    fn check_dir(
        &self,
        fd: BorrowedFd<'_>,
        dir: &[u8],
        start: usize,
        end: usize,
        found: &mut Vec<usize>,
    ) -> bool {
        let Some(names) = list(fd) else {
            return false;
        };
        let mut matches = true;
        let mut children = 0usize;
        let mut pending = Vec::new();
        let mut i = start;
        while i < end {
            let rel = self.nodes[i].0.as_ref();
            let (_, name) = split(rel);
            children += 1;
            matches &= names.contains(name);
            // The child's subtree: the nodes after it that lie below it.
            let mut j = i + 1;
            while j < end && is_ancestor(rel, self.nodes[j].0.as_ref()) {
                j += 1;
            }
            match &self.nodes[i].1 {
                Node::Leaf(e) => matches &= self.leaf_matches(fd, name, e),
                Node::Dir { .. } => {
                    let sub = c_name(name).ok().and_then(|c| {
                        rustix::fs::openat(
                            fd,
                            c.as_c_str(),
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .ok()
                    });
                    match sub {
                        Some(sub) => {
                            let mut below = Vec::new();
                            if self.check_dir(sub.as_fd(), rel, i + 1, j, &mut below) {
                                pending.push(i);
                            } else {
                                matches = false;
                                found.extend(below);
                            }
                        }
                        None => matches = false,
                    }
                }
            }
            i = j;
        }
        matches &= names.len() == children;
        if !matches {
            // This directory stays behind: its matching subdirectories move on their own.
            found.extend(pending);
        } else {
            // The caller moves this directory (or, for the root, each child): subdirectories
            // come along.
            if dir.is_empty() {
                found.extend(pending);
            }
        }
        matches
    }

    /// Whether `name` in the old directory `fd` is what a hard-linking checkout makes of `e`.
    fn leaf_matches(&self, fd: BorrowedFd<'_>, name: &[u8], e: &vrift_manifest::Entry<'_>) -> bool {
        let Ok(c) = c_name(name) else { return false };
        if e.kind() == Kind::Symlink {
            return rustix::fs::readlinkat(fd, c.as_c_str(), Vec::new())
                .is_ok_and(|t| t.as_bytes() == e.target());
        }
        let Ok(st) = rustix::fs::statat(fd, c.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            return false;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return false;
        }
        let Ok(BlobCheck::Sound(blob)) = self.cas.check_blob(e.hash(), e.size()) else {
            return false;
        };
        let mut mode = e.mode() & 0o7777;
        if !self.opts.keep_setid {
            mode &= !SETID_BITS;
        }
        let keep = 0o7777 & !WRITE_BITS;
        st.st_dev == blob.st_dev
            && st.st_ino == blob.st_ino
            && blob.st_mode & keep == mode & keep
            && (!self.opts.mtime_second_exact
                || blob.st_mtime == e.mtime_ns().div_euclid(1_000_000_000) as libc::time_t)
    }
}

/// The names in a directory (`.` and `..` aside), or `None` if it cannot be read.
fn list(fd: BorrowedFd<'_>) -> Option<HashSet<Vec<u8>>> {
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).ok()?;
    let mut dir = rustix::fs::Dir::read_from(dup).ok()?;
    let mut names = HashSet::new();
    while let Some(ent) = dir.read() {
        let ent = ent.ok()?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.insert(n.to_vec());
        }
    }
    Some(names)
}

/// A readable descriptor of the directory `fd` (which may be an `O_PATH` handle).
fn reopen_readable(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        fd,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}
