use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};
use vrift_cas::clean::{fix_perms, remove_store};
use vrift_cas::registry::Registry;

use crate::args::CleanArgs;
use crate::format::thousands;
use crate::{Globals, Outcome};

pub fn run(g: &Globals, a: &CleanArgs) -> Result<Outcome> {
    if !a.all || !a.force {
        eprintln!(
            "vrift clean deletes the entire store at {} (every blob; manifests stop working).\n\
             Say so explicitly: `vrift clean --all --force` (add --fix-perms to give ingested project\n\
             files their write bits back first, --yes to skip the confirmation).",
            super::tilde(&g.store)
        );
        return Ok(Outcome::Usage);
    }
    // Refuses anything without the blake3/ layout: a mistyped --the-source-root must never
    // wipe an arbitrary directory.
    let cas = super::open_store(g)?;
    let root = cas.root().to_path_buf();
    let reg = Registry::load(&root).unwrap_or_default();
    // The user's own files beside the store: refused before asking anything.
    let foreign = vrift_cas::clean::foreign_entries(&root)?;
    if !foreign.is_empty() {
        for p in foreign.iter().take(20) {
            eprintln!("  not vrift's: {}", p.display());
        }
        bail!(
            "{} also holds {} files or directories vrift did not make (listed above): refusing to delete it",
            root.display(),
            foreign.len()
        );
    }
    let phantoms = vrift_cas::clean::phantom_projects(&cas);
    if !phantoms.is_empty() {
        eprintln!(
            "warning: phantom projects ({}) exist only in the store: their files are deleted with it",
            phantoms.join(", ")
        );
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete {} without confirmation: pass --yes (non-interactive)",
                root.display()
            );
        }
        eprint!(
            "This deletes the whole store at {} ({} registered projects). Type the store path or 'yes' to confirm: ",
            root.display(),
            reg.projects.len()
        );
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let answer = line.trim();
        if answer != "yes" && answer != root.display().to_string() && answer != super::tilde(&root)
        {
            eprintln!("not confirmed; nothing deleted");
            return Ok(Outcome::Failed);
        }
    }
    let _lock = super::exclusive_lock(g, a.no_wait)?;
    let mut fixed = None;
    if a.fix_perms {
        let r = fix_perms(&cas)?;
        for (p, e) in &r.failed {
            eprintln!("error: {p}: {e}");
        }
        fixed = Some(r);
    }
    drop(cas);
    remove_store(&root)?;
    if g.json {
        println!(
            "{}",
            crate::output::versioned(serde_json::json!({ "removed": root, "fix_perms": fixed }))
        );
    } else {
        if let Some(r) = &fixed {
            println!(
                "Restored write bits on {} files, turned {} tier1 symlinks back into files",
                thousands(r.restored),
                thousands(r.materialized)
            );
        }
        println!("Removed the store at {}", root.display());
    }
    Ok(Outcome::Ok)
}
