//! The ingest pipeline. Read the stages in order, one file each:
//! [`walk`] → [`filter`] → [`hash`] → [`place`] → [`manifest`]; [`item`] holds what travels
//! between them, [`ingest`](mod@ingest) wires them together, [`reingest`] skips unchanged files, [`phantom`] moves files after the manifest is
//! durable, and [`checkout`](mod@checkout) turns a manifest back into a tree.

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
pub mod uring;
pub mod walk;

pub use checkout::{checkout, checkout_replacing, replace_dir, CheckoutReport};
pub use error::PipelineError;
pub use ingest::{ingest, Wait};
pub use materialize::LinkMode;
pub use options::{IngestOptions, IoBackend, Mode, Tier};
pub use report::{Counters, IngestReport, Issue, IssueCounts, IssueKind, ReportDetails, Severity};
