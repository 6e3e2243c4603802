//! The content-addressable store ("TheSource"): where blobs live, how they enter atomically,
//! and the bookkeeping beside them (registry of projects, store lock).
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod clean;
pub mod doctor;
pub mod error;
pub mod gc;
pub mod inventory;
pub mod layout;
pub mod lock;
pub mod registry;
pub mod roots;
pub mod scan;
pub mod seal;
pub mod shard;
pub mod store;
pub mod sys;
mod temp;
pub mod usage;
pub mod verify;

pub use error::{CasError, Result};
pub use layout::{blob_rel, parse_blob_name, BLOB_DIR};
pub use store::{BlobCheck, Cas, CopyKind, SIBLING_TEMP_PREFIX, WRITE_BITS};
