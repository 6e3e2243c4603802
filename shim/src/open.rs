//! Opening files (blob fds, copy-up on write, creation in the upper dir), the fd
//! bookkeeping hooks (`close`, `dup*`, `fcntl`), and the other writers (`unlink`, `mkdir`,
//! `rename`, `truncate`, `chmod`, `utimensat`, `symlink`).

use libc::{c_char, c_int, c_long, c_uint, mode_t, off_t, FILE};
use vrift_manifest::Kind;

use crate::mf::Entry;

use crate::fdtab::{self, Tag};
use crate::path::{self, cbytes, PBuf};
use crate::state::State;
use crate::upper::{self, Mirror};
use crate::vfs::{self, Node};
use crate::{abs_into, abs_of, fail, guarded, real};

/// The fd `raw` names if it is a `/proc/self/fd/N`-style path (see `vrift_shim_core`).
pub(crate) fn proc_fd_of(raw: &[u8]) -> Option<c_int> {
    if !(raw.starts_with(b"/proc/") || raw.starts_with(b"/dev/fd/")) {
        return None;
    }
    // Only `/proc/<digits>/...` needs our pid (a syscall): ask only then.
    let pid = if raw.get(6).is_some_and(u8::is_ascii_digit) {
        // SAFETY: getpid never fails.
        unsafe { libc::getpid() as u32 }
    } else {
        0
    };
    crate::guard::proc_fd(raw, pid)
}

fn is_write(flags: c_int) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Copies virtual file `virt` (entry `e`) into the upper mirror unless it is already there;
/// returns the mirror path. The blob is only read. `empty`: the caller truncates anyway.
pub(crate) fn copy_up(st: &State, virt: &[u8], e: &Entry<'_>, empty: bool) -> Result<PBuf, c_int> {
    let up = st.upper.as_ref().ok_or(libc::EROFS)?;
    let mp = up.mirror_of(virt).ok_or(libc::ENAMETOOLONG)?;
    upper::mkdir_p(path::parent(mp.as_bytes()));
    let perm = (e.mode() & 0o7777) | 0o200;
    let mut tmp = PBuf::from(mp.as_bytes()).ok_or(libc::ENAMETOOLONG)?;
    tmp.push(b".vrift-tmp-").ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: getpid never fails.
    tmp.push(unsafe { libc::getpid() }.to_string().as_bytes())
        .ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: real functions on valid buffers and our own fds, all closed before returning.
    unsafe {
        if e.kind() == Kind::Symlink {
            let t = PBuf::from(e.target()).ok_or(libc::ENAMETOOLONG)?;
            real::unlink(tmp.as_ptr());
            if real::symlink(t.as_ptr(), tmp.as_ptr()) != 0 {
                return Err(real::errno());
            }
        } else {
            let out = real::open(
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                perm,
            );
            if out < 0 {
                return Err(real::errno());
            }
            if !empty && e.size() > 0 {
                let blob = vfs::blob_path(st, e).ok_or(libc::ENAMETOOLONG)?;
                let inp = real::open(blob.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
                if inp < 0 {
                    let err = real::errno();
                    real::close(out);
                    real::unlink(tmp.as_ptr());
                    return Err(err);
                }
                let ok = copy_fd(inp, out);
                real::close(inp);
                if !ok {
                    let err = real::errno();
                    real::close(out);
                    real::unlink(tmp.as_ptr());
                    return Err(err);
                }
            }
            real::fchmod(out, perm);
            real::close(out);
        }
        if real::rename(tmp.as_ptr(), mp.as_ptr()) != 0 {
            let err = real::errno();
            real::unlink(tmp.as_ptr());
            return Err(err);
        }
    }
    up.flag_with_ancestors(virt);
    Ok(mp)
}

unsafe fn copy_fd(inp: c_int, out: c_int) -> bool {
    loop {
        let n = libc::copy_file_range(
            inp,
            std::ptr::null_mut(),
            out,
            std::ptr::null_mut(),
            1 << 30,
            0,
        );
        if n == 0 {
            return true;
        }
        if n < 0 {
            break;
        }
    }
    // Fallback: plain reads and writes.
    if libc::lseek(inp, 0, libc::SEEK_SET) < 0
        || libc::ftruncate(out, 0) != 0
        || libc::lseek(out, 0, libc::SEEK_SET) < 0
    {
        return false;
    }
    // Small: hooks run on the program's threads, whose stacks may be small (musl-sized, Go-
    // or JVM-created threads).
    let mut buf = [0u8; 8192];
    loop {
        let n = real::read(inp, buf.as_mut_ptr().cast(), buf.len());
        if n == 0 {
            return true;
        }
        if n < 0 {
            return false;
        }
        let mut off = 0usize;
        while off < n as usize {
            let w = real::write(out, buf[off..].as_ptr().cast(), n as usize - off);
            if w <= 0 {
                return false;
            }
            off += w as usize;
        }
    }
}

/// Is `virt`'s parent a directory of the view (virtual or in the mirror)?
fn parent_is_view_dir(st: &State, virt: &[u8]) -> bool {
    let Some(mut pp) = PBuf::from(path::parent(virt)) else {
        return false;
    };
    let r = vfs::resolve(st, &mut pp, true);
    match r.node {
        Node::V { layer, idx } => vfs::entry(st, layer, idx).is_some_and(|e| e.is_dir()),
        Node::Upper => true,
        _ => false,
    }
}

fn real_exists(p: &PBuf) -> bool {
    // SAFETY: valid buffers.
    unsafe {
        let mut s: libc::stat = std::mem::zeroed();
        real::lstat(p.as_ptr(), &mut s) == 0
    }
}

/// Prepares the mirror for a new entry at `virt` (parents, stale whiteout) and returns its path.
fn prepare_new(st: &State, virt: &[u8]) -> Result<PBuf, c_int> {
    let up = st.upper.as_ref().ok_or(libc::EROFS)?;
    let mp = up.mirror_of(virt).ok_or(libc::ENAMETOOLONG)?;
    upper::mkdir_p(path::parent(mp.as_bytes()));
    if up.flagged(virt) && matches!(upper::probe(up, virt), Mirror::Whiteout) {
        if let Some(h) = up.hidden_of(virt) {
            // SAFETY: valid buffer.
            unsafe { real::unlink(h.as_ptr()) };
        }
    }
    Ok(mp)
}

/// The real path to hand the kernel for a `Node::Real` result.
fn real_arg<'p>(orig_ok: bool, r: &vfs::Resolved<'p>) -> Option<&'p PBuf> {
    if !r.moved && orig_ok {
        None
    } else {
        Some(r.path)
    }
}

