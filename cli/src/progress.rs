//! A live progress line on stderr, fed by polling the pipeline's atomic counters.
//!
//! Drawn only when stderr is a terminal (indicatif hides itself otherwise), so CI logs and
//! pipes never see control characters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vrift_pipeline::Counters;

use crate::format::{bytes, thousands};

pub struct Progress {
    stop: Arc<AtomicBool>,
    pause: Arc<Pause>,
    handle: Option<JoinHandle<()>>,
}

/// A request to take the line off the terminal (`wanted`), answered by the drawing thread
/// once it has cleared the line (`off`).
#[derive(Default)]
struct Pause {
    wanted: AtomicBool,
    off: AtomicBool,
    /// The drawing thread has ended (or died): nobody will answer a request.
    gone: AtomicBool,
}

/// Marks the drawing thread gone when it ends, however it ends.
struct Gone(Arc<Pause>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Release);
    }
}

impl Progress {
    /// Starts polling `counters` if `enabled`; `label` leads the line.
    pub fn start(enabled: bool, counters: Arc<Counters>, label: &'static str) -> Progress {
        Self::start_with(enabled, label, move || {
            let g = Counters::get;
            let c = &counters;
            format!(
                "{} files ({}), hashed {}, new {}, dedup {}, unchanged {}",
                thousands(g(&c.files)),
                bytes(g(&c.bytes)),
                thousands(g(&c.hashed_files)),
                thousands(g(&c.blobs_new)),
                thousands(g(&c.dedup_hits)),
                thousands(g(&c.skipped)),
            )
        })
    }

    /// A line whose message `message` computes (from atomics), redrawn ten times a second.
    pub fn start_with(
        enabled: bool,
        label: &'static str,
        message: impl Fn() -> String + Send + 'static,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(Pause::default());
        if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress {
                stop,
                pause,
                handle: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label);
        let (s, p) = (stop.clone(), pause.clone());
        let handle = std::thread::spawn(move || {
            let _gone = Gone(p.clone());
            while !s.load(Ordering::Relaxed) {
                if p.wanted.load(Ordering::Acquire) {
                    // Cleared; redrawn once the pause ends.
                    bar.suspend(|| {
                        p.off.store(true, Ordering::Release);
                        while p.wanted.load(Ordering::Acquire) && !s.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        p.off.store(false, Ordering::Release);
                    });
                    continue;
                }
                bar.set_message(message());
                bar.tick();
                std::thread::sleep(Duration::from_millis(20));
                for _ in 0..4 {
                    if s.load(Ordering::Relaxed) || p.wanted.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            bar.finish_and_clear();
        });
        Progress {
            stop,
            pause,
            handle: Some(handle),
        }
    }

    /// A handle that takes the line off the terminal (`true`, returning once it is off) and
    /// puts it back (`false`): for a child process that writes to the same terminal.
    pub fn pauser(&self) -> impl Fn(bool) + Send + Sync + 'static {
        let (p, drawing) = (self.pause.clone(), self.handle.is_some());
        move |on| {
            p.wanted.store(on, Ordering::Release);
            if on && drawing {
                // The drawing thread answers within ~20 ms, unless it has ended.
                while !p.off.load(Ordering::Acquire) && !p.gone.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Clears the line and stops drawing (also on drop: an error path must not leave the
    /// line drawing over its message).
    pub fn finish(mut self) {
        self.stop_drawing();
    }

    fn stop_drawing(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_drawing();
    }
}

/// The time left of a job whose size is known, from its rate so far: what a progress line
/// shows after its percent.
#[derive(Debug, Clone, Copy)]
pub struct Eta {
    started: Instant,
}

impl Eta {
    pub fn start() -> Eta {
        Eta {
            started: Instant::now(),
        }
    }

    /// `", 12 s left"` once a second has passed and part of `total` is `done`; empty before
    /// (a rate from the first few milliseconds says nothing) and once it is all done.
    pub fn left(&self, done: u64, total: u64) -> String {
        let spent = self.started.elapsed().as_secs_f64();
        if spent < 1.0 || done == 0 || done >= total {
            return String::new();
        }
        let left = spent * (total - done) as f64 / done as f64;
        format!(", {} left", span(left))
    }
}

/// `" 42% 1,234/2,938 files and symlinks, 3 s left"`: a count of `what` against its total.
pub fn count_line(done: u64, total: u64, what: &str, eta: &Eta) -> String {
    let done = done.min(total);
    format!(
        "{:>3}% {}/{} {what}{}",
        (done * 100).checked_div(total).unwrap_or(100),
        thousands(done),
        thousands(total),
        eta.left(done, total)
    )
}

/// A duration for people: `7 s`, `3 min 05 s`, `2 h 10 min`.
pub fn span(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_for_people() {
        assert_eq!(span(0.4), "0 s");
        assert_eq!(span(59.4), "59 s");
        assert_eq!(span(185.0), "3 min 05 s");
        assert_eq!(span(7_800.0), "2 h 10 min");
        let e = Eta {
            started: Instant::now() - Duration::from_secs(10),
        };
        // A quarter done in 10 s: 30 s to go.
        assert_eq!(e.left(25, 100), ", 30 s left");
        assert_eq!(e.left(0, 100), "");
        assert_eq!(e.left(100, 100), "");
        assert_eq!(Eta::start().left(1, 100), "", "too early to tell");
    }
}
