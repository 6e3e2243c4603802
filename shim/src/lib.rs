//! `libvrift_shim.so`: an `LD_PRELOAD` library that makes the trees of one or more manifests
//! appear at their root paths, reading every file from the content-addressable store.
//! See `README.md` beside this crate for the design, the interposed symbols and their
//! limits; in short:
//!
//! * Configuration comes from the environment (`VRIFT_MANIFESTS`, `VRIFT_STORE`,
//!   `VRIFT_UPPER`, set by `vrift run`) and is loaded once, in the library constructor.
//!   Without `VRIFT_MANIFESTS` every hook is a plain call to the real function.
//! * Every hook resolves its path to an absolute, normalized path in a stack buffer. Paths
//!   outside every manifest root go to the real function untouched. Inside, the path is
//!   looked up in the upper dir's shared index (writes), then in the mmapped manifests
//!   (O(log n) binary search, symlinks followed), and answered from there: `stat` data is
//!   synthesized, files are opened as their real blob files, directories as a real empty
//!   directory fd plus a synthesized listing. Misses go to the real filesystem.
//! * Hooks never panic across the FFI boundary (each body runs under `catch_unwind` and
//!   falls back to the real call), never recurse (a thread-local guard; our own libc calls
//!   go through `real`), never allocate or lock on the stat/open/access hot paths, and keep
//!   the fd table in a static array (safe after `fork`).
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
// The whole crate is C-ABI hooks over libc: unsafe by nature, each block argued.
#![allow(unsafe_code)]
#![allow(clippy::missing_safety_doc)]

/// Defines exported hooks that are one line each: the hook's decision code (`*_impl`, which
/// answers `None` to decline) or else the real function with the caller's arguments; with
/// `trace ARG`, the call is counted for `VRIFT_REPORT` and traced under the hook's name. One
/// invocation per family of hooks (stat, open, directories, ...), beside its decision code.
/// Without `else`, the expression is the whole hook (fd bookkeeping around the real call).
macro_rules! hooks {
    ($(
        $(#[$m:meta])*
        fn $name:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty $(, trace $p:expr)?
            => $imp:expr $(, else $real:expr)?;
    )*) => {$(
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            $($crate::trace(stringify!($name), $p);)?
            hook_body!($imp $(, $real)?)
        }
    )*};
}

macro_rules! hook_body {
    ($imp:expr, $real:expr) => {
        $imp.unwrap_or_else(|| $real)
    };
    ($body:expr) => {
        $body
    };
}

mod dir;
mod exec;
mod exec_alloc;
mod fdtab;
mod guard;
mod mf;
mod misc;
mod open;
mod path;
mod real;
mod report;
mod stat;
mod state;
mod upper;
mod vfs;

use std::cell::Cell;
use std::panic::AssertUnwindSafe;

use libc::c_int;

use crate::path::PBuf;
use crate::state::State;

/// The system allocator, except between `vfork` and `exec` (see [`exec_alloc`]).
#[global_allocator]
static ALLOC: exec_alloc::ShimAlloc = exec_alloc::ShimAlloc;

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}

/// Runs a hook body if the shim is active and this thread is not already inside a hook.
/// `None` (inactive, re-entered, the body declined, or the body panicked) means: call the
/// real function with the caller's arguments.
#[inline]
pub(crate) fn guarded<R: Ret>(f: impl FnOnce(&'static State) -> Option<R>) -> Option<R> {
    let st = state::get()?;
    let entered = BUSY
        .try_with(|b| {
            if b.get() {
                false
            } else {
                b.set(true);
                true
            }
        })
        .unwrap_or(false);
    if !entered {
        return None;
    }
    let _g = Guard;
    // A body that declines has made calls of its own (probes of the upper layer, lookups):
    // the real function then runs with the caller's errno, as it would without the shim.
    let saved = real::errno();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(st)))
        .ok()
        .flatten();
    // A call that succeeded leaves errno as the caller had it, whatever the body's own steps
    // (`mkdir -p` of a mirror directory: EEXIST; probes: ENOENT) set; a failure keeps its errno.
    if r.as_ref().is_none_or(|v| !v.failed()) {
        real::set_errno(saved);
    }
    if r.is_some() {
        report::served();
    }
    r
}

