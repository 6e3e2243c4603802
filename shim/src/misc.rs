//! `realpath`, the working directory, `dlopen`, and `syscall()`.

use libc::{c_char, c_int, c_long, c_uint, c_void, size_t};

use crate::fdtab::{self, Tag};
use crate::path::{self, cbytes, PBuf};
use crate::state::State;
use crate::upper;
use crate::vfs::{self, Node};
use crate::{abs_of, fail, guarded, real};

// ---- realpath ------------------------------------------------------------------------------

/// Copies `p` into the caller's buffer (PATH_MAX bytes) or a malloc'd one.
unsafe fn hand_out(p: &[u8], resolved: *mut c_char) -> *mut c_char {
    let out = if resolved.is_null() {
        libc::malloc(p.len() + 1) as *mut c_char
    } else {
        if p.len() >= libc::PATH_MAX as usize {
            real::set_errno(libc::ENAMETOOLONG);
            return std::ptr::null_mut();
        }
        resolved
    };
    if out.is_null() {
        real::set_errno(libc::ENOMEM);
        return out;
    }
    std::ptr::copy_nonoverlapping(p.as_ptr(), out.cast::<u8>(), p.len());
    *out.add(p.len()) = 0;
    out
}

fn realpath_impl(p: *const c_char, resolved: *mut c_char) -> Option<*mut c_char> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a = abs_of(st, libc::AT_FDCWD, raw)?;
        if !st.in_view(a.p.as_bytes()) {
            if a.orig_ok {
                return None;
            }
            // SAFETY: valid buffers.
            return Some(unsafe { real::realpath(a.p.as_ptr(), resolved) });
        }
        let r = vfs::resolve(st, &mut a.p, true);
        match r.node {
            // SAFETY: caller's buffer.
            Node::V { .. } | Node::Upper => Some(unsafe { hand_out(r.path.as_bytes(), resolved) }),
            Node::Gone(e) => fail(e),
            Node::Real if !r.moved && a.orig_ok => None,
            // SAFETY: valid buffers.
            Node::Real => Some(unsafe { real::realpath(r.path.as_ptr(), resolved) }),
        }
    })
}

hooks! {
    fn realpath(p: *const c_char, resolved: *mut c_char) -> *mut c_char, trace p
        => realpath_impl(p, resolved), else real::realpath(p, resolved);
    fn canonicalize_file_name(p: *const c_char) -> *mut c_char, trace p
        => realpath_impl(p, std::ptr::null_mut()), else real::realpath(p, std::ptr::null_mut());
    fn chdir(p: *const c_char) -> c_int, trace p
        => chdir_impl(p), else { let rc = real::chdir(p); if rc == 0 { path::forget_cwd(); path::set_cwd_mirrored(false); } rc };
    fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char
        => getcwd_impl(buf, size), else real::getcwd(buf, size);
    fn dlopen(p: *const c_char, flags: c_int) -> *mut c_void, trace p
        => dlopen_impl(p, flags), else real::dlopen(p, flags);
    fn inotify_add_watch(fd: c_int, p: *const c_char, mask: u32) -> c_int, trace p
        => watch_impl(fd, p, mask), else real::inotify_add_watch(fd, p, mask);
}

// ---- the working directory -------------------------------------------------------------------

/// chdir into the virtual directory `virt`: the kernel's cwd becomes its mirror directory
/// in the upper dir (created empty), and we remember the virtual path.
fn chdir_virtual(st: &State, virt: &PBuf) -> Option<c_int> {
    let target = match &st.upper {
        Some(up) => {
            let mp = up.mirror_of(virt.as_bytes())?;
            upper::mkdir_p(mp.as_bytes());
            mp
        }
        None => PBuf::from(st.placeholder.as_bytes())?,
    };
    // SAFETY: valid buffer.
    let rc = unsafe { real::chdir(target.as_ptr()) };
    if rc == 0 {
        path::set_cwd(virt.as_bytes());
        path::set_cwd_mirrored(true);
    }
    Some(rc)
}

