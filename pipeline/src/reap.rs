//! Closing the duplicates: the last descriptor of a file whose last name we replaced.
//!
//! When a dedup hit replaces a project file by a link to the existing blob, the old inode
//! loses its last link, and the `close()` of our descriptor is what frees its blocks. On a
//! file system mounted with `discard` and no journal (this project's CI machines) that
//! close waits for the device to trim the blocks: ~100–500 µs, most of a place worker's time
//! in a shared-store ingest. The wait is I/O, not CPU, so a small pool of threads that do
//! nothing but close overlaps those waits (measured: 116 µs per close with one thread, 35 µs
//! with 16, see bench/README.md). The ingest still ends only after every close returned.

use std::fs::File;

use flume::{Receiver, Sender};

/// Threads closing freed files. More than cores on purpose: they only wait on the device.
pub const REAPERS: usize = 16;

/// Messages in flight to the reapers before a place worker waits. Each file in them holds a
/// descriptor, so the backlog takes at most a quarter of the descriptor limit (512 messages
/// of 8 files where the limit allows).
pub fn backlog(fd_limit: u64) -> usize {
    ((fd_limit / 4) as usize / PER_MESSAGE).clamp(4, 512)
}

/// Files per message: a place batch's duplicates are handed over a few at a time, so waking a
/// reaper is not paid per file, while enough messages remain for the reapers to overlap.
pub const PER_MESSAGE: usize = 8;

/// Runs one reaper until every sender is gone.
pub fn reap_stage(rx: Receiver<Vec<File>>) {
    for files in &rx {
        drop(files);
    }
}

/// Hands files to the reapers; closes them here if the reapers are gone.
pub fn reap(tx: &Sender<Vec<File>>, mut files: Vec<File>) {
    while !files.is_empty() {
        let rest = files.split_off(files.len().min(PER_MESSAGE));
        if let Err(flume::SendError(f)) = tx.send(files) {
            drop(f);
        }
        files = rest;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_backlog_leaves_most_descriptors_to_the_pipeline() {
        assert_eq!(super::backlog(1024), 32);
        assert_eq!(super::backlog(1 << 16), 512);
        assert_eq!(super::backlog(20), 4);
    }
}