/// What a hook returns, as far as errno is concerned: whether it reports a failure (errno is
/// then the answer) or a success (errno is then the caller's).
pub(crate) trait Ret {
    fn failed(&self) -> bool;
}
impl Ret for libc::c_int {
    fn failed(&self) -> bool {
        *self < 0
    }
}
impl Ret for libc::c_long {
    fn failed(&self) -> bool {
        *self < 0
    }
}
impl Ret for isize {
    fn failed(&self) -> bool {
        *self < 0
    }
}
/// Hooks that prepare work for a later real call (exec, opendir): `Err` is their failure.
impl<T, E> Ret for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}
impl<T> Ret for *mut T {
    fn failed(&self) -> bool {
        self.is_null()
    }
}
impl<T> Ret for *const T {
    fn failed(&self) -> bool {
        self.is_null()
    }
}

/// Sets errno and returns `Some(fail)`: the hook's answer is an error.
#[inline]
pub(crate) fn fail<T: real::FailVal>(e: c_int) -> Option<T> {
    real::set_errno(e);
    Some(T::fail())
}

/// Logs a hook call when `VRIFT_TRACE` is set (the measurement build is this one).
#[inline]
pub(crate) fn trace(name: &'static str, p: *const libc::c_char) {
    report::enter(name);
    if !state::TRACE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut b = PBuf::new();
    let _ = b.push(b"vrift-trace ");
    let _ = b.push(name.as_bytes());
    let _ = b.push(b" ");
    // SAFETY: `p` is NULL or a C string from the caller.
    let _ = b.push(unsafe { path::cbytes(p) });
    let _ = b.push(b"\n");
    // SAFETY: writing our buffer to stderr.
    unsafe { real::write(2, b.as_ptr().cast(), b.len()) };
}

/// An absolute path the shim must look at, and whether the caller's own (dirfd, path) pair
/// still names the same thing for the kernel (false when it is relative to a virtual
/// directory fd or to a virtual cwd).
pub(crate) struct Abs {
    pub p: PBuf,
    pub orig_ok: bool,
}

/// True if `p` is absolute and already normal (no `//`, `.`, `..`, trailing `/`).
fn is_normal(p: &[u8]) -> bool {
    if p.len() > 1 && p.ends_with(b"/") {
        return false;
    }
    let mut prev_slash = false;
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        if c == b'/' {
            if prev_slash {
                return false;
            }
            prev_slash = true;
        } else {
            if prev_slash && c == b'.' {
                let next = p.get(i + 1).copied();
                if next.is_none() || next == Some(b'/') {
                    return false;
                }
                if next == Some(b'.') {
                    let n2 = p.get(i + 2).copied();
                    if n2.is_none() || n2 == Some(b'/') {
                        return false;
                    }
                }
            }
            prev_slash = false;
        }
        i += 1;
    }
    true
}

fn touches(st: &State, p: &[u8]) -> bool {
    st.in_view(p) || st.ancestor_id(p).is_some()
}

/// The absolute path of (dirfd, raw), if it is in the view or a real ancestor of a root;
/// `None` means the caller's arguments go to the real function unchanged.
/// What [`abs_into`] learned besides the path.
#[derive(Clone, Copy)]
pub(crate) struct AbsInfo {
    pub orig_ok: bool,
    /// The caller's path ends in `/` (or `/.`): it names a directory, symlinks followed.
    pub dir_only: bool,
}

/// [`abs_into`] with an owned buffer (for the colder hooks).
pub(crate) fn abs_of(st: &State, dirfd: c_int, raw: &[u8]) -> Option<Abs> {
    let mut p = PBuf::new();
    let i = abs_into(st, dirfd, raw, &mut p)?;
    Some(Abs {
        p,
        orig_ok: i.orig_ok,
    })
}

