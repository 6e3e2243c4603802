//! Who references which blob: the basis of `status` (per-project unique/shared/added bytes),
//! `gc` (orphans) and `serve` gauges.
//!
//! References come from the cached manifest copies inside the store (not the users' own
//! files, which may be gone), in registry order: "shared" means shared with a project
//! registered earlier, and the size a project adds is what no earlier project already stored.

use std::collections::HashMap;
use std::path::Path;

use vrift_manifest::{Hash, Manifest};

use crate::error::Result;
use crate::registry::{Project, Registry};

/// A blob is named by its hash and size.
pub type BlobKey = (Hash, u64);

#[derive(Debug, Clone, Copy)]
struct Ref {
    /// Index of the first project (registry order) that references it.
    first: u32,
    /// Number of distinct projects referencing it.
    projects: u32,
    /// The last project counted, so a blob referenced twice by one project counts once.
    last: u32,
}

/// Per-project numbers for the status table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProjectUsage {
    pub name: String,
    pub id: String,
    pub source: String,
    pub files: u64,
    /// Sum of the project's file sizes (what it would occupy without the store).
    pub apparent_bytes: u64,
    /// Distinct blobs the project references.
    pub blobs: u64,
    /// Bytes of the distinct blobs the project references (`vrift serve`: shared = this − unique).
    #[serde(skip)]
    pub blob_bytes: u64,
    /// Blobs this project brought to the store: referenced by no project registered before
    /// it. With `shared_blobs` it makes `blobs`; over all projects these sum to the blobs
    /// the store holds for them (the "Unique Blobs" column of `status`).
    pub new_blobs: u64,
    /// Blobs referenced by this project only (what deleting it would free).
    pub unique_blobs: u64,
    /// Blobs this project shares with a project registered before it.
    pub shared_blobs: u64,
    /// Bytes of blobs this project added to the store (first referenced by it).
    pub added_bytes: u64,
    /// Bytes of blobs only this project references (what deleting it would free).
    pub unique_bytes: u64,
    pub last_ingest_unix: u64,
    /// No copy of the manifest could be read, neither the store's cached copy nor the
    /// user's file (reported by doctor; `gc --delete` refuses while this is so).
    pub unreadable: Option<String>,
    /// The cached copy could not be read, but the user's manifest could and was used.
    pub cache_damaged: Option<String>,
}

#[derive(Debug, Default)]
pub struct Usage {
    refs: HashMap<BlobKey, Ref>,
    /// Blobs held by pending roots (see [`crate::roots`]): kept, but no project's.
    pending_refs: std::collections::HashSet<BlobKey>,
    pub projects: Vec<ProjectUsage>,
    /// Pending roots: (manifest path, whether its process is alive, error if unreadable).
    pub pending: Vec<(std::path::PathBuf, bool, Option<String>)>,
}

/// A project's manifest and why its cached copy was not used, or why no copy was.
type ProjectManifest = std::result::Result<(Manifest, Option<String>), String>;

/// The manifest of a registered project: the store's cached copy, else the user's own file if
/// it describes the same tree. `Err` holds why neither could be used.
pub fn project_manifest(root: &Path, p: &Project) -> ProjectManifest {
    let cached = root.join(&p.cached_manifest);
    let cache_err = match Manifest::open(&cached) {
        Ok(m) => return Ok((m, None)),
        Err(e) => e.to_string(),
    };
    match Manifest::open(&p.manifest) {
        Ok(m) if m.root() == std::os::unix::ffi::OsStrExt::as_bytes(p.source.as_os_str()) => {
            Ok((m, Some(cache_err)))
        }
        Ok(_) => Err(format!(
            "{cache_err}; and {} now describes another tree",
            p.manifest.display()
        )),
        Err(e) => Err(format!("{cache_err}; and {e}")),
    }
}

