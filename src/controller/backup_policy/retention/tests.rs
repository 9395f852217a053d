//! Tests of [`super`].

use super::*;
use crate::api::BackupRun;
use crate::api::backup_policy::PIN_LABEL;
use crate::api::backup_run::BackupRunPhase;
use crate::api::backup_run::is_pinned;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
        .to_utc()
}

fn run(name: &str, completed_at: &str) -> RetentionRun {
    RetentionRun {
        name: name.to_owned(),
        completed_at: utc(completed_at),
        pinned: false,
        retain_until: None,
        origin: RunOrigin::Schedule,
    }
}

/// Daily runs at `hh:mm` UTC for `days` days ending on `last_day`, named `d<date>`.
fn daily_runs(last_day: &str, days: i64, hhmm: &str) -> Vec<RetentionRun> {
    let last: NaiveDate = last_day.parse().unwrap();
    (0..days)
        .map(|i| {
            let day = last - TimeDelta::days(i);
            run(&format!("d{day}"), &format!("{day}T{hhmm}:00Z"))
        })
        .collect()
}

fn kept(plan: &RetentionPlan) -> Vec<&str> {
    let mut v: Vec<&str> = plan.kept().collect();
    v.sort_unstable();
    v
}

fn reasons<'a>(plan: &'a RetentionPlan, name: &str) -> &'a [KeepReason] {
    match &plan
        .decisions
        .iter()
        .find(|d| d.name == name)
        .unwrap()
        .verdict
    {
        Verdict::Keep(r) => r,
        Verdict::Prune(p) => panic!("{name} pruned: {p}"),
    }
}

fn prune_reason<'a>(plan: &'a RetentionPlan, name: &str) -> &'a PruneReason {
    match &plan
        .decisions
        .iter()
        .find(|d| d.name == name)
        .unwrap()
        .verdict
    {
        Verdict::Prune(p) => p,
        Verdict::Keep(r) => panic!("{name} kept: {r:?}"),
    }
}

const NOW: &str = "2026-11-22T12:00:00Z";