/// Writes the absolute path of (dirfd, raw) into `out` if it is in the view or a real
/// ancestor of a root; `None` means the caller's arguments go to the real function
/// unchanged. Paths are built in place: a `PBuf` is 4 KiB, and copying it around by value
/// would cost more than the lookup itself.
pub(crate) fn abs_into(st: &State, dirfd: c_int, raw: &[u8], out: &mut PBuf) -> Option<AbsInfo> {
    if raw.is_empty() {
        return None;
    }
    let dir_only = raw.ends_with(b"/")
        || raw.ends_with(b"/.")
        || raw.ends_with(b"/..")
        || raw == b"."
        || raw == b"..";
    out.clear();
    if raw[0] == b'/' {
        if is_normal(raw) {
            if !touches(st, raw) {
                return None;
            }
            out.push(raw)?;
        } else {
            out.join_normalized(raw)?;
            out.finish();
            // `view/..` fails for the kernel when `view` is only in a manifest.
            let through = path::dotdot_from(b"/", raw, |p| st.in_view(p));
            if !through && !touches(st, out.as_bytes()) {
                return None;
            }
            return Some(AbsInfo {
                orig_ok: !through,
                dir_only,
            });
        }
        return Some(AbsInfo {
            orig_ok: true,
            dir_only,
        });
    }
    let mut orig_ok = true;
    if dirfd == libc::AT_FDCWD {
        path::cwd_into(out)?;
        orig_ok = !path::cwd_mirrored();
    } else {
        match fdtab::get(dirfd) {
            Some(fdtab::Tag::Dir { layer, idx }) => {
                let e = vfs::entry(st, layer, idx)?;
                vfs::entry_abs_into(st, layer, &e, out)?;
                orig_ok = false;
            }
            Some(fdtab::Tag::Ancestor { id }) => {
                out.push(st.ancestors.get(id)?)?;
            }
            Some(fdtab::Tag::File { .. }) => return None,
            None => {
                // A real directory we did not open: only `..` can lead into the view.
                if !raw.split(|&b| b == b'/').any(|c| c == b"..") {
                    return None;
                }
                let mut link = PBuf::from(b"/proc/self/fd/")?;
                link.push(dirfd.to_string().as_bytes())?;
                let mut buf = [0u8; path::MAX];
                // SAFETY: valid buffers.
                let n =
                    unsafe { real::readlink(link.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return None;
                }
                out.push(&buf[..n as usize])?;
            }
        }
    }
    // `out` holds the (normalized, absolute) base; append `raw` in place.
    if path::dotdot_from(out.as_bytes(), raw, |p| st.in_view(p)) {
        orig_ok = false;
    }
    if out.as_bytes() == b"/" {
        out.clear();
    }
    out.join_normalized(raw)?;
    out.finish();
    if !touches(st, out.as_bytes()) && orig_ok {
        return None;
    }
    Some(AbsInfo { orig_ok, dir_only })
}

extern "C" fn vrift_shim_ctor() {
    die_with_launcher();
    state::init();
}

/// The command `vrift run` started dies when `vrift run` does, `kill -9` included: it would
/// otherwise go on running on a view whose scratch directory is gone. `VRIFT_PARENT` names
/// `vrift run`; the direct child asks the kernel for `SIGKILL` at its parent's death, and any
/// process that starts after `vrift run` is gone (a kill between `exec` and this constructor)
/// dies at once. The decision is `vrift_shim_core::launcher::check`.
fn die_with_launcher() {
    use vrift_shim_core::launcher::{check, Check};
    let Some(v) = std::env::var_os(vrift_shim_core::env::PARENT) else {
        return;
    };
    let Some(pp) = v.to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
        return;
    };
    if pp <= 0 {
        return;
    }
    // SAFETY: getpid/getppid/kill(0)/prctl/raise on this process, in its constructor (before
    // `main`, so before any thread of the program exists).
    unsafe {
        let alive = libc::kill(pp, 0) == 0 || real::errno() == libc::EPERM;
        match check(pp, libc::getpid(), libc::getppid(), alive) {
            Check::Ignore => {}
            Check::Die => {
                libc::raise(libc::SIGKILL);
            }
            Check::Watch => {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                // The launcher died before the prctl.
                if libc::getppid() != pp {
                    libc::raise(libc::SIGKILL);
                }
            }
        }
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = vrift_shim_ctor;