pub(crate) fn open_impl(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        if is_write(flags) {
            // Reopening a view fd through /proc for writing must not write its blob.
            if let Some(n) = proc_fd_of(raw) {
                return crate::guard::reopen_for_write(st, n, flags, mode);
            }
        }
        let mut a_p = PBuf::new();
        let a = abs_into(st, dirfd, raw, &mut a_p)?;
        if !st.in_view(a_p.as_bytes()) {
            let id = st.ancestor_id(a_p.as_bytes());
            if id.is_none() && a.orig_ok {
                return None;
            }
            // SAFETY: valid buffers.
            let fd = unsafe {
                if a.orig_ok {
                    real::openat(dirfd, p, flags, mode)
                } else {
                    real::openat(libc::AT_FDCWD, a_p.as_ptr(), flags, mode)
                }
            };
            if let Some(id) = id {
                if fd >= 0 {
                    fdtab::set(fd, Tag::Ancestor { id });
                }
            }
            return Some(fd);
        }
        let follow = flags & libc::O_NOFOLLOW == 0;
        let r = vfs::resolve(st, &mut a_p, follow);
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                    return fail(libc::EEXIST);
                }
                match e.kind() {
                    Kind::Dir => {
                        if flags & libc::O_TMPFILE == libc::O_TMPFILE {
                            let up = st.upper.as_ref().ok_or(libc::EROFS).ok()?;
                            let mp = up.mirror_of(r.path.as_bytes())?;
                            upper::mkdir_p(mp.as_bytes());
                            // SAFETY: valid buffers.
                            return Some(unsafe {
                                real::openat(libc::AT_FDCWD, mp.as_ptr(), flags, mode)
                            });
                        }
                        if is_write(flags) {
                            return fail(libc::EISDIR);
                        }
                        let f = libc::O_RDONLY
                            | libc::O_DIRECTORY
                            | (flags & (libc::O_CLOEXEC | libc::O_PATH));
                        // SAFETY: valid buffer.
                        let fd =
                            unsafe { real::openat(libc::AT_FDCWD, st.placeholder.as_ptr(), f, 0) };
                        if fd >= 0 {
                            fdtab::set(fd, Tag::Dir { layer, idx });
                        }
                        Some(fd)
                    }
                    Kind::Symlink => {
                        if flags & libc::O_PATH != 0 {
                            // SAFETY: valid buffer.
                            let fd = unsafe {
                                real::openat(
                                    libc::AT_FDCWD,
                                    st.placeholder.as_ptr(),
                                    libc::O_PATH | (flags & libc::O_CLOEXEC),
                                    0,
                                )
                            };
                            return Some(fd);
                        }
                        fail(libc::ELOOP)
                    }
                    Kind::File | Kind::Executable | Kind::Whiteout => {
                        if flags & libc::O_DIRECTORY != 0 {
                            return fail(libc::ENOTDIR);
                        }
                        if is_write(flags) {
                            let mp = match copy_up(
                                st,
                                r.path.as_bytes(),
                                &e,
                                flags & libc::O_TRUNC != 0,
                            ) {
                                Ok(mp) => mp,
                                Err(err) => return fail(err),
                            };
                            let f = flags & !(libc::O_CREAT | libc::O_EXCL);
                            // SAFETY: valid buffers.
                            return Some(unsafe {
                                real::openat(libc::AT_FDCWD, mp.as_ptr(), f, mode)
                            });
                        }
                        let blob = vfs::blob_path(st, &e)?;
                        let f = flags
                            & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOATIME | libc::O_NOFOLLOW);
                        // SAFETY: valid buffer.
                        let fd = unsafe { real::openat(libc::AT_FDCWD, blob.as_ptr(), f, 0) };
                        if fd >= 0 {
                            if let Err(err) = crate::guard::check_served(st, fd, &e, &blob) {
                                // SAFETY: our own fd.
                                unsafe { real::close(fd) };
                                return fail(err);
                            }
                            fdtab::set(fd, Tag::File { layer, idx });
                        }
                        Some(fd)
                    }
                }
            }
            Node::Gone(err) => {
                if err == libc::ENOENT
                    && flags & libc::O_CREAT != 0
                    && parent_is_view_dir(st, r.path.as_bytes())
                {
                    return create_new(st, r.path, flags, mode);
                }
                fail(err)
            }
            Node::Upper => {
                let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffers.
                Some(unsafe { real::openat(libc::AT_FDCWD, mp.as_ptr(), flags, mode) })
            }
            Node::Real => {
                if flags & libc::O_CREAT != 0
                    && !real_exists(r.path)
                    && parent_is_view_dir(st, r.path.as_bytes())
                {
                    return create_new(st, r.path, flags, mode);
                }
                let rp = real_arg(a.orig_ok, &r)?;
                // SAFETY: valid buffers.
                Some(unsafe { real::openat(libc::AT_FDCWD, rp.as_ptr(), flags, mode) })
            }
        }
    })
}