fn chdir_impl(p: *const c_char) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a = abs_of(st, libc::AT_FDCWD, raw)?;
        let r = vfs::resolve(st, &mut a.p, true);
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                if !e.is_dir() {
                    return fail(libc::ENOTDIR);
                }
                chdir_virtual(st, r.path)
            }
            Node::Upper => chdir_virtual(st, r.path),
            Node::Gone(e) => fail(e),
            Node::Real => {
                // SAFETY: valid buffers.
                let rc = unsafe {
                    if !r.moved && a.orig_ok {
                        real::chdir(p)
                    } else {
                        real::chdir(r.path.as_ptr())
                    }
                };
                if rc == 0 {
                    path::forget_cwd();
                    path::set_cwd_mirrored(false);
                }
                Some(rc)
            }
        }
    })
}

hooks! {
    fn fchdir(fd: c_int) -> c_int => fchdir_impl(fd), else fchdir_real(fd);
}

/// `fchdir` to a virtual directory fd: the directory's virtual path.
fn fchdir_impl(fd: c_int) -> Option<c_int> {
    let Some(Tag::Dir { layer, idx }) = fdtab::get(fd) else {
        return None;
    };
    guarded(|st| {
        let e = vfs::entry(st, layer, idx)?;
        let p = vfs::entry_abs(st, layer, &e)?;
        chdir_virtual(st, &p)
    })
}

/// The real `fchdir`; the cached cwd is stale after it.
unsafe fn fchdir_real(fd: c_int) -> c_int {
    let rc = real::fchdir(fd);
    if rc == 0 {
        path::forget_cwd();
        path::set_cwd_mirrored(false);
    }
    rc
}

fn getcwd_impl(buf: *mut c_char, size: size_t) -> Option<*mut c_char> {
    guarded(|_st| {
        if !path::cwd_mirrored() {
            return None;
        }
        let mut c = PBuf::new();
        path::cwd_into(&mut c)?;
        let need = c.len() + 1;
        // SAFETY: the caller's buffer of `size` bytes, or one we allocate like glibc does.
        unsafe {
            let out = if buf.is_null() {
                let n = if size == 0 { need } else { size };
                if n < need {
                    return fail(libc::ERANGE);
                }
                libc::malloc(n) as *mut c_char
            } else {
                if size < need {
                    return fail(libc::ERANGE);
                }
                buf
            };
            if out.is_null() {
                return fail(libc::ENOMEM);
            }
            std::ptr::copy_nonoverlapping(c.as_ptr(), out, need);
            Some(out)
        }
    })
}

// ---- dlopen ----------------------------------------------------------------------------------

/// A virtual shared object is loaded through a symlink to its blob placed at
/// `<libs>/<virtual path>` (see [`State::libs`]), so its `$ORIGIN` is a directory that
/// mirrors the virtual one; the other shared objects of that virtual directory get symlinks
/// there too, so `$ORIGIN`-relative dependencies resolve.
fn dlopen_impl(p: *const c_char, flags: c_int) -> Option<*mut c_void> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        if !raw.contains(&b'/') {
            return None;
        }
        let mut a = abs_of(st, libc::AT_FDCWD, raw)?;
        if !st.in_view(a.p.as_bytes()) {
            return None;
        }
        let r = vfs::resolve(st, &mut a.p, true);
        match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                let blob = vfs::blob_path(st, &e)?;
                let target = match &st.libs {
                    Some(libs) => {
                        let mut dl = PBuf::from(libs.as_bytes())?;
                        dl.push(r.path.as_bytes())?;
                        materialize_dir(st, r.path, &dl);
                        mirror_needed(st, libs.as_bytes(), r.path.as_bytes(), 0);
                        dl
                    }
                    None => blob,
                };
                // SAFETY: valid buffer.
                Some(unsafe { real::dlopen(target.as_ptr(), flags) })
            }
            Node::Gone(_) => None,
            Node::Upper => {
                let mp = st.upper.as_ref()?.mirror_of(r.path.as_bytes())?;
                // SAFETY: valid buffer.
                Some(unsafe { real::dlopen(mp.as_ptr(), flags) })
            }
            Node::Real if !r.moved && a.orig_ok => None,
            // SAFETY: valid buffer.
            Node::Real => Some(unsafe { real::dlopen(r.path.as_ptr(), flags) }),
        }
    })
}

