//! `stat` in all its generations, `access`, `readlink`, the xattr readers.

use libc::{c_char, c_int, c_uint, c_void, size_t, ssize_t};

use crate::fdtab::{self, Tag};
use crate::path::{self, cbytes, PBuf};
use crate::state::State;
use crate::vfs::{self, Node};
use crate::{abs_into, abs_of, fail, guarded, real};

/// Synthesized `stat` of a tagged fd.
fn stat_fd(st: &State, fd: c_int, out: *mut libc::stat) -> Option<c_int> {
    let (layer, idx) = match fdtab::get(fd)? {
        Tag::File { layer, idx } | Tag::Dir { layer, idx } => (layer, idx),
        Tag::Ancestor { .. } => return None,
    };
    let e = vfs::entry(st, layer, idx)?;
    // SAFETY: the caller's buffer.
    vfs::fill_stat(st, layer, &e, unsafe { &mut *out });
    Some(0)
}

fn statx_fd(st: &State, fd: c_int, out: *mut libc::statx) -> Option<c_int> {
    let (layer, idx) = match fdtab::get(fd)? {
        Tag::File { layer, idx } | Tag::Dir { layer, idx } => (layer, idx),
        Tag::Ancestor { .. } => return None,
    };
    let e = vfs::entry(st, layer, idx)?;
    // SAFETY: the caller's buffer.
    vfs::fill_statx(st, layer, &e, unsafe { &mut *out });
    Some(0)
}

/// `fstatat` semantics for every stat flavour. `None`: pass the caller's call through.
pub(crate) fn fstatat_impl(
    dirfd: c_int,
    p: *const c_char,
    out: *mut libc::stat,
    flags: c_int,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        if raw.is_empty() {
            if flags & libc::AT_EMPTY_PATH != 0 {
                return stat_fd(st, dirfd, out);
            }
            return None;
        }
        let mut a_p = PBuf::new();
        let a = abs_into(st, dirfd, raw, &mut a_p)?;
        let dir_only = a.dir_only;
        let r = vfs::resolve(
            st,
            &mut a_p,
            dir_only || flags & libc::AT_SYMLINK_NOFOLLOW == 0,
        );
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if dir_only && !e.is_dir() {
                    return fail(libc::ENOTDIR);
                }
                // SAFETY: the caller's buffer.
                vfs::fill_stat(st, layer, &e, unsafe { &mut *out });
                Some(0)
            }
            Node::Gone(e) => fail(e),
            Node::Upper => {
                let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffers.
                Some(unsafe {
                    real::fstatat(
                        libc::AT_FDCWD,
                        mp.as_ptr(),
                        out,
                        flags & libc::AT_SYMLINK_NOFOLLOW,
                    )
                })
            }
            Node::Real if !r.moved && a.orig_ok => None,
            Node::Real => {
                // SAFETY: valid buffers.
                Some(unsafe { real::fstatat(libc::AT_FDCWD, r.path.as_ptr(), out, flags) })
            }
        }
    })
}

pub(crate) fn statx_impl(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    mask: c_uint,
    out: *mut libc::statx,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        if raw.is_empty() {
            if flags & libc::AT_EMPTY_PATH != 0 {
                return statx_fd(st, dirfd, out);
            }
            return None;
        }
        let mut a_p = PBuf::new();
        let a = abs_into(st, dirfd, raw, &mut a_p)?;
        let dir_only = a.dir_only;
        let r = vfs::resolve(
            st,
            &mut a_p,
            dir_only || flags & libc::AT_SYMLINK_NOFOLLOW == 0,
        );
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if dir_only && !e.is_dir() {
                    return fail(libc::ENOTDIR);
                }
                // SAFETY: the caller's buffer.
                vfs::fill_statx(st, layer, &e, unsafe { &mut *out });
                Some(0)
            }
            Node::Gone(e) => fail(e),
            Node::Upper => {
                let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffers.
                Some(unsafe { real::statx(libc::AT_FDCWD, mp.as_ptr(), flags, mask, out) })
            }
            Node::Real if !r.moved && a.orig_ok => None,
            Node::Real => {
                // SAFETY: valid buffers.
                Some(unsafe { real::statx(libc::AT_FDCWD, r.path.as_ptr(), flags, mask, out) })
            }
        }
    })
}

pub(crate) fn fstat_impl(fd: c_int, out: *mut libc::stat) -> Option<c_int> {
    fdtab::get(fd)?;
    guarded(|st| stat_fd(st, fd, out))
}

// ---- the exported stat family ------------------------------------------------------------

