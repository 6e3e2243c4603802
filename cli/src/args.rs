//! The command line, exactly as DESIGN.md section 2 promises it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "vrift",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VRIFT_BUILD_INFO"), ")"),
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

    /// Print only errors and the data asked for: no progress, notes, waits or summaries on
    /// stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More on stderr: `-v` adds timings (ingest's stages, `--isolate`'s set-up).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The remote tier for push, pull and ingest --push: s3://BUCKET[/PREFIX] (else
    /// `url` in STORE/remote.toml). Endpoint, region and credentials: AWS_* variables and
    /// profiles.
    #[arg(long, env = "VR_REMOTE", global = true, value_name = "URL")]
    pub remote: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Walk, hash and store a tree; write its manifest; register the project.
    Ingest(IngestArgs),
    /// Materialize a manifest as a tree of hard links to blobs (copies where a link cannot be).
    Checkout(CheckoutArgs),
    /// Store location, size, blobs, and a table of registered projects.
    Status(StatusArgs),
    /// List (and with --delete remove) blobs that no registered manifest references.
    Gc(GcArgs),
    /// Check the store's health and recommend fixes (exit 1 when something needs action).
    Doctor(DoctorArgs),
    /// Re-hash every blob against its name and report corrupted ones.
    Verify(VerifyArgs),
    /// Inspect or rebuild the project registry.
    Registry(RegistryArgs),
    /// Delete the whole store.
    Clean(CleanArgs),
    /// Long-running Prometheus exporter of store-wide gauges (blobs, bytes, projects, orphans).
    Serve(ServeArgs),
    /// Upload a manifest and every blob it references that the remote lacks.
    Push(PushArgs),
    /// Fetch a manifest from the remote and only the blobs missing locally (each verified).
    Pull(PullArgs),
    /// Run a command on the virtual view of manifests (LD_PRELOAD shim).
    Run(crate::commands::run::RunArgs),
    /// Detect the project type; write the filter config and vrift.manifest.
    Init(crate::commands::init::InitArgs),
    /// Remove a project from the registry (its blobs become orphans unless others use them).
    Forget(ForgetArgs),
    /// CI cache in one line: restore DIR for the key of its lock files (local store, else the
    /// remote), else run CMD, ingest DIR and save it under the key. Exit 3: a miss, no CMD.
    Restore(RestoreArgs),
    /// The remote tier: list its manifests, collect its garbage.
    Remote(RemoteArgs),
    /// Print a shell completion script (bash: `vrift completions bash > \
    /// ~/.local/share/bash-completion/completions/vrift`; zsh: into a directory of `$fpath` as
    /// `_vrift`; fish: `~/.config/fish/completions/vrift.fish`).
    Completions(CompletionsArgs),
    /// Print the man page of vrift or of one command in roff (`vrift man restore | man -l -`),
    /// or write every page into a directory with --out.
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The tree to restore (created or replaced), e.g. node_modules.
    pub dir: PathBuf,
    /// Files whose content makes the key (lock files); repeatable, order matters.
    #[arg(long = "key-from", value_name = "FILE", required = true)]
    pub key_from: Vec<PathBuf>,
    /// Readable part of the key (default: DIR's name and the platform).
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// On a miss, restore the newest manifest whose name starts with P (repeatable, first
    /// prefix with a match wins), like actions/cache restore-keys.
    #[arg(long = "restore-prefix", value_name = "P")]
    pub restore_prefix: Vec<String>,
    /// How files get their content (see `checkout --link-mode`).
    #[arg(long = "link-mode", value_enum, default_value_t = LinkModeArg::Auto)]
    pub link_mode: LinkModeArg,
    /// Requests in flight (default: 32, or `jobs` in remote.toml).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,
    /// Run on a miss (e.g. `npm ci`); then DIR is ingested and saved under the key.
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
pub struct RemoteArgs {
    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// The manifests on the remote: name, files, tree size, age.
    Ls,
    /// Dry run by default: manifests to drop, packs no kept manifest uses, packs to repack.
    Gc(RemoteGcArgs),
}

