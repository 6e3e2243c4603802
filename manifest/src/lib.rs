//! Velo Rift manifests: the record of one ingested tree.
//!
//! A manifest is a single file — a 64-byte header ([`format`](mod@format)) followed by an rkyv
//! archive ([`schema`]) — that is memory-mapped and read in place with no parse step, so
//! a shim can open a 100k-entry manifest in well under a millisecond. It lists every
//! entry of the tree (relative path as raw bytes, kind, mode, size, mtime, BLAKE3 hash,
//! symlink target) sorted component-wise ([`order`]), which gives O(log n) lookup by path
//! and O(children) directory listing.
//!
//! * write: [`ManifestBuilder`] → [`ManifestBuilder::write_atomic`]
//! * read: [`Manifest::open`] → [`Manifest::lookup`], [`Manifest::children`], ...
//! * overlay several manifests: [`layer::LayeredView`]
//!
//! ```
//! use vrift_manifest::{EntryInput, Kind, Manifest, ManifestBuilder};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("project.vrm");
//! let mut b = ManifestBuilder::new("/home/dev/project");
//! b.push(EntryInput::file("node_modules/left-pad/index.js", 11, [7; 32]));
//! b.push(EntryInput::symlink("node_modules/.bin/pad", "../left-pad/index.js"));
//! b.write_atomic(&path)?;
//!
//! let m = Manifest::open(&path)?;
//! let f = m.lookup(b"node_modules/left-pad/index.js").unwrap();
//! assert_eq!((f.kind(), f.size()), (Kind::File, 11));
//! let nm = m.lookup(b"node_modules").unwrap(); // parent synthesized as a directory
//! let names: Vec<&[u8]> = m.children(&nm).map(|e| e.name()).collect();
//! assert_eq!(names, [&b".bin"[..], b"left-pad"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod builder;
mod entry;
mod error;
pub mod format;
mod hex;
pub mod layer;
pub mod order;
mod reader;
pub mod schema;
pub mod view;

pub use builder::{new_file_mode, write_file_atomic, ManifestBuilder};
pub use entry::{Entry, EntryInput, Kind};
pub use error::ManifestError;
pub use format::FLAG_PHANTOM;
pub use hex::{hex, hex_into, parse_hex};
pub use reader::{Manifest, OpenOptions};
pub use view::{Children, View};

/// A BLAKE3 hash.
pub type Hash = [u8; 32];