fn create_new(st: &State, virt: &PBuf, flags: c_int, mode: c_uint) -> Option<c_int> {
    let mp = match prepare_new(st, virt.as_bytes()) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    // SAFETY: valid buffers.
    let fd = unsafe { real::openat(libc::AT_FDCWD, mp.as_ptr(), flags, mode) };
    if fd >= 0 {
        if let Some(up) = &st.upper {
            up.flag_with_ancestors(virt.as_bytes());
        }
    }
    Some(fd)
}

hooks! {
    fn open(p: *const c_char, flags: c_int, mode: c_uint) -> c_int, trace p
        => open_impl(libc::AT_FDCWD, p, flags, mode), else real::open(p, flags, mode);
    fn open64(p: *const c_char, flags: c_int, mode: c_uint) -> c_int, trace p
        => open_impl(libc::AT_FDCWD, p, flags, mode), else real::open64(p, flags, mode);
    fn __open_2(p: *const c_char, flags: c_int) -> c_int, trace p
        => open_impl(libc::AT_FDCWD, p, flags, 0), else real::open(p, flags, 0);
    fn __open64_2(p: *const c_char, flags: c_int) -> c_int, trace p
        => open_impl(libc::AT_FDCWD, p, flags, 0), else real::open64(p, flags, 0);
    fn openat(d: c_int, p: *const c_char, flags: c_int, mode: c_uint) -> c_int, trace p
        => open_impl(d, p, flags, mode), else real::openat(d, p, flags, mode);
    fn openat64(d: c_int, p: *const c_char, flags: c_int, mode: c_uint) -> c_int, trace p
        => open_impl(d, p, flags, mode), else real::openat64(d, p, flags, mode);
    fn __openat_2(d: c_int, p: *const c_char, flags: c_int) -> c_int, trace p
        => open_impl(d, p, flags, 0), else real::openat(d, p, flags, 0);
    fn __openat64_2(d: c_int, p: *const c_char, flags: c_int) -> c_int, trace p
        => open_impl(d, p, flags, 0), else real::openat64(d, p, flags, 0);
    fn creat(p: *const c_char, mode: mode_t) -> c_int, trace p
        => open_impl(libc::AT_FDCWD, p, CREAT, mode), else real::open(p, CREAT, mode);
    fn creat64(p: *const c_char, mode: mode_t) -> c_int, trace p
        => open_impl(libc::AT_FDCWD, p, CREAT, mode), else real::open64(p, CREAT, mode);
    fn fopen(p: *const c_char, mode: *const c_char) -> *mut FILE, trace p
        => fopen_impl(p, mode), else real::fopen(p, mode);
    fn fopen64(p: *const c_char, mode: *const c_char) -> *mut FILE, trace p
        => fopen_impl(p, mode), else real::fopen64(p, mode);
    fn unlink(p: *const c_char) -> c_int, trace p
        => remove_impl(libc::AT_FDCWD, p, false), else real::unlink(p);
    fn unlinkat(d: c_int, p: *const c_char, flags: c_int) -> c_int, trace p
        => remove_impl(d, p, flags & libc::AT_REMOVEDIR != 0), else real::unlinkat(d, p, flags);
    fn rmdir(p: *const c_char) -> c_int, trace p
        => remove_impl(libc::AT_FDCWD, p, true), else real::rmdir(p);
    fn mkdir(p: *const c_char, mode: mode_t) -> c_int, trace p
        => create_impl(libc::AT_FDCWD, p, &|q| real::mkdir(q.as_ptr(), mode)), else real::mkdir(p, mode);
    fn mkdirat(d: c_int, p: *const c_char, mode: mode_t) -> c_int, trace p
        => create_impl(d, p, &|q| real::mkdir(q.as_ptr(), mode)), else real::mkdirat(d, p, mode);
    fn symlink(t: *const c_char, p: *const c_char) -> c_int, trace p
        => create_impl(libc::AT_FDCWD, p, &|q| real::symlink(t, q.as_ptr())), else real::symlink(t, p);
    fn symlinkat(t: *const c_char, d: c_int, p: *const c_char) -> c_int, trace p
        => create_impl(d, p, &|q| real::symlink(t, q.as_ptr())), else real::symlinkat(t, d, p);
    fn truncate(p: *const c_char, len: off_t) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, true, &|q| { real::truncate(q.as_ptr(), len) }), else real::truncate(p, len);
    fn truncate64(p: *const c_char, len: off_t) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, true, &|q| { real::truncate(q.as_ptr(), len) }), else real::truncate(p, len);
    fn chmod(p: *const c_char, mode: mode_t) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, true, &|q| real::chmod(q.as_ptr(), mode)), else real::chmod(p, mode);
    fn fchmodat(d: c_int, p: *const c_char, mode: mode_t, flags: c_int) -> c_int, trace p
        => meta_at_impl(d, p, flags, false, &|f| real::fchmod(f, mode), &|q| real::fchmodat(libc::AT_FDCWD, q.as_ptr(), mode, flags)), else real::fchmodat(d, p, mode, flags);
    fn utimensat(d: c_int, p: *const c_char, t: *const libc::timespec, flags: c_int) -> c_int, trace p
        => meta_at_impl(d, p, flags, true, &|f| real::futimens(f, t), &|q| real::utimensat(libc::AT_FDCWD, q.as_ptr(), t, flags)), else real::utimensat(d, p, t, flags);
    fn fchmod(fd: c_int, mode: mode_t) -> c_int
        => crate::guard::meta_fd(fd, &|f| real::fchmod(f, mode)), else real::fchmod(fd, mode);
    fn fchown(fd: c_int, u: libc::uid_t, g: libc::gid_t) -> c_int
        => crate::guard::meta_fd(fd, &|f| real::fchown(f, u, g)), else real::fchown(fd, u, g);
    fn futimens(fd: c_int, t: *const libc::timespec) -> c_int
        => crate::guard::meta_fd(fd, &|f| real::futimens(f, t)), else real::futimens(fd, t);
    fn futimes(fd: c_int, t: *const libc::timeval) -> c_int
        => crate::guard::meta_fd(fd, &|f| real::futimes(f, t)), else real::futimes(fd, t);
    fn fsetxattr(fd: c_int, n: *const c_char, v: *const libc::c_void, size: libc::size_t, flags: c_int) -> c_int
        => crate::guard::meta_fd(fd, &|f| real::fsetxattr(f, n, v, size, flags)), else real::fsetxattr(fd, n, v, size, flags);
    fn fremovexattr(fd: c_int, n: *const c_char) -> c_int
        => crate::guard::meta_fd(fd, &|f| real::fremovexattr(f, n)), else real::fremovexattr(fd, n);
    fn fchownat(d: c_int, p: *const c_char, u: libc::uid_t, g: libc::gid_t, flags: c_int) -> c_int, trace p
        => meta_at_impl(d, p, flags, false, &|f| real::fchown(f, u, g), &|q| real::fchownat(libc::AT_FDCWD, q.as_ptr(), u, g, flags)), else real::fchownat(d, p, u, g, flags);
    fn chown(p: *const c_char, u: libc::uid_t, g: libc::gid_t) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, true, &|q| real::chown(q.as_ptr(), u, g)), else real::chown(p, u, g);
    fn lchown(p: *const c_char, u: libc::uid_t, g: libc::gid_t) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, false, &|q| { real::lchown(q.as_ptr(), u, g) }), else real::lchown(p, u, g);
    fn setxattr(p: *const c_char, n: *const c_char, v: *const libc::c_void, size: libc::size_t, flags: c_int) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, true, &|q| { real::setxattr(q.as_ptr(), n, v, size, flags) }), else real::setxattr(p, n, v, size, flags);
    fn lsetxattr(p: *const c_char, n: *const c_char, v: *const libc::c_void, size: libc::size_t, flags: c_int) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, false, &|q| { real::lsetxattr(q.as_ptr(), n, v, size, flags) }), else real::lsetxattr(p, n, v, size, flags);
    fn removexattr(p: *const c_char, n: *const c_char) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, true, &|q| { real::removexattr(q.as_ptr(), n) }), else real::removexattr(p, n);
    fn lremovexattr(p: *const c_char, n: *const c_char) -> c_int, trace p
        => modify_impl(libc::AT_FDCWD, p, false, &|q| { real::lremovexattr(q.as_ptr(), n) }), else real::lremovexattr(p, n);
    fn link(a: *const c_char, b: *const c_char) -> c_int, trace a
        => link_impl(libc::AT_FDCWD, a, libc::AT_FDCWD, b, 0), else real::link(a, b);
    fn linkat(fa: c_int, a: *const c_char, fb: c_int, b: *const c_char, flags: c_int) -> c_int, trace a
        => link_impl(fa, a, fb, b, flags), else real::linkat(fa, a, fb, b, flags);
    fn rename(a: *const c_char, b: *const c_char) -> c_int, trace a
        => rename_impl(libc::AT_FDCWD, a, libc::AT_FDCWD, b, 0), else real::rename(a, b);
    fn renameat(fa: c_int, a: *const c_char, fb: c_int, b: *const c_char) -> c_int, trace a
        => rename_impl(fa, a, fb, b, 0), else real::renameat(fa, a, fb, b);
    fn renameat2(fa: c_int, a: *const c_char, fb: c_int, b: *const c_char, flags: c_uint) -> c_int, trace a
        => rename_impl(fa, a, fb, b, flags), else real::renameat2(fa, a, fb, b, flags);
    fn mkstemp(t: *mut c_char) -> c_int, trace t
        => mktemp_impl(t, 0, 0, false), else real::mkostemps(t, 0, 0);
    fn mkstemp64(t: *mut c_char) -> c_int, trace t
        => mktemp_impl(t, 0, 0, false), else real::mkostemps(t, 0, 0);
    fn mkostemp(t: *mut c_char, f: c_int) -> c_int, trace t
        => mktemp_impl(t, 0, f, false), else real::mkostemps(t, 0, f);
    fn mkostemp64(t: *mut c_char, f: c_int) -> c_int, trace t
        => mktemp_impl(t, 0, f, false), else real::mkostemps(t, 0, f);
    fn mkstemps(t: *mut c_char, s: c_int) -> c_int, trace t
        => mktemp_impl(t, s, 0, false), else real::mkostemps(t, s, 0);
    fn mkostemps(t: *mut c_char, s: c_int, f: c_int) -> c_int, trace t
        => mktemp_impl(t, s, f, false), else real::mkostemps(t, s, f);
}

