//! Directory listing: `opendir`/`fdopendir` of a virtual directory return our own `DIR`
//! object (a synthesized, merged listing), which `readdir*`/`closedir`/`dirfd`/`telldir`/
//! `seekdir`/`rewinddir` recognize by a magic first word. glibc's own `DIR` starts with the
//! (never negative) fd, so the magic, whose low 32 bits are negative as an `int`, can never
//! match a real one. `dirfd()` of ours is a real fd of an empty directory tagged with the
//! virtual directory (see `fdtab`), so `openat(dirfd(d), name)`, `fstat`, `fchdir` work.
//!
//! Real directories that are parents of a manifest root (say the project directory after
//! `rm -rf node_modules`) are listed for real plus the root's name.

use libc::{c_char, c_int, c_long, c_void, dirent64, DIR};

use crate::fdtab::{self, Tag};
use crate::path::{cbytes, PBuf};
use crate::state::State;
use crate::vfs::{self, DEnt, Node};
use crate::{abs_of, guarded, real};

const MAGIC: u64 = 0x5652_4946_DEAD_BEEF;

#[repr(C)]
struct VDir {
    magic: u64,
    fd: c_int,
    pos: usize,
    ents: Vec<DEnt>,
    cur: dirent64,
}

fn ours(d: *mut DIR) -> Option<&'static mut VDir> {
    if d.is_null() {
        return None;
    }
    // SAFETY: every DIR (glibc's or ours) is at least 8 bytes long and 8-aligned.
    let w = unsafe { (d as *const u64).read() };
    if w == MAGIC {
        // SAFETY: only our VDir carries the magic.
        Some(unsafe { &mut *(d as *mut VDir) })
    } else {
        None
    }
}

fn new_vdir(fd: c_int, ents: Vec<DEnt>) -> *mut DIR {
    let b = Box::new(VDir {
        magic: MAGIC,
        fd,
        pos: 0,
        ents,
        // SAFETY: plain old data.
        cur: unsafe { std::mem::zeroed() },
    });
    Box::into_raw(b).cast()
}

fn fill(ent: &DEnt, pos: usize, out: &mut dirent64) {
    out.d_ino = ent.ino;
    out.d_off = (pos + 1) as i64;
    out.d_reclen = std::mem::size_of::<dirent64>() as u16;
    out.d_type = ent.dtype;
    let n = ent.name.len().min(out.d_name.len() - 1);
    for (i, &b) in ent.name[..n].iter().enumerate() {
        out.d_name[i] = b as c_char;
    }
    out.d_name[n] = 0;
}

/// Listing of a real directory that is the parent of a root, with the root names added.
fn ancestor_listing(st: &State, abs: &[u8]) -> Vec<DEnt> {
    let mut ents = vec![
        DEnt {
            name: Box::from(&b"."[..]),
            ino: 2,
            dtype: libc::DT_DIR,
        },
        DEnt {
            name: Box::from(&b".."[..]),
            ino: 2,
            dtype: libc::DT_DIR,
        },
    ];
    if let Some(p) = PBuf::from(abs) {
        for (name, ino, dtype, _) in vfs::read_real_dir(&p) {
            ents.push(DEnt { name, ino, dtype });
        }
    }
    for name in st.root_children(abs) {
        if !ents.iter().any(|d| *d.name == *name) {
            let mut child = PBuf::from(abs).unwrap_or_default();
            if abs != b"/" {
                let _ = child.push(b"/");
            } else {
                child.clear();
                let _ = child.push(b"/");
            }
            let _ = child.push(name);
            let ino = match vfs::resolve(st, &mut child, true).node {
                Node::V { layer, idx } => vfs::vino(layer, idx),
                _ => continue,
            };
            ents.push(DEnt {
                name: name.into(),
                ino,
                dtype: libc::DT_DIR,
            });
        }
    }
    ents
}