/// Symlinks in `dl`'s directory for `virt` and its sibling shared objects.
fn materialize_dir(st: &State, virt: &PBuf, dl: &PBuf) {
    link_shared_objects(
        st,
        path::parent(virt.as_bytes()),
        path::parent(dl.as_bytes()),
        path::file_name(virt.as_bytes()),
    );
}

/// Directories whose shared objects this process linked (`numpy` alone `dlopen`s 85 objects
/// from a few directories: once per directory, not once per object, which cost 1,000
/// `symlink` calls, 12 ms of a 100 ms `import numpy`).
static LINKED_DIRS: vrift_shim_core::seen::Seen<1024> = vrift_shim_core::seen::Seen::new();
/// Libraries whose dependencies this process mirrored.
static MIRRORED: vrift_shim_core::seen::Seen<4096> = vrift_shim_core::seen::Seen::new();

fn is_shared_object(name: &[u8]) -> bool {
    name.windows(3).any(|w| w == b".so") || name.ends_with(b".node")
}

/// Symlinks in the real directory `ddir` to the blobs of the shared objects (`*.so*`,
/// `*.node`) of the virtual directory `vdir`, and of the entry named `also`.
fn link_shared_objects(st: &State, vdir: &[u8], ddir: &[u8], also: &[u8]) {
    let key = vrift_shim_core::upper_state::key(ddir);
    let all = LINKED_DIRS.first(key);
    if !all && is_shared_object(also) {
        return;
    }
    upper::mkdir_p(ddir);
    for d in vfs::list_virtual(st, vdir, 0).iter().skip(2) {
        let is_so = is_shared_object(&d.name);
        if *d.name != *also && !(all && is_so) {
            continue;
        }
        let (Some(mut v), Some(mut l)) = (PBuf::from(vdir), PBuf::from(ddir)) else {
            continue;
        };
        if v.as_bytes() != b"/" && v.push(b"/").is_none() {
            continue;
        }
        if l.push(b"/").is_none() || v.push(&d.name).is_none() || l.push(&d.name).is_none() {
            continue;
        }
        let r = vfs::resolve(st, &mut v, true);
        let Node::V { layer, idx } = r.node else {
            continue;
        };
        let Some(e) = vfs::entry(st, layer, idx) else {
            continue;
        };
        if e.is_dir() {
            continue;
        }
        if let Some(blob) = vfs::blob_path(st, &e) {
            // SAFETY: valid buffers.
            unsafe { real::symlink(blob.as_ptr(), l.as_ptr()) };
        }
    }
}

/// For `exec` of the virtual dynamic executable `virt` (content in the real file `file`): the
/// loader resolves the program's `$ORIGIN` from `/proc/self/exe`, which no preload can
/// change, so a program whose `RUNPATH`/`RPATH` reaches into the view (`$ORIGIN/../lib`) is
/// started from `<upper>/dl/<virt>` — a hard link to (or copy of) `file`, so on the upper
/// layer's file system, not in [`State::libs`] — beside the mirrored libraries it needs.
/// `None`: nothing of its search path is in the view, or no upper layer; the caller runs
/// `file` as it is.
pub(crate) fn exec_mirror(st: &State, virt: &[u8], blob: &PBuf, file: &PBuf) -> Option<PBuf> {
    let up = st.upper.as_ref()?;
    let d = read_dynamic(blob)?;
    let search = d.search.as_deref()?;
    let origin = path::parent(virt);
    let reaches_view = search.split(|&b| b == b':').any(|entry| {
        let mut buf = [0u8; path::MAX];
        vrift_shim_core::elf::expand_origin(entry, origin, &mut buf)
            .filter(|_| buf.first() == Some(&b'/'))
            .and_then(|n| path::normalize_abs(&buf[..n]))
            .is_some_and(|dir| st.in_view(dir.as_bytes()))
    });
    if !reaches_view {
        return None;
    }
    let mut dl = up.sub(b"dl")?;
    dl.push(virt)?;
    // SAFETY: valid buffers; our own fds, closed before returning.
    unsafe {
        let mut s: libc::stat = std::mem::zeroed();
        if real::lstat(dl.as_ptr(), &mut s) != 0 {
            upper::mkdir_p(path::parent(dl.as_bytes()));
            if real::link(file.as_ptr(), dl.as_ptr()) != 0 && !copy_file(file, &dl) {
                return None;
            }
        }
    }
    let base = up.sub(b"dl")?;
    mirror_needed(st, base.as_bytes(), virt, 0);
    Some(dl)
}

