//! `vrift checkout`: a manifest turned back into a real tree ("restore node_modules in CI"),
//! through the one materializer ([`crate::materialize`]).

use std::path::Path;

use vrift_cas::Cas;
use vrift_manifest::Manifest;

use crate::error::PipelineError;
use crate::materialize::{self, Options};
use crate::report::Counters;

pub use crate::materialize::Report as CheckoutReport;

/// Writes the tree of `manifest` at `dest`, which must not exist or be an empty directory.
/// Per-entry failures are counted in the report and named in `counters`; only a destination
/// that cannot be used at all is an `Err`.
pub fn checkout(
    cas: &Cas,
    manifest: &Manifest,
    dest: &Path,
    opts: &Options,
    counters: &Counters,
) -> Result<CheckoutReport, PipelineError> {
    let dest_fd = materialize::open_empty_dest(dest).map_err(|e| PipelineError::io(dest, e))?;
    let nodes = materialize::manifest_nodes(manifest);
    Ok(materialize::materialize(
        cas, dest, dest_fd, &nodes, opts, counters,
    ))
}
