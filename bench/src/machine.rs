//! What machine a run was made on, recorded with every result: numbers from a 2-core VM
//! with a drifting disk mean little without it.
// Reads machine facts through libc (sysconf, uname).
#![allow(unsafe_code)]

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::exec::output_of;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub nproc: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// File system of the work directory (type, device, mount options): where every tree
    /// is copied, ingested and linked.
    pub work_fs: String,
    pub loadavg_at_start: Option<f64>,
}

/// Describes this machine; `work` is the benchmark's work directory.
pub fn describe(work: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let work_fs = output_of(
        Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T"])
            .arg(work),
    )
    .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        nproc: nproc(),
        memory_gib: mem_kib / (1024.0 * 1024.0),
        kernel,
        work_fs,
        loadavg_at_start: loadavg_1m(),
    }
}

pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1)
}

/// The 1-minute load average: above ~0.5 on an idle round means someone else was busy.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How many processes named `comm` are running (e.g. other sessions' `rustc`).
pub fn count_processes(comm: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(std::result::Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| c.trim() == comm)
        .count()
}

/// Fraction of all CPU time that was busy (not idle or iowait) over `window`, from two
/// reads of `/proc/stat`: a direct view of whether others are using the cores right now,
/// unlike the load average, which trails by a minute.
pub fn cpu_busy(window: std::time::Duration) -> Option<f64> {
    let a = cpu_times()?;
    std::thread::sleep(window);
    let b = cpu_times()?;
    let total = b.0.saturating_sub(a.0);
    let idle = b.1.saturating_sub(a.1);
    (total > 0).then(|| 1.0 - idle as f64 / total as f64)
}

/// (total, idle + iowait) jiffies of the `cpu` line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

/// Waits up to `max` for a one-second window in which the CPUs are at most `busy_max`
/// busy; returns the busy fraction of the last window (the state the round starts in).
pub fn wait_for_idle(max: std::time::Duration, busy_max: f64) -> Option<f64> {
    let start = std::time::Instant::now();
    loop {
        let busy = cpu_busy(std::time::Duration::from_secs(1))?;
        if busy <= busy_max || start.elapsed() >= max || crate::interrupt::requested() {
            return Some(busy);
        }
    }
}

/// Sets this process's nice value; children inherit it.
pub fn set_nice(n: i32) -> Result<()> {
    // SAFETY: plain syscall on our own process.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .context(format!("setting nice {n} (negative values need root)"));
    }
    Ok(())
}

/// This process's nice value, recorded with the results.
pub fn current_nice() -> i32 {
    // SAFETY: plain syscall on our own process; -1 is also a valid value, close enough here.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}