/// Opens (dirfd, raw) as one of our DIRs if it is a virtual directory or a root's parent.
/// `None`: not ours. `Some(Err(errno))`: fails.
fn vdir_open(st: &State, dirfd: c_int, raw: &[u8]) -> Option<Result<*mut DIR, c_int>> {
    let mut a = abs_of(st, dirfd, raw)?;
    if !st.in_view(a.p.as_bytes()) {
        st.ancestor_id(a.p.as_bytes())?;
        if st.root_children(a.p.as_bytes()).is_empty() {
            return None;
        }
        // SAFETY: valid buffer.
        let fd = unsafe {
            real::openat(
                libc::AT_FDCWD,
                a.p.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Some(Err(real::errno()));
        }
        if let Some(id) = st.ancestor_id(a.p.as_bytes()) {
            fdtab::set(fd, Tag::Ancestor { id });
        }
        return Some(Ok(new_vdir(fd, ancestor_listing(st, a.p.as_bytes()))));
    }
    let r = vfs::resolve(st, &mut a.p, true);
    match r.node {
        Node::V { layer, idx } => {
            let e = vfs::entry(st, layer, idx)?;
            if !e.is_dir() {
                return Some(Err(libc::ENOTDIR));
            }
            // SAFETY: valid buffer.
            let fd = unsafe {
                real::openat(
                    libc::AT_FDCWD,
                    st.placeholder.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    0,
                )
            };
            if fd < 0 {
                return Some(Err(real::errno()));
            }
            fdtab::set(fd, Tag::Dir { layer, idx });
            let ents = vfs::list_virtual(st, r.path.as_bytes(), vfs::vino(layer, idx));
            Some(Ok(new_vdir(fd, ents)))
        }
        Node::Gone(e) => Some(Err(e)),
        Node::Upper => {
            let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
            // SAFETY: valid buffer.
            let d = unsafe { real::opendir(mp.as_ptr()) };
            if d.is_null() {
                Some(Err(real::errno()))
            } else {
                Some(Ok(d))
            }
        }
        Node::Real if !r.moved && a.orig_ok => None,
        Node::Real => {
            // SAFETY: valid buffer.
            let d = unsafe { real::opendir(r.path.as_ptr()) };
            if d.is_null() {
                Some(Err(real::errno()))
            } else {
                Some(Ok(d))
            }
        }
    }
}

fn opendir_impl(p: *const c_char) -> Option<*mut DIR> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        match vdir_open(st, libc::AT_FDCWD, raw)? {
            Ok(d) => Some(d),
            Err(e) => {
                real::set_errno(e);
                Some(std::ptr::null_mut())
            }
        }
    })
}

