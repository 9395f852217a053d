//! Tests of [`super`].

use super::*;
use chrono::TimeDelta;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .to_utc()
}

fn backup(ns: &str, name: &str, minute: i64) -> PendingBackup {
    PendingBackup {
        key: RunKey::new(ns, name),
        created_at: t0() + TimeDelta::minutes(minute),
        policy: "nightly".into(),
        not_before: None,
    }
}

fn limit(n: usize) -> Option<NonZeroUsize> {
    NonZeroUsize::new(n)
}

fn names(keys: &[RunKey]) -> Vec<String> {
    keys.iter().map(ToString::to_string).collect()
}

fn waiting(plan: &QueuePlan) -> Vec<(String, u32)> {
    plan.waiting
        .iter()
        .map(|w| (w.key.to_string(), w.position))
        .collect()
}

#[test]
fn empty_queues_plan_nothing() {
    let now = t0();
    assert_eq!(
        plan_backup_queue(&[], &[], limit(3), now),
        QueuePlan::default()
    );
    assert_eq!(
        plan_restore_queue(&[], &[], None, now),
        QueuePlan::default()
    );
}

#[test]
fn unlimited_starts_everything_in_fair_order() {
    let pending = [
        backup("a", "a1", 0),
        backup("a", "a2", 1),
        backup("b", "b1", 2),
    ];
    let plan = plan_backup_queue(&pending, &[], None, t0());
    assert_eq!(names(&plan.start), ["a/a1", "b/b1", "a/a2"]);
    assert!(plan.waiting.is_empty());
}

#[test]
fn namespaces_take_turns_and_positions_follow_the_rounds() {
    let pending = [
        backup("a", "a1", 0),
        backup("a", "a2", 1),
        backup("a", "a3", 2),
        backup("b", "b1", 3),
        backup("b", "b2", 4),
        backup("c", "c1", 5),
    ];
    let plan = plan_backup_queue(&pending, &[], limit(1), t0());
    assert_eq!(names(&plan.start), ["a/a1"]);
    assert_eq!(
        waiting(&plan),
        [
            ("b/b1".into(), 1),
            ("c/c1".into(), 2),
            ("a/a2".into(), 3),
            ("b/b2".into(), 4),
            ("a/a3".into(), 5)
        ]
    );
    assert!(matches!(
        plan.waiting[0].reason,
        WaitReason::GlobalLimit { limit: 1 }
    ));
}

#[test]
fn a_namespace_with_500_runs_does_not_starve_one_with_a_single_run() {
    // The big namespace queued everything first.
    let mut pending: Vec<PendingBackup> = (0..500)
        .map(|i| backup("big", &format!("r{i:03}"), i))
        .collect();
    pending.push(backup("small", "only", 600));
    let mut running: Vec<RunKey> = Vec::new();
    let mut started = Vec::new();
    // Two slots; each round one run finishes and the queue is replanned.
    for _ in 0..6 {
        let plan = plan_backup_queue(&pending, &running, limit(2), t0());
        for key in &plan.start {
            pending.retain(|p| &p.key != key);
            running.push(key.clone());
            started.push(key.to_string());
        }
        if let Some(pos) = plan.waiting.iter().find(|w| w.key.namespace == "small") {
            assert!(pos.position <= 2, "small is never far back: {pos:?}");
        }
        running.remove(0);
    }
    assert_eq!(started[..2], ["big/r000", "small/only"]);
    assert_eq!(started.len(), 7);
}

#[test]
fn a_namespace_holding_slots_waits_for_the_others() {
    let pending = [backup("a", "a9", 0), backup("b", "b1", 10)];
    let running = [RunKey::new("a", "a7"), RunKey::new("a", "a8")];
    let plan = plan_backup_queue(&pending, &running, limit(3), t0());
    assert_eq!(names(&plan.start), ["b/b1"]);
    assert_eq!(waiting(&plan), [("a/a9".into(), 1)]);
}

#[test]
fn a_lowered_limit_starts_nothing_until_runs_drain() {
    let pending = [backup("a", "a1", 0)];
    let running = [
        RunKey::new("a", "x"),
        RunKey::new("b", "y"),
        RunKey::new("c", "z"),
    ];
    let plan = plan_backup_queue(&pending, &running, limit(2), t0());
    assert!(plan.start.is_empty());
    assert_eq!(waiting(&plan), [("a/a1".into(), 1)]);
}