#[derive(Args, Debug)]
pub struct RemoteGcArgs {
    /// Keep only the N most recently pushed manifests (by name).
    #[arg(long = "keep-last", value_name = "N")]
    pub keep_last: Option<usize>,
    /// Drop manifests not pushed for longer than DUR (e.g. 14d).
    #[arg(long = "older-than", value_name = "DUR", value_parser = duration)]
    pub older_than: Option<String>,
    /// Actually delete (default: dry run).
    #[arg(long)]
    pub delete: bool,
    /// A pack no kept manifest uses is deleted only once it has been unindexed for this long,
    /// so a concurrent push can never lose one it relies on (default 1h).
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = duration)]
    pub grace: String,
    /// Requests in flight.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,
}

#[derive(Args, Debug)]
pub struct StatusArgs {}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print (default: vrift itself).
    pub command: Option<String>,
    /// Write vrift.1 and vrift-COMMAND.1 for every command into DIR instead.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Actually delete the orphans (default: dry run).
    #[arg(long)]
    pub delete: bool,
    /// Only touch blobs last linked longer ago than DUR (e.g. 30m, 2h, 7d).
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub older_than: Option<String>,
    /// Also drop stale registry entries: solid projects whose manifest file is gone (with
    /// --delete; listed only without it). Phantom projects are never stale: `vrift forget`.
    #[arg(long)]
    pub prune_stale: bool,
    /// Fail instead of waiting when another process holds the store lock.
    #[arg(long)]
    pub no_wait: bool,
    /// List every orphan blob path.
    #[arg(long)]
    pub list: bool,
    /// Act on the link-farm cache of `run --isolate` instead of blobs (a pure cache: farms in
    /// use are kept, the rest is rebuilt on demand).
    #[arg(long)]
    pub farms: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Project name or id (as `vrift status --json` lists them).
    pub name: String,
    /// Also forget a phantom project, whose files exist only in the store (the next
    /// `gc --delete` removes them for good).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// How many blobs to re-hash as a sample (0 = none; `vrift verify` checks all).
    #[arg(long, default_value_t = 256)]
    pub sample: usize,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Delete corrupted blobs so the next ingest stores their content afresh.
    #[arg(long)]
    pub repair: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,
    /// Fail instead of waiting when another process holds the store lock (with --repair).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Rebuild the registry from the cached manifests inside the store.
    #[arg(long)]
    pub rebuild: bool,
}

#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Delete the entire store (the only kind of clean there is).
    #[arg(long)]
    pub all: bool,
    /// Required: says you mean it.
    #[arg(long)]
    pub force: bool,
    /// First give project files hard-linked to blobs their write bits back.
    #[arg(long)]
    pub fix_perms: bool,
    /// Do not ask for confirmation (CI).
    #[arg(long)]
    pub yes: bool,
    /// Fail instead of waiting when another process holds the store lock.
    #[arg(long)]
    pub no_wait: bool,
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

    /// Leave out paths matching GLOB (gitignore-like; repeatable). The patterns of DIR's
    /// `.vriftignore` (written by `vrift init`) apply too.
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

    /// Then push the manifest and its blobs to the remote (`vrift push`; see --remote).
    #[arg(long)]
    pub push: bool,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Manifest to push (its blobs must be in this store).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,

    /// Name on the remote: manifests/NAME.vrmz (default: the registry's project name for
    /// this manifest, else the tree's directory name).
    #[arg(long)]
    pub name: Option<String>,

    /// How to find out which blobs the remote has: HEAD each, LIST the blob prefixes, or
    /// auto (HEAD for a few blobs, LIST for many).
    #[arg(long, value_enum, default_value_t = CheckArg::Auto)]
    pub check: CheckArg,

    /// Requests in flight (default: 32, or `jobs` in remote.toml).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,

    #[command(flatten)]
    pub metrics: RemoteMetricsArgs,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// A project name (manifests/NAME.vrmz), a manifest's BLAKE3 (64 hex digits), or a key
    /// under the remote's prefix (manifests/x.vrm).
    #[arg(value_name = "MANIFEST_KEY_OR_NAME")]
    pub what: String,

    /// Where to write the manifest (default: STORE/pulled/NAME.vrm).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Project name in the local registry (default: NAME, else the tree's directory name).
    #[arg(long)]
    pub name: Option<String>,

    /// Requests in flight (default: 32, or `jobs` in remote.toml).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,

    #[command(flatten)]
    pub metrics: RemoteMetricsArgs,
}

/// `--metrics-*` of push and pull: the same sinks as ingest, their own Pushgateway job.
#[derive(Args, Debug)]
#[command(next_help_heading = "Metrics")]
pub struct RemoteMetricsArgs {
    /// Push the run's remote metrics to this Prometheus Pushgateway, replacing the group
    /// job=JOB, project=NAME.
    #[arg(long, value_name = "URL")]
    pub metrics_push: Option<String>,