/// The flags `creat` stands for.
const CREAT: c_int = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

/// `fopen` mode string → `open` flags.
fn fopen_flags(mode: &[u8]) -> c_int {
    let mut f = match mode.first() {
        Some(b'w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some(b'a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => libc::O_RDONLY,
    };
    for &c in mode.iter().skip(1) {
        match c {
            b'+' => f = (f & !libc::O_ACCMODE) | libc::O_RDWR,
            b'x' => f |= libc::O_EXCL,
            b'e' => f |= libc::O_CLOEXEC,
            b',' => break,
            _ => {}
        }
    }
    f
}

unsafe fn fopen_impl(p: *const c_char, mode: *const c_char) -> Option<*mut FILE> {
    let flags = fopen_flags(cbytes(mode));
    let fd = open_impl(libc::AT_FDCWD, p, flags, 0o666)?;
    if fd < 0 {
        return Some(std::ptr::null_mut());
    }
    let f = libc::fdopen(fd, mode);
    if f.is_null() {
        let e = real::errno();
        fdtab::clear(fd);
        real::close(fd);
        real::set_errno(e);
    }
    Some(f)
}

// ---- fd bookkeeping ------------------------------------------------------------------------

hooks! {
    fn close(fd: c_int) -> c_int => real::close(fdtab::closing(fd));
    fn fclose(f: *mut FILE) -> c_int => {
        if !f.is_null() {
            fdtab::closing(libc::fileno(f));
        }
        real::fclose(f)
    };
    fn dup(fd: c_int) -> c_int => fdtab::duped(fd, real::dup(fd));
    fn dup2(a: c_int, b: c_int) -> c_int => fdtab::duped(a, real::dup2(a, b));
    fn dup3(a: c_int, b: c_int, flags: c_int) -> c_int => fdtab::duped(a, real::dup3(a, b, flags));
    fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int
        => fdtab::after_fcntl(fd, cmd, real::fcntl(fd, cmd, arg));
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int
        => fdtab::after_fcntl(fd, cmd, real::fcntl64(fd, cmd, arg));
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int
        => fdtab::after_close_range(first, last, flags, real::close_range(first, last, flags));
}

// ---- other writers -------------------------------------------------------------------------

fn remove_impl(dirfd: c_int, p: *const c_char, dir: bool) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a = abs_of(st, dirfd, raw)?;
        let r = vfs::resolve(st, &mut a.p, false);
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                let up = match st.upper.as_ref() {
                    Some(u) => u,
                    None => return fail(libc::EROFS),
                };
                if dir {
                    if !e.is_dir() {
                        return fail(libc::ENOTDIR);
                    }
                    if vfs::list_virtual(st, r.path.as_bytes(), 0).len() > 2 {
                        return fail(libc::ENOTEMPTY);
                    }
                    if let Some(mp) = up.mirror_of(r.path.as_bytes()) {
                        upper::remove_dir_with_whiteouts(&mp);
                    }
                } else if e.is_dir() {
                    return fail(libc::EISDIR);
                }
                if upper::whiteout(up, r.path.as_bytes()) {
                    Some(0)
                } else {
                    fail(libc::EIO)
                }
            }
            Node::Gone(e) => fail(e),
            Node::Upper => {
                let up = st.upper.as_ref()?;
                let mp = up.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffer.
                let rc = unsafe {
                    if dir {
                        if upper::remove_dir_with_whiteouts(&mp) {
                            0
                        } else {
                            -1
                        }
                    } else {
                        real::unlink(mp.as_ptr())
                    }
                };
                if rc != 0 {
                    return Some(rc);
                }
                // A lower (manifest) entry of the same name must stay hidden.
                if let Node::V { .. } = vfs::resolve_manifest_only(st, r.path.as_bytes()) {
                    upper::whiteout(up, r.path.as_bytes());
                }
                Some(0)
            }
            Node::Real => {
                let rp = real_arg(a.orig_ok, &r)?;
                // SAFETY: valid buffer.
                Some(unsafe {
                    if dir {
                        real::rmdir(rp.as_ptr())
                    } else {
                        real::unlink(rp.as_ptr())
                    }
                })
            }
        }
    })
}

