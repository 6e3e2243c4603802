use anyhow::Result;
use vrift_cas::registry::{self, Registry};

use crate::args::RegistryArgs;
use crate::format::thousands;
use crate::{Globals, Outcome};

pub fn run(g: &Globals, a: &RegistryArgs) -> Result<Outcome> {
    let cas = super::open_store(g)?;
    if a.rebuild {
        let (reg, bad) = registry::rebuild(cas.root())?;
        for (p, e) in &bad {
            eprintln!("error: {}: {e}", p.display());
        }
        if g.json {
            println!(
                "{}",
                crate::output::versioned(
                    serde_json::json!({ "projects": reg.projects, "unreadable": bad.iter().map(|(p, e)| (p.display().to_string(), e)).collect::<Vec<_>>() })
                )
            );
        } else {
            println!(
                "Rebuilt the registry from cached manifests: {} projects",
                reg.projects.len()
            );
            for p in &reg.projects {
                println!(
                    "  {} ({} files) {}",
                    p.name,
                    thousands(p.files),
                    p.source.display()
                );
            }
        }
        return Ok(if bad.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed
        });
    }
    let reg = Registry::load(cas.root())?;
    if g.json {
        // `version` is the output's schema version; the registry file's own format version
        // goes under its own name (it used to be a second `version` key).
        println!(
            "{}",
            crate::output::versioned(serde_json::json!({
                "registry_version": reg.version,
                "projects": reg.projects,
            }))
        );
    } else {
        println!(
            "{} registered projects in {}",
            reg.projects.len(),
            super::tilde(cas.root())
        );
        for p in &reg.projects {
            println!(
                "  {}  {} files  source {}  manifest {}",
                p.name,
                thousands(p.files),
                p.source.display(),
                p.manifest.display()
            );
        }
    }
    Ok(Outcome::Ok)
}