#[test]
fn a_backing_off_run_never_blocks_the_queue() {
    let mut stuck = backup("a", "a1", 0);
    stuck.not_before = Some(t0() + TimeDelta::minutes(5));
    let pending = [stuck, backup("a", "a2", 1), backup("b", "b1", 2)];
    let plan = plan_backup_queue(&pending, &[], limit(1), t0());
    // a2 is now a's first ready run and the oldest in round 0.
    assert_eq!(names(&plan.start), ["a/a2"]);
    assert_eq!(waiting(&plan), [("b/b1".into(), 1), ("a/a1".into(), 2)]);
    assert_eq!(
        plan.waiting[1].reason,
        WaitReason::NotBefore(t0() + TimeDelta::minutes(5))
    );
    assert_eq!(plan.requeue_at, Some(t0() + TimeDelta::minutes(5)));
    // Once the backoff passed, it is an ordinary (oldest) run again.
    let plan = plan_backup_queue(&pending, &[], limit(1), t0() + TimeDelta::minutes(5));
    assert_eq!(names(&plan.start), ["a/a1"]);
    assert_eq!(plan.requeue_at, None);
}

// ---- restores ----

fn target(db: &str) -> TargetId {
    TargetId::new("postgres", "db.shop.svc", 5432, Some(db), "shop")
}

fn restore(name: &str, minute: i64, t: TargetId) -> PendingRestore {
    PendingRestore {
        key: RunKey::new("shop", name),
        created_at: t0() + TimeDelta::minutes(minute),
        target: t,
        not_before: None,
    }
}

#[test]
fn one_restore_per_target_and_later_runs_for_other_targets_go_ahead() {
    let running = [RunningRestore {
        key: RunKey::new("shop", "r1"),
        target: target("orders"),
    }];
    let pending = [
        restore("r4", 4, target("orders")),
        restore("r2", 2, target("orders")),
        restore("r3", 3, target("billing")),
    ];
    let plan = plan_restore_queue(&pending, &running, limit(5), t0());
    assert_eq!(names(&plan.start), ["shop/r3"]);
    assert_eq!(
        waiting(&plan),
        [("shop/r2".into(), 1), ("shop/r4".into(), 2)]
    );
    assert_eq!(
        plan.waiting[0].reason,
        WaitReason::TargetBusy {
            holder: RunKey::new("shop", "r1")
        }
    );
    assert!(plan.waiting[0].reason.to_string().contains("shop/r1"));
}

#[test]
fn two_new_restores_into_one_database_start_one_at_a_time_fifo() {
    let pending = [
        restore("second", 2, target("orders")),
        restore("first", 1, target("orders")),
    ];
    let plan = plan_restore_queue(&pending, &[], None, t0());
    assert_eq!(names(&plan.start), ["shop/first"]);
    assert_eq!(
        plan.waiting[0].reason,
        WaitReason::TargetBusy {
            holder: RunKey::new("shop", "first")
        }
    );
}

#[test]
fn the_global_limit_applies_to_restores_too() {
    let running = [RunningRestore {
        key: RunKey::new("shop", "r1"),
        target: target("orders"),
    }];
    let pending = [
        restore("r2", 2, target("orders")),
        restore("r3", 3, target("billing")),
    ];
    let plan = plan_restore_queue(&pending, &running, limit(1), t0());
    assert!(plan.start.is_empty());
    assert_eq!(
        waiting(&plan),
        [("shop/r2".into(), 1), ("shop/r3".into(), 2)]
    );
    assert!(matches!(
        plan.waiting[1].reason,
        WaitReason::GlobalLimit { limit: 1 }
    ));
}

#[test]
fn a_restore_in_backoff_does_not_hold_its_target_or_the_queue() {
    let mut failing = restore("r1", 1, target("orders"));
    failing.not_before = Some(t0() + TimeDelta::minutes(2));
    let pending = [failing, restore("r2", 2, target("orders"))];
    let plan = plan_restore_queue(&pending, &[], limit(1), t0());
    assert_eq!(names(&plan.start), ["shop/r2"]);
    assert_eq!(waiting(&plan), [("shop/r1".into(), 1)]);
    assert_eq!(plan.requeue_at, Some(t0() + TimeDelta::minutes(2)));
}