/// Shared by `mkdir` and `symlink`: create something new at a path of the view.
fn create_impl(dirfd: c_int, p: *const c_char, what: &dyn Fn(&PBuf) -> c_int) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a = abs_of(st, dirfd, raw)?;
        if !st.in_view(a.p.as_bytes()) {
            if a.orig_ok {
                return None;
            }
            return Some(what(&a.p));
        }
        let r = vfs::resolve(st, &mut a.p, false);
        match r.node {
            Node::V { .. } | Node::Upper => fail(libc::EEXIST),
            Node::Gone(e) if e != libc::ENOENT => fail(e),
            Node::Gone(_) | Node::Real => {
                if matches!(r.node, Node::Real) && real_exists(r.path) {
                    return fail(libc::EEXIST);
                }
                if !parent_is_view_dir(st, r.path.as_bytes()) {
                    let rp = real_arg(a.orig_ok, &r)?;
                    return Some(what(rp));
                }
                let mp = match prepare_new(st, r.path.as_bytes()) {
                    Ok(m) => m,
                    Err(e) => return fail(e),
                };
                let rc = what(&mp);
                if rc == 0 {
                    if let Some(up) = &st.upper {
                        up.flag_with_ancestors(r.path.as_bytes());
                    }
                }
                Some(rc)
            }
        }
    })
}

/// The `*at` metadata calls (`fchmodat`, `fchownat`, `utimensat`): the fd form (an empty
/// path with `AT_EMPTY_PATH`, or utimensat's NULL path, as `futimens` uses it) goes through
/// the fd guard — never onto a blob, whose mtime carries the store's seal — and the path form
/// through [`modify_impl`], following a last symlink unless `AT_SYMLINK_NOFOLLOW`.
unsafe fn meta_at_impl(
    d: c_int,
    p: *const c_char,
    flags: c_int,
    null_is_fd: bool,
    on_fd: &dyn Fn(c_int) -> c_int,
    on_path: &dyn Fn(&PBuf) -> c_int,
) -> Option<c_int> {
    let empty = !p.is_null() && *p == 0 && flags & libc::AT_EMPTY_PATH != 0;
    if empty || (null_is_fd && p.is_null()) {
        return crate::guard::meta_fd(d, on_fd);
    }
    modify_impl(d, p, flags & libc::AT_SYMLINK_NOFOLLOW == 0, on_path)
}

