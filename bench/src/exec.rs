//! Running child processes: timed runs that also report the child's own resource usage,
//! and plain checked runs for the untimed preparation steps.
//!
//! The timed runs reap the child with `wait4(pid)` rather than `Child::wait`, because only
//! `wait4` hands back the `rusage` of exactly that child (peak RSS, user and system CPU).
//! `getrusage(RUSAGE_CHILDREN)` would give a maximum over every child ever reaped, which
//! says nothing about one ingest once a bigger `cp -a` has run before it.
// Process set-up for timed commands (pre_exec, rusage).
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// One timed run of one command.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Wall-clock seconds from spawn to reaping the child.
    pub wall_s: f64,
    /// CPU seconds in user mode (the child and the descendants it waited for).
    pub user_s: f64,
    /// CPU seconds in the kernel (the child and the descendants it waited for).
    pub sys_s: f64,
    /// Peak resident set size in KiB (`ru_maxrss`): for a pipeline run through `sh`, the
    /// largest of the processes it waited for. Never below `rss_floor_kib`.
    pub max_rss_kib: u64,
    /// The harness's own RSS when it spawned the child. Linux carries the parent's memory
    /// high-water mark into a vfork-ed child's `ru_maxrss` (it survives the exec), so a
    /// child's peak cannot be told apart from values below this. The harness resets its
    /// own high-water mark before each spawn (`/proc/self/clear_refs`), so this is small.
    pub rss_floor_kib: u64,
}

/// What a timed run left behind.
pub struct Finished {
    pub sample: Sample,
    pub stdout: String,
}

/// Where a timed command's standard output goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Kept for reading back (vrift's `--json` summary).
    Capture,
    /// `> /dev/null`, as in the documented baseline commands.
    Discard,
}

/// Runs `cmd` to completion and measures it. Its stderr (and stdout when captured) goes to
/// files in `scratch` (not pipes: a child that writes more than a pipe buffer while we sit
/// in `wait4` would block forever), read back afterwards. A non-zero exit status is an
/// error that quotes the child's stderr: a failed run measures nothing.
pub fn run_timed(cmd: &mut Command, stdout: Stdout, scratch: &Path) -> Result<Finished> {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let out =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let err =
        File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    let out = match stdout {
        Stdout::Capture => Stdio::from(out),
        Stdout::Discard => Stdio::null(),
    };
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::from(err));

    reset_own_peak_rss();
    let rss_floor_kib = own_rss_kib();
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    let pid = child.id() as libc::pid_t;
    let (status, usage) = wait4(pid).with_context(|| format!("waiting for {}", describe(cmd)))?;
    let wall_s = start.elapsed().as_secs_f64();
    // `child` was reaped by wait4; dropping a `Child` neither waits nor kills.
    drop(child);

    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        bail!(
            "{} failed ({}):\n{}{}",
            describe(cmd),
            status_text(status),
            tail(&stderr, 2000),
            tail(&stdout, 1000)
        );
    }
    Ok(Finished {
        sample: Sample {
            wall_s,
            user_s: timeval_s(usage.ru_utime),
            sys_s: timeval_s(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss.max(0) as u64,
            rss_floor_kib,
        },
        stdout,
    })
}

/// Runs an untimed helper command (copying, listing, building), failing on a non-zero exit.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs a helper command and returns its stdout, or `None` when it cannot run or fails
/// (used for descriptive facts such as `git rev-parse`, where absence is not an error).
pub fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The command line as a shell would show it, for messages and the report.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Resets this process's peak-RSS mark to its current RSS (`echo 5 > /proc/self/clear_refs`),
/// so a child's `ru_maxrss` is not inflated by the harness's own earlier peak.
fn reset_own_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's current RSS in KiB (`VmRSS` of `/proc/self/status`), 0 if unknown.
fn own_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn wait4(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value that wait4 overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to live locals; pid is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn timeval_s(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

fn status_text(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