#[test]
fn empty_input_gives_an_empty_plan() {
    let policy = RetentionPolicy {
        keep_last: Some(3),
        max_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let plan = plan_retention(&[], &policy, Tz::UTC, utc(NOW));
    assert!(plan.decisions.is_empty());
    assert_eq!(plan.requeue_at, None);
}

#[test]
fn keep_last_keeps_the_newest_n_in_any_input_order() {
    let mut runs = daily_runs("2026-11-21", 5, "02:00");
    runs.reverse();
    let policy = RetentionPolicy {
        keep_last: Some(3),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(kept(&plan), ["d2026-11-19", "d2026-11-20", "d2026-11-21"]);
    assert_eq!(
        reasons(&plan, "d2026-11-21"),
        [KeepReason::Last { rank: 1, of: 3 }]
    );
    assert_eq!(reasons(&plan, "d2026-11-19")[0].to_string(), "last 3 (#3)");
    assert_eq!(
        plan.pruned().collect::<Vec<_>>(),
        ["d2026-11-17", "d2026-11-18"],
        "oldest first"
    );
    assert_eq!(
        prune_reason(&plan, "d2026-11-17"),
        &PruneReason::NotSelected
    );
    // Decisions come newest first.
    assert_eq!(plan.decisions[0].name, "d2026-11-21");
}

#[test]
fn daily_keeps_the_newest_run_of_each_day_that_has_runs() {
    let runs = vec![
        run("a", "2026-11-21T01:00:00Z"),
        run("b", "2026-11-21T13:00:00Z"), // newest of the 21st
        run("c", "2026-11-20T09:00:00Z"),
        // no runs on the 19th and 18th: those days do not count
        run("d", "2026-11-17T08:00:00Z"),
        run("e", "2026-11-17T20:00:00Z"),
        run("f", "2026-11-16T20:00:00Z"),
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(3),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(kept(&plan), ["b", "c", "e"]);
    assert_eq!(reasons(&plan, "e")[0].to_string(), "daily 2026-11-17");
}

#[test]
fn buckets_use_the_policy_time_zone() {
    // 01:30Z on the 21st is still the 20th in Sao Paulo (-03) and already the 21st in Berlin.
    let runs = vec![
        run("late", "2026-11-21T01:30:00Z"),
        run("evening", "2026-11-20T22:00:00Z"),
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(5),
        ..Default::default()
    };
    let sp = plan_retention(&runs, &policy, chrono_tz::America::Sao_Paulo, utc(NOW));
    assert_eq!(kept(&sp), ["late"], "same local day in Sao Paulo");
    assert_eq!(
        reasons(&sp, "late"),
        [KeepReason::Daily("2026-11-20".parse().unwrap())]
    );
    let utc_plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(kept(&utc_plan), ["evening", "late"]);
    let berlin = plan_retention(&runs, &policy, chrono_tz::Europe::Berlin, utc(NOW));
    assert_eq!(kept(&berlin), ["evening", "late"]);
}

#[test]
fn the_fall_back_hour_is_one_day_bucket() {
    // 01:30 EDT and 01:30 EST on 2026-11-01 are the same New York day.
    let runs = vec![
        run("first", "2026-11-01T05:30:00Z"),
        run("second", "2026-11-01T06:30:00Z"),
        run("before", "2026-10-31T05:30:00Z"),
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(2),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, chrono_tz::America::New_York, utc(NOW));
    assert_eq!(kept(&plan), ["before", "second"]);
}

#[test]
fn iso_weeks_cross_the_year_boundary() {
    // 2026 has 53 ISO weeks: Mon 2026-12-28 .. Sun 2027-01-03 is 2026-W53.
    let runs = vec![
        run("w01", "2027-01-04T10:00:00Z"),
        run("sun", "2027-01-03T10:00:00Z"),
        run("new-year", "2027-01-01T10:00:00Z"),
        run("dec31", "2026-12-31T10:00:00Z"),
        run("dec27", "2026-12-27T10:00:00Z"),
    ];
    let policy = RetentionPolicy {
        keep_weekly: Some(3),
        keep_yearly: Some(2),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc("2027-01-05T00:00:00Z"));
    assert_eq!(
        reasons(&plan, "w01"),
        [
            KeepReason::Weekly {
                year: 2027,
                week: 1
            },
            KeepReason::Yearly(2027)
        ]
    );
    assert_eq!(reasons(&plan, "sun")[0].to_string(), "weekly 2026-W53");
    assert_eq!(reasons(&plan, "dec31"), [KeepReason::Yearly(2026)]);
    assert_eq!(reasons(&plan, "dec27")[0].to_string(), "weekly 2026-W52");
    assert_eq!(prune_reason(&plan, "new-year"), &PruneReason::NotSelected);
}

#[test]
fn leap_days_and_months() {
    let runs = vec![
        run("mar1", "2028-03-01T00:30:00Z"),
        run("feb29", "2028-02-29T23:00:00Z"),
        run("feb28", "2028-02-28T23:00:00Z"),
        run("jan", "2028-01-31T23:00:00Z"),
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(2),
        keep_monthly: Some(3),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc("2028-03-02T00:00:00Z"));
    assert_eq!(
        reasons(&plan, "feb29"),
        [
            KeepReason::Daily("2028-02-29".parse().unwrap()),
            KeepReason::Monthly {
                year: 2028,
                month: 2
            }
        ]
    );
    assert_eq!(reasons(&plan, "jan")[0].to_string(), "monthly 2028-01");
    assert!(
        !plan
            .decisions
            .iter()
            .find(|d| d.name == "feb28")
            .unwrap()
            .is_kept()
    );
    // In Berlin (+01) 2028-02-29T23:00Z is already March 1st.
    let plan = plan_retention(
        &runs,
        &policy,
        chrono_tz::Europe::Berlin,
        utc("2028-03-02T00:00:00Z"),
    );
    assert_eq!(
        reasons(&plan, "mar1"),
        [
            KeepReason::Daily("2028-03-01".parse().unwrap()),
            KeepReason::Monthly {
                year: 2028,
                month: 3
            }
        ]
    );
    assert_eq!(
        reasons(&plan, "feb28")[0],
        KeepReason::Daily("2028-02-29".parse().unwrap())
    );
}

/// USER-PAINS #12: the seed app summed daily/weekly/monthly into one count. Here the rules
/// are independent and a run is kept if any rule keeps it.
#[test]
fn rules_are_independent_not_summed() {
    // 90 daily backups ending Sunday 2026-11-22.
    let runs = daily_runs("2026-11-22", 90, "02:00");
    let policy = RetentionPolicy {
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(3),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(
        kept(&plan),
        [
            // monthly: newest of Sep, Oct (Nov's newest is the 22nd)
            "d2026-09-30",
            "d2026-10-31",
            // weekly: newest (Sunday) of W44, W45 (W46's is the 15th, W47's the 22nd)
            "d2026-11-01",
            "d2026-11-08",
            "d2026-11-15",
            // daily: the last 7 days
            "d2026-11-16",
            "d2026-11-17",
            "d2026-11-18",
            "d2026-11-19",
            "d2026-11-20",
            "d2026-11-21",
            "d2026-11-22",
        ]
    );
    // 12 kept, not 7 + 4 + 3 = 14 (overlaps) and not "the newest 14".
    assert_eq!(
        reasons(&plan, "d2026-11-22"),
        [
            KeepReason::Daily("2026-11-22".parse().unwrap()),
            KeepReason::Weekly {
                year: 2026,
                week: 47
            },
            KeepReason::Monthly {
                year: 2026,
                month: 11
            }
        ]
    );
    assert_eq!(plan.requeue_at, None);
}

#[test]
fn pinned_runs_are_never_pruned_but_still_count() {
    let mut runs = daily_runs("2026-11-21", 4, "02:00");
    runs[3].pinned = true; // the oldest, 2026-11-18
    runs[0].pinned = true; // the newest
    let policy = RetentionPolicy {
        keep_last: Some(2),
        max_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(reasons(&plan, "d2026-11-18"), [KeepReason::Pinned]);
    // The pinned newest run counts towards keepLast: only one more is kept by it.
    assert_eq!(
        reasons(&plan, "d2026-11-21"),
        [KeepReason::Last { rank: 1, of: 2 }, KeepReason::Pinned]
    );
    // d2026-11-20 is kept by keepLast but older than maxAge: pruned, rule overridden.
    match prune_reason(&plan, "d2026-11-20") {
        PruneReason::MaxAgeExceeded { overridden, .. } => {
            assert_eq!(overridden, &[KeepReason::Last { rank: 2, of: 2 }]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !plan
            .decisions
            .iter()
            .find(|d| d.name == "d2026-11-19")
            .unwrap()
            .is_kept()
    );
}

#[test]
fn object_locked_runs_wait_for_their_lock_and_requeue_at_the_earliest_expiry() {
    let mut runs = daily_runs("2026-11-21", 4, "02:00");
    runs[2].retain_until = Some(utc("2026-12-10T00:00:00Z")); // d2026-11-19
    runs[3].retain_until = Some(utc("2026-12-01T00:00:00Z")); // d2026-11-18
    runs[1].retain_until = Some(utc("2026-11-01T00:00:00Z")); // expired lock
    runs[0].retain_until = Some(utc("2026-11-25T00:00:00Z")); // kept anyway
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(
        reasons(&plan, "d2026-11-18"),
        [KeepReason::ObjectLocked {
            until: utc("2026-12-01T00:00:00Z")
        }]
    );
    assert!(
        reasons(&plan, "d2026-11-19")[0]
            .to_string()
            .starts_with("object-locked until 2026-12-10")
    );
    assert_eq!(
        prune_reason(&plan, "d2026-11-20"),
        &PruneReason::NotSelected
    );
    assert_eq!(
        reasons(&plan, "d2026-11-21"),
        [
            KeepReason::Last { rank: 1, of: 1 },
            KeepReason::ObjectLocked {
                until: utc("2026-11-25T00:00:00Z")
            }
        ]
    );
    // The newest's lock changes nothing when it expires: not a requeue time.
    assert_eq!(plan.requeue_at, Some(utc("2026-12-01T00:00:00Z")));

    // After the earliest lock expired, that run is pruned.
    let later = plan_retention(&runs, &policy, Tz::UTC, utc("2026-12-01T00:00:00Z"));
    assert_eq!(
        prune_reason(&later, "d2026-11-18"),
        &PruneReason::NotSelected
    );
    assert_eq!(later.requeue_at, Some(utc("2026-12-10T00:00:00Z")));
}

#[test]
fn max_age_caps_keep_rules_but_never_prunes_the_newest_backup() {
    let runs = daily_runs("2026-11-21", 10, "12:00");
    let policy = RetentionPolicy {
        keep_daily: Some(30),
        max_age: Some(Duration::from_secs(5 * 86_400)),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    // Ages 1..=10 days: ages >= 5 days are pruned.
    assert_eq!(
        kept(&plan),
        ["d2026-11-18", "d2026-11-19", "d2026-11-20", "d2026-11-21"]
    );
    let msg = prune_reason(&plan, "d2026-11-17").to_string();
    assert_eq!(
        msg,
        "age 432000s reached maxAge 432000s (overrides daily 2026-11-17)"
    );
    // The next change by time alone: d2026-11-18 reaches 5 days.
    assert_eq!(plan.requeue_at, Some(utc("2026-11-23T12:00:00Z")));

    // Backups stopped 40 days ago: the newest one survives maxAge.
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc("2027-01-01T00:00:00Z"));
    assert_eq!(kept(&plan), ["d2026-11-21"]);
    assert_eq!(
        reasons(&plan, "d2026-11-21"),
        [
            KeepReason::Daily("2026-11-21".parse().unwrap()),
            KeepReason::NewestBackup
        ]
    );
    assert_eq!(plan.requeue_at, None);
}

#[test]
fn without_keep_rules_everything_is_kept_unless_max_age_says_otherwise() {
    let runs = daily_runs("2026-11-21", 3, "12:00");
    for policy in [
        RetentionPolicy::default(),
        RetentionPolicy {
            keep_last: Some(0),
            keep_daily: Some(0),
            ..Default::default()
        },
    ] {
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(kept(&plan).len(), 3);
        assert_eq!(reasons(&plan, "d2026-11-19"), [KeepReason::NoKeepRules]);
        assert_eq!(plan.requeue_at, None);
    }
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(5 * 43_200)),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(kept(&plan), ["d2026-11-20", "d2026-11-21"]);
    assert!(matches!(
        prune_reason(&plan, "d2026-11-19"),
        PruneReason::MaxAgeExceeded { overridden, .. } if overridden == &[KeepReason::NoKeepRules]
    ));
    assert_eq!(plan.requeue_at, Some(utc("2026-11-23T00:00:00Z")));
}

#[test]
fn runs_completed_at_the_same_instant_are_ordered_by_name() {
    let runs = vec![
        run("b", "2026-11-21T02:00:00Z"),
        run("a", "2026-11-21T02:00:00Z"),
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(1),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    assert_eq!(kept(&plan), ["b"]);
    let swapped: Vec<_> = runs.iter().rev().cloned().collect();
    assert_eq!(plan_retention(&swapped, &policy, Tz::UTC, utc(NOW)), plan);
}

// ---- run history ----

fn loc(storage: &str, run: &str) -> ArtifactLocation {
    ArtifactLocation {
        storage: storage.to_owned(),
        data_key: format!("shop/{run}/backup.dump.zst.age"),
        manifest_key: format!("shop/{run}/manifest.json"),
    }
}

fn hrun(name: &str, phase: FinishedPhase, at: &str, artifact: bool, retained: bool) -> HistoryRun {
    HistoryRun {
        name: name.to_owned(),
        phase,
        finished_at: utc(at),
        artifacts: if artifact {
            vec![loc("main", name)]
        } else {
            vec![]
        },
        artifact_retained: retained,
        retain_until: None,
    }
}

use FinishedPhase::{Failed, Succeeded};

#[test]
fn pruned_artifacts_are_deleted_manifest_first_then_the_run() {
    let mut pruned = hrun("old", Succeeded, "2026-11-01T02:00:00Z", true, false);
    pruned.artifacts.push(loc("replica", "old"));
    let runs = vec![
        hrun("kept", Succeeded, "2026-11-21T02:00:00Z", true, true),
        pruned,
    ];
    let plan = run_history_plan(
        &runs,
        RunHistoryLimits {
            successful: 0,
            failed: 0,
        },
        utc(NOW),
    );
    assert_eq!(
        plan.cleanups,
        [RunCleanup {
            run: "old".into(),
            cause: CleanupCause::RetentionPruned,
            actions: vec![
                CleanupAction::DeleteManifest {
                    storage: "main".into(),
                    key: "shop/old/manifest.json".into()
                },
                CleanupAction::DeleteManifest {
                    storage: "replica".into(),
                    key: "shop/old/manifest.json".into()
                },
                CleanupAction::DeleteArtifactData {
                    storage: "main".into(),
                    key: "shop/old/backup.dump.zst.age".into()
                },
                CleanupAction::DeleteArtifactData {
                    storage: "replica".into(),
                    key: "shop/old/backup.dump.zst.age".into()
                },
                CleanupAction::DeleteBackupRun,
            ]
        }],
        "a retained artifact's run is never deleted, even with successful: 0"
    );
}

#[test]
fn history_limits_apply_per_phase_newest_first() {
    let runs = vec![
        hrun("f1", Failed, "2026-11-21T02:00:00Z", false, false),
        hrun("f2", Failed, "2026-11-20T02:00:00Z", true, false), // partial upload
        hrun("f3", Failed, "2026-11-19T02:00:00Z", false, false),
        hrun("s-gone-1", Succeeded, "2026-11-18T02:00:00Z", false, false),
        hrun("s-gone-2", Succeeded, "2026-11-17T02:00:00Z", false, false),
        hrun("s-kept", Succeeded, "2026-11-01T02:00:00Z", true, true),
    ];
    let plan = run_history_plan(
        &runs,
        RunHistoryLimits {
            successful: 1,
            failed: 1,
        },
        utc(NOW),
    );
    let summary: Vec<(&str, usize)> = plan
        .cleanups
        .iter()
        .map(|c| (c.run.as_str(), c.actions.len()))
        .collect();
    assert_eq!(
        summary,
        [("s-gone-2", 1), ("f3", 1), ("f2", 3)],
        "oldest first"
    );
    assert!(
        plan.cleanups
            .iter()
            .all(|c| c.cause == CleanupCause::HistoryLimit)
    );
    assert!(matches!(
        plan.cleanups[2].actions[0],
        CleanupAction::DeleteManifest { .. }
    ));
    assert_eq!(plan.cleanups[2].actions[2], CleanupAction::DeleteBackupRun);
}

#[test]
fn locked_partial_artifacts_defer_the_cleanup() {
    let mut f = hrun("f-locked", Failed, "2026-11-20T02:00:00Z", true, false);
    f.retain_until = Some(utc("2026-12-20T00:00:00Z"));
    let runs = vec![
        hrun("f-new", Failed, "2026-11-21T02:00:00Z", false, false),
        f,
    ];
    let limits = RunHistoryLimits {
        successful: 3,
        failed: 1,
    };
    let plan = run_history_plan(&runs, limits, utc(NOW));
    assert!(plan.cleanups.is_empty());
    assert_eq!(plan.deferred, ["f-locked"]);
    assert_eq!(plan.requeue_at, Some(utc("2026-12-20T00:00:00Z")));
    let plan = run_history_plan(&runs, limits, utc("2026-12-20T00:00:00Z"));
    assert_eq!(plan.cleanups.len(), 1);
    assert!(plan.deferred.is_empty());
}

#[test]
fn empty_history_plans_nothing() {
    let plan = run_history_plan(
        &[],
        RunHistoryLimits {
            successful: 0,
            failed: 0,
        },
        utc(NOW),
    );
    assert!(plan.cleanups.is_empty() && plan.deferred.is_empty() && plan.requeue_at.is_none());
}

#[test]
fn retention_feeds_the_history_plan() {
    let runs = daily_runs("2026-11-21", 5, "02:00");
    let policy = RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    };
    let retention = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
    let history: Vec<HistoryRun> = retention
        .decisions
        .iter()
        .map(|d| HistoryRun {
            name: d.name.clone(),
            phase: Succeeded,
            finished_at: d.completed_at,
            artifacts: vec![loc("main", &d.name)],
            artifact_retained: d.is_kept(),
            retain_until: None,
        })
        .collect();
    let plan = run_history_plan(
        &history,
        RunHistoryLimits {
            successful: 10,
            failed: 1,
        },
        utc(NOW),
    );
    let deleted: Vec<&str> = plan.cleanups.iter().map(|c| c.run.as_str()).collect();
    assert_eq!(deleted, ["d2026-11-17", "d2026-11-18", "d2026-11-19"]);
    assert_eq!(deleted, retention.pruned().collect::<Vec<_>>());
}

// ---- API adapters ----

#[test]
fn retention_policy_from_the_spec() {
    assert_eq!(
        RetentionPolicy::from_spec(None),
        Ok(RetentionPolicy::default())
    );
    let spec = Retention {
        keep_last: Some(7),
        keep_weekly: Some(4),
        max_age: Some("1w2d".into()),
        ..Default::default()
    };
    let p = RetentionPolicy::from_spec(Some(&spec)).unwrap();
    assert_eq!(p.keep_last, Some(7));
    assert_eq!(p.keep_weekly, Some(4));
    assert_eq!(p.max_age, Some(Duration::from_secs(9 * 86_400)));
    let bad = Retention {
        max_age: Some("forever".into()),
        ..Default::default()
    };
    let err = RetentionPolicy::from_spec(Some(&bad)).unwrap_err();
    assert!(err.contains("\"forever\""), "{err}");
}

#[test]
fn retention_runs_from_backup_runs() {
    let from_run = |run: &BackupRun| {
        RetentionRun::from_finished(&FinishedRun::from_run(run).expect("a finished run"))
    };
    let run: BackupRun = serde_yaml::from_str(
        r#"
metadata: {name: r1, namespace: shop, labels: {dataguardian.io/pin: "true"}}
spec: {policyRef: {name: nightly}}
status:
  phase: Succeeded
  completionTime: "2026-11-21T02:10:00Z"
  artifact: {storage: main, key: k, retainUntil: "2026-12-21T02:10:00Z"}
"#,
    )
    .unwrap();
    let r = from_run(&run).unwrap();
    assert_eq!(r.name, "r1");
    assert_eq!(r.completed_at, utc("2026-11-21T02:10:00Z"));
    assert!(r.pinned);
    assert_eq!(r.retain_until, Some(utc("2026-12-21T02:10:00Z")));

    let mut unpinned = run.clone();
    unpinned
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(PIN_LABEL.into(), "False".into());
    assert!(!from_run(&unpinned).unwrap().pinned);
    let mut odd = run.clone();
    odd.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(PIN_LABEL.into(), "".into());
    assert!(is_pinned(&odd), "an empty value still pins");

    let mut failed = run.clone();
    failed.status.as_mut().unwrap().phase = Some(BackupRunPhase::Failed);
    assert_eq!(from_run(&failed), None);
    let mut running = run;
    running.status.as_mut().unwrap().completion_time = None;
    assert_eq!(from_run(&running), None);
}

// ---- randomized invariants ----

/// Tiny deterministic PRNG for test inputs (xorshift64*).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn verdicts(plan: &RetentionPlan) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = plan
        .decisions
        .iter()
        .map(|d| (d.name.clone(), d.is_kept()))
        .collect();
    v.sort();
    v
}

/// Independent oracle for one bucket rule: group by bucket, order buckets by their newest
/// run, take the first `n`, and name the newest run of each.
fn oracle_bucket(
    runs: &[RetentionRun],
    n: u32,
    key: impl Fn(&RetentionRun) -> KeepReason,
) -> Vec<(String, KeepReason)> {
    let mut buckets: Vec<(KeepReason, &RetentionRun)> = Vec::new();
    for run in runs {
        let k = key(run);
        match buckets.iter_mut().find(|(bk, _)| *bk == k) {
            Some((_, best)) => {
                if (run.completed_at, &run.name) > (best.completed_at, &best.name) {
                    *best = run;
                }
            }
            None => buckets.push((k, run)),
        }
    }
    buckets.sort_by(|a, b| (b.1.completed_at, &b.1.name).cmp(&(a.1.completed_at, &a.1.name)));
    buckets
        .into_iter()
        .take(n as usize)
        .map(|(k, r)| (r.name.clone(), k))
        .collect()
}

#[test]
fn random_histories_keep_the_documented_invariants() {
    let zones = [
        Tz::UTC,
        chrono_tz::America::Sao_Paulo,
        chrono_tz::Europe::Berlin,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Pacific::Kiritimati,
    ];
    let mut seed = 0x0123_4567_89ab_cdef_u64;
    let start = utc("2025-12-20T00:00:00Z");
    for case in 0..300 {
        let rnd = &mut seed;
        let count = (next_random(rnd) % 60) as usize;
        let mut runs: Vec<RetentionRun> = (0..count)
            .map(|i| {
                // Mostly spread over ~3 years, sometimes clustered in one day.
                let span = if next_random(rnd).is_multiple_of(4) {
                    86_400
                } else {
                    3 * 365 * 86_400
                };
                let at = start + TimeDelta::seconds((next_random(rnd) % span) as i64);
                RetentionRun {
                    name: format!("r{case}-{i:02}"),
                    completed_at: at,
                    pinned: next_random(rnd).is_multiple_of(10),
                    retain_until: (next_random(rnd).is_multiple_of(5))
                        .then(|| at + TimeDelta::days((next_random(rnd) % 900) as i64)),
                    origin: RunOrigin::Schedule,
                }
            })
            .collect();
        if count > 3 && next_random(rnd).is_multiple_of(3) {
            runs[1].completed_at = runs[0].completed_at; // same instant
        }
        let mut rule = || {
            let v = next_random(rnd) % 7;
            (v < 6).then_some(v as u32) // None or 0..=5
        };
        let policy = RetentionPolicy {
            keep_last: rule(),
            keep_daily: rule(),
            keep_weekly: rule(),
            keep_monthly: rule(),
            keep_yearly: rule(),
            max_age: (next_random(rnd).is_multiple_of(2))
                .then(|| Duration::from_secs(86_400 * (1 + next_random(rnd) % 800))),
        };
        let tz = zones[(next_random(rnd) % zones.len() as u64) as usize];
        let now = start + TimeDelta::days(3 * 365 + (next_random(rnd) % 400) as i64);
        let plan = plan_retention(&runs, &policy, tz, now);
        let ctx = format!("case {case}: {policy:?} in {tz}");

        assert_eq!(plan.decisions.len(), runs.len(), "{ctx}");
        let newest = plan.decisions.first().map(|d| d.name.clone());
        let has_rules = policy.has_keep_rules();
        let reasons_of = |name: &str| -> Vec<KeepReason> {
            match &plan
                .decisions
                .iter()
                .find(|d| d.name == name)
                .unwrap()
                .verdict
            {
                Verdict::Keep(r) => r.clone(),
                Verdict::Prune(PruneReason::MaxAgeExceeded { overridden, .. }) => {
                    overridden.clone()
                }
                Verdict::Prune(PruneReason::NotSelected) => vec![],
            }
        };

        // Each bucket rule selects exactly what the oracle selects.
        let local = |r: &RetentionRun| r.completed_at.with_timezone(&tz);
        type BucketKey<'a> = Box<dyn Fn(&RetentionRun) -> KeepReason + 'a>;
        let rules: [(Option<u32>, BucketKey); 4] = [
            (
                policy.keep_daily,
                Box::new(|r| KeepReason::Daily(local(r).date_naive())),
            ),
            (
                policy.keep_weekly,
                Box::new(|r| KeepReason::Weekly {
                    year: local(r).iso_week().year(),
                    week: local(r).iso_week().week(),
                }),
            ),
            (
                policy.keep_monthly,
                Box::new(|r| KeepReason::Monthly {
                    year: local(r).year(),
                    month: local(r).month(),
                }),
            ),
            (
                policy.keep_yearly,
                Box::new(|r| KeepReason::Yearly(local(r).year())),
            ),
        ];
        // A run kept only for its Object Lock after maxAge overrode its rules reports just
        // the lock (the overridden rules would mislead); every other run reports its rules.
        let lock_only = |run: &RetentionRun| {
            let age = (now - run.completed_at).to_std().unwrap_or_default();
            matches!(
                &plan.decisions.iter().find(|d| d.name == run.name).unwrap().verdict,
                Verdict::Keep(r) if matches!(r.as_slice(), [KeepReason::ObjectLocked { .. }])
            ) && policy.max_age.is_some_and(|m| age >= m)
        };
        for (n, key) in rules {
            let expected = oracle_bucket(&runs, n.unwrap_or(0), &key);
            for run in runs.iter().filter(|r| !lock_only(r)) {
                let kind = std::mem::discriminant(&key(run));
                let got: Vec<KeepReason> = reasons_of(&run.name)
                    .into_iter()
                    .filter(|r| std::mem::discriminant(r) == kind)
                    .collect();
                let want: Vec<KeepReason> = expected
                    .iter()
                    .filter(|(name, _)| *name == run.name)
                    .map(|(_, k)| k.clone())
                    .collect();
                assert_eq!(got, want, "{ctx}: {} ({})", run.name, run.completed_at);
            }
        }
        // keepLast marks the n newest.
        let last = policy.keep_last.unwrap_or(0) as usize;
        for (i, d) in plan.decisions.iter().enumerate() {
            if lock_only(runs.iter().find(|r| r.name == d.name).unwrap()) {
                continue;
            }
            let marked = reasons_of(&d.name)
                .iter()
                .any(|r| matches!(r, KeepReason::Last { .. }));
            assert_eq!(marked, i < last, "{ctx}: {}", d.name);
        }

        // The verdict follows the documented rules.
        for run in &runs {
            let decision = plan.decisions.iter().find(|d| d.name == run.name).unwrap();
            let age = (now - run.completed_at).to_std().unwrap_or_default();
            let expired = policy.max_age.is_some_and(|m| age >= m);
            let selected = !has_rules
                || reasons_of(&run.name).iter().any(|r| {
                    !matches!(r, KeepReason::NoKeepRules | KeepReason::ObjectLocked { .. })
                });
            let locked = run.retain_until.is_some_and(|u| u > now);
            let expected = run.pinned
                || locked
                || newest.as_deref() == Some(run.name.as_str())
                || (selected && !expired);
            assert_eq!(
                decision.is_kept(),
                expected,
                "{ctx}: {run:?} -> {decision:?}"
            );
            if run.pinned {
                assert!(reasons_of(&run.name).contains(&KeepReason::Pinned), "{ctx}");
            }
        }

        // Nothing changes by time alone before requeue_at.
        let horizon = plan.requeue_at.unwrap_or(now + TimeDelta::days(36_500));
        assert!(horizon > now, "{ctx}");
        for probe in [
            now + (horizon - now) / 2,
            horizon - TimeDelta::milliseconds(1),
        ] {
            let later = plan_retention(&runs, &policy, tz, probe);
            assert_eq!(verdicts(&later), verdicts(&plan), "{ctx} at {probe}");
        }
        if let Some(at) = plan.requeue_at {
            let after = plan_retention(&runs, &policy, tz, at);
            assert_ne!(
                verdicts(&after),
                verdicts(&plan),
                "{ctx}: requeue_at {at} changes nothing"
            );
        }

        // Input order never matters.
        let mut shuffled = runs.clone();
        shuffled.reverse();
        shuffled.rotate_left(count / 3);
        assert_eq!(plan_retention(&shuffled, &policy, tz, now), plan, "{ctx}");
    }
}

/// Finding 8: with `keepLast` (and the calendar buckets) counting every run together, someone
/// who may only create BackupRuns could prune every scheduled restore point by creating
/// `keepLast` manual runs. Scheduled and manual runs are now counted separately.
#[test]
fn manual_runs_never_evict_scheduled_restore_points() {
    let manual = |name: &str, at: &str| RetentionRun {
        origin: RunOrigin::Manual,
        ..run(name, at)
    };
    let mut runs = vec![
        run("s1", "2026-11-20T02:00:00Z"),
        run("s2", "2026-11-21T02:00:00Z"),
        run("s3", "2026-11-22T02:00:00Z"),
    ];
    // Ten manual runs, all newer than every scheduled one, all on the last scheduled day.
    runs.extend((0..10).map(|i| manual(&format!("m{i}"), &format!("2026-11-22T1{i}:00:00Z"))));
    let policy = RetentionPolicy {
        keep_last: Some(3),
        keep_daily: Some(2),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, chrono_tz::UTC, utc("2026-11-23T00:00:00Z"));
    let kept: Vec<&str> = plan.kept().collect();
    for s in ["s1", "s2", "s3"] {
        assert!(kept.contains(&s), "scheduled {s} must stay: {kept:?}");
    }
    // The manual runs are bounded by the same rules, counted among themselves.
    assert_eq!(
        kept.iter().filter(|k| k.starts_with('m')).count(),
        3,
        "{kept:?}"
    );
    assert!(kept.contains(&"m9") && kept.contains(&"m8") && kept.contains(&"m7"));
    let pruned: Vec<&str> = plan.pruned().collect();
    assert_eq!(pruned, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    // Decisions stay newest first across both kinds.
    assert_eq!(plan.decisions.first().map(|d| d.name.as_str()), Some("m9"));
    assert_eq!(plan.decisions.last().map(|d| d.name.as_str()), Some("s1"));

    // Before the fix, with everything counted together, s1..s3 were pruned: the same runs
    // all scheduled show what the manual runs would have done.
    let together: Vec<RetentionRun> = runs
        .iter()
        .map(|r| RetentionRun {
            origin: RunOrigin::Schedule,
            ..r.clone()
        })
        .collect();
    let plan = plan_retention(
        &together,
        &policy,
        chrono_tz::UTC,
        utc("2026-11-23T00:00:00Z"),
    );
    let pruned: Vec<&str> = plan.pruned().collect();
    assert!(
        pruned.contains(&"s1") && pruned.contains(&"s3"),
        "{pruned:?}"
    );
}

/// `maxAge` keeps the newest run of each kind, so a burst of manual runs does not leave the
/// newest scheduled restore point to age out.
#[test]
fn max_age_keeps_the_newest_scheduled_run_besides_newer_manual_ones() {
    let runs = vec![
        run("s1", "2026-10-01T02:00:00Z"),
        RetentionRun {
            origin: RunOrigin::Manual,
            ..run("m1", "2026-11-22T10:00:00Z")
        },
    ];
    let policy = RetentionPolicy {
        keep_last: Some(5),
        max_age: Some(Duration::from_secs(30 * 86_400)),
        ..Default::default()
    };
    let plan = plan_retention(&runs, &policy, chrono_tz::UTC, utc("2026-11-23T00:00:00Z"));
    assert_eq!(plan.kept().collect::<Vec<_>>(), ["m1", "s1"]);
}

mod pinned_deletions {
    use super::super::pinned_deletion_keys;
    use crate::api::backup_run::{Artifact, BackupScope};
    use crate::contract::manifest::sha256_hex;
    use crate::jobs::backup_job::ExpectedBackup;

    const MANIFEST: &str =
        r#"{"artifacts":[{"key":"databases/shop.pgdump.zst","sizeBytes":3,"sha256":"00"}]}"#;

    fn expected() -> ExpectedBackup {
        ExpectedBackup {
            location: "s3://b/shop/nightly/r1/manifest.json".into(),
            key: "shop/nightly/r1/manifest.json".into(),
            scope: BackupScope::Database,
            encrypted: false,
        }
    }

    fn artifact(manifest: &str) -> Artifact {
        Artifact {
            storage: "main".into(),
            key: "shop/nightly/r1/manifest.json".into(),
            manifest_key: Some("s3://b/shop/nightly/r1/manifest.json".into()),
            manifest_sha256: Some(sha256_hex(manifest.as_bytes())),
            ..Default::default()
        }
    }

    #[test]
    fn the_computed_manifest_and_what_it_lists_are_deleted_manifest_first() {
        assert_eq!(
            pinned_deletion_keys(&artifact(MANIFEST), &expected(), Some(MANIFEST.as_bytes()))
                .unwrap(),
            [
                "shop/nightly/r1/manifest.json",
                "shop/nightly/r1/databases/shop.pgdump.zst"
            ]
        );
        // Already gone: nothing to delete, nothing refused.
        assert!(
            pinned_deletion_keys(&artifact(MANIFEST), &expected(), None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn another_tenants_location_is_never_deleted() {
        let mut a = artifact(MANIFEST);
        a.manifest_key = Some("s3://b/other-tenant/nightly/r9/manifest.json".into());
        a.key = "other-tenant/nightly/r9/manifest.json".into();
        let why = pinned_deletion_keys(&a, &expected(), Some(MANIFEST.as_bytes())).unwrap_err();
        assert!(why.contains("other-tenant"), "{why}");
        // Only the key differs: still refused.
        let mut a = artifact(MANIFEST);
        a.key = "other-tenant/x/manifest.json".into();
        assert!(pinned_deletion_keys(&a, &expected(), Some(MANIFEST.as_bytes())).is_err());
    }

    #[test]
    fn a_rewritten_manifest_or_one_without_a_recorded_digest_deletes_nothing() {
        let evil = r#"{"artifacts":[{"key":"../../other-tenant/nightly/r9/databases/shop.pgdump.zst","sizeBytes":3,"sha256":"00"}]}"#;
        // Rewritten in the bucket after the run was confirmed.
        let why = pinned_deletion_keys(&artifact(MANIFEST), &expected(), Some(evil.as_bytes()))
            .unwrap_err();
        assert!(why.contains("altered"), "{why}");
        // Even a manifest whose digest was recorded may list only plain keys.
        let why =
            pinned_deletion_keys(&artifact(evil), &expected(), Some(evil.as_bytes())).unwrap_err();
        assert!(why.contains("not a plain key"), "{why}");
        let mut a = artifact(MANIFEST);
        a.manifest_sha256 = None;
        assert!(pinned_deletion_keys(&a, &expected(), Some(MANIFEST.as_bytes())).is_err());
    }
}