/// Copies `from` to a new executable file `to` (written under a temporary name, then
/// renamed: a concurrent exec never sees half a binary).
pub(crate) fn copy_file(from: &PBuf, to: &PBuf) -> bool {
    let Some(mut tmp) = PBuf::from(to.as_bytes()) else {
        return false;
    };
    // SAFETY: valid buffers; our own fds, closed before returning.
    unsafe {
        if tmp.push(b".tmp").is_none() || tmp.push(libc::getpid().to_string().as_bytes()).is_none()
        {
            return false;
        }
        let inp = real::open(from.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
        if inp < 0 {
            return false;
        }
        let out = real::open(
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o755,
        );
        if out < 0 {
            real::close(inp);
            return false;
        }
        let mut ok = true;
        let mut buf = [0u8; 8192];
        loop {
            let n = real::read(inp, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 {
                ok = false;
            }
            if n <= 0 {
                break;
            }
            if real::write(out, buf.as_ptr().cast(), n as usize) != n {
                ok = false;
                break;
            }
        }
        real::close(inp);
        ok &= real::close(out) == 0;
        ok && real::rename(tmp.as_ptr(), to.as_ptr()) == 0
    }
}

/// The real directory to put in a child's `LD_LIBRARY_PATH` for the entry `entry` of the
/// caller's: an entry in the view becomes `<libs>/<entry>`, holding symlinks to the blobs
/// of that directory's shared objects (the loader opens them itself and sees no view);
/// `None` keeps the entry as it is.
pub(crate) fn library_dir(st: &State, entry: &[u8]) -> Option<PBuf> {
    if entry.is_empty() {
        return None;
    }
    let mut a = abs_of(st, libc::AT_FDCWD, entry)?;
    if !st.in_view(a.p.as_bytes()) {
        return None;
    }
    let r = vfs::resolve(st, &mut a.p, true);
    if !matches!(r.node, Node::V { .. }) {
        return None;
    }
    let mut dl = PBuf::from(st.libs.as_ref()?.as_bytes())?;
    dl.push(r.path.as_bytes())?;
    // SAFETY: all-zero bytes are a valid `struct stat`.
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid buffer and NUL-terminated path.
    if unsafe { real::lstat(dl.as_ptr(), &mut s) } != 0 {
        link_shared_objects(st, r.path.as_bytes(), dl.as_bytes(), b"");
    }
    Some(dl)
}

/// Mirrors, under `base` (the libs directory, or `<upper>/dl` for an exec), the libraries
/// the loader will look for on behalf of the view object `virt`: each `DT_NEEDED` name found
/// in a `DT_RUNPATH`/`DT_RPATH` directory of the view (`$ORIGIN` expanded against `virt`'s
/// virtual directory: wheels keep their libraries in `numpy.libs/` reached as
/// `$ORIGIN/../../numpy.libs`) gets a symlink to its blob at the same place under `base`,
/// where the loader, resolving `$ORIGIN` from the path under `base` it was given, looks; and
/// so on for their own dependencies. Already mirrored names are skipped.
fn mirror_needed(st: &State, base: &[u8], virt: &[u8], depth: u32) {
    use vrift_shim_core::upper_state::key;
    if depth > 8 || !MIRRORED.first(key(virt) ^ key(base).rotate_left(1)) {
        return;
    }
    let Some(mut v) = PBuf::from(virt) else {
        return;
    };
    let r = vfs::resolve(st, &mut v, true);
    let Node::V { layer, idx } = r.node else {
        return;
    };
    let Some(e) = vfs::entry(st, layer, idx) else {
        return;
    };
    let Some(blob) = vfs::blob_path(st, &e) else {
        return;
    };
    let origin = path::parent(virt);
    let Some(d) = read_dynamic(&blob) else {
        return;
    };
    let Some(search) = d.search.as_deref() else {
        return;
    };
    for entry in search.split(|&b| b == b':') {
        let mut buf = [0u8; path::MAX];
        let Some(n) = vrift_shim_core::elf::expand_origin(entry, origin, &mut buf) else {
            continue;
        };
        if buf.first() != Some(&b'/') {
            continue;
        }
        let Some(dir) = path::normalize_abs(&buf[..n]) else {
            continue;
        };
        if !st.in_view(dir.as_bytes()) {
            continue;
        }
        for name in &d.needed {
            let Some(mut cand) = PBuf::from(dir.as_bytes()) else {
                continue;
            };
            if cand.push(b"/").is_none() || cand.push(name).is_none() {
                continue;
            }
            let cand_virt = cand.as_bytes().to_vec();
            let rr = vfs::resolve(st, &mut cand, true);
            let Node::V { layer, idx } = rr.node else {
                continue;
            };
            let Some(ce) = vfs::entry(st, layer, idx) else {
                continue;
            };
            let (Some(cblob), Some(mut dl)) = (vfs::blob_path(st, &ce), PBuf::from(base)) else {
                continue;
            };
            if dl.push(&cand_virt).is_none() {
                continue;
            }
            // SAFETY: valid buffers.
            unsafe {
                let mut s: libc::stat = std::mem::zeroed();
                if real::lstat(dl.as_ptr(), &mut s) == 0 {
                    continue;
                }
                upper::mkdir_p(path::parent(dl.as_bytes()));
                real::symlink(cblob.as_ptr(), dl.as_ptr());
            }
            mirror_needed(st, base, &cand_virt, depth + 1);
        }
    }
}

/// The dynamic section of the ELF file at `p`.
fn read_dynamic(p: &PBuf) -> Option<vrift_shim_core::elf::Dynamic> {
    with_reader(p, |read| vrift_shim_core::elf::dynamic_from(read))
}

/// Runs `parse` over the file at `p` read piece by piece where asked (`pread`; not mapped: a
/// blob truncated meanwhile must never raise SIGBUS in the program).
pub(crate) fn with_reader<T>(
    p: &PBuf,
    parse: impl FnOnce(&mut dyn FnMut(u64, usize) -> Option<Vec<u8>>) -> Option<T>,
) -> Option<T> {
    // SAFETY: our own fd, closed before returning; reads into our own buffers.
    unsafe {
        let fd = real::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let r = parse(&mut |off, len| {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                let n = libc::pread(
                    fd,
                    buf[got..].as_mut_ptr().cast(),
                    len - got,
                    i64::try_from(off).ok()? + got as i64,
                );
                if n <= 0 {
                    break;
                }
                got += n as usize;
            }
            buf.truncate(got);
            Some(buf)
        });
        real::close(fd);
        r
    }
}

// ---- inotify ------------------------------------------------------------------------------

/// `inotify_add_watch` on a view path (Node's `fs.watch`, so `tsc -w`, webpack and vite in
/// watch mode): the kernel can only watch a real inode, so the watch goes where writes to that
/// path land — its directory (or file) in the upper layer, made if needed — and so reports
/// what the program and its children write through the view.
fn watch_impl(fd: c_int, p: *const c_char, mask: u32) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: caller's C string.
        let raw = unsafe { cbytes(p) };
        let mut a = abs_of(st, libc::AT_FDCWD, raw)?;
        if !st.in_view(a.p.as_bytes()) {
            return None;
        }
        let follow = mask & libc::IN_DONT_FOLLOW == 0;
        let r = vfs::resolve(st, &mut a.p, follow);
        let target: PBuf = match r.node {
            Node::V { layer, idx } => {
                let e = vfs::entry(st, layer, idx)?;
                match &st.upper {
                    Some(up) if e.is_dir() => {
                        let mp = up.mirror_of(r.path.as_bytes())?;
                        upper::mkdir_p(mp.as_bytes());
                        up.flag_with_ancestors(r.path.as_bytes());
                        mp
                    }
                    Some(_) => match crate::open::copy_up(st, r.path.as_bytes(), &e, false) {
                        Ok(mp) => mp,
                        Err(err) => return fail(err),
                    },
                    // A read-only view never changes: a watch that never fires.
                    None => PBuf::from(st.placeholder.as_bytes())?,
                }
            }
            Node::Upper => st.upper.as_ref()?.mirror_of(r.path.as_bytes())?,
            Node::Gone(e) => return fail(e),
            Node::Real if !r.moved && a.orig_ok => return None,
            Node::Real => PBuf::from(r.path.as_bytes())?,
        };
        // SAFETY: valid buffer.
        Some(unsafe { real::inotify_add_watch(fd, target.as_ptr(), mask) })
    })
}

