//! The command line, exactly as DESIGN.md section 2 promises it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "vrift",
    version,
    about = "Deduplicate and virtualize huge dependency trees through one BLAKE3 content-addressable store",
    propagate_version = true
)]
pub struct Cli {
    /// The store ("TheSource"); default ~/.vrift/the_source.
    #[arg(
        long = "the-source-root",
        env = "VR_THE_SOURCE",
        global = true,
        value_name = "DIR"
    )]
    pub the_source_root: Option<PathBuf>,

    /// Machine-readable output: one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Never draw a progress bar (it is only drawn on a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Walk, hash and store a tree; write its manifest; register the project.
    Ingest(IngestArgs),
    /// Materialize a manifest as a tree of hard links to blobs (copies where a link cannot be).
    Checkout(CheckoutArgs),
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Directory (or single file) to ingest. May be omitted with --resume.
    #[arg(value_name = "DIR", required_unless_present = "resume")]
    pub dir: Option<PathBuf>,

    /// Where to write the manifest.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,

    #[arg(long, value_enum, default_value_t = ModeArg::Solid)]
    pub mode: ModeArg,

    #[arg(long, value_enum, default_value_t = TierArg::Tier2)]
    pub tier: TierArg,

    /// Worker threads per stage (default: all cores).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,

    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub io_backend: BackendArg,

    /// Also ingest secrets (.env*, *.pem, *.key, id_rsa*, .aws/credentials, ...).
    #[arg(long)]
    pub no_security_filter: bool,

    /// List the paths the filter left out.
    #[arg(long)]
    pub show_excluded: bool,

    /// Leave out paths matching GLOB (gitignore-like; repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Project name in the registry (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,

    /// Finish an interrupted phantom ingest of OUT (also done automatically by a rerun).
    #[arg(long)]
    pub resume: bool,

    /// Hash everything again, ignoring the previous manifest at OUT.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub struct CheckoutArgs {
    /// Manifest to materialize.
    pub manifest: PathBuf,
    /// Destination directory (must not exist or be empty).
    pub dir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Solid,
    Phantom,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierArg {
    Tier1,
    Tier2,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    Auto,
    Uring,
    Threads,
}
