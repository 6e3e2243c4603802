//! What the shim knows about file descriptors it handed out.
//!
//! A virtual file is opened as its real blob fd, a virtual directory as a real fd of an
//! empty directory; this table remembers which virtual entry each such fd stands for, so
//! `fstat`, `fchdir`, `fdopendir`, `openat(fd, ..)`, `/proc/self/fd/N` answer for the
//! virtual entry. Real directories that are ancestors of a root are remembered too, so
//! `openat(fd_of_project, "node_modules/x")` finds the virtual tree.
//!
//! One atomic word per fd below [`LIMIT`] (a static array: no allocation, no lock, safe
//! after `fork`). Higher fds are never tagged (they behave as their real files).

use std::sync::atomic::{AtomicU64, Ordering};

pub const LIMIT: usize = 1 << 16;

static TAGS: [AtomicU64; LIMIT] = [const { AtomicU64::new(0) }; LIMIT];

const KIND_SHIFT: u32 = 60;
const FILE: u64 = 1;
const DIR: u64 = 2;
const ANCESTOR: u64 = 3;

/// What an fd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// Virtual file (entry `idx` of layer `layer`).
    File { layer: usize, idx: usize },
    /// Virtual directory.
    Dir { layer: usize, idx: usize },
    /// Real directory that is `State::ancestors[id]`.
    Ancestor { id: usize },
}

fn encode(t: Tag) -> u64 {
    match t {
        Tag::File { layer, idx } => {
            (FILE << KIND_SHIFT) | ((layer as u64 & 0xff) << 40) | (idx as u64 & 0xff_ffff_ffff)
        }
        Tag::Dir { layer, idx } => {
            (DIR << KIND_SHIFT) | ((layer as u64 & 0xff) << 40) | (idx as u64 & 0xff_ffff_ffff)
        }
        Tag::Ancestor { id } => (ANCESTOR << KIND_SHIFT) | (id as u64 & 0xff_ffff_ffff),
    }
}

fn decode(v: u64) -> Option<Tag> {
    let layer = ((v >> 40) & 0xff) as usize;
    let idx = (v & 0xff_ffff_ffff) as usize;
    match v >> KIND_SHIFT {
        FILE => Some(Tag::File { layer, idx }),
        DIR => Some(Tag::Dir { layer, idx }),
        ANCESTOR => Some(Tag::Ancestor { id: idx }),
        _ => None,
    }
}

/// The tag of `fd`, if any.
#[inline]
pub fn get(fd: libc::c_int) -> Option<Tag> {
    let i = usize::try_from(fd).ok()?;
    let v = TAGS.get(i)?.load(Ordering::Acquire);
    if v == 0 {
        None
    } else {
        decode(v)
    }
}

/// Tags `fd` (no-op for fds beyond the table).
pub fn set(fd: libc::c_int, t: Tag) {
    if let Some(w) = usize::try_from(fd).ok().and_then(|i| TAGS.get(i)) {
        w.store(encode(t), Ordering::Release);
    }
}

/// Forgets `fd` (it was closed or replaced).
#[inline]
pub fn clear(fd: libc::c_int) {
    if let Some(w) = usize::try_from(fd).ok().and_then(|i| TAGS.get(i)) {
        if w.load(Ordering::Relaxed) != 0 {
            w.store(0, Ordering::Release);
        }
    }
}

/// Copies `from`'s tag to `to` (dup), clearing `to`'s old tag.
pub fn copy(from: libc::c_int, to: libc::c_int) {
    match get(from) {
        Some(t) => set(to, t),
        None => clear(to),
    }
}

/// Forgets every fd in `first..=last`.
pub fn clear_range(first: u32, last: u32) {
    let hi = (last as usize).min(LIMIT - 1);
    for i in first as usize..=hi {
        clear(i as libc::c_int);
    }
}

/// After a call that may have made `to` a duplicate of `from` (`dup*`, `fcntl(F_DUPFD*)`):
/// `to` inherits `from`'s tag. Returns `to` (the call's result).
pub fn duped(from: libc::c_int, to: libc::c_int) -> libc::c_int {
    if to >= 0 && to != from {
        copy(from, to);
    }
    to
}

/// After `fcntl(fd, cmd, ...)` returned `r`.
pub fn after_fcntl(fd: libc::c_int, cmd: libc::c_int, r: libc::c_int) -> libc::c_int {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        duped(fd, r)
    } else {
        r
    }
}

/// After `close_range(first, last, flags)` returned `r`.
pub fn after_close_range(first: u32, last: u32, flags: libc::c_int, r: libc::c_int) -> libc::c_int {
    if r == 0 && flags & (libc::CLOSE_RANGE_CLOEXEC as libc::c_int) == 0 {
        clear_range(first, last);
    }
    r
}

/// `fd` is being closed: forget it (before the call, so a racing open of the same number
/// never inherits a stale tag).
pub fn closing(fd: libc::c_int) -> libc::c_int {
    clear(fd);
    fd
}