hooks! {
    fn opendir(p: *const c_char) -> *mut DIR, trace p
        => opendir_impl(p), else real::opendir(p);
    fn fdopendir(fd: c_int) -> *mut DIR, trace std::ptr::null()
        => fdopendir_impl(fd), else real::fdopendir(fd);
    fn scandir(p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int, trace p
        => scandir_impl(libc::AT_FDCWD, p, l, f, c), else real::scandir(p, l, f, c);
    fn scandir64(p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int, trace p
        => scandir_impl(libc::AT_FDCWD, p, l, f, c), else real::scandir64(p, l, f, c);
    fn scandirat(d: c_int, p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int, trace p
        => scandir_impl(d, p, l, f, c), else real::scandirat(d, p, l, f, c);
    fn scandirat64(d: c_int, p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int, trace p
        => scandir_impl(d, p, l, f, c), else real::scandirat64(d, p, l, f, c);
    fn getdents64(fd: c_int, buf: *mut c_void, n: usize) -> isize
        => getdents_impl(fd, buf, n), else real::getdents64(fd, buf, n);
}

fn fdopendir_impl(fd: c_int) -> Option<*mut DIR> {
    let tag = fdtab::get(fd)?;
    guarded(|st| match tag {
        Tag::Dir { layer, idx } => {
            let e = vfs::entry(st, layer, idx)?;
            let p = vfs::entry_abs(st, layer, &e)?;
            let ents = vfs::list_virtual(st, p.as_bytes(), vfs::vino(layer, idx));
            Some(new_vdir(fd, ents))
        }
        Tag::Ancestor { id } => {
            let a = st.ancestors.get(id)?;
            if st.root_children(a).is_empty() {
                return None;
            }
            Some(new_vdir(fd, ancestor_listing(st, a)))
        }
        Tag::File { .. } => {
            real::set_errno(libc::ENOTDIR);
            Some(std::ptr::null_mut())
        }
    })
}

fn next(v: &mut VDir) -> Option<*mut dirent64> {
    let ent = v.ents.get(v.pos)?;
    fill(ent, v.pos, &mut v.cur);
    v.pos += 1;
    Some(&mut v.cur)
}

/// `readdir_r`: the next entry of a virtual directory into the caller's buffer.
unsafe fn next_r(v: &mut VDir, e: *mut dirent64, r: *mut *mut dirent64) -> c_int {
    match v.ents.get(v.pos) {
        Some(ent) => {
            fill(ent, v.pos, &mut *e);
            v.pos += 1;
            *r = e;
        }
        None => *r = std::ptr::null_mut(),
    }
    0
}

hooks! {
    fn readdir(d: *mut DIR) -> *mut libc::dirent
        => ours(d).map(|v| next(v).map_or(std::ptr::null_mut(), <*mut libc::dirent64>::cast)), else real::readdir(d);
    fn readdir64(d: *mut DIR) -> *mut dirent64
        => ours(d).map(|v| next(v).unwrap_or(std::ptr::null_mut())), else real::readdir64(d);
    fn readdir_r(d: *mut DIR, e: *mut libc::dirent, r: *mut *mut libc::dirent) -> c_int
        => ours(d).map(|v| next_r(v, e.cast(), r.cast())), else real::readdir_r(d, e, r);
    fn readdir64_r(d: *mut DIR, e: *mut dirent64, r: *mut *mut dirent64) -> c_int
        => ours(d).map(|v| next_r(v, e, r)), else real::readdir64_r(d, e, r);
    fn closedir(d: *mut DIR) -> c_int => do_closedir(d);
    fn dirfd(d: *mut DIR) -> c_int => ours(d).map(|v| v.fd), else real::dirfd(d);
    fn rewinddir(d: *mut DIR) -> () => ours(d).map(|v| v.pos = 0), else {
        real::rewinddir(d);
    };
    fn telldir(d: *mut DIR) -> c_long => ours(d).map(|v| v.pos as c_long), else real::telldir(d);
    fn seekdir(d: *mut DIR, pos: c_long) -> ()
        => ours(d).map(|v| v.pos = usize::try_from(pos).unwrap_or(0)), else {
            real::seekdir(d, pos);
        };
}

unsafe fn do_closedir(d: *mut DIR) -> c_int {
    match ours(d) {
        Some(v) => {
            let fd = v.fd;
            v.magic = 0;
            drop(Box::from_raw(v as *mut VDir));
            fdtab::clear(fd);
            real::close(fd)
        }
        None => {
            if !d.is_null() {
                fdtab::clear(real::dirfd(d));
            }
            real::closedir(d)
        }
    }
}

// ---- scandir ---------------------------------------------------------------------------------

type Filter = unsafe extern "C" fn(*const dirent64) -> c_int;
type Compar = unsafe extern "C" fn(*const c_void, *const c_void) -> c_int;

unsafe fn scan(
    d: *mut DIR,
    list: *mut *mut *mut dirent64,
    filter: *mut c_void,
    compar: *mut c_void,
) -> c_int {
    let Some(v) = ours(d) else {
        // A real DIR (upper-only dir): read it with the real functions.
        let mut out: Vec<*mut dirent64> = Vec::new();
        loop {
            let e = real::readdir64(d);
            if e.is_null() {
                break;
            }
            if !filter.is_null() {
                let f: Filter = std::mem::transmute(filter);
                if f(e) == 0 {
                    continue;
                }
            }
            let m = libc::malloc(std::mem::size_of::<dirent64>()) as *mut dirent64;
            if m.is_null() {
                break;
            }
            std::ptr::copy_nonoverlapping(e, m, 1);
            out.push(m);
        }
        real::closedir(d);
        return finish_scan(out, list, compar);
    };
    let mut out: Vec<*mut dirent64> = Vec::new();
    let mut tmp: dirent64 = std::mem::zeroed();
    for (i, ent) in v.ents.iter().enumerate() {
        fill(ent, i, &mut tmp);
        if !filter.is_null() {
            let f: Filter = std::mem::transmute(filter);
            if f(&tmp) == 0 {
                continue;
            }
        }
        let m = libc::malloc(std::mem::size_of::<dirent64>()) as *mut dirent64;
        if m.is_null() {
            break;
        }
        std::ptr::copy_nonoverlapping(&tmp, m, 1);
        out.push(m);
    }
    do_closedir(d);
    finish_scan(out, list, compar)
}

unsafe fn finish_scan(
    out: Vec<*mut dirent64>,
    list: *mut *mut *mut dirent64,
    compar: *mut c_void,
) -> c_int {
    let n = out.len();
    let arr = libc::malloc(std::mem::size_of::<*mut dirent64>() * n.max(1)) as *mut *mut dirent64;
    if arr.is_null() {
        for p in out {
            libc::free(p.cast());
        }
        real::set_errno(libc::ENOMEM);
        return -1;
    }
    std::ptr::copy_nonoverlapping(out.as_ptr(), arr, n);
    if !compar.is_null() && n > 1 {
        let c: Compar = std::mem::transmute(compar);
        libc::qsort(arr.cast(), n, std::mem::size_of::<*mut dirent64>(), Some(c));
    }
    *list = arr;
    n as c_int
}

fn scandir_impl(
    dirfd: c_int,
    p: *const c_char,
    l: *mut c_void,
    f: *mut c_void,
    c: *mut c_void,
) -> Option<c_int> {
    let d = guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        vdir_open(st, dirfd, raw)
    })?;
    match d {
        Err(e) => {
            real::set_errno(e);
            Some(-1)
        }
        // SAFETY: `d` is a DIR we just opened; the list pointer is the caller's.
        Ok(d) => Some(unsafe { scan(d, l.cast(), f, c) }),
    }
}

/// `getdents64` on a virtual directory fd would read the empty placeholder; we answer it
/// from the listing so programs that read directories with the raw call still work.
pub(crate) fn getdents_impl(fd: c_int, buf: *mut c_void, n: usize) -> Option<isize> {
    let Some(Tag::Dir { layer, idx }) = fdtab::get(fd) else {
        return None;
    };
    guarded(|st| {
        let e = vfs::entry(st, layer, idx)?;
        let p = vfs::entry_abs(st, layer, &e)?;
        let ents = vfs::list_virtual(st, p.as_bytes(), vfs::vino(layer, idx));
        // The position lives in the placeholder fd's file offset (lseek works on it; `seek`
        // is an entry index).
        // SAFETY: lseek on a real fd.
        let start = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }.max(0) as usize;
        let mut off = 0usize;
        let mut i = start;
        while let Some(ent) = ents.get(i) {
            let namelen = ent.name.len();
            let reclen = (19 + namelen + 1).div_ceil(8) * 8;
            if off + reclen > n {
                break;
            }
            // SAFETY: we stay within the caller's `n` bytes.
            unsafe {
                let base = (buf as *mut u8).add(off);
                std::ptr::write_unaligned(base as *mut u64, ent.ino);
                std::ptr::write_unaligned(base.add(8) as *mut i64, (i + 1) as i64);
                std::ptr::write_unaligned(base.add(16) as *mut u16, reclen as u16);
                *base.add(18) = ent.dtype;
                std::ptr::copy_nonoverlapping(ent.name.as_ptr(), base.add(19), namelen);
                std::ptr::write_bytes(base.add(19 + namelen), 0, reclen - 19 - namelen);
            }
            off += reclen;
            i += 1;
        }
        if off == 0 && i < ents.len() {
            real::set_errno(libc::EINVAL);
            return Some(-1);
        }
        // SAFETY: lseek on a real fd.
        unsafe { libc::lseek(fd, i as libc::off_t, libc::SEEK_SET) };
        Some(off as isize)
    })
}
