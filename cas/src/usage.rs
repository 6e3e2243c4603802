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
    /// Blobs referenced by this project only.
    pub unique_blobs: u64,
    /// Blobs this project shares with a project registered before it.
    pub shared_blobs: u64,
    /// Bytes of blobs this project added to the store (first referenced by it).
    pub added_bytes: u64,
    /// Bytes of blobs only this project references (what deleting it would free).
    pub unique_bytes: u64,
    pub last_ingest_unix: u64,
    /// The cached manifest could not be read (reported by doctor).
    pub unreadable: Option<String>,
}

#[derive(Debug, Default)]
pub struct Usage {
    refs: HashMap<BlobKey, Ref>,
    pub projects: Vec<ProjectUsage>,
}

impl Usage {
    /// Loads every registered project's cached manifest and indexes its blobs.
    pub fn load(root: &Path, registry: &Registry) -> Result<Usage> {
        let mut u = Usage::default();
        let manifests: Vec<(usize, &Project, std::result::Result<Manifest, String>)> = registry
            .projects
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    i,
                    p,
                    Manifest::open(&root.join(&p.cached_manifest)).map_err(|e| e.to_string()),
                )
            })
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
                Ok(m) => {
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
            let Ok(m) = m else { continue };
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
        Ok(u)
    }

    /// Whether any registered manifest references the blob.
    pub fn is_referenced(&self, key: &BlobKey) -> bool {
        self.refs.contains_key(key)
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
