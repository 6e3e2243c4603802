//! Stage 2: which walked entries enter the manifest.
//!
//! By default nothing a program might need is skipped (hidden files, `.bin/`, files a package's
//! own `.gitignore` names are all kept: npm packages ship those). Only three things are left
//! out: version-control directories, secrets that must never reach a shared store, and the
//! user's own patterns. It runs inside the walker threads, so an excluded directory is never
//! descended into and no extra hand-off is paid per file.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::PipelineError;

/// File-name patterns of secrets (matched against the last path component).
pub const SECURITY_NAME_PATTERNS: &[&str] = &[
    ".env",
    ".env.*",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
];

/// Relative-path patterns of secrets that are only secret in a given directory.
pub const SECURITY_PATH_PATTERNS: &[&str] = &[
    "**/.aws/credentials",
    "**/.aws/config",
    "**/.ssh/*",
    "**/.docker/config.json",
];

/// Directory names of version-control metadata.
pub const VCS_DIRS: &[&[u8]] = &[b".git", b".hg", b".svn", b".bzr"];

/// What the filter says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Left out and counted (and listed with `--show-excluded`).
    Exclude,
    /// vrift's own temp files from an interrupted run: not part of the tree, not counted.
    Ignore,
}

pub struct Filter {
    security_names: Option<GlobSet>,
    security_paths: Option<GlobSet>,
    user: Option<GlobSet>,
    vcs: bool,
    /// Exact relative paths that are vrift's own output (a manifest written inside the tree).
    own: Vec<Vec<u8>>,
}

fn build(patterns: &[&str], path_mode: bool) -> Result<GlobSet, PipelineError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = if path_mode {
            GlobBuilder::new(p).literal_separator(true).build()
        } else {
            Glob::new(p)
        }
        .map_err(|e| PipelineError::Pattern {
            pattern: p.to_string(),
            reason: e.to_string(),
        })?;
        b.add(glob);
    }
    b.build().map_err(|e| PipelineError::Pattern {
        pattern: patterns.join(" "),
        reason: e.to_string(),
    })
}

impl Filter {
    /// `user` patterns are gitignore-like: a pattern without `/` matches a name at any depth,
    /// one with `/` matches the relative path from the ingest root.
    pub fn new(security: bool, vcs: bool, user: &[String]) -> Result<Filter, PipelineError> {
        let user = if user.is_empty() {
            None
        } else {
            let expanded: Vec<String> = user
                .iter()
                .flat_map(|p| {
                    let p = p.trim_end_matches('/');
                    let anchored = p.trim_start_matches('/');
                    if p.contains('/') {
                        vec![anchored.to_string(), format!("{anchored}/**")]
                    } else {
                        vec![format!("**/{p}"), format!("**/{p}/**")]
                    }
                })
                .collect();
            let refs: Vec<&str> = expanded.iter().map(String::as_str).collect();
            Some(build(&refs, true)?)
        };
        Ok(Filter {
            security_names: if security {
                Some(build(SECURITY_NAME_PATTERNS, false)?)
            } else {
                None
            },
            security_paths: if security {
                Some(build(SECURITY_PATH_PATTERNS, true)?)
            } else {
                None
            },
            user,
            vcs,
            own: Vec::new(),
        })
    }

    /// Never ingest `rel` (e.g. the manifest being written, when it lives inside the tree).
    pub fn ignore_path(&mut self, rel: &Path) {
        self.own.push(rel.as_os_str().as_bytes().to_vec());
    }

