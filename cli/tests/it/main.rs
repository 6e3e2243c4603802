//! The CLI's end-to-end tests, as one test binary: each file below was a binary of its own,
//! and each linked the whole of vrift again (most of a clean CI's test build time on two
//! cores). Run one file's tests with a filter: `cargo test -p vrift-cli --test it trust::`.
//!
//! Shared helpers: `common` (binary under test, trees, snapshots, S3 server), and one support
//! module per family (`isolate_support`, `run_support`, `metrics_support`).

// Tests set up faults and identities with libc directly (geteuid, statfs, signals).
#![allow(unsafe_code)]

mod common;
mod isolate_support;
mod metrics_support;
mod run_support;

mod checkout_corrupt;
mod checkout_replace;
mod cli_contract;
mod demo_dedup;
mod human_output;
mod ingest_concurrency;
mod ingest_dedup;
mod ingest_enospc;
mod ingest_errors;
mod ingest_fallbacks;
mod ingest_filter;
mod ingest_ordinary_user;
mod ingest_phantom;
mod ingest_roundtrip;
mod isolate_base;
mod isolate_escape;
mod isolate_host;
mod isolate_layers;
mod isolate_teardown;
mod maintenance;
mod metrics_files;
mod metrics_prometheus;
mod remote_s3;
mod restore_s3;
mod run_basic;
mod run_gcc;
mod run_git;
mod run_node;
mod run_project;
mod run_python;
mod run_real_trees;
mod run_trust;
mod trust;
