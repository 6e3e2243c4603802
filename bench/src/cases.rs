//! The rows of the benchmark: what each one times and what it stands for.

use serde::Serialize;

/// One timed command. The order of [`Case::round`] is the order within a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    /// vrift first ingest of a fresh copy into a store that does not exist yet.
    IngestEmpty,
    /// vrift first ingest of a fresh copy into a store already holding the other corpus.
    IngestShared,
    /// vrift ingest of the `IngestEmpty` tree again, same store and `-o`.
    ReingestWarm,
    /// `cp -al` of the corpus.
    CpAl,
    /// `find -type f -printf '%s %T@\n'` over the corpus.
    Find,
    /// Parallel `b3sum` of every file of the corpus.
    B3sum,
    /// `pnpm install --offline --frozen-lockfile` of the corpus's lock file into a fresh
    /// project, from a pnpm store filled once beforehand: what pnpm users get on a warm CI
    /// cache. Its files/s counts the files of pnpm's own layout.
    PnpmOffline,
    /// `IngestEmpty` after `sync; echo 3 > /proc/sys/vm/drop_caches`.
    IngestEmptyCold,
    /// `B3sum` after `sync; echo 3 > /proc/sys/vm/drop_caches`.
    B3sumCold,
}

impl Case {
    /// Every case, in the order a round runs them.
    pub const ALL: [Case; 9] = [
        Case::IngestEmpty,
        Case::IngestShared,
        Case::ReingestWarm,
        Case::CpAl,
        Case::Find,
        Case::B3sum,
        Case::PnpmOffline,
        Case::IngestEmptyCold,
        Case::B3sumCold,
    ];

    /// The cases of one round, in the order they run.
    pub fn round(cold: bool, pnpm: bool) -> Vec<Case> {
        Case::ALL
            .into_iter()
            .filter(|c| (pnpm || *c != Case::PnpmOffline) && (cold || !c.is_cold()))
            .collect()
    }

    /// Stable name used in the JSON record.
    pub fn id(self) -> &'static str {
        match self {
            Case::IngestEmpty => "ingest_empty",
            Case::IngestShared => "ingest_shared",
            Case::ReingestWarm => "reingest_warm",
            Case::CpAl => "cp_al",
            Case::Find => "find",
            Case::B3sum => "b3sum",
            Case::PnpmOffline => "pnpm_offline",
            Case::IngestEmptyCold => "ingest_empty_cold",
            Case::B3sumCold => "b3sum_cold",
        }
    }

    /// Row name in the printed table.
    pub fn label(self) -> &'static str {
        match self {
            Case::IngestEmpty => "vrift ingest, empty store",
            Case::IngestShared => "vrift ingest, shared store",
            Case::ReingestWarm => "vrift re-ingest (warm)",
            Case::CpAl => "cp -al",
            Case::Find => "find -printf",
            Case::B3sum => "b3sum (parallel)",
            Case::PnpmOffline => "pnpm install --offline (warm store)",
            Case::IngestEmptyCold => "vrift ingest, empty store, cold",
            Case::B3sumCold => "b3sum (parallel), cold",
        }
    }

    pub fn is_vrift(self) -> bool {
        matches!(
            self,
            Case::IngestEmpty | Case::IngestShared | Case::ReingestWarm | Case::IngestEmptyCold
        )
    }

    /// The rows of the files/s chart, in drawing order.
    pub const CHART: [Case; 4] = [
        Case::IngestEmpty,
        Case::ReingestWarm,
        Case::CpAl,
        Case::PnpmOffline,
    ];

    /// Short name for the chart's legend.
    pub fn chart_label(self) -> &'static str {
        match self {
            Case::IngestEmpty => "vrift first ingest (empty store)",
            Case::ReingestWarm => "vrift re-ingest (warm)",
            Case::CpAl => "cp -al",
            Case::PnpmOffline => "pnpm install --offline (warm store)",
            other => other.label(),
        }
    }

    /// The case with this [`Case::id`] (reading records back).
    pub fn from_id(id: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.id() == id)
    }

    pub fn is_cold(self) -> bool {
        matches!(self, Case::IngestEmptyCold | Case::B3sumCold)
    }
}

/// A ratio the issue sets a goal for: `numerator` median over `denominator` median.
pub struct RatioDef {
    pub name: &'static str,
    pub numerator: Case,
    pub denominator: Case,
    /// Upper bound from issue 2 (goals stated for `medium`), if there is one.
    pub goal_max: Option<f64>,
}

pub const RATIOS: &[RatioDef] = &[
    RatioDef {
        name: "shared-store ingest / cp -al",
        numerator: Case::IngestShared,
        denominator: Case::CpAl,
        goal_max: Some(1.5),
    },
    RatioDef {
        name: "warm re-ingest / find",
        numerator: Case::ReingestWarm,
        denominator: Case::Find,
        goal_max: Some(1.2),
    },
    RatioDef {
        name: "cold ingest / cold b3sum",
        numerator: Case::IngestEmptyCold,
        denominator: Case::B3sumCold,
        goal_max: Some(1.3),
    },
    RatioDef {
        name: "empty-store ingest / b3sum (warm)",
        numerator: Case::IngestEmpty,
        denominator: Case::B3sum,
        goal_max: None,
    },
];

/// A throughput floor from issue 2 (stated for `medium`).
pub struct RateGoal {
    pub case: Case,
    pub min_files_per_sec: f64,
}

pub const RATE_GOALS: &[RateGoal] = &[
    RateGoal {
        case: Case::IngestEmpty,
        min_files_per_sec: 30_000.0,
    },
    RateGoal {
        case: Case::IngestShared,
        min_files_per_sec: 60_000.0,
    },
    RateGoal {
        case: Case::ReingestWarm,
        min_files_per_sec: 450_000.0,
    },
];

/// Peak memory ceiling for any vrift run (issue 2).
pub const MAX_RSS_GOAL_MB: f64 = 80.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_leaves_out_what_was_not_asked_for_and_keeps_the_order() {
        assert_eq!(Case::round(true, true), Case::ALL.to_vec());
        let plain = Case::round(false, false);
        assert_eq!(plain, Case::ALL[..6].to_vec());
        assert!(Case::round(true, false).ends_with(&[Case::IngestEmptyCold, Case::B3sumCold]));
        for c in Case::ALL {
            assert_eq!(Case::from_id(c.id()), Some(c));
        }
    }
}
