pub mod checkout;
pub mod clean;
pub mod doctor;
pub mod gc;
pub mod gc_farms;
pub mod ingest;
pub mod init;
pub mod man;
pub mod registry;
pub mod remote;
pub mod run;
pub mod serve;
pub mod status;
pub mod verify;

use vrift_pipeline::{Issue, Severity};

/// Prints per-path problems on stderr, the first `limit` of each kind, then a count.
pub fn print_issues(issues: &[Issue], limit: usize) {
    for sev in [Severity::Error, Severity::Warning] {
        let of_kind: Vec<&Issue> = issues.iter().filter(|i| i.severity == sev).collect();
        let word = match sev {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        for i in of_kind.iter().take(limit) {
            eprintln!("{word}: {}: {}", i.path.display(), i.message);
        }
        if of_kind.len() > limit {
            eprintln!("{word}: ... and {} more", of_kind.len() - limit);
        }
    }
}

/// Opens an existing store for a maintenance command, with a message that says which.
pub fn open_store(g: &crate::Globals) -> anyhow::Result<vrift_cas::Cas> {
    use anyhow::Context;
    vrift_cas::Cas::open_existing(&g.store).with_context(|| {
        format!(
            "no vrift store at {} (nothing ingested yet?)",
            g.store.display()
        )
    })
}

/// Takes the exclusive store lock for a destructive command, saying whom it waits for.
pub fn exclusive_lock(
    g: &crate::Globals,
    no_wait: bool,
) -> anyhow::Result<vrift_cas::lock::StoreLock> {
    use vrift_cas::lock::{LockKind, StoreLock};
    let lock = StoreLock::acquire(&g.store, LockKind::Exclusive, !no_wait, |holders| {
        let who: Vec<String> = holders.iter().map(|h| format!("pid {}", h.pid)).collect();
        eprintln!(
            "waiting for the store lock held by {}",
            if who.is_empty() {
                "another process".to_string()
            } else {
                who.join(", ")
            }
        );
    })?;
    Ok(lock)
}

/// `~/x` for paths under the home directory, as the DESIGN.md examples print them.
pub fn tilde(p: &std::path::Path) -> String {
    if let Some(home) = std::env::var_os("HOME") {
        if let Ok(rest) = p.strip_prefix(&home) {
            return format!("~/{}", rest.display());
        }
    }
    p.display().to_string()
}