    /// Decides for an entry given its path relative to the ingest root and its own name.
    pub fn check(&self, rel: &[u8], name: &[u8], is_dir: bool) -> Verdict {
        if name.starts_with(vrift_cas::SIBLING_TEMP_PREFIX) || self.own.iter().any(|o| o == rel) {
            return Verdict::Ignore;
        }
        if is_dir && self.vcs && VCS_DIRS.contains(&name) {
            return Verdict::Exclude;
        }
        if self.security_names.is_none() && self.user.is_none() {
            return Verdict::Keep;
        }
        let rel_path = Path::new(OsStr::from_bytes(rel));
        let cand = Candidate::new(rel_path);
        if !is_dir {
            if let Some(set) = &self.security_names {
                if set.is_match_candidate(&Candidate::new(Path::new(OsStr::from_bytes(name)))) {
                    return Verdict::Exclude;
                }
            }
            if let Some(set) = &self.security_paths {
                if set.is_match_candidate(&cand) {
                    return Verdict::Exclude;
                }
            }
        }
        if let Some(set) = &self.user {
            if set.is_match_candidate(&cand) {
                return Verdict::Exclude;
            }
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sec: bool, user: &[&str]) -> Filter {
        let u: Vec<String> = user.iter().map(|s| s.to_string()).collect();
        Filter::new(sec, true, &u).unwrap()
    }

    fn name_of(rel: &str) -> &str {
        rel.rsplit('/').next().unwrap()
    }

    fn check(filter: &Filter, rel: &str, dir: bool) -> Verdict {
        filter.check(rel.as_bytes(), name_of(rel).as_bytes(), dir)
    }

    #[test]
    fn keeps_hidden_and_gitignored_names() {
        let filter = f(true, &[]);
        for rel in [
            ".bin/tsc",
            "pkg/.gitignore",
            "pkg/.npmignore",
            ".package-lock.json",
            "a/.eslintrc",
        ] {
            assert_eq!(check(&filter, rel, false), Verdict::Keep, "{rel}");
        }
        assert_eq!(check(&filter, ".bin", true), Verdict::Keep);
    }

    #[test]
    fn excludes_secrets_and_vcs() {
        let filter = f(true, &[]);
        for rel in [
            ".env",
            "app/.env.local",
            "certs/server.pem",
            "x/tls.key",
            "home/.ssh/id_rsa",
            "id_ed25519.pub",
            "u/.aws/credentials",
        ] {
            assert_eq!(check(&filter, rel, false), Verdict::Exclude, "{rel}");
        }
        assert_eq!(check(&filter, "pkg/.git", true), Verdict::Exclude);
        // a file merely named like a key directory stays
        assert_eq!(check(&filter, "docs/keys.md", false), Verdict::Keep);
    }

    #[test]
    fn no_security_filter_keeps_secrets() {
        let filter = f(false, &[]);
        assert_eq!(check(&filter, ".env", false), Verdict::Keep);
        assert_eq!(check(&filter, "a.pem", false), Verdict::Keep);
    }

    #[test]
    fn user_patterns_by_name_and_path() {
        let filter = f(false, &["target", "/build/out", "*.log"]);
        assert_eq!(check(&filter, "target", true), Verdict::Exclude);
        assert_eq!(check(&filter, "crates/x/target", true), Verdict::Exclude);
        assert_eq!(check(&filter, "build/out", true), Verdict::Exclude);
        assert_eq!(check(&filter, "src/build/out", true), Verdict::Keep);
        assert_eq!(check(&filter, "a/b/debug.log", false), Verdict::Exclude);
        assert_eq!(check(&filter, "a/b/debug.txt", false), Verdict::Keep);
    }

    #[test]
    fn own_temp_files_are_ignored() {
        let filter = f(false, &[]);
        assert_eq!(check(&filter, "a/.vrift-tmp-12-3", false), Verdict::Ignore);
    }

    #[test]
    fn non_utf8_names_do_not_break_matching() {
        let filter = f(true, &["*.log"]);
        assert_eq!(
            filter.check(b"a/\xff.log", b"\xff.log", false),
            Verdict::Exclude
        );
        assert_eq!(
            filter.check(b"a/\xff.txt", b"\xff.txt", false),
            Verdict::Keep
        );
    }
}
