//! The user's configuration file: defaults for the flags people set once per machine.
//!
//! `$VRIFT_CONFIG`, else `$XDG_CONFIG_HOME/vrift/config.toml`, else
//! `~/.config/vrift/config.toml`; no file, no configuration. Precedence, as cargo and uv have
//! it: a flag, then its environment variable, then this file, then the built-in default.
//!
//! ```toml
//! store = "/data/vrift"     # --the-source-root / VR_THE_SOURCE
//! remote = "s3://bucket/ci" # --remote / VR_REMOTE (before <store>/remote.toml)
//! jobs = 4                  # -j of ingest, checkout and verify (threads)
//! link_mode = "copy"        # --link-mode of checkout and restore
//! ```

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::args::{Cli, Command, LinkModeArg};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub store: Option<PathBuf>,
    pub remote: Option<String>,
    pub jobs: Option<usize>,
    pub link_mode: Option<LinkModeArg>,
}

/// Where the file is looked for, and whether the user named it (`VRIFT_CONFIG`: it must
/// then exist) or it is the default place (it need not).
pub fn path() -> Option<(PathBuf, bool)> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("VRIFT_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Some((Path::new(&x).join("vrift/config.toml"), false));
    }
    var("HOME").map(|h| (Path::new(&h).join(".config/vrift/config.toml"), false))
}

/// The configuration at `path`: none when the default place has no file (or cannot be
/// looked into: `runuser -u nobody` keeps root's `HOME`); an error naming the file and the
/// problem when a file is there but cannot be read or parsed, or a named one is missing (a
/// typo'd key is an error, not ignored).
pub fn load(path: Option<(PathBuf, bool)>) -> Result<Config, String> {
    let Some((path, named)) = path else {
        return Ok(Config::default());
    };
    let path = path.as_path();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e)
            if !named
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                )
                && !path.is_file() =>
        {
            return Ok(Config::default())
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut c: Config =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    // A relative store is relative to the file, not to wherever vrift runs.
    if let (Some(s), Some(dir)) = (&c.store, path.parent()) {
        if s.is_relative() {
            c.store = Some(dir.join(s));
        }
    }
    Ok(c)
}

/// Fills what the command line left to defaults from `cfg` (flags and their environment
/// variables were applied by clap already and win).
pub fn apply(cli: &mut Cli, m: &ArgMatches, cfg: &Config) {
    let given = |m: &ArgMatches, id: &str| {
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    if cli.the_source_root.is_none() {
        cli.the_source_root = cfg.store.clone();
    }
    if cli.remote.is_none() {
        cli.remote = cfg.remote.clone();
    }
    let sub = m.subcommand().map(|(_, s)| s);
    let link = |l: &mut LinkModeArg| {
        if let (Some(c), Some(s)) = (cfg.link_mode, sub) {
            if !given(s, "link_mode") {
                *l = c;
            }
        }
    };
    let jobs = |j: &mut usize| {
        if let (Some(c), true) = (cfg.jobs, *j == 0) {
            *j = c;
        }
    };
    match &mut cli.command {
        Command::Ingest(a) => jobs(&mut a.jobs),
        Command::Verify(a) => jobs(&mut a.jobs),
        Command::Checkout(a) => {
            jobs(&mut a.jobs);
            link(&mut a.link_mode);
        }
        Command::Restore(a) => link(&mut a.link_mode),
        _ => {}
    }
}
