//! Materializing a tree of manifest entries as real directories, symlinks and files: the one
//! implementation behind `vrift checkout` and the `--isolate` link farms.
//!
//! The entries come from a manifest someone else may have written (a bucket, a crafted file),
//! and the destination may be writable by someone else while we work (a CI job restoring as
//! root into a workspace a build step can touch). So:
//!
//! * the caller passes entries of a validated manifest (relative, normalized, nothing below a
//!   non-directory), in component-wise order;
//! * every entry is created relative to the descriptor of its parent directory, and parents
//!   are opened one component at a time with `O_NOFOLLOW` ([`crate::dirs`]): a symlink we made
//!   or found is never followed, so nothing is written or chmod'ed outside the destination;
//! * modes are set with `fchmod` on what we created, never through a path;
//! * setuid/setgid bits from the manifest are dropped unless asked for (as `unzip` and
//!   `cpio` do for archives from elsewhere);
//! * every blob is checked before it is linked or copied ([`vrift_cas::Cas::check_blob`]): a
//!   damaged blob is never handed out.
//!
//! Files are hard links to their blobs where one inode can serve (same mode, write bits aside),
//! copies otherwise, or as [`LinkMode`] says.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use vrift_cas::{BlobCheck, Cas, WRITE_BITS};
use vrift_manifest::{Entry, Kind};

use crate::dirs::{self, DirChain};
use crate::item::rel_os;
use crate::report::{Counters, IssueKind};

/// How files get their content (uv's names and meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkMode {
    /// Hard link where one inode can serve, else a copy.
    #[default]
    Auto,
    /// Hard links (copies only where a link is impossible: other file system, link cap,
    /// a mode the blob does not have).
    Hardlink,
    /// Copy-on-write clones (`FICLONE`); a byte copy where the file system cannot clone.
    Reflink,
    /// Independent copies: a tree you may patch in place without touching the store.
    Copy,
}

impl LinkMode {
    pub fn name(self) -> &'static str {
        match self {
            LinkMode::Auto => "auto",
            LinkMode::Hardlink => "hardlink",
            LinkMode::Reflink => "reflink",
            LinkMode::Copy => "copy",
        }
    }
}

/// Setuid and setgid: dropped from manifest modes unless [`Options::keep_setid`].
pub const SETID_BITS: u32 = 0o6000;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub link_mode: LinkMode,
    /// Keep setuid/setgid bits recorded in the manifest.
    pub keep_setid: bool,
    pub threads: usize,
    /// Bits added to every directory's mode (a link farm adds `u+rwx` so it can always be
    /// deleted; it is only ever mounted read-only).
    pub dir_mode_add: u32,
    /// Link a file only when its blob shows the entry's mtime to the second, else copy it
    /// with the entry's mtime. A link shares the blob's inode, so a file shows the mtime of
    /// whichever identical file was stored first: pip stamps each file with its install time,
    /// so the same empty `__init__.py` in two packages differs, and Python, comparing whole
    /// seconds, finds that module's `.pyc` stale on every run of a link farm. npm and cargo
    /// extract with fixed or archived times, so their trees copy nothing.
    pub mtime_second_exact: bool,
    /// Give every file of the tree an inode of its own: the first file with some content is
    /// linked to the blob, every other file with that content is a copy. Identical files
    /// sharing one inode look like hard links of each other, so `cp -a`, `tar` and
    /// `rsync -H` inside a link farm would link unrelated files of the copy together (an
    /// edit of one then changes the other). A node_modules of 16,971 files has 3,018 such
    /// duplicates, 3.5 MB.
    pub distinct_inodes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            link_mode: LinkMode::Auto,
            keep_setid: false,
            threads: 1,
            dir_mode_add: 0,
            mtime_second_exact: false,
            distinct_inodes: false,
        }
    }
}

/// One node of a tree to materialize.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
    /// A file, executable or symlink entry.
    Leaf(Entry<'a>),
}