hooks! {
    fn stat(p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, 0), else real::stat(p, b);
    fn stat64(p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, 0), else real::stat(p, b);
    fn lstat(p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, libc::AT_SYMLINK_NOFOLLOW), else real::lstat(p, b);
    fn lstat64(p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, libc::AT_SYMLINK_NOFOLLOW), else real::lstat(p, b);
    fn fstat(fd: c_int, b: *mut libc::stat) -> c_int
        => fstat_impl(fd, b), else real::fstat(fd, b);
    fn fstat64(fd: c_int, b: *mut libc::stat) -> c_int
        => fstat_impl(fd, b), else real::fstat(fd, b);
    fn fstatat(d: c_int, p: *const c_char, b: *mut libc::stat, f: c_int) -> c_int, trace p
        => fstatat_impl(d, p, b, f), else real::fstatat(d, p, b, f);
    fn fstatat64(d: c_int, p: *const c_char, b: *mut libc::stat, f: c_int) -> c_int, trace p
        => fstatat_impl(d, p, b, f), else real::fstatat(d, p, b, f);
    fn __xstat(_v: c_int, p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, 0), else real::stat(p, b);
    fn __xstat64(_v: c_int, p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, 0), else real::stat(p, b);
    fn __lxstat(_v: c_int, p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, libc::AT_SYMLINK_NOFOLLOW), else real::lstat(p, b);
    fn __lxstat64(_v: c_int, p: *const c_char, b: *mut libc::stat) -> c_int, trace p
        => fstatat_impl(libc::AT_FDCWD, p, b, libc::AT_SYMLINK_NOFOLLOW), else real::lstat(p, b);
    fn __fxstat(_v: c_int, fd: c_int, b: *mut libc::stat) -> c_int
        => fstat_impl(fd, b), else real::fstat(fd, b);
    fn __fxstat64(_v: c_int, fd: c_int, b: *mut libc::stat) -> c_int
        => fstat_impl(fd, b), else real::fstat(fd, b);
    fn __fxstatat(_v: c_int, d: c_int, p: *const c_char, b: *mut libc::stat, f: c_int) -> c_int, trace p
        => fstatat_impl(d, p, b, f), else real::fstatat(d, p, b, f);
    fn __fxstatat64(_v: c_int, d: c_int, p: *const c_char, b: *mut libc::stat, f: c_int) -> c_int, trace p
        => fstatat_impl(d, p, b, f), else real::fstatat(d, p, b, f);
    fn statx(d: c_int, p: *const c_char, f: c_int, m: c_uint, b: *mut libc::statx) -> c_int, trace p
        => statx_impl(d, p, f, m, b), else real::statx(d, p, f, m, b);
    fn access(p: *const c_char, mode: c_int) -> c_int, trace p
        => access_impl(libc::AT_FDCWD, p, mode, 0), else real::access(p, mode);
    fn faccessat(d: c_int, p: *const c_char, mode: c_int, f: c_int) -> c_int, trace p
        => access_impl(d, p, mode, f), else real::faccessat(d, p, mode, f);
    fn euidaccess(p: *const c_char, mode: c_int) -> c_int, trace p
        => access_impl(libc::AT_FDCWD, p, mode, libc::AT_EACCESS), else real::euidaccess(p, mode);
    fn eaccess(p: *const c_char, mode: c_int) -> c_int, trace p
        => access_impl(libc::AT_FDCWD, p, mode, libc::AT_EACCESS), else real::euidaccess(p, mode);
    fn readlink(p: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t, trace p
        => readlinkat_impl(libc::AT_FDCWD, p, buf, n), else real::readlink(p, buf, n);
    fn readlinkat(d: c_int, p: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t, trace p
        => readlinkat_impl(d, p, buf, n), else real::readlinkat(d, p, buf, n);
    fn getxattr(p: *const c_char, name: *const c_char, v: *mut c_void, s: size_t) -> ssize_t, trace p
        => xattr_impl(p, true, false, &|q| real::getxattr(q.as_ptr(), name, v, s)), else real::getxattr(p, name, v, s);
    fn lgetxattr(p: *const c_char, name: *const c_char, v: *mut c_void, s: size_t) -> ssize_t, trace p
        => xattr_impl(p, false, false, &|q| { real::lgetxattr(q.as_ptr(), name, v, s) }), else real::lgetxattr(p, name, v, s);
    fn listxattr(p: *const c_char, l: *mut c_char, s: size_t) -> ssize_t, trace p
        => xattr_impl(p, true, true, &|q| real::listxattr(q.as_ptr(), l, s)), else real::listxattr(p, l, s);
    fn llistxattr(p: *const c_char, l: *mut c_char, s: size_t) -> ssize_t, trace p
        => xattr_impl(p, false, true, &|q| real::llistxattr(q.as_ptr(), l, s)), else real::llistxattr(p, l, s);
}

// ---- access ------------------------------------------------------------------------------

pub(crate) fn access_impl(
    dirfd: c_int,
    p: *const c_char,
    mode: c_int,
    flags: c_int,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a_p = PBuf::new();
        let a = abs_into(st, dirfd, raw, &mut a_p)?;
        let dir_only = a.dir_only;
        let r = vfs::resolve(
            st,
            &mut a_p,
            dir_only || flags & libc::AT_SYMLINK_NOFOLLOW == 0,
        );
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if dir_only && !e.is_dir() {
                    return fail(libc::ENOTDIR);
                }
                let m = vfs::mode_of(&e);
                let ok = (mode & libc::R_OK == 0 || m & 0o444 != 0)
                    && (mode & libc::X_OK == 0 || m & 0o111 != 0)
                    && (mode & libc::W_OK == 0 || st.upper.is_some());
                if ok {
                    Some(0)
                } else if mode & libc::W_OK != 0 && st.upper.is_none() {
                    fail(libc::EROFS)
                } else {
                    fail(libc::EACCES)
                }
            }
            Node::Gone(e) => fail(e),
            Node::Upper => {
                let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffers.
                Some(unsafe { real::faccessat(libc::AT_FDCWD, mp.as_ptr(), mode, flags) })
            }
            Node::Real if !r.moved && a.orig_ok => None,
            Node::Real => {
                // SAFETY: valid buffers.
                Some(unsafe { real::faccessat(libc::AT_FDCWD, r.path.as_ptr(), mode, flags) })
            }
        }
    })
}