/// Shared by `truncate`, `chmod`, `utimensat`: modify an existing entry (copy-up first).
fn modify_impl(
    dirfd: c_int,
    p: *const c_char,
    follow: bool,
    what: &dyn Fn(&PBuf) -> c_int,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        if raw.is_empty() {
            return None;
        }
        if follow {
            if let Some(n) = proc_fd_of(raw) {
                // The path reopens fd `n`: once `n` is the private copy, so does the path.
                let q = PBuf::from(raw)?;
                return crate::guard::meta_fd_in(st, n, &|_| what(&q));
            }
        }
        let mut a = abs_of(st, dirfd, raw)?;
        let r = vfs::resolve(st, &mut a.p, follow);
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if e.is_dir() {
                    return Some(0); // directories keep their manifest metadata
                }
                match copy_up(st, r.path.as_bytes(), &e, false) {
                    Ok(mp) => Some(what(&mp)),
                    Err(err) => fail(err),
                }
            }
            Node::Gone(e) => fail(e),
            Node::Upper => Some(what(&st.upper.as_ref()?.mirror_of(r.path.as_bytes())?)),
            Node::Real => {
                let rp = real_arg(a.orig_ok, &r)?;
                Some(what(rp))
            }
        }
    })
}

// ---- metadata through an fd: copy-up first, never the blob (see guard.rs) ----------------

// ---- link: a new name in the view, or EXDEV; never a new name for a blob -----------------

/// The absolute path of a `(dirfd, path)` outside the view, as `rename_impl` builds it.
fn outside_path(fd: c_int, raw: &[u8], a: Option<&crate::Abs>) -> Option<PBuf> {
    match a {
        Some(x) => PBuf::from(x.p.as_bytes()),
        None => {
            if fd != libc::AT_FDCWD && !raw.starts_with(b"/") {
                return None;
            }
            let mut c = PBuf::new();
            path::cwd_into(&mut c)?;
            path::join(c.as_bytes(), raw)
        }
    }
}

/// Whether `p` lies inside the store's blob directory.
fn in_blob_dir(st: &State, p: &[u8]) -> bool {
    let d: &[u8] = &st.blob_dir;
    p.starts_with(d) && p.get(d.len()) == Some(&b'/')
}

/// The mirror path a new name `virt` in the view gets (`EEXIST` if the view has it already).
fn new_name_in_view(st: &State, virt: &[u8]) -> Result<PBuf, c_int> {
    let mut probe = PBuf::from(virt).ok_or(libc::ENAMETOOLONG)?;
    match vfs::resolve(st, &mut probe, false).node {
        Node::V { .. } | Node::Upper => return Err(libc::EEXIST),
        Node::Gone(e) if e != libc::ENOENT => return Err(e),
        Node::Real if real_exists(&probe) => return Err(libc::EEXIST),
        _ => {}
    }
    if !parent_is_view_dir(st, virt) {
        return Err(libc::ENOENT);
    }
    prepare_new(st, virt)
}