/// What a materialization did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub linked: u64,
    pub reflinked: u64,
    pub copied: u64,
    /// Files taken, with their directories, from the tree this one replaced (see
    /// [`crate::reuse`]): already the blobs' links, so neither linked again nor deleted.
    pub reused: u64,
    /// Entries whose setuid/setgid bits were dropped.
    pub setid_dropped: u64,
    pub errors: u64,
    pub seconds: f64,
}

impl Report {
    fn add(&mut self, o: &Report) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.linked += o.linked;
        self.reflinked += o.reflinked;
        self.copied += o.copied;
        self.reused += o.reused;
        self.setid_dropped += o.setid_dropped;
        self.errors += o.errors;
    }
}

/// The nodes of a validated manifest, in its order, for [`materialize`] (whiteouts are
/// layer markers, not files: skipped).
pub fn manifest_nodes<'a>(m: &'a vrift_manifest::Manifest) -> Vec<(&'a [u8], Node<'a>)> {
    m.iter()
        .filter_map(|e| match e.kind() {
            Kind::Dir => Some((
                e.path(),
                Node::Dir {
                    mode: e.mode(),
                    mtime_ns: e.mtime_ns(),
                },
            )),
            Kind::File | Kind::Executable | Kind::Symlink => Some((e.path(), Node::Leaf(e))),
            Kind::Whiteout => None,
        })
        .collect()
}