// ---- syscall() -------------------------------------------------------------------------------

hooks! {
    /// `syscall(2)`: runtimes such as libuv (Node.js) call `statx` and friends through it.
    fn syscall(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long
        => syscall_impl(n, a1, a2, a3, a4, a5), else real::syscall(n, a1, a2, a3, a4, a5, a6);
}

/// The system calls `syscall(2)` serves, each by the decision code (or hook) of its libc
/// function; `None` for every other number (the real `syscall` runs it).
unsafe fn syscall_impl(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
) -> Option<c_long> {
    let ptr = |v: c_long| v as usize as *const c_char;
    match n {
        libc::SYS_statx => crate::stat::statx_impl(
            a1 as c_int,
            ptr(a2),
            a3 as c_int,
            a4 as c_uint,
            a5 as usize as *mut libc::statx,
        )
        .map(c_long::from),
        libc::SYS_newfstatat => crate::stat::fstatat_impl(
            a1 as c_int,
            ptr(a2),
            a3 as usize as *mut libc::stat,
            a4 as c_int,
        )
        .map(c_long::from),
        libc::SYS_stat => {
            crate::stat::fstatat_impl(libc::AT_FDCWD, ptr(a1), a2 as usize as *mut libc::stat, 0)
                .map(c_long::from)
        }
        libc::SYS_lstat => crate::stat::fstatat_impl(
            libc::AT_FDCWD,
            ptr(a1),
            a2 as usize as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
        .map(c_long::from),
        libc::SYS_fstat => {
            crate::stat::fstat_impl(a1 as c_int, a2 as usize as *mut libc::stat).map(c_long::from)
        }
        libc::SYS_open => {
            crate::open::open_impl(libc::AT_FDCWD, ptr(a1), a2 as c_int, a3 as c_uint)
                .map(c_long::from)
        }
        libc::SYS_openat => crate::open::open_impl(a1 as c_int, ptr(a2), a3 as c_int, a4 as c_uint)
            .map(c_long::from),
        libc::SYS_access => {
            crate::stat::access_impl(libc::AT_FDCWD, ptr(a1), a2 as c_int, 0).map(c_long::from)
        }
        libc::SYS_faccessat => {
            crate::stat::access_impl(a1 as c_int, ptr(a2), a3 as c_int, 0).map(c_long::from)
        }
        libc::SYS_faccessat2 => {
            crate::stat::access_impl(a1 as c_int, ptr(a2), a3 as c_int, a4 as c_int)
                .map(c_long::from)
        }
        libc::SYS_readlink => crate::stat::readlinkat_impl(
            libc::AT_FDCWD,
            ptr(a1),
            a2 as usize as *mut c_char,
            a3 as size_t,
        )
        .map(|v| v as c_long),
        libc::SYS_readlinkat => crate::stat::readlinkat_impl(
            a1 as c_int,
            ptr(a2),
            a3 as usize as *mut c_char,
            a4 as size_t,
        )
        .map(|v| v as c_long),
        libc::SYS_getdents64 => {
            crate::dir::getdents_impl(a1 as c_int, a2 as usize as *mut c_void, a3 as usize)
                .map(|v| v as c_long)
        }
        libc::SYS_close => {
            fdtab::clear(a1 as c_int);
            None
        }
        libc::SYS_chdir => Some(c_long::from(chdir(ptr(a1)))),
        libc::SYS_fchdir => Some(c_long::from(fchdir(a1 as c_int))),
        libc::SYS_unlink => Some(c_long::from(crate::open::unlink(ptr(a1)))),
        libc::SYS_unlinkat => Some(c_long::from(crate::open::unlinkat(
            a1 as c_int,
            ptr(a2),
            a3 as c_int,
        ))),
        libc::SYS_mkdir => Some(c_long::from(crate::open::mkdir(
            ptr(a1),
            a2 as libc::mode_t,
        ))),
        // Metadata and names through fds: the same guards as the libc functions.
        libc::SYS_fchmod => Some(c_long::from(crate::open::fchmod(
            a1 as c_int,
            a2 as libc::mode_t,
        ))),
        libc::SYS_fchown => Some(c_long::from(crate::open::fchown(
            a1 as c_int,
            a2 as libc::uid_t,
            a3 as libc::gid_t,
        ))),
        libc::SYS_fchmodat => Some(c_long::from(crate::open::fchmodat(
            a1 as c_int,
            ptr(a2),
            a3 as libc::mode_t,
            0,
        ))),
        libc::SYS_fchownat => Some(c_long::from(crate::open::fchownat(
            a1 as c_int,
            ptr(a2),
            a3 as libc::uid_t,
            a4 as libc::gid_t,
            a5 as c_int,
        ))),
        libc::SYS_utimensat => Some(c_long::from(crate::open::utimensat(
            a1 as c_int,
            ptr(a2),
            a3 as usize as *const libc::timespec,
            a4 as c_int,
        ))),
        libc::SYS_fsetxattr => Some(c_long::from(crate::open::fsetxattr(
            a1 as c_int,
            ptr(a2),
            a3 as usize as *const c_void,
            a4 as libc::size_t,
            a5 as c_int,
        ))),
        libc::SYS_fremovexattr => Some(c_long::from(crate::open::fremovexattr(
            a1 as c_int,
            ptr(a2),
        ))),
        libc::SYS_link => Some(c_long::from(crate::open::link(ptr(a1), ptr(a2)))),
        libc::SYS_inotify_add_watch => Some(c_long::from(inotify_add_watch(
            a1 as c_int,
            ptr(a2),
            a3 as u32,
        ))),
        libc::SYS_linkat => Some(c_long::from(crate::open::linkat(
            a1 as c_int,
            ptr(a2),
            a3 as c_int,
            ptr(a4),
            a5 as c_int,
        ))),
        libc::SYS_rename => Some(c_long::from(crate::open::rename(ptr(a1), ptr(a2)))),
        libc::SYS_renameat2 => Some(c_long::from(crate::open::renameat2(
            a1 as c_int,
            ptr(a2),
            a3 as c_int,
            ptr(a4),
            a5 as c_uint,
        ))),
        libc::SYS_execve => Some(c_long::from(crate::exec::do_execve(
            ptr(a1),
            a2 as usize as *const *const c_char,
            a3 as usize as *const *const c_char,
        ))),
        _ => None,
    }
}