fn link_impl(
    fa: c_int,
    pa: *const c_char,
    fb: c_int,
    pb: *const c_char,
    flags: c_int,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C strings.
        let (ra, rb) = unsafe { (cbytes(pa), cbytes(pb)) };
        let b = abs_of(st, fb, rb);
        let b_in = b.as_ref().is_some_and(|x| st.in_view(x.p.as_bytes()));
        let dst = |st: &State| -> Result<PBuf, c_int> {
            match &b {
                Some(x) if b_in => new_name_in_view(st, x.p.as_bytes()),
                _ => outside_path(fb, rb, b.as_ref()).ok_or(libc::EXDEV),
            }
        };
        let link_to = |src: &PBuf, follow: bool| -> Option<c_int> {
            let d = match dst(st) {
                Ok(d) => d,
                Err(e) => return fail(e),
            };
            let f = if follow { libc::AT_SYMLINK_FOLLOW } else { 0 };
            // SAFETY: valid buffers.
            let rc = unsafe {
                real::linkat(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, d.as_ptr(), f)
            };
            if rc == 0 && b_in {
                if let (Some(up), Some(x)) = (&st.upper, &b) {
                    up.flag_with_ancestors(x.p.as_bytes());
                }
            }
            Some(rc)
        };
        // The source given as an fd (AT_EMPTY_PATH, or /proc/self/fd/N followed).
        let src_fd = if flags & libc::AT_EMPTY_PATH != 0 && ra.is_empty() {
            Some(fa)
        } else if flags & libc::AT_SYMLINK_FOLLOW != 0 {
            proc_fd_of(ra)
        } else {
            None
        };
        if let Some(n) = src_fd {
            return match crate::guard::plan_for(st, n) {
                crate::guard::Plan::Pass if !b_in => None,
                crate::guard::Plan::Pass => {
                    let d = match dst(st) {
                        Ok(d) => d,
                        Err(e) => return fail(e),
                    };
                    // SAFETY: the caller's source, our destination.
                    let rc = unsafe { real::linkat(fa, pa, libc::AT_FDCWD, d.as_ptr(), flags) };
                    if rc == 0 {
                        if let (Some(up), Some(x)) = (&st.upper, &b) {
                            up.flag_with_ancestors(x.p.as_bytes());
                        }
                    }
                    Some(rc)
                }
                crate::guard::Plan::Ignore => fail(libc::EPERM),
                crate::guard::Plan::Refuse => fail(libc::EXDEV),
                crate::guard::Plan::CopyUp { layer, idx } => {
                    if !b_in {
                        return fail(libc::EXDEV);
                    }
                    if let Err(e) = crate::guard::fd_copy_up(st, n, layer, idx) {
                        return fail(e);
                    }
                    let e = vfs::entry(st, layer, idx)?;
                    let virt = vfs::entry_abs(st, layer, &e)?;
                    let mp = st.upper.as_ref()?.mirror_of(virt.as_bytes())?;
                    link_to(&mp, false)
                }
            };
        }
        let a = abs_of(st, fa, ra);
        let a_in = a.as_ref().is_some_and(|x| st.in_view(x.p.as_bytes()));
        if !a_in && !b_in {
            // Not the view's business, except a blob of the store getting a name elsewhere.
            if a.as_ref().is_some_and(|x| in_blob_dir(st, x.p.as_bytes())) {
                return fail(libc::EXDEV);
            }
            return None;
        }
        let follow = flags & libc::AT_SYMLINK_FOLLOW != 0;
        let src: PBuf = match &a {
            Some(x) if a_in => {
                let mut xp = PBuf::from(x.p.as_bytes())?;
                let r = vfs::resolve(st, &mut xp, follow);
                match r.node {
                    Node::V { layer, idx } => {
                        let e = vfs::entry(st, layer, idx)?;
                        if e.is_dir() {
                            return fail(libc::EPERM);
                        }
                        if !b_in {
                            // A view file is a blob underneath: tools copy on EXDEV.
                            return fail(libc::EXDEV);
                        }
                        match copy_up(st, r.path.as_bytes(), &e, false) {
                            Ok(m) => m,
                            Err(err) => return fail(err),
                        }
                    }
                    Node::Upper => st.upper.as_ref()?.mirror_of(r.path.as_bytes())?,
                    Node::Gone(e) => return fail(e),
                    Node::Real => PBuf::from(r.path.as_bytes())?,
                }
            }
            _ => match outside_path(fa, ra, a.as_ref()) {
                Some(p) if in_blob_dir(st, p.as_bytes()) => return fail(libc::EXDEV),
                Some(p) => p,
                None => return fail(libc::EXDEV),
            },
        };
        link_to(&src, false)
    })
}

fn rename_impl(
    fa: c_int,
    pa: *const c_char,
    fb: c_int,
    pb: *const c_char,
    flags: c_uint,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C strings.
        let (ra, rb) = unsafe { (cbytes(pa), cbytes(pb)) };
        let a = abs_of(st, fa, ra);
        let b = abs_of(st, fb, rb);
        let a_in = a.as_ref().is_some_and(|x| st.in_view(x.p.as_bytes()));
        let b_in = b.as_ref().is_some_and(|x| st.in_view(x.p.as_bytes()));
        if !a_in && !b_in {
            return None;
        }
        let up = match st.upper.as_ref() {
            Some(u) => u,
            None => return fail(libc::EROFS),
        };
        // Source: a real path we can rename.
        let mut whiteout_a: Option<PBuf> = None;
        let src: PBuf = match &a {
            Some(x) if a_in => {
                let mut xp = PBuf::from(x.p.as_bytes())?;
                let r = vfs::resolve(st, &mut xp, false);
                match r.node {
                    Node::V { layer, idx } => {
                        let e = vfs::entry(st, layer, idx)?;
                        if e.is_dir() {
                            return fail(libc::EXDEV); // mv copies directories itself
                        }
                        let mp = match copy_up(st, r.path.as_bytes(), &e, false) {
                            Ok(m) => m,
                            Err(err) => return fail(err),
                        };
                        whiteout_a = PBuf::from(r.path.as_bytes());
                        mp
                    }
                    Node::Upper => {
                        if let Node::V { .. } = vfs::resolve_manifest_only(st, r.path.as_bytes()) {
                            whiteout_a = PBuf::from(r.path.as_bytes());
                        }
                        up.mirror_of(r.path.as_bytes())?
                    }
                    Node::Gone(e) => return fail(e),
                    Node::Real => PBuf::from(r.path.as_bytes())?,
                }
            }
            Some(x) => PBuf::from(x.p.as_bytes())?,
            None => {
                if fa != libc::AT_FDCWD && !ra.starts_with(b"/") {
                    return fail(libc::EXDEV);
                }
                let mut c = PBuf::new();
                path::cwd_into(&mut c)?;
                path::join(c.as_bytes(), ra)?
            }
        };
        let dst: PBuf = match &b {
            Some(x) if b_in => match prepare_new(st, x.p.as_bytes()) {
                Ok(m) => m,
                Err(e) => return fail(e),
            },
            Some(x) => PBuf::from(x.p.as_bytes())?,
            None => {
                if fb != libc::AT_FDCWD && !rb.starts_with(b"/") {
                    return fail(libc::EXDEV);
                }
                let mut c = PBuf::new();
                path::cwd_into(&mut c)?;
                path::join(c.as_bytes(), rb)?
            }
        };
        // SAFETY: valid buffers.
        let rc = unsafe {
            real::renameat2(
                libc::AT_FDCWD,
                src.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                flags,
            )
        };
        if rc != 0 {
            // The upper layer is on another file system than the source (a temp file written
            // beside the project, renamed over a view file: editors, npm, pip): copy it in.
            if !(b_in && real::errno() == libc::EXDEV) {
                return Some(rc);
            }
            if let Err(e) = cross_rename(&src, &dst, flags) {
                return fail(e);
            }
        }
        if let Some(x) = &b {
            if b_in {
                up.flag_with_ancestors(x.p.as_bytes());
            }
        }
        if let Some(w) = whiteout_a {
            upper::whiteout(up, w.as_bytes());
        }
        Some(0)
    })
}

