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

/// Names of files that hold a private key *if their content says so* (a PEM/OpenSSH
/// `-----BEGIN ... PRIVATE KEY-----` block): inspected, not excluded by name. A public
/// certificate bundle (`certifi/cacert.pem`), a public key (`id_ed25519.pub`) or a package's
/// test fixture without a private key is part of the tree and stays.
pub const KEY_NAME_PATTERNS: &[&str] = &[
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
];

/// Credential files: secret wherever they sit outside a package directory (a project's own
/// `.env`), kept inside one (a package's documented example `.env`, which it may need).
pub const CREDENTIAL_NAME_PATTERNS: &[&str] = &[
    ".env",
    ".env.*",
    ".envrc",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    "*.p12",
    "*.pfx",
];

/// Registry configuration that is secret only when it carries a token or password: inspected
/// outside package directories.
pub const TOKEN_NAME_PATTERNS: &[&str] = &[".npmrc", ".pypirc"];

/// Relative-path patterns of secrets that are only secret in a given directory (outside
/// package directories).
pub const SECURITY_PATH_PATTERNS: &[&str] = &[
    "**/.aws/credentials",
    "**/.aws/config",
    "**/.ssh/*",
    "**/.docker/config.json",
];

/// Directory names under which a tree holds installed packages (npm, pip, Go/PHP vendor,
/// cargo's registry sources): their files are the packages' own, shipped by their authors.
pub const PACKAGE_DIRS: &[&[u8]] = &[
    b"node_modules",
    b"site-packages",
    b"dist-packages",
    b"vendor",
    b"__pypackages__",
];

/// Whether `rel` lies inside a package directory (see [`PACKAGE_DIRS`]; also a cargo
/// registry's `registry/src/`).
pub fn in_package_dir(rel: &[u8]) -> bool {
    let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let parents = &comps[..comps.len().saturating_sub(1)];
    parents.iter().any(|c| PACKAGE_DIRS.contains(c))
        || parents.windows(2).any(|w| w == [&b"registry"[..], b"src"])
}

/// What the hash stage looks for in a file the filter could not judge by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspect {
    /// A PEM/OpenSSH private key block.
    PrivateKey,
    /// A registry token or password (`_authToken`, `_auth`, `_password`, `password`).
    Token,
}

impl Inspect {
    /// Whether `content` is a secret of this kind.
    pub fn is_secret(self, content: &[u8]) -> bool {
        match self {
            Inspect::PrivateKey => private_key_block(content),
            Inspect::Token => [&b"_authToken"[..], b"_auth", b"_password", b"password"]
                .iter()
                .any(|k| find(content, k).is_some()),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A `-----BEGIN <anything> PRIVATE KEY-----` line (RSA, EC, DSA, OPENSSH, ENCRYPTED, PKCS#8).
fn private_key_block(content: &[u8]) -> bool {
    let mut rest = content;
    while let Some(i) = find(rest, b"-----BEGIN ") {
        let line = &rest[i..];
        let end = line
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(line.len())
            .min(80);
        if find(&line[..end], b"PRIVATE KEY-----").is_some() {
            return true;
        }
        rest = &rest[i + 11..];
    }
    false
}

/// Directory names of version-control metadata.
pub const VCS_DIRS: &[&[u8]] = &[b".git", b".hg", b".svn", b".bzr"];

/// What the filter says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Kept unless its content is a secret of this kind (decided where it is read: the hash
    /// stage, which reads it anyway).
    Inspect(Inspect),
    /// Left out and counted (and listed with `--show-excluded`).
    Exclude,
    /// vrift's own temp files from an interrupted run: not part of the tree, not counted.
    Ignore,
}

pub struct Filter {
    key_names: Option<GlobSet>,
    credential_names: Option<GlobSet>,
    token_names: Option<GlobSet>,
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
        let names = |p: &[&str]| -> Result<Option<GlobSet>, PipelineError> {
            security.then(|| build(p, false)).transpose()
        };
        Ok(Filter {
            key_names: names(KEY_NAME_PATTERNS)?,
            credential_names: names(CREDENTIAL_NAME_PATTERNS)?,
            token_names: names(TOKEN_NAME_PATTERNS)?,
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
        if self.key_names.is_none() && self.user.is_none() {
            return Verdict::Keep;
        }
        let rel_path = Path::new(OsStr::from_bytes(rel));
        let cand = Candidate::new(rel_path);
        if let Some(set) = &self.user {
            if set.is_match_candidate(&cand) {
                return Verdict::Exclude;
            }
        }
        if is_dir || self.key_names.is_none() {
            return Verdict::Keep;
        }
        let name_cand = Candidate::new(Path::new(OsStr::from_bytes(name)));
        let matches = |set: &Option<GlobSet>, c: &Candidate<'_>| {
            set.as_ref().is_some_and(|s| s.is_match_candidate(c))
        };
        if matches(&self.key_names, &name_cand) {
            return Verdict::Inspect(Inspect::PrivateKey);
        }
        if in_package_dir(rel) {
            return Verdict::Keep;
        }
        if matches(&self.credential_names, &name_cand) || matches(&self.security_paths, &cand) {
            return Verdict::Exclude;
        }
        if matches(&self.token_names, &name_cand) {
            return Verdict::Inspect(Inspect::Token);
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sec: bool, user: &[&str]) -> Filter {
        let u: Vec<String> = user.iter().map(std::string::ToString::to_string).collect();
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
            "u/.aws/credentials",
            "home/.ssh/known_hosts",
            "a.p12",
        ] {
            assert_eq!(check(&filter, rel, false), Verdict::Exclude, "{rel}");
        }
        // Judged by content: key names, and registry config outside packages.
        for rel in [
            "certs/server.pem",
            "x/tls.key",
            "home/.ssh/id_rsa",
            "id_ed25519.pub",
        ] {
            assert_eq!(
                check(&filter, rel, false),
                Verdict::Inspect(Inspect::PrivateKey),
                "{rel}"
            );
        }
        assert_eq!(
            check(&filter, ".npmrc", false),
            Verdict::Inspect(Inspect::Token)
        );
        // Inside packages, credential-looking files are the package's own.
        for rel in [
            "node_modules/dotenv/.env",
            "venv/lib/python3.11/site-packages/pkg/.env.example",
            "node_modules/x/.npmrc",
            "home/.cargo/registry/src/index/openssl-0.10/test/.env",
        ] {
            assert_eq!(check(&filter, rel, false), Verdict::Keep, "{rel}");
        }
        assert_eq!(check(&filter, "pkg/.git", true), Verdict::Exclude);
        // a file merely named like a key directory stays
        assert_eq!(check(&filter, "docs/keys.md", false), Verdict::Keep);
    }

    #[test]
    fn secrets_are_recognised_by_what_they_hold() {
        let pk = Inspect::PrivateKey;
        assert!(pk.is_secret(b"-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n"));
        assert!(pk.is_secret(b"x\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"));
        assert!(pk.is_secret(b"-----BEGIN PRIVATE KEY-----\n"));
        assert!(!pk.is_secret(b"-----BEGIN CERTIFICATE-----\nMIIF\n-----END CERTIFICATE-----\n"));
        assert!(!pk.is_secret(b"ssh-ed25519 AAAAC3Nza user@host\n"));
        let t = Inspect::Token;
        assert!(t.is_secret(b"//registry.npmjs.org/:_authToken=npm_abc\n"));
        assert!(t.is_secret(b"[pypi]\nusername = __token__\npassword = pypi-x\n"));
        assert!(!t.is_secret(b"registry=https://registry.npmjs.org/\nsave-exact=true\n"));
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
