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
//!   every directory);
//! * every directory of it belongs to this process's user and is writable by nobody else, so
//!   nobody but that user (or root) can change it between this check and the move; the
//!   directory that is moved is checked to be the same inode after the move, so a look-alike
//!   put in its place meanwhile (by whoever can write its parent) is never taken.
//!
//! Only a hard-linking checkout reuses (`--link-mode auto|hardlink`): a copy was asked to be
//! independent of the store and of the old tree. Everything is opened relative to its
//! parent's descriptor without following symlinks, as [`crate::dirs`] does for the new tree.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use vrift_cas::{BlobCheck, Cas, WRITE_BITS};
use vrift_manifest::order::is_ancestor;
use vrift_manifest::Kind;

use crate::dirs::{c_name, split, DirChain};
use crate::materialize::{move_dir, LinkMode, Node, Options, SETID_BITS};

/// Directories of the old tree that can be moved into the new one whole.
#[derive(Debug, Default)]
pub struct Reusable {
    /// Indices (into the nodes) of the topmost matching directories, in node order, each
    /// with the identity of the directory that was checked.
    pub dirs: Vec<(usize, DirId)>,
}

/// A directory's device and inode: what a moved directory must still be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirId {
    pub dev: u64,
    pub ino: u64,
}

impl DirId {
    pub fn of(st: &rustix::fs::Stat) -> DirId {
        DirId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
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
    let ctx = Ctx {
        cas,
        nodes,
        opts,
        uid: rustix::process::geteuid().as_raw(),
    };
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
    /// The effective user: the only owner whose directories are taken.
    uid: u32,
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
        found: &mut Vec<(usize, DirId)>,
    ) -> bool {
        let Some(names) = list(fd) else {
            return false;
        };
        // Ours, and writable by nobody else (its subdirectories may still match on their own).
        let mut matches =
            rustix::fs::fstat(fd).is_ok_and(|st| st.st_uid == self.uid && st.st_mode & 0o022 == 0);
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
                            let id = rustix::fs::fstat(&sub).map(|st| DirId::of(&st));
                            match (self.check_dir(sub.as_fd(), rel, i + 1, j, &mut below), id) {
                                (true, Ok(id)) => pending.push((i, id)),
                                _ => {
                                    matches = false;
                                    found.extend(below);
                                }
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

/// Moves checked directories from the old tree into the new one, and back when the new tree
/// is given up (restoring the times of the old directories they were moved out of).
pub struct Mover {
    old: DirChain,
    /// The paths moved, in order.
    moved: Vec<Vec<u8>>,
    /// The old tree's directories that lost a child to the new tree, with their mtime
    /// before (a move changes its parent's).
    parents: Vec<(Vec<u8>, Timespec)>,
}

impl Mover {
    /// A mover out of the old tree rooted at `old_root`.
    pub fn new(old_root: BorrowedFd<'_>) -> std::io::Result<Mover> {
        Ok(Mover {
            old: DirChain::new(rustix::io::fcntl_dupfd_cloexec(old_root, 0)?),
            moved: Vec::new(),
            parents: Vec::new(),
        })
    }

    /// How many directories have been taken (and not given back).
    pub fn taken(&self) -> usize {
        self.moved.len()
    }

    /// Moves the directory `rel` of the old tree to the same place in `new` (whose parent
    /// exists there) if it still is the directory `id` that was checked; anything else there
    /// is moved back at once. Whether the directory is now in the new tree.
    pub fn take(&mut self, new: &mut DirChain, rel: &[u8], id: DirId) -> bool {
        let (parent, _) = split(rel);
        if !self.parents.iter().any(|(p, _)| p == parent) {
            let Ok(st) = self
                .old
                .open_readable(parent)
                .and_then(|fd| Ok(rustix::fs::fstat(&fd)?))
            else {
                return false;
            };
            let mtime = Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            };
            self.parents.push((parent.to_vec(), mtime));
        }
        if move_dir(&mut self.old, new, rel).is_err() {
            return false;
        }
        let same = new.parent_of(rel).is_ok_and(|(dir, name)| {
            rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| DirId::of(&st) == id)
        });
        if !same {
            let _ = move_dir(new, &mut self.old, rel);
            return false;
        }
        self.moved.push(rel.to_vec());
        true
    }

    /// Moves every taken directory back from `new` into the old tree (newest first) and
    /// gives the old directories they came from their times back. Best effort: what cannot
    /// go back stays in `new`.
    pub fn give_back(&mut self, new: &mut DirChain) {
        while let Some(rel) = self.moved.pop() {
            let _ = move_dir(new, &mut self.old, &rel);
        }
        for (parent, mtime) in self.parents.drain(..) {
            if let Ok(fd) = self.old.open_readable(&parent) {
                let _ = rustix::fs::futimens(
                    &fd,
                    &Timestamps {
                        last_access: Timespec {
                            tv_sec: 0,
                            tv_nsec: rustix::fs::UTIME_OMIT,
                        },
                        last_modification: mtime,
                    },
                );
            }
        }
    }
}