/// Creates `nodes` (paths relative to `dest`, in component-wise order, parents before
/// children; the root `""` may be among them) inside the directory `dest_fd`. `dest` only
/// names things in messages. Per-entry failures are counted and recorded in `counters`
/// (naming the path); the rest of the tree is still written.
pub fn materialize<P: AsRef<[u8]> + Sync>(
    cas: &Cas,
    dest: &Path,
    dest_fd: OwnedFd,
    nodes: &[(P, Node<'_>)],
    opts: &Options,
    counters: &Counters,
) -> Report {
    materialize_over(cas, dest, dest_fd, nodes, None, opts, counters).0
}

/// The tree a [`materialize_over`] replaces: its root and what of it can be taken whole.
pub struct Old<'a> {
    pub root: BorrowedFd<'a>,
    pub reusable: &'a crate::reuse::Reusable,
}

/// [`materialize`], taking the directories `old.reusable` names from the old tree (moved,
/// one `rename` each, relative to both trees' descriptors: see [`crate::reuse::Mover`])
/// instead of building them. A directory that cannot be taken is built as usual. When the
/// tree cannot be completed, taken directories go back to the old tree before anything of
/// them is changed; otherwise the returned mover holds them, so a caller that gives up on
/// the new tree later can still give them back.
pub fn materialize_over<P: AsRef<[u8]> + Sync>(
    cas: &Cas,
    dest: &Path,
    dest_fd: OwnedFd,
    nodes: &[(P, Node<'_>)],
    old: Option<Old<'_>>,
    opts: &Options,
    counters: &Counters,
) -> (Report, Option<crate::reuse::Mover>) {
    let t = Instant::now();
    let mut report = Report::default();
    let mut chain = DirChain::new(dest_fd);
    let at = |rel: &[u8]| -> PathBuf {
        if rel.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rel_os(rel))
        }
    };
    let fail = |report: &mut Report, rel: &[u8], msg: String| {
        counters.issue(IssueKind::NotWritten, at(rel), msg);
        report.errors += 1;
    };

    // Nodes that come with a directory taken from the old tree (the directory included).
    let mut taken = vec![false; nodes.len()];
    let subtree = |d: usize| {
        let top = nodes[d].0.as_ref();
        d..(d + 1..nodes.len())
            .find(|&k| !vrift_manifest::order::is_ancestor(top, nodes[k].0.as_ref()))
            .unwrap_or(nodes.len())
    };
    if let Some(old) = &old {
        for &(d, _) in &old.reusable.dirs {
            for k in subtree(d) {
                taken[k] = true;
            }
        }
    }

    // 1. Directories, parents first, owner-writable until the end.
    let mut failed_dirs: std::collections::HashSet<usize> = Default::default();
    let mut make = |chain: &mut DirChain, report: &mut Report, i: usize| {
        let rel = nodes[i].0.as_ref();
        if rel.is_empty() || !matches!(nodes[i].1, Node::Dir { .. }) {
            return;
        }
        match make_dir(chain, rel) {
            Ok(()) => report.dirs += 1,
            Err(e) => {
                failed_dirs.insert(i);
                fail(report, rel, format!("cannot create directory: {e}"));
            }
        }
    };
    for (i, _) in taken.iter().enumerate().filter(|(_, t)| !**t) {
        make(&mut chain, &mut report, i);
    }

    // 1b. Directories taken whole from the old tree, now that their parents exist here.
    let mut mover = None;
    if let Some(old) = &old {
        mover = crate::reuse::Mover::new(old.root).ok();
        for &(d, id) in &old.reusable.dirs {
            let rel = nodes[d].0.as_ref();
            if mover.as_mut().is_some_and(|m| m.take(&mut chain, rel, id)) {
                for k in subtree(d) {
                    match nodes[k].1 {
                        Node::Dir { .. } => report.dirs += 1,
                        Node::Leaf(e) => {
                            if e.kind() == Kind::Symlink {
                                report.symlinks += 1;
                            } else {
                                report.files += 1;
                                report.reused += 1;
                                if !opts.keep_setid && e.mode() & SETID_BITS != 0 {
                                    report.setid_dropped += 1;
                                }
                            }
                            Counters::add(&counters.files, 1);
                        }
                    }
                }
            } else {
                // Built as usual instead.
                for k in subtree(d) {
                    taken[k] = false;
                    make(&mut chain, &mut report, k);
                }
            }
        }
    }

    // 2. Files and symlinks, on `threads` threads over contiguous runs (which share parents).
    let leaves: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(i, (_, n))| matches!(n, Node::Leaf(_)) && !taken[*i])
        .map(|(i, _)| i)
        .collect();
    // Which leaves repeat content seen earlier in the tree (see `Options::distinct_inodes`).
    let mut repeat = Vec::new();
    if opts.distinct_inodes {
        repeat = vec![false; nodes.len()];
        let mut seen: std::collections::HashSet<(&[u8], u64)> = Default::default();
        for &i in &leaves {
            if let (_, Node::Leaf(e)) = &nodes[i] {
                if e.kind() != Kind::Symlink && !seen.insert((&e.hash()[..], e.size())) {
                    repeat[i] = true;
                }
            }
        }
    }
    let repeat = &repeat;
    let threads = opts.threads.max(1);
    let chunk = leaves.len().div_ceil(threads).max(1);
    let parts: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = leaves
            .chunks(chunk)
            .map(|idx| {
                let chain = chain.try_clone();
                let at = &at;
                s.spawn(move || {
                    let mut r = Report::default();
                    let mut chain = match chain {
                        Ok(c) => c,
                        Err(e) => {
                            counters.issue(
                                IssueKind::NotWritten,
                                at(b""),
                                format!("cannot open: {e}"),
                            );
                            r.errors += idx.len() as u64;
                            return r;
                        }
                    };
                    for &i in idx {
                        let (p, Node::Leaf(e)) = &nodes[i] else {
                            continue;
                        };
                        let rel = p.as_ref();
                        if let Err(msg) = place_leaf(
                            cas,
                            &mut chain,
                            rel,
                            e,
                            repeat.get(i) == Some(&true),
                            opts,
                            &mut r,
                        ) {
                            counters.issue(IssueKind::NotWritten, at(rel), msg);
                            r.errors += 1;
                        }
                        // Progress: leaves done (a checkout's percent line reads it).
                        Counters::add(&counters.files, 1);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Report {
                    errors: 1,
                    ..Default::default()
                })
            })
            .collect()
    });
    for p in &parts {
        report.add(p);
    }

    // The tree will not be complete: what was taken goes back to the old tree untouched.
    let gave_back = report.errors > 0 && mover.as_ref().is_some_and(|m| m.taken() > 0);
    if gave_back {
        if let Some(m) = &mut mover {
            m.give_back(&mut chain);
        }
    }

    // 3. Directory modes and mtimes, deepest first: a read-only directory would refuse its
    // children, and adding a child changes the parent's mtime.
    for (i, (p, n)) in nodes.iter().enumerate().rev() {
        let rel = p.as_ref();
        let Node::Dir { mode, mtime_ns } = *n else {
            continue;
        };
        if failed_dirs.contains(&i) || (gave_back && taken[i]) {
            continue; // never made (already counted), or given back
        }
        let mut mode = mode & 0o7777;
        if !opts.keep_setid && mode & SETID_BITS != 0 {
            mode &= !SETID_BITS;
            report.setid_dropped += 1;
        }
        if let Err(e) = finish_dir(&mut chain, rel, mode | opts.dir_mode_add, mtime_ns) {
            fail(&mut report, rel, format!("cannot set mode and time: {e}"));
        }
    }
    report.seconds = t.elapsed().as_secs_f64();
    (report, mover)
}

