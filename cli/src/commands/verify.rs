use anyhow::Result;
use vrift_cas::scan::scan;
use vrift_cas::verify::{verify_counted, Done};

use crate::args::VerifyArgs;
use crate::format::{bytes, thousands};
use crate::{Globals, Outcome};

pub fn run(g: &Globals, a: &VerifyArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    let _lock = if a.repair {
        Some(super::exclusive_lock(g, a.no_wait)?)
    } else {
        None
    };
    let blobs = scan(&cas)?;
    let threads = if a.jobs > 0 {
        a.jobs
    } else {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2)
    };
    let t = std::time::Instant::now();
    // Percent of the bytes (hashing is what takes the time), on a terminal only.
    let done = std::sync::Arc::new(Done::default());
    let (total, count) = (blobs.content_bytes().max(1), blobs.blobs.len() as u64);
    let line = {
        let d = done.clone();
        let eta = crate::progress::Eta::start();
        crate::progress::Progress::start_with(g.progress, "verify", move || {
            let b = d.bytes.load(std::sync::atomic::Ordering::Relaxed);
            format!(
                "{}% {}/{} blobs ({} of {}){}",
                b.saturating_mul(100) / total,
                thousands(d.blobs.load(std::sync::atomic::Ordering::Relaxed)),
                thousands(count),
                bytes(b),
                bytes(total),
                eta.left(b, total)
            )
        })
    };
    let r = verify_counted(&cas, &blobs.blobs, threads, a.repair, &done);
    line.finish();
    // Every blob checked (and sealed where it was not): from now on an unsealed blob in this
    // store is damaged, which lets the shim refuse it without re-hashing.
    if r.corrupt.len() as u64 == r.repaired && r.unreadable.is_empty() && !cas.all_sealed() {
        cas.mark_all_sealed()?;
    }
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = serde_json::json!(t.elapsed().as_secs_f64());
        v["foreign"] = serde_json::json!(blobs.foreign);
        println!("{}", crate::output::versioned(&v));
    } else {
        for p in &r.corrupt {
            println!("corrupt: {p}");
        }
        for (p, e) in &r.unreadable {
            println!("unreadable: {p}: {e}");
        }
        for p in &blobs.foreign {
            println!("foreign file (not a blob): {}", p.display());
        }
        println!(
            "Verified {} ({}) in {:.2} s: {} corrupt, {} unreadable{}",
            crate::format::count(r.checked, "blob", "blobs"),
            bytes(r.bytes),
            t.elapsed().as_secs_f64(),
            thousands(r.corrupt.len() as u64),
            thousands(r.unreadable.len() as u64),
            if a.repair {
                format!(", {} removed", thousands(r.repaired))
            } else {
                String::new()
            }
        );
        if !r.corrupt.is_empty() && !a.repair {
            println!("Run `vrift verify --repair` to drop them; the next ingest of that content stores it again.");
        }
    }
    // After a successful repair the store is consistent again: that is a success.
    let unresolved = r.corrupt.len() as u64 - r.repaired;
    Ok(if unresolved == 0 && r.unreadable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
