//! The shim's global allocator: the system allocator, except while an exec hook prepares a
//! program's start.
//!
//! `execve` may be called between `vfork` and `exec`, where the child shares the parent's
//! memory and `malloc` is not safe to call: another thread of the parent may hold an arena
//! lock for as long as it likes, and whatever the child allocates stays in the parent. So
//! while [`exec_scope`] runs, every allocation of the shim's own Rust code (the rewritten
//! argv and environment, paths, the ELF reads of `prepare`) comes from a per-thread bump
//! region mapped once and reused: no lock, no `malloc`, and nothing is freed piecemeal —
//! the next exec of that thread starts the region over. A vfork child that execs never
//! returns to the scope, which is harmless: the region belongs to the parent's thread, which
//! was suspended meanwhile and is the only other user. Frees of system memory inside the
//! scope are skipped (a leak, on an error path at most) for the same reason.
//!
//! What is allocated inside the scope must not outlive it beyond the thread's next exec:
//! nothing the shim caches globally is built there (the configuration is loaded in the
//! library constructor; the cwd cache is not written inside the scope).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Address space reserved per thread that starts programs (touched only as used). The
/// kernel caps argv + environment at a quarter of the stack limit (2 MiB by default); what
/// does not fit falls back to the system allocator.
const REGION: usize = 8 << 20;

thread_local! {
    static BASE: Cell<usize> = const { Cell::new(0) };
    static USED: Cell<usize> = const { Cell::new(0) };
    static ON: Cell<bool> = const { Cell::new(false) };
}

pub struct ShimAlloc;

fn on() -> bool {
    ON.with(std::cell::Cell::get)
}

fn in_region(p: *mut u8) -> bool {
    let b = BASE.with(std::cell::Cell::get);
    b != 0 && (p as usize) >= b && (p as usize) < b + REGION
}

/// A bump allocation from this thread's region, mapping it on first use.
fn bump(l: Layout) -> Option<*mut u8> {
    let mut base = BASE.with(std::cell::Cell::get);
    if base == 0 {
        // SAFETY: a fresh anonymous private mapping.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if m == libc::MAP_FAILED {
            return None;
        }
        base = m as usize;
        BASE.with(|b| b.set(base));
    }
    let used = USED.with(std::cell::Cell::get);
    let start = (base + used).checked_next_multiple_of(l.align())?;
    let end = start.checked_add(l.size())?;
    if end > base + REGION {
        return None;
    }
    USED.with(|u| u.set(end - base));
    Some(start as *mut u8)
}

// SAFETY: every pointer handed out is valid for its layout: either the system allocator's or
// a fresh, suitably aligned range of this thread's region that is not handed out again until
// the thread's next exec scope begins.
unsafe impl GlobalAlloc for ShimAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if on() {
            if let Some(p) = bump(l) {
                return p;
            }
        }
        System.alloc(l)
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if in_region(p) || on() {
            return;
        }
        System.dealloc(p, l);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if !on() && !in_region(p) {
            return System.realloc(p, l, new);
        }
        let Ok(nl) = Layout::from_size_align(new, l.align()) else {
            return std::ptr::null_mut();
        };
        let q = self.alloc(nl);
        if !q.is_null() {
            std::ptr::copy_nonoverlapping(p, q, l.size().min(new));
            self.dealloc(p, l);
        }
        q
    }
}

/// Runs `f` with the shim's allocations served from this thread's region (see the module
/// docs). Nested scopes share the outer one's allocations.
pub fn exec_scope<R>(f: impl FnOnce() -> R) -> R {
    let outer = on();
    if !outer {
        USED.with(|u| u.set(0));
        ON.with(|o| o.set(true));
    }
    let r = f();
    if !outer {
        ON.with(|o| o.set(false));
    }
    r
}

/// True while an exec scope runs on this thread.
pub fn in_exec_scope() -> bool {
    on()
}