/// Moves the directory `rel` of the tree under `from` to the same place under `to` (whose
/// parent exists), never replacing anything there.
pub fn move_dir(from: &mut DirChain, to: &mut DirChain, rel: &[u8]) -> io::Result<()> {
    let (src, name) = from.parent_of(rel)?;
    let (dst, _) = to.parent_of(rel)?;
    rustix::fs::renameat_with(
        src,
        name.as_c_str(),
        dst,
        name.as_c_str(),
        rustix::fs::RenameFlags::NOREPLACE,
    )?;
    Ok(())
}

fn make_dir(chain: &mut DirChain, rel: &[u8]) -> io::Result<()> {
    let (parent, name) = chain.parent_of(rel)?;
    match rustix::fs::mkdirat(parent, name.as_c_str(), Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(()),
        // Only a directory may already be there (the destination's own root, say), and it
        // must be a real one: opening it the way children will see it checks both.
        Err(rustix::io::Errno::EXIST) => dirs::open_dir_at(parent, name.as_bytes()).map(drop),
        Err(e) => Err(e.into()),
    }
}

/// Gives the directory `rel` (opened without following symlinks) its mode and mtime: the last
/// step for a directory, once nothing more is written into it.
pub fn finish_dir(chain: &mut DirChain, rel: &[u8], mode: u32, mtime_ns: i64) -> io::Result<()> {
    let fd = chain.open_readable(rel)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    if mtime_ns != 0 {
        set_mtime(fd.as_fd(), mtime_ns)?;
    }
    Ok(())
}

/// Sets a file's access and modification times to `mtime_ns`.
pub fn set_mtime(fd: BorrowedFd<'_>, mtime_ns: i64) -> io::Result<()> {
    let ts = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    rustix::fs::futimens(
        fd,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )?;
    Ok(())
}

