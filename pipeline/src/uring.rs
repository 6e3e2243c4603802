//! The io_uring backend of the place stage.
//!
//! Per batch it submits, in one go, the `mkdirat` of every shard directory not yet known to
//! exist (parent and leaf chained with IOSQE_IO_LINK), then one `linkat(fd, "", AT_EMPTY_PATH)`
//! per file; the kernel runs them on its own worker pool while this thread waits once. What
//! follows a link (protect, dedup, fallbacks) is shared with the thread backend
//! (`place::finish_link`). io_uring has no `fchmod`, so that stays a plain syscall.
// io_uring submissions hand the kernel pointers that must outlive them.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use flume::{Receiver, Sender};
use io_uring::{opcode, squeue, types, IoUring};
use vrift_cas::Cas;

use crate::error::PipelineError;
use crate::item::{Done, Hashed};
use crate::options::Mode;
use crate::place::{entry_for, finish_link, note_touched, PlaceConfig};
use crate::report::Counters;

const RING_ENTRIES: u32 = 512;

/// Checks that this kernel lets us create a ring (seccomp or sysctl may forbid it).
pub fn available() -> Result<(), PipelineError> {
    IoUring::new(8)
        .map(|_| ())
        .map_err(|e| PipelineError::Uring(e.to_string()))
}

/// Runs one place worker on its own ring until the input channel closes.
pub fn place_stage(
    rx: Receiver<Vec<Hashed>>,
    tx: Sender<Vec<Done>>,
    cfg: &PlaceConfig<'_>,
) -> Result<(), PipelineError> {
    let mut ring = IoUring::new(RING_ENTRIES).map_err(|e| PipelineError::Uring(e.to_string()))?;
    let c = cfg.counters;
    for batch in &rx {
        if c.quitting() {
            return Ok(());
        }
        let t = Instant::now();
        Counters::sub_queue(&c.queue_place, batch.len() as u64);
        let out: Vec<Done> = if cfg.mode == Mode::Phantom {
            batch
                .iter()
                .map(|h| Done::Entry(entry_for(h, &h.st)))
                .collect()
        } else {
            place_batch(&mut ring, batch, cfg)
        };
        Counters::add(&c.place_ns, t.elapsed().as_nanos() as u64);
        Counters::add(&c.queue_collect, out.len() as u64);
        if tx.send(out).is_err() {
            break;
        }
    }
    Ok(())
}

fn place_batch(ring: &mut IoUring, batch: Vec<Hashed>, cfg: &PlaceConfig<'_>) -> Vec<Done> {
    let cas = cfg.cas;
    make_shards(ring, cas, &batch);
    let names: Vec<CString> = batch
        .iter()
        .map(|h| Cas::blob_rel_c(&h.hash, h.st.size))
        .collect();
    let ops: Vec<(squeue::Entry, bool)> = batch
        .iter()
        .zip(&names)
        .map(|(h, name)| {
            let op = opcode::LinkAt::new(
                types::Fd(h.file.as_raw_fd()),
                c"".as_ptr(),
                types::Fd(cas.blob_dir_fd()),
                name.as_ptr(),
            )
            .flags(libc::AT_EMPTY_PATH)
            .build();
            (op, false)
        })
        .collect();
    let results = run_all(ring, &ops);
    let mut out = Vec::with_capacity(batch.len());
    let mut freed = Vec::new();
    for (h, res) in batch.into_iter().zip(results) {
        let linked = match res {
            // The shard was not there after all (removed behind our back) or AT_EMPTY_PATH is
            // refused: let the synchronous path create/fall back and retry.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EPERM | libc::EINVAL)
                ) =>
            {
                cas.link_in(
                    std::os::fd::AsFd::as_fd(&h.file),
                    h.item.dir.fd(),
                    h.item.rel.name(),
                    &h.hash,
                    h.st.size,
                )
            }
            other => other,
        };
        let dir = h.item.dir.clone();
        let before = freed.len();
        if let Some(e) = finish_link(h, linked, cfg, &mut freed) {
            out.push(Done::Entry(e));
        }
        if freed.len() > before {
            note_touched(&dir, &mut out);
        }
    }
    crate::reap::reap(&cfg.reaper, freed);
    out
}

