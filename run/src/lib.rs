//! Velo Rift views for running programs: what `vrift run` does once the command line has
//! said which manifests to show and which command to run.
//!
//! * [`launcher`]: the `LD_PRELOAD` shim serves the manifests' trees to the command and its
//!   children (the default);
//! * [`isolate`]: `--isolate`, rootless user + mount + pid (+ net) namespaces over a cached
//!   link farm of the layers ([`isolate::farm`]) with a throwaway overlay upper layer;
//! * [`isolate::static_exec`]: statically linked programs met inside a shim run, given the
//!   same layers through a mount namespace;
//! * [`signals`]: forwarding signals to the command and leaving the way it left.
//!
//! The environment contract with the shim (variable names) is `vrift_shim_core::env`.
//! Errors are [`RunError`]s that say what each step was doing.
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod error;
pub mod isolate;
pub mod launcher;
pub mod signals;

pub use error::{Result, RunError};
