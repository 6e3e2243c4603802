pub mod checkout;
pub mod ingest;

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
