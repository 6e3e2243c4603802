//! `VRIFT_REPORT=FILE`: proof of coverage. Every process of a run appends JSON lines to FILE:
//!
//! * at exit, `{"pid", "ppid", "exe", "hooks": {"open": [calls, served], ...}}` — which
//!   programs ran and, per interposed function, how often it was called and how often the
//!   view answered (the rest went to the real file system: paths outside the view);
//! * `{"pid", "exec", "static": true, "touches_view", "refused"}` for each statically linked
//!   program started: it never loads the shim, so whatever it does escapes the view.
//!
//! Off (one relaxed load per hook) unless the variable is set. Each line is one `write` to a
//! file opened `O_APPEND`, so lines of concurrent processes never interleave.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::real;

pub use vrift_shim_core::env::REPORT as ENV_REPORT;

static FD: AtomicI32 = AtomicI32::new(-1);

const SLOTS: usize = 128;
/// Hook names (the address of a `&'static str`'s bytes and its length), 0 = free.
static NAMES: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static CALLS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static SERVED: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

thread_local! {
    /// Slot of the hook this thread is in (set at the hook's entry), or SLOTS.
    static CURRENT: Cell<usize> = const { Cell::new(SLOTS) };
}

#[inline]
pub fn on() -> bool {
    FD.load(Ordering::Relaxed) >= 0
}

/// Opens FILE (from the constructor) and arranges for the exit line.
pub fn init(path: Option<Vec<u8>>) {
    let Some(p) = path.filter(|p| !p.is_empty()) else {
        return;
    };
    let Some(c) = crate::path::PBuf::from(&p) else {
        return;
    };
    // SAFETY: a NUL-terminated path; atexit with a plain function.
    unsafe {
        let fd = real::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return;
        }
        FD.store(fd, Ordering::Relaxed);
        libc::atexit(at_exit);
    }
}

/// Counts a call of hook `name` and remembers it as this thread's current hook.
#[inline]
pub fn enter(name: &'static str) {
    if !on() {
        return;
    }
    let key = name.as_ptr() as usize;
    let mut i = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57 & (SLOTS - 1);
    for _ in 0..SLOTS {
        match NAMES[i].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                LENS[i].store(name.len(), Ordering::Release);
                break;
            }
            Err(k) if k == key => break,
            Err(_) => i = (i + 1) & (SLOTS - 1),
        }
    }
    CALLS[i].fetch_add(1, Ordering::Relaxed);
    let _ = CURRENT.try_with(|c| c.set(i));
}

/// The current hook of this thread was answered by the view.
#[inline]
pub fn served() {
    if !on() {
        return;
    }
    if let Ok(i) = CURRENT.try_with(|c| c.replace(SLOTS)) {
        if i < SLOTS {
            SERVED[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A statically linked program was started: `touches` the view, and then run in a namespace
/// or `refused`.
pub fn exec_static(path: &[u8], touches: bool, refused: bool) {
    if !on() {
        return;
    }
    // SAFETY: getpid never fails.
    let pid = unsafe { libc::getpid() };
    let how = match (touches, refused) {
        (false, _) => "direct",
        (true, false) => "namespace",
        (true, true) => "refused",
    };
    let line = format!(
        "{{\"pid\":{pid},\"exec\":{},\"static\":true,\"touches_view\":{touches},\"refused\":{refused},\"ran\":\"{how}\"}}\n",
        json_str(path)
    );
    emit(line.as_bytes());
}

extern "C" fn at_exit() {
    let mut hooks = String::new();
    for i in 0..SLOTS {
        let key = NAMES[i].load(Ordering::Acquire);
        let len = LENS[i].load(Ordering::Acquire);
        if key == 0 || len == 0 {
            continue;
        }
        // SAFETY: `key`/`len` describe a `&'static str` recorded by `enter`.
        let name = unsafe { std::slice::from_raw_parts(key as *const u8, len) };
        if !hooks.is_empty() {
            hooks.push(',');
        }
        hooks.push_str(&format!(
            "{}:[{},{}]",
            json_str(name),
            CALLS[i].load(Ordering::Relaxed),
            SERVED[i].load(Ordering::Relaxed)
        ));
    }
    // SAFETY: getpid/getppid never fail.
    let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
    let line = format!(
        "{{\"pid\":{pid},\"ppid\":{ppid},\"exe\":{},\"hooks\":{{{hooks}}}}}\n",
        json_str(&exe())
    );
    emit(line.as_bytes());
}

/// The program's path as the user knows it: the virtual path of a program run from the view.
fn exe() -> Vec<u8> {
    if let Some(v) = std::env::var_os(vrift_shim_core::env::EXE) {
        return std::os::unix::ffi::OsStringExt::into_vec(v);
    }
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path and our own buffer.
    let n = unsafe {
        real::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf[..usize::try_from(n).unwrap_or(0)].to_vec()
}

fn emit(line: &[u8]) {
    let fd = FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: writing our own buffer.
        unsafe { real::write(fd, line.as_ptr().cast(), line.len()) };
    }
}

/// A JSON string of arbitrary bytes (invalid UTF-8 replaced).
fn json_str(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
