//! Paths without allocation: a fixed buffer, lexical normalization, the cached cwd.

use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::c_char;

use crate::real;

pub use vrift_shim_core::path::*;

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
    // Not cached from inside an exec hook: what it allocates there does not last.
    if !crate::exec_alloc::in_exec_scope() {
        set_cwd(out.as_bytes());
    }
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