#[test]
fn target_identity_normalises_spellings_but_not_namespaces() {
    let canonical = TargetId::new("postgres", "db", 5432, Some("shop"), "shop");
    for (engine, host) in [
        ("postgresql", "db.shop"),
        ("POSTGRES", "DB.shop.svc"),
        ("postgres", "db.shop.svc.cluster.local."),
    ] {
        let other = TargetId::new(engine, host, 5432, Some("shop"), "shop");
        assert_eq!(other, canonical, "{engine} {host}");
        assert!(other.conflicts_with(&canonical));
    }
    // The same short name in another namespace is another service.
    let elsewhere = TargetId::new("postgres", "db", 5432, Some("shop"), "staging");
    assert!(!elsewhere.conflicts_with(&canonical));
    // Other port, other database, other engine: no conflict.
    assert!(
        !TargetId::new("postgres", "db", 5433, Some("shop"), "shop").conflicts_with(&canonical)
    );
    assert!(
        !TargetId::new("postgres", "db", 5432, Some("Shop"), "shop").conflicts_with(&canonical)
    );
    assert!(!TargetId::new("mysql", "db", 5432, Some("shop"), "shop").conflicts_with(&canonical));
    // MariaDB and MySQL are one engine; a whole-server restore conflicts with every database.
    let maria = TargetId::new("mariadb", "10.0.0.7", 3306, Some("a"), "x");
    let mysql_all = TargetId::new("mysql", "10.0.0.7", 3306, None, "y");
    assert!(maria.conflicts_with(&mysql_all) && mysql_all.conflicts_with(&maria));
    assert_eq!(
        mysql_all.to_string(),
        "mysql://10.0.0.7:3306 (all databases)"
    );
    assert_eq!(canonical.to_string(), "postgres://db.shop:5432/shop");
}

#[test]
fn targets_from_specs_and_uris() {
    let spec: DatabaseSpec =
        serde_yaml::from_str("postgres: {host: db, database: shop, user: restore}").unwrap();
    let from_spec = TargetId::from_database_spec(&spec, "shop").unwrap();
    assert_eq!(from_spec, target("shop"));
    let from_uri = TargetId::from_uri(
        "postgresql://restore:s3cret@db.shop.svc:5432/shop?sslmode=require",
        "shop",
    )
    .unwrap();
    assert_eq!(from_uri, from_spec);
    assert!(!from_uri.to_string().contains("s3cret"));
    assert!(!format!("{from_uri:?}").contains("s3cret"));

    let all: DatabaseSpec =
        serde_yaml::from_str("mysql: {host: maria, allDatabases: true, user: root}").unwrap();
    let all = TargetId::from_database_spec(&all, "shop").unwrap();
    assert_eq!(all.to_string(), "mysql://maria.shop:3306 (all databases)");
    let one =
        TargetId::from_uri("mariadb://root@maria.shop.svc.cluster.local/app%20db", "x").unwrap();
    assert_eq!(one.to_string(), "mysql://maria.shop:3306/app db");
    assert!(one.conflicts_with(&all));

    let secret_only: DatabaseSpec = serde_yaml::from_str(
        "postgres: {database: shop, connectionSecretRef: {name: uri, key: uri}}",
    )
    .unwrap();
    assert_eq!(TargetId::from_database_spec(&secret_only, "shop"), None);
    assert_eq!(
        TargetId::from_database_spec(&DatabaseSpec::default(), "shop"),
        None
    );
    assert_eq!(TargetId::from_uri("not a uri", "shop"), None);
    assert_eq!(
        TargetId::from_uri("postgresql://[::1]:5433/x", "shop")
            .unwrap()
            .to_string(),
        "postgres://::1:5433/x"
    );
}

/// Tiny deterministic PRNG for test inputs (xorshift64*).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn random_backup_queues_are_fair_and_complete() {
    let mut seed = 0xdead_beef_cafe_f00d_u64;
    let now = t0() + TimeDelta::hours(1);
    for case in 0..500 {
        let rnd = &mut seed;
        let namespaces = 1 + next_random(rnd) % 5;
        let pending: Vec<PendingBackup> = (0..next_random(rnd) % 40)
            .map(|i| {
                let mut b = backup(
                    &format!("ns{}", next_random(rnd) % namespaces),
                    &format!("r{i}"),
                    (next_random(rnd) % 120) as i64,
                );
                if next_random(rnd).is_multiple_of(6) {
                    b.not_before = Some(t0() + TimeDelta::minutes((next_random(rnd) % 120) as i64));
                }
                b
            })
            .collect();
        let running: Vec<RunKey> = (0..next_random(rnd) % 6)
            .map(|i| {
                RunKey::new(
                    format!("ns{}", next_random(rnd) % namespaces),
                    format!("x{i}"),
                )
            })
            .collect();
        let lim = limit((next_random(rnd) % 8) as usize);
        let plan = plan_backup_queue(&pending, &running, lim, now);
        let ctx = format!("case {case}");

        // Every pending run is either started or waiting, exactly once.
        assert_eq!(
            plan.start.len() + plan.waiting.len(),
            pending.len(),
            "{ctx}"
        );
        let positions: Vec<u32> = plan.waiting.iter().map(|w| w.position).collect();
        assert_eq!(
            positions,
            (1..=plan.waiting.len() as u32).collect::<Vec<_>>(),
            "{ctx}"
        );
        let ready = pending
            .iter()
            .filter(|p| is_ready(p.not_before, now))
            .count();
        let slots = free_slots(lim, running.len());
        assert_eq!(
            plan.start.len(),
            ready.min(slots),
            "{ctx}: no idle slot, no overshoot"
        );

        // Fairness: a namespace that got a slot never ends more than one slot ahead of a
        // namespace left with a ready run waiting.
        let held = |ns: &str| {
            running.iter().filter(|k| k.namespace == ns).count()
                + plan.start.iter().filter(|k| k.namespace == ns).count()
        };
        for started in &plan.start {
            for w in plan
                .waiting
                .iter()
                .filter(|w| matches!(w.reason, WaitReason::GlobalLimit { .. }))
            {
                let a = held(&started.namespace);
                let b = held(&w.key.namespace);
                assert!(
                    a <= b + 1,
                    "{ctx}: {started} started, {} waits ({a} vs {b})",
                    w.key
                );
            }
        }
        // Within a namespace, ready runs start oldest first.
        for started in &plan.start {
            let s = pending.iter().find(|p| &p.key == started).unwrap();
            for w in &plan.waiting {
                let p = pending.iter().find(|p| p.key == w.key).unwrap();
                if p.key.namespace == s.key.namespace && is_ready(p.not_before, now) {
                    assert!(
                        (s.created_at, &s.key) < (p.created_at, &p.key),
                        "{ctx}: {} started before older {}",
                        s.key,
                        p.key
                    );
                }
            }
        }
    }
}

