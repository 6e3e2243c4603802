//! Passing signals on to the command vrift runs (`vrift run`, and `--isolate`'s init), and
//! waiting for it: one place for both run modes.
//!
//! The handler only touches atomics and calls `kill`, all async-signal-safe. A terminal's
//! SIGINT/SIGQUIT already reached the whole foreground process group (the command included),
//! so only such signals sent to vrift in particular are passed on.
// Signal forwarding to the child (sigaction, kill).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The process signals go to; 0 while there is none.
static TARGET: AtomicI32 = AtomicI32::new(0);

/// Signals that arrived before the target was known (one bit per signal number): a command
/// can already be running, and tell its parent it is ready, before `spawn` returns to us, so
/// a signal in that window is held here and passed on by [`set_target`].
static PENDING: AtomicU64 = AtomicU64::new(0);

fn deliver_pending(pid: libc::pid_t) {
    let mut bits = PENDING.swap(0, Ordering::SeqCst);
    while bits != 0 {
        let sig = bits.trailing_zeros() as libc::c_int;
        bits &= bits - 1;
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// What is passed on: everything a user or a supervisor sends to ask a command something.
pub const FORWARDED: [libc::c_int; 9] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler (checked non-null).
        unsafe { (*info).si_code }
    };
    if code == libc::SI_KERNEL && (sig == libc::SIGINT || sig == libc::SIGQUIT) {
        return;
    }
    let pid = TARGET.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
        return;
    }
    PENDING.fetch_or(1 << (sig as u64 & 63), Ordering::SeqCst);
    // The target may have been set meanwhile (from another thread): then hand it over now.
    let pid = TARGET.load(Ordering::SeqCst);
    if pid > 0 {
        deliver_pending(pid);
    }
}

/// Installs (or, with `false`, removes) the forwarding handlers for [`FORWARDED`].
/// Install before spawning, so nothing slips by between the spawn and [`set_target`].
pub fn set_forwarding(on: bool) {
    for sig in FORWARDED {
        // SAFETY: installing a handler that only calls async-signal-safe functions, or the
        // default disposition.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if on {
                sa.sa_sigaction = forward as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            } else {
                sa.sa_sigaction = libc::SIG_DFL;
            }
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Where forwarded signals go from now on (0: nowhere); passes on what arrived before.
pub fn set_target(pid: libc::pid_t) {
    TARGET.store(pid, Ordering::SeqCst);
    if pid > 0 {
        deliver_pending(pid);
    } else {
        PENDING.store(0, Ordering::SeqCst);
    }
}

/// Waits for our child `pid` (through EINTR) and returns its wait status.
pub fn wait_for(pid: libc::pid_t) -> libc::c_int {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return status;
        }
    }
}

/// The shell's convention for a wait status: the exit code, or 128 + the signal.
/// Ends this process as the child with wait status `status` ended: by the same signal if one
/// killed it (so a shell sees what killed the command), else with its exit code.
pub fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: resetting a handler and raising a signal in our own process.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
    }
    std::process::exit(exit_code(status))
}

pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    }
}
