//! The ingest pipeline. Read the stages in order, one file each:
//! [`walk`] → [`filter`] → [`hash`] → [`place`] → [`manifest`]; [`item`] holds what travels
//! between them, [`ingest`](mod@ingest) wires them together, [`reingest`] skips unchanged files, [`phantom`] moves files after the manifest is
//! durable, and [`checkout`](mod@checkout) turns a manifest back into a tree.
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod checkout;
pub mod dirs;
pub mod error;
pub mod filter;
pub mod hash;
pub mod ingest;
pub mod item;
pub mod lease;
pub mod manifest;
pub mod materialize;
pub mod metrics;
pub mod options;
pub mod phantom;
pub mod place;
pub mod reap;
pub mod reingest;
pub mod report;
pub mod reuse;
#[cfg(feature = "uring")]
pub mod uring;

/// Built without the `uring` feature: the io_uring backend is refused with a message saying
/// how to get it (`--io-backend auto` never picks it).
#[cfg(not(feature = "uring"))]
pub mod uring {
    use crate::error::PipelineError;

    fn not_built() -> PipelineError {
        PipelineError::Uring(
            "this vrift was built without it (cargo feature `uring`: \
             `cargo build --release --features uring`)"
                .into(),
        )
    }

    pub fn available() -> Result<(), PipelineError> {
        Err(not_built())
    }

    pub fn place_stage(
        _rx: flume::Receiver<Vec<crate::item::Hashed>>,
        _tx: flume::Sender<Vec<crate::item::Done>>,
        _cfg: &crate::place::PlaceConfig<'_>,
    ) -> Result<(), PipelineError> {
        Err(not_built())
    }
}
pub mod walk;

pub use checkout::{checkout, checkout_replacing, replace_dir, CheckoutReport};
pub use error::PipelineError;
pub use ingest::{ingest, Wait};
pub use materialize::LinkMode;
pub use options::{IngestOptions, IoBackend, Mode, Tier};
pub use report::{Counters, IngestReport, Issue, IssueCounts, IssueKind, ReportDetails, Severity};
