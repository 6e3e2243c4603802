//! The real libc functions, found once with `dlsym(RTLD_NEXT, ..)`.
//!
//! Every call the shim itself makes to a function it also exports must go through here:
//! inside this library `open` would bind to our own hook (ELF symbol preemption), so
//! calling `libc::open` from a hook would recurse. All pointers are resolved at load time
//! (the constructor), so hooks never call `dlsym` (which takes the loader lock) on their
//! hot path or after `fork`.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    c_char, c_int, c_long, c_uint, c_void, mode_t, off_t, pid_t, size_t, ssize_t, DIR, FILE,
};

/// The value a libc function returns on failure when the real function is unavailable.
pub trait FailVal {
    fn fail() -> Self;
}
impl FailVal for c_int {
    fn fail() -> Self {
        -1
    }
}
impl FailVal for c_long {
    fn fail() -> Self {
        -1
    }
}
impl FailVal for ssize_t {
    fn fail() -> Self {
        -1
    }
}
impl<T> FailVal for *mut T {
    fn fail() -> Self {
        std::ptr::null_mut()
    }
}

fn resolve(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    // SAFETY: `name` is NUL-terminated (built with concat!(.., "\0")).
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    slot.store(p, Ordering::Relaxed);
    p
}

macro_rules! real_fns {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        mod slots {
            use std::sync::atomic::AtomicUsize;
            $( #[allow(non_upper_case_globals)] pub static $name: AtomicUsize = AtomicUsize::new(0); )*
        }
        /// Resolves every real function (called from the constructor).
        pub fn resolve_all() {
            $( resolve(&slots::$name, concat!(stringify!($name), "\0").as_bytes()); )*
        }
        $(
            #[inline]
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                let mut p = slots::$name.load(Ordering::Relaxed);
                if p == 0 {
                    p = resolve(&slots::$name, concat!(stringify!($name), "\0").as_bytes());
                }
                if p == 0 {
                    *libc::__errno_location() = libc::ENOSYS;
                    return <$ret as FailVal>::fail();
                }
                // SAFETY: `p` is the address dlsym returned for this very symbol, whose C
                // prototype is the one declared here.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = std::mem::transmute(p);
                f($($arg),*)
            }
        )*
    };
}

