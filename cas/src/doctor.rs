//! `vrift doctor`'s checks: what is wrong with a store and what to do about it, as data.
//! The command line renders each [`Finding`] as a line of its report (and `--json`); the
//! judgement — which state is fine, which is a warning or an error, and the advice that goes
//! with it — lives here, beside the store it judges.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::lock::Holder;
use crate::registry::Registry;
use crate::scan::{scan, BlobInfo};
use crate::usage::Usage;
use crate::{Cas, Result};

/// Below this much free space the store is "nearly full".
pub const MIN_FREE_BYTES: u64 = 1_000_000_000;

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Error,
}

/// One check's outcome, with the facts its report line needs.
#[derive(Debug, Clone)]
pub enum Finding {
    RegistryValid {
        manifests: usize,
    },
    RegistryBroken {
        error: String,
    },
    /// Projects with no readable manifest (cached nor the user's).
    ManifestsUnreadable {
        names: Vec<String>,
    },
    /// Cached copies damaged; the user's manifest files are used instead.
    ManifestsCacheDamaged {
        names: Vec<String>,
    },
    Stale {
        names: Vec<String>,
    },
    /// Phantom projects whose manifest file is gone (their files live only in the store).
    PhantomsWithoutManifest {
        names: Vec<String>,
    },
    /// Phantom ingests that died before registering (source → output, or the root's path).
    Interrupted {
        runs: Vec<String>,
    },
    Permissions {
        writable_blobs: u64,
        foreign: Vec<PathBuf>,
        store_writable: bool,
    },
    ReferencedAllPresent {
        blobs: u64,
    },
    ReferencedMissing {
        missing: u64,
        first_project: String,
        example: PathBuf,
    },
    Sample {
        sampled: usize,
        of: usize,
        corrupt: Vec<PathBuf>,
        unreadable: u64,
    },
    Orphans {
        count: u64,
        gc_allowed: bool,
    },
    Disk {
        available: u64,
        total: u64,
    },
    DiskUnknown,
    Lock {
        held: bool,
        holders: Vec<Holder>,
    },
    TempFiles {
        count: usize,
        bytes: u64,
    },
    Quarantine {
        count: usize,
        dir: PathBuf,
    },
}

impl Finding {
    /// The check's name, the start of its report line.
    pub fn name(&self) -> &'static str {
        use Finding::*;
        match self {
            RegistryValid { .. } | RegistryBroken { .. } => "Registry",
            ManifestsUnreadable { .. } | ManifestsCacheDamaged { .. } => "Manifests",
            Stale { .. } => "Stale manifests",
            PhantomsWithoutManifest { .. } => "Phantom projects",
            Interrupted { .. } => "Interrupted ingests",
            Permissions { .. } => "CAS permissions",
            ReferencedAllPresent { .. } | ReferencedMissing { .. } => "Referenced blobs",
            Sample { .. } => "Blob sample",
            Orphans { .. } => "Orphaned blobs",
            Disk { .. } | DiskUnknown => "Disk space",
            Lock { .. } => "Lock",
            TempFiles { .. } => "Temp files",
            Quarantine { .. } => "Quarantine",
        }
    }

    pub fn status(&self) -> Status {
        use Finding::*;
        match self {
            RegistryValid { .. } | ReferencedAllPresent { .. } | Lock { .. } => Status::Ok,
            RegistryBroken { .. } | ManifestsUnreadable { .. } | ReferencedMissing { .. } => {
                Status::Error
            }
            Stale { names } if names.is_empty() => Status::Ok,
            Permissions {
                writable_blobs: 0,
                foreign,
                store_writable: true,
            } if foreign.is_empty() => Status::Ok,
            Sample { corrupt, .. } if !corrupt.is_empty() => Status::Error,
            Sample { unreadable: 0, .. } => Status::Ok,
            Orphans { count: 0, .. } => Status::Ok,
            Disk { available, total } if !disk_low(*available, *total) => Status::Ok,
            _ => Status::Warn,
        }
    }

    /// What to do about it, if anything.
    pub fn advice(&self, store: &Path) -> Vec<String> {
        use Finding::*;
        let one = |s: &str| vec![s.to_string()];
        match self {
            RegistryBroken { .. } => one(
                "Run `vrift registry --rebuild` to rebuild the registry from the cached manifests",
            ),
            ManifestsUnreadable { .. } => one(
                "Re-ingest the projects with no readable manifest, or `vrift forget NAME` those \
                 you no longer need",
            ),
            ManifestsCacheDamaged { .. } => {
                one("Re-ingest those projects to refresh the store's copy of their manifests")
            }
            Stale { names } if !names.is_empty() => {
                one("Run `vrift gc --prune-stale` to clean stale manifests")
            }
            PhantomsWithoutManifest { .. } => one(
                "Restore them with `vrift checkout` of the store's copy (see `vrift status \
                 --json`), or `vrift forget NAME` if they are no longer needed",
            ),
            Interrupted { .. } => one("Finish them with `vrift ingest SOURCE -o OUTPUT --resume`"),
            Permissions {
                writable_blobs,
                foreign,
                store_writable,
            } => {
                let mut v = Vec::new();
                if *writable_blobs > 0 {
                    v.push(
                        "Run `vrift verify --repair`: a writable blob may have been modified; \
                         the next ingest re-protects the rest"
                            .to_string(),
                    );
                }
                if !foreign.is_empty() {
                    v.push(
                        "Remove the foreign files listed by `vrift verify` from the store".into(),
                    );
                }
                if !store_writable {
                    v.push(format!(
                        "Give this user write access to {}",
                        store.display()
                    ));
                }
                v
            }
            ReferencedMissing { .. } => one(
                "Re-ingest (or `vrift pull`) the projects whose blobs are missing; `vrift \
                 checkout` of them fails until then",
            ),
            Sample { corrupt, .. } if !corrupt.is_empty() => {
                one("Run `vrift verify --repair` to find and drop every corrupted blob")
            }
            Sample { unreadable, .. } if *unreadable > 0 => one(
                "In a store shared by a group, ingest with a umask that lets the group read \
                 (e.g. 002) and a setgid store directory",
            ),
            Orphans {
                count,
                gc_allowed: true,
            } if *count > 0 => {
                one("Run `vrift gc --delete --older-than 1h` to remove unreferenced blobs")
            }
            Disk { available, total } if disk_low(*available, *total) => one(
                "Free disk space: the store's filesystem is nearly full (`vrift gc --delete` \
                 may help)",
            ),
            TempFiles { .. } => {
                one("`vrift gc --delete` removes the temp files of interrupted runs")
            }
            Quarantine { .. } => one(
                "Something wrote into the store (e.g. root editing a hard-linked checkout): \
                 check out with `--link-mode copy` where files are patched; `vrift gc \
                 --delete` empties the quarantine",
            ),
            _ => Vec::new(),
        }
    }
}