    /// Write the run's remote metrics to this node_exporter textfile (*.prom), atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// The Pushgateway `job` grouping label.
    #[arg(long, value_name = "JOB", default_value = "vrift_remote")]
    pub metrics_job: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckArg {
    Auto,
    List,
    Head,
}

/// Handing an ingest's metrics to Prometheus (see README, "Metrics and dashboards").
#[derive(Args, Debug)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Push the run's metrics to this Prometheus Pushgateway (e.g. http://pushgw:9091),
    /// replacing the group job=JOB, project=NAME.
    #[arg(long, value_name = "URL")]
    pub metrics_push: Option<String>,

    /// Write the run's metrics to this node_exporter textfile (*.prom), atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// Serve live metrics on http://ADDR/metrics while the ingest runs (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// The Pushgateway `job` grouping label.
    #[arg(long, value_name = "JOB", default_value = "vrift_ingest")]
    pub metrics_job: String,
}

/// `vrift serve`: how fresh its numbers are is part of its contract.
#[derive(Args, Debug)]
#[command(after_long_help = SERVE_FRESHNESS)]
pub struct ServeArgs {
    /// Serve store metrics on http://ADDR/metrics (e.g. 127.0.0.1:9465).
    #[arg(long, value_name = "ADDR")]
    pub metrics: String,

    /// Re-examine the store at most every SECS seconds (in a background thread).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub refresh: u64,
}

pub const SERVE_FRESHNESS: &str = "\
How fresh the numbers are:
  A scrape never walks the store: it returns the numbers of the last refresh (plus disk free,
  read at scrape time). A background thread refreshes them at most every --refresh seconds, so
  they are at most --refresh seconds plus one refresh old; vrift_store_refresh_timestamp_seconds
  says exactly when they were taken. A refresh is incremental: it stats the registry, each cached
  manifest and each blob shard directory, re-lists only shard directories that changed (and stats
  only blobs it has not seen), and re-reads the manifests only when the registry or a cached
  manifest changed. The first refresh lists the whole store, like `vrift status`; until it is done
  /metrics answers 503.";

#[derive(Args, Debug)]
pub struct CheckoutArgs {
    /// Manifest to materialize.
    pub manifest: PathBuf,
    /// Destination directory (must not exist or be empty, unless --replace).
    pub dir: PathBuf,
    /// Replace what DIR holds: the new tree is built beside it and swapped in atomically, the
    /// old one deleted after (kept as it was if the checkout has errors).
    #[arg(long)]
    pub replace: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 0)]
    pub jobs: usize,
    /// How files get their content: `hardlink` (auto) shares the blob's inode (no data
    /// copied; a write into such a file as root writes into the store, which the store then
    /// detects and quarantines), `copy` gives independent files you may patch in place,
    /// `reflink` clones where the file system can (else copies).
    #[arg(long = "link-mode", value_enum, default_value_t = LinkModeArg::Auto)]
    pub link_mode: LinkModeArg,
    /// Keep setuid/setgid bits recorded in the manifest (dropped by default: a manifest from
    /// elsewhere must not make setuid files, least of all as root).
    #[arg(long = "keep-setid")]
    pub keep_setid: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkModeArg {
    Auto,
    Hardlink,
    Reflink,
    Copy,
}

impl From<LinkModeArg> for vrift_pipeline::LinkMode {
    fn from(a: LinkModeArg) -> Self {
        match a {
            LinkModeArg::Auto => vrift_pipeline::LinkMode::Auto,
            LinkModeArg::Hardlink => vrift_pipeline::LinkMode::Hardlink,
            LinkModeArg::Reflink => vrift_pipeline::LinkMode::Reflink,
            LinkModeArg::Copy => vrift_pipeline::LinkMode::Copy,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// Hard-link each file into the store (no copy; the file becomes read-only).
    Solid,
    /// Move each file into the store (the tree then exists only through its manifest).
    Phantom,
    /// Copy each file into the store; the tree is left exactly as it was.
    Copy,
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

/// A duration argument (`30m`, `2h`, `7d`), checked when the arguments are parsed: a bad value
/// is a usage error (exit 2) like any other, before anything is opened.
fn duration(s: &str) -> Result<String, String> {
    vrift_cas::gc::parse_age(s).map(|_| s.to_string())
}
