//! Paths without allocation: a fixed buffer, lexical normalization, the cached cwd.

use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::c_char;

use crate::real;

/// Longest path the shim handles itself (longer ones pass through untouched).
pub const MAX: usize = 4096;

/// A NUL-terminated path in a fixed buffer. Only `buf[..=len]` is ever initialized or
/// read (no 4 KiB memset per hook); hooks pass these by reference, never by value.
pub struct PBuf {
    buf: [std::mem::MaybeUninit<u8>; MAX + 1],
    len: usize,
}

impl PBuf {
    pub fn new() -> PBuf {
        let mut p = PBuf {
            buf: [std::mem::MaybeUninit::uninit(); MAX + 1],
            len: 0,
        };
        p.buf[0] = std::mem::MaybeUninit::new(0);
        p
    }

    pub fn from(bytes: &[u8]) -> Option<PBuf> {
        let mut p = PBuf::new();
        p.push(bytes)?;
        Some(p)
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: bytes 0..=len are always initialized (every writer keeps that invariant).
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }

    /// Pointer to the NUL-terminated path.
    pub fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }

    /// Mutable pointer to the NUL-terminated path (for functions that fill in a template).
    pub fn as_mut_ptr(&mut self) -> *mut c_char {
        self.buf.as_mut_ptr().cast()
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.buf[0] = std::mem::MaybeUninit::new(0);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn truncate(&mut self, n: usize) {
        if n <= self.len {
            self.len = n;
            self.buf[n] = std::mem::MaybeUninit::new(0);
        }
    }

    /// Appends raw bytes; `None` if the result would be too long.
    pub fn push(&mut self, b: &[u8]) -> Option<()> {
        let end = self.len.checked_add(b.len())?;
        if end > MAX {
            return None;
        }
        for (d, &c) in self.buf[self.len..end].iter_mut().zip(b) {
            *d = std::mem::MaybeUninit::new(c);
        }
        self.len = end;
        self.buf[end] = std::mem::MaybeUninit::new(0);
        Some(())
    }

    /// Appends one path component lexically: `.` and empty do nothing, `..` pops.
    fn push_component(&mut self, c: &[u8]) -> Option<()> {
        match c {
            b"" | b"." => Some(()),
            b".." => {
                let cut = self
                    .as_bytes()
                    .iter()
                    .rposition(|&b| b == b'/')
                    .unwrap_or(0);
                self.truncate(cut);
                Some(())
            }
            _ => {
                self.push(b"/")?;
                self.push(c)
            }
        }
    }

    /// Appends `rel`'s components (lexically normalized). The buffer holds an absolute
    /// path without trailing slash, or is empty (meaning `/`).
    pub fn join_normalized(&mut self, rel: &[u8]) -> Option<()> {
        for c in rel.split(|&b| b == b'/') {
            self.push_component(c)?;
        }
        Some(())
    }

    /// Turns the empty buffer into `/` (the normal form keeps `/` as empty while joining).
    pub fn finish(&mut self) {
        if self.len == 0 {
            self.buf[0] = std::mem::MaybeUninit::new(b'/');
            self.len = 1;
            self.buf[1] = std::mem::MaybeUninit::new(0);
        }
    }
}

/// Normalizes an absolute path lexically (`//`, `.`, `..`), as the kernel would if no
/// component were a symlink.
pub fn normalize_abs(abs: &[u8]) -> Option<PBuf> {
    let mut p = PBuf::new();
    p.join_normalized(abs)?;
    p.finish();
    Some(p)
}

/// `base` (absolute) joined with `rel`, normalized.
pub fn join(base: &[u8], rel: &[u8]) -> Option<PBuf> {
    let mut p = PBuf::new();
    if !rel.starts_with(b"/") {
        p.join_normalized(base)?;
    }
    p.join_normalized(rel)?;
    p.finish();
    Some(p)
}

/// Parent of a normalized absolute path (`/` for `/`).
pub fn parent(abs: &[u8]) -> &[u8] {
    match abs.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &abs[..i],
    }
}

/// Last component of a normalized absolute path.
pub fn file_name(abs: &[u8]) -> &[u8] {
    match abs.iter().rposition(|&b| b == b'/') {
        Some(i) => &abs[i + 1..],
        None => abs,
    }
}

/// `abs` relative to `root` (root without trailing slash, `""` meaning `/`), if `abs` is
/// `root` or below it.
#[inline]
pub fn under<'p>(root: &[u8], abs: &'p [u8]) -> Option<&'p [u8]> {
    let rest = abs.strip_prefix(root)?;
    if rest.is_empty() {
        return Some(rest);
    }
    let rest = rest.strip_prefix(b"/")?;
    Some(rest)
}

/// The bytes of a C string (empty for NULL).
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
pub unsafe fn cbytes<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    CStr::from_ptr(p).to_bytes()
}

// ---- the working directory -------------------------------------------------------------

/// The process's *virtual* working directory (as `getcwd` reports it), NUL-terminated,
/// leaked on every change (chdir is rare) so readers never see freed memory. Null until
/// first needed.
static CWD: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

/// Sets the cached cwd (called by the chdir hooks after a successful change).
pub fn set_cwd(virt: &[u8]) {
    let mut v = Vec::with_capacity(virt.len() + 1);
    v.extend_from_slice(virt);
    let b = Box::new(v);
    CWD.store(Box::into_raw(b), Ordering::Release);
}

/// Forgets the cached cwd so it is asked again from the kernel.
pub fn forget_cwd() {
    CWD.store(std::ptr::null_mut(), Ordering::Release);
}

/// Writes the virtual cwd into `out`. Uses the cache, else asks the kernel and maps a
/// mirror directory inside the upper dir back to its virtual path.
pub fn cwd_into(out: &mut PBuf) -> Option<()> {
    out.clear();
    let p = CWD.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: cached cwds are leaked, never freed.
        let v = unsafe { &*p };
        return out.push(v);
    }
    let mut raw = [0u8; MAX + 1];
    // SAFETY: buffer of the given size.
    let r = unsafe { real::getcwd(raw.as_mut_ptr().cast(), raw.len()) };
    if r.is_null() {
        return None;
    }
    let n = raw.iter().position(|&b| b == 0)?;
    let mapped = crate::state::get()
        .and_then(|st| st.upper.as_ref())
        .and_then(|u| u.unmirror(&raw[..n]));
    set_cwd_mirrored(mapped.is_some());
    let virt = mapped.unwrap_or(&raw[..n]);
    out.push(virt)?;
    set_cwd(out.as_bytes());
    Some(())
}

static MIRRORED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True if the kernel's cwd is a mirror directory standing in for a virtual one, so a
/// relative path given to the kernel would not mean what the program meant.
pub fn cwd_mirrored() -> bool {
    MIRRORED.load(Ordering::Acquire)
}

pub fn set_cwd_mirrored(v: bool) {
    MIRRORED.store(v, Ordering::Release);
}
