//! `vrift`: the command line over the ingest pipeline and the store.
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod args;
mod commands;
mod config;
mod format;
mod metrics_export;
mod output;
mod progress;
mod shim;

use std::path::PathBuf;
use std::process::ExitCode;

use args::{Cli, Command};

/// What a command tells `main` about how it went (usage errors never get here: clap exits 2).
pub enum Outcome {
    Ok,
    /// Completed, but something needs the user's attention (per-file errors, a failed check).
    Failed,
    /// The request was refused as asked (exit 2, like a usage error).
    Usage,
    /// `restore`: no tree for the key and no command to make one (exit 3).
    Miss,
}

/// Resolved global settings every command needs.
pub struct Globals {
    pub store: PathBuf,
    /// `--remote` / `VR_REMOTE`.
    pub remote: Option<String>,
    pub json: bool,
    pub progress: bool,
    /// `-v` count: timings and other detail on stderr.
    pub verbose: u8,
}

/// `-q`: notes, waits and summaries stay off stderr (errors do not). A process-wide switch,
/// as these lines come from callbacks deep inside commands.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// A line for people on stderr (a note, a wait, a summary), unless `-q`.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {
        if !$crate::quiet() {
            eprintln!($($t)*);
        }
    };
}

/// `~/.vrift/the_source`; none without a `HOME` (a store at `/.vrift` would surprise).
fn default_store() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".vrift").join("the_source"))
}

fn main() -> ExitCode {
    // Not a user command: the shim's way to run a static program on the view.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == vrift_run::isolate::static_exec::SUBCOMMAND)
    {
        commands::run::exec_static(&args[2..]);
    }
    let matches = match <Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // A usage error under --json is JSON too (on stdout, as every --json answer),
            // besides clap's message on stderr; help and --version stay as they are.
            use clap::error::ErrorKind;
            let usage = !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if usage && args.iter().any(|a| a == "--json") {
                let msg = e.kind().to_string();
                let detail = e.to_string();
                let first = detail
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                println!(
                    "{}",
                    output::versioned(serde_json::json!({
                        "error": first,
                        "kind": msg,
                        "exit": e.exit_code(),
                    }))
                );
            }
            e.exit()
        }
    };
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match config::load(config::path()) {
        Ok(cfg) => config::apply(&mut cli, &matches, &cfg),
        Err(e) => {
            eprintln!("error: config file {e}");
            return ExitCode::from(2);
        }
    }
    let Some(store) = cli.the_source_root.clone().or_else(default_store) else {
        eprintln!(
            "error: HOME is not set, so there is no default store (~/.vrift/the_source): give \
             one with --the-source-root DIR or VR_THE_SOURCE"
        );
        return ExitCode::from(2);
    };
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let g = Globals {
        store,
        remote: cli.remote.clone(),
        json: cli.json,
        progress: !cli.no_progress && !cli.json && !cli.quiet,
        verbose: cli.verbose,
    };
    let result = match &cli.command {
        Command::Ingest(a) => commands::ingest::run(&g, a),
        Command::Run(a) => commands::run::run(&g, a),
        Command::Init(a) => commands::init::run(&g, a),
        Command::Checkout(a) => commands::checkout::run(&g, a),
        Command::Status(a) => commands::status::run(&g, a),
        Command::Completions(a) => {
            // Generated from the same definitions the parser uses, so it never drifts.
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "vrift", &mut std::io::stdout());
            Ok(Outcome::Ok)
        }
        Command::Man(a) => commands::man::run(a),
        Command::Gc(a) if a.farms => commands::gc_farms::run(&g, a),
        Command::Gc(a) => commands::gc::run(&g, a),
        Command::Forget(a) => commands::gc::forget(&g, a),
        Command::Doctor(a) => commands::doctor::run(&g, a),
        Command::Verify(a) => commands::verify::run(&g, a),
        Command::Registry(a) => commands::registry::run(&g, a),
        Command::Clean(a) => commands::clean::run(&g, a),
        Command::Serve(a) => commands::serve::run(&g, a),
        Command::Push(a) => commands::remote::push(&g, a),
        Command::Pull(a) => commands::remote::pull(&g, a),
        Command::Restore(a) => commands::remote::restore(&g, a),
        Command::Remote(a) => commands::remote::remote(&g, a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Ok(Outcome::Usage) => ExitCode::from(2),
        Ok(Outcome::Miss) => ExitCode::from(3),
        Err(e) => {
            let msg = error_chain(&e);
            if g.json {
                println!(
                    "{}",
                    crate::output::versioned(serde_json::json!({ "error": msg, "exit": 1 }))
                );
            }
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the previous message
/// already includes (our library errors name the path *and* the OS error in one message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}