/// Nearly full: under [`MIN_FREE_BYTES`] or under 5% free.
fn disk_low(available: u64, total: u64) -> bool {
    available < MIN_FREE_BYTES || available.saturating_mul(20) < total
}

/// Runs every check on the store at `cas`, re-hashing `sample` blobs (spread over the store,
/// the same ones each time).
pub fn diagnose(cas: &Cas, sample: usize) -> Result<Vec<Finding>> {
    let root = cas.root().to_path_buf();
    let mut out = Vec::new();
    let reg = match Registry::load(&root) {
        Ok(r) => {
            out.push(Finding::RegistryValid {
                manifests: r.projects.len(),
            });
            Some(r)
        }
        Err(e) => {
            out.push(Finding::RegistryBroken {
                error: e.to_string(),
            });
            None
        }
    };
    let usage = reg.as_ref().map(|r| Usage::load(&root, r)).transpose()?;
    if let (Some(reg), Some(usage)) = (&reg, &usage) {
        let names_where = |f: &dyn Fn(&crate::usage::ProjectUsage) -> bool| -> Vec<String> {
            usage
                .projects
                .iter()
                .filter(|p| f(p))
                .map(|p| p.name.clone())
                .collect()
        };
        let unreadable = names_where(&|p| p.unreadable.is_some());
        let damaged = names_where(&|p| p.cache_damaged.is_some());
        if !unreadable.is_empty() {
            out.push(Finding::ManifestsUnreadable { names: unreadable });
        } else if !damaged.is_empty() {
            out.push(Finding::ManifestsCacheDamaged { names: damaged });
        }
        let names = |v: Vec<&crate::registry::Project>| v.iter().map(|p| p.name.clone()).collect();
        out.push(Finding::Stale {
            names: names(crate::gc::stale_projects(&root, reg)),
        });
        let phantoms: Vec<String> = names(crate::gc::kept_phantoms(&root, reg));
        if !phantoms.is_empty() {
            out.push(Finding::PhantomsWithoutManifest { names: phantoms });
        }
        let runs: Vec<String> = crate::roots::list(&root)?
            .into_iter()
            .filter(|p| !p.alive)
            .map(|p| match &p.info {
                Some(i) => format!("{} → {}", i.source.display(), i.output.display()),
                None => p.manifest.display().to_string(),
            })
            .collect();
        if !runs.is_empty() {
            out.push(Finding::Interrupted { runs });
        }
    }

    let blobs = scan(cas)?;
    out.push(Finding::Permissions {
        writable_blobs: blobs.blobs.iter().filter(|b| b.mode & 0o222 != 0).count() as u64,
        foreign: blobs.foreign.clone(),
        store_writable: crate::sys::writable(&root),
    });

    let present: HashSet<(vrift_manifest::Hash, u64)> =
        blobs.blobs.iter().map(|b| (b.hash, b.size)).collect();
    if let Some(usage) = &usage {
        let missing = usage.missing(&present);
        match missing.first() {
            None => out.push(Finding::ReferencedAllPresent {
                blobs: usage.referenced_blobs() as u64,
            }),
            Some((name, _, ex)) => out.push(Finding::ReferencedMissing {
                missing: missing.iter().map(|m| m.1).sum(),
                first_project: name.clone(),
                example: cas.blob_path(&ex.0, ex.1),
            }),
        }
    }

    if sample > 0 && !blobs.blobs.is_empty() {
        // The same store is sampled the same way every time, each blob at most once.
        let mut order: Vec<&BlobInfo> = blobs.blobs.iter().collect();
        order.sort_by_key(|b| (b.hash, b.size));
        let n = sample.min(order.len());
        let mut buf = Vec::new();
        let (mut corrupt, mut unreadable) = (Vec::new(), 0u64);
        for i in 0..n {
            let b = order[i * order.len() / n];
            match crate::verify::check_blob(cas, b, &mut buf) {
                Ok(true) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => unreadable += 1,
                Ok(false) | Err(_) => corrupt.push(cas.blob_path(&b.hash, b.size)),
            }
        }
        out.push(Finding::Sample {
            sampled: n,
            of: blobs.blobs.len(),
            corrupt,
            unreadable,
        });
    }

    if let Some(usage) = &usage {
        let count = blobs
            .blobs
            .iter()
            .filter(|b| !usage.is_referenced(&(b.hash, b.size)))
            .count() as u64;
        out.push(Finding::Orphans {
            count,
            gc_allowed: usage.unsafe_to_delete().is_empty(),
        });
    }

    out.push(match crate::sys::free_space(&root) {
        Ok((available, total)) => Finding::Disk { available, total },
        Err(_) => Finding::DiskUnknown,
    });

    out.push(Finding::Lock {
        held: crate::lock::is_held(&root).unwrap_or(false),
        holders: crate::lock::holders(&root),
    });

    let mut leftovers = crate::gc::leftovers_in(&root.join(crate::store::TMP_DIR), false);
    leftovers.extend(crate::gc::leftovers_in(
        &root.join(crate::store::MANIFEST_DIR),
        false,
    ));
    if !leftovers.is_empty() {
        out.push(Finding::TempFiles {
            count: leftovers.len(),
            bytes: leftovers.iter().map(|l| l.1).sum(),
        });
    }
    let quarantine = root.join(crate::store::QUARANTINE_DIR);
    let quarantined = crate::gc::leftovers_in(&quarantine, true);
    if !quarantined.is_empty() {
        out.push(Finding::Quarantine {
            count: quarantined.len(),
            dir: quarantine,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_store_is_healthy_and_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let found = diagnose(&cas, 10).unwrap();
        for f in &found {
            if matches!(f, Finding::Disk { .. } | Finding::DiskUnknown) {
                continue; // the machine's, not the store's
            }
            assert_eq!(f.status(), Status::Ok, "{f:?}");
            assert!(f.advice(dir.path()).is_empty(), "{f:?}");
        }
    }

    #[test]
    fn statuses_and_advice_follow_the_facts() {
        let store = Path::new("/s");
        let stale = Finding::Stale {
            names: vec!["p".into()],
        };
        assert_eq!(stale.status(), Status::Warn);
        assert_eq!(stale.advice(store).len(), 1);
        let perms = Finding::Permissions {
            writable_blobs: 2,
            foreign: vec![PathBuf::from("/s/blake3/x")],
            store_writable: false,
        };
        assert_eq!(perms.status(), Status::Warn);
        assert_eq!(perms.advice(store).len(), 3);
        let sample = Finding::Sample {
            sampled: 3,
            of: 9,
            corrupt: vec![PathBuf::from("/s/b")],
            unreadable: 1,
        };
        assert_eq!(sample.status(), Status::Error);
        assert!(disk_low(MIN_FREE_BYTES - 1, u64::MAX / 40));
        assert!(disk_low(10 << 30, 1 << 40), "under 5%");
        assert!(!disk_low(100 << 30, 1 << 40));
        // Orphans a gc may not delete yet (an unreadable manifest) get no gc advice.
        let o = Finding::Orphans {
            count: 4,
            gc_allowed: false,
        };
        assert_eq!(o.status(), Status::Warn);
        assert!(o.advice(store).is_empty());
    }
}