// ---- readlink ------------------------------------------------------------------------------

fn copy_out(src: &[u8], buf: *mut c_char, n: size_t) -> ssize_t {
    let k = src.len().min(n);
    // SAFETY: the caller's buffer holds `n` bytes.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf.cast::<u8>(), k) };
    k as ssize_t
}

/// `/proc/self/...` links that must name virtual paths.
fn proc_link(st: &State, raw: &[u8], buf: *mut c_char, n: size_t) -> Option<ssize_t> {
    let rest = raw
        .strip_prefix(b"/proc/self/")
        .or_else(|| raw.strip_prefix(b"/proc/thread-self/"))
        .or_else(|| {
            let r = raw.strip_prefix(b"/proc/")?;
            let slash = r.iter().position(|&b| b == b'/')?;
            // SAFETY: getpid never fails.
            let me = unsafe { libc::getpid() }.to_string();
            (r[..slash] == *me.as_bytes()).then(|| &r[slash + 1..])
        })?;
    if rest == b"exe" {
        return st.exe.as_deref().map(|e| copy_out(e, buf, n));
    }
    if rest == b"cwd" {
        if !path::cwd_mirrored() {
            return None;
        }
        let mut c = PBuf::new();
        path::cwd_into(&mut c)?;
        return Some(copy_out(c.as_bytes(), buf, n));
    }
    let num = rest.strip_prefix(b"fd/")?;
    let fd: c_int = std::str::from_utf8(num).ok()?.parse().ok()?;
    let (layer, idx) = match fdtab::get(fd)? {
        Tag::File { layer, idx } | Tag::Dir { layer, idx } => (layer, idx),
        Tag::Ancestor { .. } => return None,
    };
    let e = vfs::entry(st, layer, idx)?;
    let p = vfs::entry_abs(st, layer, &e)?;
    Some(copy_out(p.as_bytes(), buf, n))
}

pub(crate) fn readlinkat_impl(
    dirfd: c_int,
    p: *const c_char,
    buf: *mut c_char,
    n: size_t,
) -> Option<ssize_t> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        if raw.starts_with(b"/proc/") {
            return proc_link(st, raw, buf, n);
        }
        let mut a_p = PBuf::new();
        let a = abs_into(st, dirfd, raw, &mut a_p)?;
        let r = vfs::resolve(st, &mut a_p, false);
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if e.kind() != vrift_manifest::Kind::Symlink {
                    return fail(libc::EINVAL);
                }
                Some(copy_out(e.target(), buf, n))
            }
            Node::Gone(e) => fail(e),
            Node::Upper => {
                let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffers.
                Some(unsafe { real::readlink(mp.as_ptr(), buf, n) })
            }
            Node::Real if !r.moved && a.orig_ok => None,
            // SAFETY: valid buffers.
            Node::Real => Some(unsafe { real::readlink(r.path.as_ptr(), buf, n) }),
        }
    })
}

// ---- xattrs: virtual entries have none ----------------------------------------------------

/// Virtual entries have no xattrs; a file written during the run (upper layer) or reached
/// through a virtual symlink has its real file's, asked with `op` on that file's path.
fn xattr_impl(
    p: *const c_char,
    follow: bool,
    list: bool,
    op: &dyn Fn(&PBuf) -> ssize_t,
) -> Option<ssize_t> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a = abs_of(st, libc::AT_FDCWD, raw)?;
        let r = vfs::resolve(st, &mut a.p, follow);
        match r.node {
            Node::V { .. } if list => Some(0),
            Node::V { .. } => fail(libc::ENODATA),
            Node::Gone(e) => fail(e),
            Node::Upper => Some(op(&st.upper.as_ref()?.mirror_of(r.path.as_bytes())?)),
            Node::Real if !r.moved && a.orig_ok => None,
            Node::Real => Some(op(r.path)),
        }
    })
}

/// A view fd (file or directory) has no extended attributes.
fn view_fd(fd: c_int) -> bool {
    matches!(fdtab::get(fd), Some(Tag::File { .. } | Tag::Dir { .. }))
}

hooks! {
    fn fgetxattr(fd: c_int, name: *const c_char, v: *mut c_void, s: size_t) -> ssize_t
        => if view_fd(fd) { fail(libc::ENODATA) } else { None }, else real::fgetxattr(fd, name, v, s);
    fn flistxattr(fd: c_int, l: *mut c_char, s: size_t) -> ssize_t
        => view_fd(fd).then_some(0), else real::flistxattr(fd, l, s);
}