/// Creates every shard directory the batch needs and this process has not seen yet, all in
/// one submission (`ab` → `ab/cd` chained so the parent exists first).
fn make_shards(ring: &mut IoUring, cas: &Cas, batch: &[Hashed]) {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    let mut wanted = Vec::new();
    for h in batch {
        cas.learn_shards(&h.hash);
        if cas.shard_known(&h.hash) || !seen.insert([h.hash[0], h.hash[1]]) {
            continue;
        }
        let (top, leaf) = Cas::shard_names(&h.hash);
        names.push((cas.shard_parent_known(&h.hash), top, leaf));
        wanted.push(h.hash);
    }
    if names.is_empty() {
        return;
    }
    let mut ops = Vec::with_capacity(names.len() * 2);
    let mut tops_done = HashSet::new();
    for (parent_known, top, leaf) in &names {
        if !parent_known && tops_done.insert(top.as_bytes()[..2].to_vec()) {
            ops.push((
                opcode::MkDirAt::new(types::Fd(cas.blob_dir_fd()), top.as_ptr())
                    .mode(0o777)
                    .build()
                    .flags(squeue::Flags::IO_HARDLINK),
                true,
            ));
        }
        ops.push((
            opcode::MkDirAt::new(types::Fd(cas.blob_dir_fd()), leaf.as_ptr())
                .mode(0o777)
                .build(),
            false,
        ));
    }
    let results = run_all(ring, &ops);
    // EEXIST is success here; other failures are left for the link's ENOENT retry to report.
    let ok = results.iter().all(|r| {
        r.as_ref()
            .err()
            .is_none_or(|e| e.raw_os_error() == Some(libc::EEXIST))
    });
    if ok {
        for h in wanted {
            cas.mark_shard(&h);
        }
    }
}

/// Submits `ops` (in ring-sized chunks) and returns each one's result in order. The caller
/// keeps every buffer the ops point to alive until this returns.
/// `ops` pairs each entry with whether it is chained to the next one (IO_HARDLINK).
fn run_all(ring: &mut IoUring, ops: &[(squeue::Entry, bool)]) -> Vec<io::Result<()>> {
    let mut results: Vec<io::Result<()>> = (0..ops.len()).map(|_| Ok(())).collect();
    let cap = ring.params().sq_entries() as usize;
    let mut start = 0;
    while start < ops.len() {
        let mut end = (start + cap).min(ops.len());
        // Never split a chain (an op flagged IO_HARDLINK belongs with the next one).
        while end < ops.len() && end > start + 1 && ops[end - 1].1 {
            end -= 1;
        }
        {
            let mut sq = ring.submission();
            for (i, op) in ops[start..end].iter().enumerate() {
                let e = op.0.clone().user_data((start + i) as u64);
                // SAFETY: the ops' pointers (paths) outlive this function per the contract
                // above, and we wait for every completion before returning.
                if unsafe { sq.push(&e) }.is_err() {
                    unreachable_push(&mut results[start + i]);
                }
            }
        }
        let n = end - start;
        let mut done = 0;
        while done < n {
            let want = n - done;
            if let Err(e) = ring.submit_and_wait(want) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                for r in &mut results[start + done..end] {
                    *r = Err(io::Error::new(e.kind(), e.to_string()));
                }
                return results;
            }
            for cqe in ring.completion() {
                let i = cqe.user_data() as usize;
                if cqe.result() < 0 {
                    results[i] = Err(io::Error::from_raw_os_error(-cqe.result()));
                }
                done += 1;
            }
        }
        start = end;
    }
    results
}

fn unreachable_push(slot: &mut io::Result<()>) {
    *slot = Err(io::Error::other("io_uring submission queue full"));
}