/// A rename across file systems into the upper layer: the source (a regular file or a
/// symlink) is copied beside `dst`, renamed over it (atomic in the view), then removed.
/// Directories and special files stay `EXDEV` (`mv` copies those itself).
fn cross_rename(src: &PBuf, dst: &PBuf, flags: c_uint) -> Result<(), c_int> {
    if flags & !(libc::RENAME_NOREPLACE) != 0 {
        return Err(libc::EXDEV);
    }
    let mut tmp = PBuf::from(dst.as_bytes()).ok_or(libc::ENAMETOOLONG)?;
    tmp.push(b".vrift-tmp-x").ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: real calls on valid buffers and fds we open and close here.
    unsafe {
        let mut sst: libc::stat = std::mem::zeroed();
        if real::lstat(src.as_ptr(), &mut sst) != 0 {
            return Err(real::errno());
        }
        real::unlink(tmp.as_ptr());
        match sst.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let inp = real::open(
                    src.as_ptr(),
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0,
                );
                if inp < 0 {
                    return Err(real::errno());
                }
                let out = real::open(
                    tmp.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600,
                );
                if out < 0 {
                    let e = real::errno();
                    real::close(inp);
                    return Err(e);
                }
                let ok = copy_fd(inp, out);
                let times = [sst.st_atime, sst.st_mtime];
                let nsec = [sst.st_atime_nsec, sst.st_mtime_nsec];
                let ts = [
                    libc::timespec {
                        tv_sec: times[0],
                        tv_nsec: nsec[0],
                    },
                    libc::timespec {
                        tv_sec: times[1],
                        tv_nsec: nsec[1],
                    },
                ];
                let ok = ok
                    && real::fchmod(out, sst.st_mode & 0o7777) == 0
                    && real::futimens(out, ts.as_ptr()) == 0;
                let e = real::errno();
                real::close(inp);
                real::close(out);
                if !ok {
                    real::unlink(tmp.as_ptr());
                    return Err(e);
                }
            }
            libc::S_IFLNK => {
                let mut t = [0u8; path::MAX + 1];
                let n = real::readlink(src.as_ptr(), t.as_mut_ptr().cast(), path::MAX);
                if n < 0 {
                    return Err(real::errno());
                }
                t[n as usize] = 0;
                if real::symlink(t.as_ptr().cast(), tmp.as_ptr()) != 0 {
                    return Err(real::errno());
                }
            }
            _ => return Err(libc::EXDEV),
        }
        let placed = if flags & libc::RENAME_NOREPLACE != 0 {
            // link fails with EEXIST instead of replacing.
            let r = real::link(tmp.as_ptr(), dst.as_ptr());
            real::unlink(tmp.as_ptr());
            r
        } else {
            real::rename(tmp.as_ptr(), dst.as_ptr())
        };
        if placed != 0 {
            let e = real::errno();
            real::unlink(tmp.as_ptr());
            return Err(e);
        }
        if real::unlink(src.as_ptr()) != 0 {
            let e = real::errno();
            real::unlink(dst.as_ptr());
            return Err(e);
        }
    }
    Ok(())
}

// ---- temporary files (glibc creates them with its internal `open`) ------------------------

/// `mkostemps`/`mkdtemp` with a template inside a virtual directory: the file is created in
/// the mirror and the caller's template gets the generated name.
fn mktemp_impl(tmpl: *mut c_char, suffixlen: c_int, flags: c_int, dir: bool) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: the caller's template, a writable C string.
        let raw = unsafe { cbytes(tmpl) };
        let a = abs_of(st, libc::AT_FDCWD, raw)?;
        if !st.in_view(a.p.as_bytes()) || !parent_is_view_dir(st, a.p.as_bytes()) {
            return None;
        }
        let mp = match prepare_new(st, a.p.as_bytes()) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        let mut buf = PBuf::from(mp.as_bytes())?;
        // SAFETY: our own NUL-terminated buffer, same template suffix as the caller's.
        let rc = unsafe {
            let p = buf.as_mut_ptr();
            if dir {
                if real::mkdtemp(p).is_null() {
                    -1
                } else {
                    0
                }
            } else {
                real::mkostemps(p, suffixlen, flags)
            }
        };
        if rc < 0 {
            return Some(rc);
        }
        // Copy the generated characters (the tail of the name) back into the caller's template.
        let n = raw.len();
        let made = buf.as_bytes();
        if made.len() >= n {
            // SAFETY: the caller's template holds `n` bytes; names differ only in the X's.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    made[made.len() - n..].as_ptr(),
                    tmpl.cast::<u8>(),
                    n,
                );
            };
        }
        let virt = PBuf::from(a.p.as_bytes());
        if let (Some(up), Some(mut v)) = (&st.upper, virt) {
            let tail = &made[made
                .len()
                .saturating_sub(path::file_name(a.p.as_bytes()).len())..];
            let cut = v.len() - path::file_name(a.p.as_bytes()).len();
            v.truncate(cut);
            if v.push(tail).is_some() {
                up.flag_with_ancestors(v.as_bytes());
            }
        }
        Some(rc)
    })
}

hooks! {
    fn mkdtemp(t: *mut c_char) -> *mut c_char, trace t
        => mktemp_impl(t, 0, 0, true).map(|r| if r == 0 { t } else { std::ptr::null_mut() }),
        else real::mkdtemp(t);
}