fn place_leaf(
    cas: &Cas,
    chain: &mut DirChain,
    rel: &[u8],
    e: &Entry<'_>,
    repeat: bool,
    opts: &Options,
    r: &mut Report,
) -> Result<(), String> {
    let (parent, name) = chain
        .parent_of(rel)
        .map_err(|err| format!("cannot open its directory: {err}"))?;
    if e.kind() == Kind::Symlink {
        rustix::fs::symlinkat(rel_os(e.target()), parent, name.as_c_str())
            .map_err(|err| format!("cannot create symlink: {err}"))?;
        r.symlinks += 1;
        return Ok(());
    }
    let mut mode = e.mode() & 0o7777;
    if !opts.keep_setid && mode & SETID_BITS != 0 {
        mode &= !SETID_BITS;
        r.setid_dropped += 1;
    }
    let (hash, size) = (e.hash(), e.size());
    let blob_name = || vrift_cas::blob_rel(hash, size);
    let blob = match cas.check_blob(hash, size) {
        Ok(BlobCheck::Sound(st)) => st,
        Ok(BlobCheck::Missing) => return Err(format!("blob {} is missing", blob_name())),
        Ok(BlobCheck::Damaged) => {
            return Err(format!(
                "blob {} was damaged (its content no longer matches its name) and has been \
                 quarantined; ingest or pull the tree again",
                blob_name()
            ))
        }
        Err(err) => return Err(format!("blob {} unreadable: {err}", blob_name())),
    };
    r.files += 1;
    let keep = 0o7777 & !WRITE_BITS;
    let link_ok = !repeat
        && matches!(opts.link_mode, LinkMode::Auto | LinkMode::Hardlink)
        && blob.st_mode & keep == mode & keep
        && (!opts.mtime_second_exact
            || blob.st_mtime == e.mtime_ns().div_euclid(1_000_000_000) as libc::time_t);
    if link_ok {
        let rel_blob = Cas::blob_rel_c(hash, size);
        match rustix::fs::linkat(
            cas.blob_fd(),
            rel_blob.as_c_str(),
            parent,
            name.as_c_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => {
                r.linked += 1;
                return Ok(());
            }
            Err(rustix::io::Errno::MLINK | rustix::io::Errno::XDEV | rustix::io::Errno::PERM) => {}
            Err(err) => return Err(format!("cannot link from store: {err}")),
        }
    }
    let reflinked = copy_blob(cas, hash, size, parent, &name, mode, e.mtime_ns(), opts)
        .map_err(|err| format!("cannot copy from store: {err}"))?;
    if reflinked {
        r.reflinked += 1;
    } else {
        r.copied += 1;
    }
    Ok(())
}

/// Writes a copy (a clone when `opts` asks and the file system can) of the blob as the new
/// file `name` of `parent`, with `mode` and `mtime_ns`. Returns whether it cloned.
#[allow(clippy::too_many_arguments)]
fn copy_blob(
    cas: &Cas,
    hash: &vrift_manifest::Hash,
    size: u64,
    parent: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    mtime_ns: i64,
    opts: &Options,
) -> io::Result<bool> {
    let src = cas.open_blob(hash, size)?;
    let out = rustix::fs::openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let cloned =
        opts.link_mode == LinkMode::Reflink && rustix::fs::ioctl_ficlone(&out, &src).is_ok();
    if !cloned {
        copy_range(src.as_fd(), out.as_fd(), size)?;
    }
    rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))?;
    set_mtime(out.as_fd(), mtime_ns)?;
    Ok(cloned)
}

/// Copies `len` bytes in the kernel (`copy_file_range`), with a read/write loop where the
/// kernel refuses (some file systems, cross-device on old kernels).
fn copy_range(src: BorrowedFd<'_>, out: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (0u64, 0u64);
    while off_in < len {
        let want = (len - off_in).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), out, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                let mut buf = vec![0u8; 1 << 20];
                while off_in < len {
                    let n = rustix::io::pread(src, &mut buf, off_in)?;
                    if n == 0 {
                        break;
                    }
                    let mut done = 0;
                    while done < n {
                        let w = rustix::io::pwrite(out, &buf[done..n], off_out)?;
                        done += w;
                        off_out += w as u64;
                    }
                    off_in += n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if off_in != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("blob ended after {off_in} of {len} bytes"),
        ));
    }
    Ok(())
}

/// Opens the destination directory `dest` (creating it if missing; it must be empty) as the
/// root for [`materialize`].
pub fn open_empty_dest(dest: &Path) -> io::Result<OwnedFd> {
    match std::fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "destination exists and is not empty",
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(dest)?,
        Err(e) => return Err(e),
    }
    dirs::open_root(dest)
}