impl Usage {
    /// Loads every registered project's cached manifest and indexes its blobs.
    pub fn load(root: &Path, registry: &Registry) -> Result<Usage> {
        let mut u = Usage::default();
        let manifests: Vec<(usize, &Project, ProjectManifest)> = registry
            .projects
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p, project_manifest(root, p)))
            .collect();
        for (i, p, m) in &manifests {
            let i = *i as u32;
            let mut pu = ProjectUsage {
                name: p.name.clone(),
                id: p.id.clone(),
                source: p.source.display().to_string(),
                last_ingest_unix: p.last_ingest_unix,
                ..Default::default()
            };
            match m {
                Ok((m, cache_err)) => {
                    pu.cache_damaged = cache_err.clone();
                    for e in m.iter().filter(|e| e.kind().has_content()) {
                        pu.files += 1;
                        pu.apparent_bytes += e.size();
                        let key = (*e.hash(), e.size());
                        let r = u.refs.entry(key).or_insert(Ref {
                            first: i,
                            projects: 0,
                            last: u32::MAX,
                        });
                        if r.last != i {
                            r.last = i;
                            r.projects += 1;
                            pu.blobs += 1;
                            pu.blob_bytes += e.size();
                            if r.first == i {
                                pu.new_blobs += 1;
                                pu.added_bytes += e.size();
                            } else {
                                pu.shared_blobs += 1;
                            }
                        }
                    }
                }
                Err(e) => pu.unreadable = Some(e.clone()),
            }
            u.projects.push(pu);
        }
        // Second pass: uniqueness needs the final reference counts.
        for (i, _, m) in &manifests {
            let Ok((m, _)) = m else { continue };
            let pu = &mut u.projects[*i];
            let mut seen = std::collections::HashSet::new();
            for e in m.iter().filter(|e| e.kind().has_content()) {
                let key = (*e.hash(), e.size());
                if let Some(r) = u.refs.get(&key) {
                    if r.projects == 1 && seen.insert(key) {
                        pu.unique_blobs += 1;
                        pu.unique_bytes += e.size();
                    }
                }
            }
        }
        for p in crate::roots::list(root)? {
            match crate::roots::open(&p) {
                Ok(m) => {
                    for e in m.iter().filter(|e| e.kind().has_content()) {
                        u.pending_refs.insert((*e.hash(), e.size()));
                    }
                    u.pending.push((p.manifest.clone(), p.alive, None));
                }
                Err(e) => u
                    .pending
                    .push((p.manifest.clone(), p.alive, Some(e.to_string()))),
            }
        }
        Ok(u)
    }

    /// Whether any registered manifest or pending root references the blob.
    pub fn is_referenced(&self, key: &BlobKey) -> bool {
        self.refs.contains_key(key) || self.pending_refs.contains(key)
    }

    /// Whether a registered project references the blob (pending roots aside).
    pub fn is_registered_ref(&self, key: &BlobKey) -> bool {
        self.refs.contains_key(key)
    }

    /// Why deleting orphans now could lose data: a project or pending root whose manifest
    /// cannot be read (so which blobs it needs is unknown). Empty when gc may delete.
    pub fn unsafe_to_delete(&self) -> Vec<String> {
        let mut why: Vec<String> = self
            .projects
            .iter()
            .filter_map(|p| {
                p.unreadable.as_ref().map(|e| {
                    format!(
                        "project {} ({}): no copy of its manifest is readable ({e}); fix it or \
                         `vrift forget {}`",
                        p.name, p.source, p.name
                    )
                })
            })
            .collect();
        for (path, _, err) in &self.pending {
            if let Some(e) = err {
                why.push(format!(
                    "pending root {}: unreadable ({e}); an interrupted ingest's only record",
                    path.display()
                ));
            }
        }
        why
    }

    /// Blobs that registered projects need but `present` lacks, per project that first
    /// referenced them: (project name, count, one example).
    pub fn missing(
        &self,
        present: &std::collections::HashSet<BlobKey>,
    ) -> Vec<(String, u64, BlobKey)> {
        let mut per: std::collections::BTreeMap<u32, (u64, BlobKey)> = Default::default();
        for (k, r) in &self.refs {
            if !present.contains(k) {
                let slot = per.entry(r.first).or_insert((0, *k));
                slot.0 += 1;
            }
        }
        per.into_iter()
            .map(|(i, (n, ex))| {
                let name = self
                    .projects
                    .get(i as usize)
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                (name, n, ex)
            })
            .collect()
    }

    /// Number of distinct blobs referenced by at least one project.
    pub fn referenced_blobs(&self) -> usize {
        self.refs.len()
    }

    /// Bytes of distinct referenced content.
    pub fn referenced_bytes(&self) -> u64 {
        self.refs.keys().map(|(_, s)| *s).sum()
    }

    /// Sum of all projects' apparent sizes (what they would take without dedup).
    pub fn apparent_bytes(&self) -> u64 {
        self.projects.iter().map(|p| p.apparent_bytes).sum()
    }
}