#[test]
fn random_restore_queues_never_double_book_a_target() {
    let mut seed = 0x1357_9bdf_2468_ace0_u64;
    let now = t0() + TimeDelta::hours(1);
    for case in 0..500 {
        let rnd = &mut seed;
        let dbs = 1 + next_random(rnd) % 4;
        let pending: Vec<PendingRestore> = (0..next_random(rnd) % 20)
            .map(|i| {
                let mut r = restore(
                    &format!("p{i}"),
                    (next_random(rnd) % 60) as i64,
                    target(&format!("db{}", next_random(rnd) % dbs)),
                );
                if next_random(rnd).is_multiple_of(5) {
                    r.not_before = Some(t0() + TimeDelta::minutes((next_random(rnd) % 120) as i64));
                }
                r
            })
            .collect();
        let running: Vec<RunningRestore> = (0..next_random(rnd) % 3)
            .map(|i| RunningRestore {
                key: RunKey::new("shop", format!("x{i}")),
                target: target(&format!("db{}", next_random(rnd) % dbs)),
            })
            .collect();
        let lim = limit((next_random(rnd) % 5) as usize);
        let plan = plan_restore_queue(&pending, &running, lim, now);
        let ctx = format!("case {case}");

        assert_eq!(
            plan.start.len() + plan.waiting.len(),
            pending.len(),
            "{ctx}"
        );
        let started: Vec<&PendingRestore> = plan
            .start
            .iter()
            .map(|k| pending.iter().find(|p| &p.key == k).unwrap())
            .collect();
        assert!(
            running.len() + started.len() <= lim.map_or(usize::MAX, NonZeroUsize::get)
                || started.is_empty(),
            "{ctx}"
        );
        // No two started restores, nor a started and a running one, share a target.
        for (i, a) in started.iter().enumerate() {
            assert!(is_ready(a.not_before, now), "{ctx}");
            for b in &started[i + 1..] {
                assert!(!a.target.conflicts_with(&b.target), "{ctx}");
            }
            for r in &running {
                assert!(!a.target.conflicts_with(&r.target), "{ctx}");
            }
        }
        // FIFO: every waiting run waits for a stated reason, in creation order.
        let mut last: Option<(DateTime<Utc>, &RunKey)> = None;
        for w in &plan.waiting {
            let p = pending.iter().find(|p| p.key == w.key).unwrap();
            assert!(
                last < Some((p.created_at, &p.key)),
                "{ctx}: positions follow FIFO"
            );
            last = Some((p.created_at, &p.key));
            match &w.reason {
                WaitReason::TargetBusy { holder } => {
                    let holder_target = running
                        .iter()
                        .find(|r| &r.key == holder)
                        .map(|r| &r.target)
                        .or_else(|| started.iter().find(|s| &s.key == holder).map(|s| &s.target))
                        .expect("the holder runs or starts now");
                    assert!(holder_target.conflicts_with(&p.target), "{ctx}");
                }
                WaitReason::GlobalLimit { .. } => {
                    assert_eq!(
                        running.len() + started.len(),
                        lim.unwrap().get().max(running.len()),
                        "{ctx}: waits for a slot only when none is free"
                    );
                }
                WaitReason::NotBefore(t) => assert!(*t > now, "{ctx}"),
            }
        }
    }
}