real_fns! {
    open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fopen(path: *const c_char, mode: *const c_char) -> *mut FILE;
    fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE;
    fclose(f: *mut FILE) -> c_int;
    close(fd: c_int) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(a: c_int, b: c_int) -> c_int;
    dup3(a: c_int, b: c_int, flags: c_int) -> c_int;
    fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int;
    fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int;
    close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    stat(path: *const c_char, buf: *mut libc::stat) -> c_int;
    lstat(path: *const c_char, buf: *mut libc::stat) -> c_int;
    fstat(fd: c_int, buf: *mut libc::stat) -> c_int;
    fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int;
    statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut libc::statx) -> c_int;
    access(path: *const c_char, mode: c_int) -> c_int;
    faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int;
    euidaccess(path: *const c_char, mode: c_int) -> c_int;
    readlink(path: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t;
    readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t;
    realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char;
    opendir(path: *const c_char) -> *mut DIR;
    fdopendir(fd: c_int) -> *mut DIR;
    readdir(d: *mut DIR) -> *mut libc::dirent;
    readdir64(d: *mut DIR) -> *mut libc::dirent64;
    readdir_r(d: *mut DIR, e: *mut libc::dirent, r: *mut *mut libc::dirent) -> c_int;
    readdir64_r(d: *mut DIR, e: *mut libc::dirent64, r: *mut *mut libc::dirent64) -> c_int;
    closedir(d: *mut DIR) -> c_int;
    dirfd(d: *mut DIR) -> c_int;
    rewinddir(d: *mut DIR) -> c_int;
    telldir(d: *mut DIR) -> c_long;
    seekdir(d: *mut DIR, pos: c_long) -> c_int;
    scandir(p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int;
    scandir64(p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int;
    scandirat(fd: c_int, p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int;
    scandirat64(fd: c_int, p: *const c_char, l: *mut c_void, f: *mut c_void, c: *mut c_void) -> c_int;
    getdents64(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    getxattr(p: *const c_char, n: *const c_char, v: *mut c_void, s: size_t) -> ssize_t;
    lgetxattr(p: *const c_char, n: *const c_char, v: *mut c_void, s: size_t) -> ssize_t;
    fgetxattr(fd: c_int, n: *const c_char, v: *mut c_void, s: size_t) -> ssize_t;
    listxattr(p: *const c_char, l: *mut c_char, s: size_t) -> ssize_t;
    llistxattr(p: *const c_char, l: *mut c_char, s: size_t) -> ssize_t;
    flistxattr(fd: c_int, l: *mut c_char, s: size_t) -> ssize_t;
    chdir(path: *const c_char) -> c_int;
    fchdir(fd: c_int) -> c_int;
    getcwd(buf: *mut c_char, n: size_t) -> *mut c_char;
    execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    execvp(file: *const c_char, argv: *const *const c_char) -> c_int;
    execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    posix_spawn(pid: *mut pid_t, path: *const c_char, fa: *const c_void, at: *const c_void, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    posix_spawnp(pid: *mut pid_t, file: *const c_char, fa: *const c_void, at: *const c_void, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    dlopen(path: *const c_char, flags: c_int) -> *mut c_void;
    syscall(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long;
    unlink(path: *const c_char) -> c_int;
    unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    rmdir(path: *const c_char) -> c_int;
    mkdir(path: *const c_char, mode: mode_t) -> c_int;
    mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int;
    rename(a: *const c_char, b: *const c_char) -> c_int;
    renameat(fa: c_int, a: *const c_char, fb: c_int, b: *const c_char) -> c_int;
    renameat2(fa: c_int, a: *const c_char, fb: c_int, b: *const c_char, flags: c_uint) -> c_int;
    truncate(path: *const c_char, len: off_t) -> c_int;
    chmod(path: *const c_char, mode: mode_t) -> c_int;
    fchmodat(dirfd: c_int, path: *const c_char, mode: mode_t, flags: c_int) -> c_int;
    utimensat(dirfd: c_int, path: *const c_char, t: *const libc::timespec, flags: c_int) -> c_int;
    symlink(target: *const c_char, path: *const c_char) -> c_int;
    mkostemps(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int;
    mkdtemp(template: *mut c_char) -> *mut c_char;
    symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int;
    fchmod(fd: c_int, mode: mode_t) -> c_int;
    fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    fchownat(dirfd: c_int, path: *const c_char, uid: libc::uid_t, gid: libc::gid_t, flags: c_int) -> c_int;
    chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    futimens(fd: c_int, t: *const libc::timespec) -> c_int;
    futimes(fd: c_int, t: *const libc::timeval) -> c_int;
    fsetxattr(fd: c_int, n: *const c_char, v: *const c_void, s: size_t, flags: c_int) -> c_int;
    fremovexattr(fd: c_int, n: *const c_char) -> c_int;
    setxattr(p: *const c_char, n: *const c_char, v: *const c_void, s: size_t, flags: c_int) -> c_int;
    lsetxattr(p: *const c_char, n: *const c_char, v: *const c_void, s: size_t, flags: c_int) -> c_int;
    removexattr(p: *const c_char, n: *const c_char) -> c_int;
    lremovexattr(p: *const c_char, n: *const c_char) -> c_int;
    link(a: *const c_char, b: *const c_char) -> c_int;
    inotify_add_watch(fd: c_int, path: *const c_char, mask: u32) -> c_int;
    linkat(fa: c_int, a: *const c_char, fb: c_int, b: *const c_char, flags: c_int) -> c_int;
}

/// `errno` of the calling thread.
#[inline]
pub fn errno() -> c_int {
    // SAFETY: always valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

/// Sets `errno`.
#[inline]
pub fn set_errno(e: c_int) {
    // SAFETY: always valid for the calling thread.
    unsafe { *libc::__errno_location() = e }
}
