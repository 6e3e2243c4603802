//! Thin wrappers over the Linux calls isolation needs (mount, mount_setattr, pivot_root,
//! capabilities, raw clone), returning `io::Error`s. Nothing here allocates on success paths
//! except where a path is turned into a C string.
// The sandbox set-up syscalls (mount, pivot_root, capabilities).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_long(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `mount(2)`.
pub fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), std::ffi::CStr::as_ptr);
    // SAFETY: every pointer is NULL or a valid NUL-terminated string.
    check(unsafe {
        libc::mount(
            p(src),
            target.as_ptr(),
            p(fstype),
            flags,
            p(data).cast::<libc::c_void>(),
        )
    })
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` on `path` (and everything below it if `recursive`).
pub fn mount_setattr(path: &CStr, recursive: bool, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: valid path and a correctly sized, initialized struct.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(|_| ())
}

/// `mount_setattr(2)` on the mount `fd` refers to (an attached or a detached one, as
/// `open_tree` makes), and everything below it if `recursive`.
pub fn mount_setattr_fd(
    fd: &std::os::fd::OwnedFd,
    recursive: bool,
    set: u64,
    clear: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: an open descriptor, an empty path with AT_EMPTY_PATH, and a correctly sized,
    // initialized struct.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(|_| ())
}

/// `pivot_root(new, old)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated paths.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(|_| ())
}

pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: valid path.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

pub fn chdir(p: &CStr) -> io::Result<()> {
    // SAFETY: valid path.
    check(unsafe { libc::chdir(p.as_ptr()) })
}

pub fn mkdir(p: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid path.
    check(unsafe { libc::mkdir(p.as_ptr(), mode) })
}

pub fn chmod(p: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid path.
    check(unsafe { libc::chmod(p.as_ptr(), mode) })
}

/// Creates an empty regular file (a mount point for a bind-mounted device node).
pub fn touch(p: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid path; the fd is closed right away.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: closing the fd just opened.
    unsafe { libc::close(fd) };
    Ok(())
}

pub fn symlink(target: &CStr, link: &CStr) -> io::Result<()> {
    // SAFETY: valid paths.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
}

/// `lstat`'s file type bits, or the error.
pub fn file_type(p: &CStr) -> io::Result<libc::mode_t> {
    // SAFETY: valid path and a zeroed stat buffer the kernel fills.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::lstat(p.as_ptr(), &mut st))?;
        Ok(st.st_mode & libc::S_IFMT)
    }
}

/// A fork-like `clone(2)` into new namespaces: returns 0 in the child, the child's pid in the
/// parent. (The raw system call, not glibc's wrapper: no new stack, the child continues here.)
pub fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // Argument order of the raw call differs between architectures only after `newsp`; the
    // tid/tls arguments are unused (all zero) here.
    // SAFETY: with a NULL stack and no CLONE_VM this behaves like fork(2).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    check_long(r).map(|pid| pid as libc::pid_t)
}

pub const CAP_DAC_OVERRIDE: u32 = 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this process's effective, permitted and inheritable capability sets to `caps`
/// (a bit mask of capability numbers below 32).
pub fn set_caps(caps: u32) -> io::Result<()> {
    let hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: caps,
            permitted: caps,
            inheritable: caps,
        },
        CapData::default(),
    ];
    // SAFETY: header and a two-element data array, as capset(2) v3 expects.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) })
        .map(|_| ())
}

fn prctl(op: libc::c_int, a: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe {
        libc::prctl(
            op,
            a,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// What CMD keeps: no capabilities but, if `dac_override`, `CAP_DAC_OVERRIDE` (so files of
/// the view whose blobs carry no write bits can still be written — into the throwaway upper
/// layer), no way to gain any back (bounding set, no-new-privs, `SECBIT_NOROOT` for a uid 0
/// inside). Must run in the child right before `execve`.
///
/// The override is safe only while every writable place is a throwaway layer: in a directory
/// bound from the host it would let CMD write through a read-only hard link into a blob.
pub fn restrict_for_exec(dac_override: bool) -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)?;
    prctl(
        libc::PR_SET_SECUREBITS,
        SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
    )?;
    for cap in 0..64u32 {
        if dac_override && cap == CAP_DAC_OVERRIDE {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) {
            Ok(()) => {}
            // Beyond the kernel's last capability.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    if !dac_override {
        return set_caps(0);
    }
    set_caps(1 << CAP_DAC_OVERRIDE)?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            libc::c_ulong::from(CAP_DAC_OVERRIDE),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Marks the process non-dumpable: no ptrace, `/proc/<pid>/fd` and friends closed to others.
pub fn not_dumpable() -> io::Result<()> {
    prctl(libc::PR_SET_DUMPABLE, 0)
}

/// Closes every close-on-exec descriptor from 3 up, except `keep`.
pub fn close_own_fds(keep: libc::c_int) {
    let fds: Vec<libc::c_int> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect(),
        // No /proc: probe a plain range instead.
        Err(_) => (3..4096).collect(),
    };
    for fd in fds {
        if fd < 3 || fd == keep {
            continue;
        }
        // SAFETY: F_GETFD on any integer is harmless; we close only descriptors we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
            close(fd);
        }
    }
}

/// Parent-death signal: the namespace's init dies with `vrift`.
pub fn die_with_parent() -> io::Result<()> {
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
}

/// Writes all of `buf` to `fd`, retrying on EINTR; errors are ignored (best effort).
pub fn write_all_fd(fd: libc::c_int, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// A pipe with both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: a two-int buffer for pipe2.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

pub fn close(fd: libc::c_int) {
    // SAFETY: closing an fd this module owns.
    unsafe { libc::close(fd) };
}

/// Reads `fd` until EOF (EINTR retried).
pub fn read_to_end(fd: libc::c_int) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    out
}
