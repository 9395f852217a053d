//! Tests of [`super`].

use super::*;
use crate::jobs::naming::is_short_dns1123_subdomain;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
        .to_utc()
}

fn sched(expr: &str, tz: &str) -> Schedule {
    Schedule::parse(expr, Some(tz)).unwrap_or_else(|e| panic!("{expr} in {tz}: {e}"))
}

/// All fire times in `(from, to]`, walking forward.
fn fires(s: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (mut t, to) = (utc(from), utc(to));
    let mut out = Vec::new();
    while let Some(next) = s.next_fire_after(t) {
        if next > to {
            break;
        }
        assert!(next > t, "next_fire_after must move forward");
        out.push(next);
        t = next;
    }
    out
}

/// All fire times in `(from, to]`, walking backward, returned oldest first.
fn fires_backward(s: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (from, mut t) = (utc(from), utc(to));
    let mut out = Vec::new();
    let mut inclusive = true;
    loop {
        let prev = if inclusive {
            s.latest_fire_at_or_before(t)
        } else {
            s.latest_fire_before(t)
        };
        inclusive = false;
        match prev {
            Some(p) if p > from => {
                assert!(p <= t);
                out.push(p);
                t = p;
            }
            _ => break,
        }
    }
    out.reverse();
    out
}

fn strs(v: &[DateTime<Utc>]) -> Vec<String> {
    v.iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

// ---- parsing and validation ----

#[test]
fn invalid_schedules_name_the_field_and_the_reason() {
    let cases = [
        ("0 25 * * *", "hour field \"25\""),
        ("61 * * * *", "minute field \"61\""),
        ("0 0 32 * *", "day-of-month field \"32\""),
        ("0 0 * 13 *", "month field \"13\""),
        ("0 0 * * 9", "day-of-week field \"9\""),
        ("0 0 * * FOO", "day-of-week field"),
        ("* * * *", "expected 5 fields"),
        ("0 0 0 * * *", "expected 5 fields"),
        ("0 0 1 1 * 2030", "expected 5 fields"),
        ("", "empty"),
        ("   ", "empty"),
        ("TZ=UTC 0 * * * *", "set spec.timeZone"),
        ("CRON_TZ=Europe/Berlin 0 2 * * *", "set spec.timeZone"),
        ("@every 1h", "@every is not supported"),
        ("@reboot", "unknown descriptor"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("*/0 * * * *", "minute field"),
    ];
    for (expr, expected) in cases {
        let err = Schedule::parse(expr, None).expect_err(expr);
        assert_eq!(err.reason(), "InvalidSchedule", "{expr}");
        let msg = err.to_string();
        assert!(msg.contains(expected), "{expr}: {msg}");
        assert!(
            msg.contains(&format!("{expr:?}")),
            "message quotes the input: {msg}"
        );
    }
}

#[test]
fn valid_schedules_and_descriptors_parse() {
    for expr in [
        "0 2 * * *",
        " 0 2 * * * ",
        "*/15 * * * *",
        "0 9-17/2 * * MON-FRI",
        "0 0 L * *",
        "0 0 * * 5#L",
        "0 0 29 2 *",
        "@daily",
        "@Midnight",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ] {
        Schedule::parse(expr, Some("Europe/Berlin")).unwrap_or_else(|e| panic!("{expr}: {e}"));
    }
    let s = sched("@daily", "UTC");
    assert_eq!(s.expression(), "@daily");
    assert_eq!(
        s.next_fire_after(utc("2026-11-22T10:00:00Z")),
        Some(utc("2026-11-23T00:00:00Z"))
    );
}

#[test]
fn time_zones_are_validated_with_a_hint() {
    let err = Schedule::parse("0 2 * * *", Some("america/new_york")).unwrap_err();
    assert_eq!(err.reason(), "InvalidTimeZone");
    assert!(
        err.to_string()
            .contains("did you mean \"America/New_York\""),
        "{err}"
    );

    let err = Schedule::parse("0 2 * * *", Some("Mars/Olympus_Mons")).unwrap_err();
    assert_eq!(err.reason(), "InvalidTimeZone");
    assert!(err.to_string().contains("\"Mars/Olympus_Mons\""), "{err}");
    assert!(err.to_string().contains("IANA"), "{err}");

    assert_eq!(sched("0 2 * * *", "").time_zone(), Tz::UTC);
    assert_eq!(
        Schedule::parse("0 2 * * *", None).unwrap().time_zone(),
        Tz::UTC
    );
    assert_eq!(sched("0 2 * * *", "Etc/UTC").time_zone(), Tz::Etc__UTC);
    // A bad time zone is reported even when the cron is also bad: the zone is checked first.
    assert_eq!(
        Schedule::parse("nope", Some("Nope/Nope"))
            .unwrap_err()
            .reason(),
        "InvalidTimeZone"
    );
}

#[test]
fn dst_handling_follows_the_hour_field() {
    assert_eq!(
        sched("30 2 * * *", "UTC").dst_handling(),
        DstHandling::WallClock
    );
    assert_eq!(
        sched("0 1,13 * * *", "UTC").dst_handling(),
        DstHandling::WallClock
    );
    assert_eq!(
        sched("*/10 2 * * *", "UTC").dst_handling(),
        DstHandling::WallClock
    );
    assert_eq!(
        sched("0 * * * *", "UTC").dst_handling(),
        DstHandling::Interval
    );
    assert_eq!(
        sched("0 */2 * * *", "UTC").dst_handling(),
        DstHandling::Interval
    );
    assert_eq!(
        sched("@hourly", "UTC").dst_handling(),
        DstHandling::Interval
    );
}

// ---- fire times ----

#[test]
fn plain_utc_fire_times() {
    let s = sched("0 2 * * *", "UTC");
    assert_eq!(
        s.next_fire_after(utc("2026-11-22T02:00:00Z")),
        Some(utc("2026-11-23T02:00:00Z"))
    );
    assert_eq!(
        s.next_fire_after(utc("2026-11-22T01:59:59.999Z")),
        Some(utc("2026-11-22T02:00:00Z"))
    );
    assert_eq!(
        s.latest_fire_at_or_before(utc("2026-11-22T02:00:00Z")),
        Some(utc("2026-11-22T02:00:00Z"))
    );
    assert_eq!(
        s.latest_fire_at_or_before(utc("2026-11-22T02:00:00.5Z")),
        Some(utc("2026-11-22T02:00:00Z"))
    );
    assert_eq!(
        s.latest_fire_before(utc("2026-11-22T02:00:00Z")),
        Some(utc("2026-11-21T02:00:00Z"))
    );
}

#[test]
fn new_york_spring_forward_runs_a_gap_job_once_at_the_end_of_the_gap() {
    // 2026-03-08: 02:00 EST -> 03:00 EDT (07:00Z). 02:30 does not exist.
    let s = sched("30 2 * * *", "America/New_York");
    assert_eq!(
        strs(&fires(&s, "2026-03-06T12:00:00Z", "2026-03-10T12:00:00Z")),
        [
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT, the first instant after the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
            "2026-03-10T06:30:00Z",
        ]
    );
    // Two times inside one gap collapse into one run.
    let s = sched("0,30 2 * * *", "America/New_York");
    assert_eq!(
        strs(&fires(&s, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z")),
        [
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:00:00Z",
            "2026-03-09T06:30:00Z"
        ]
    );
    // A job at 03:00 also lands on the gap end: still one run.
    let s = sched("30 2,3 * * *", "America/New_York");
    assert_eq!(
        strs(&fires(&s, "2026-03-08T05:00:00Z", "2026-03-08T12:00:00Z")),
        ["2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"]
    );
}

#[test]
fn new_york_fall_back_runs_a_repeated_time_once() {
    // 2026-11-01: 02:00 EDT -> 01:00 EST (06:00Z). 01:00-01:59 happens twice.
    let s = sched("30 1 * * *", "America/New_York");
    assert_eq!(
        strs(&fires(&s, "2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z")),
        [
            "2026-10-31T05:30:00Z",
            "2026-11-01T05:30:00Z", // 01:30 EDT only, not 01:30 EST (06:30Z)
            "2026-11-02T06:30:00Z",
        ]
    );
    // Starting inside the second pass does not fire the first pass's time again.
    assert_eq!(
        s.next_fire_after(utc("2026-11-01T06:10:00Z")),
        Some(utc("2026-11-02T06:30:00Z"))
    );
    // Explicit hour lists are wall-clock too: 01:00 fires once.
    let s = sched("0 1,13 * * *", "America/New_York");
    assert_eq!(
        strs(&fires(&s, "2026-11-01T00:00:00Z", "2026-11-01T23:59:00Z")),
        ["2026-11-01T05:00:00Z", "2026-11-01T18:00:00Z"]
    );
}

#[test]
fn interval_schedules_follow_real_time_across_transitions() {
    let s = sched("*/30 * * * *", "America/New_York");
    // Fall back: both passes of 01:xx fire, so the spacing stays 30 real minutes.
    assert_eq!(
        strs(&fires(&s, "2026-11-01T04:45:00Z", "2026-11-01T07:00:00Z")),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
        ]
    );
    // Spring forward: 02:00 and 02:30 do not exist; 01:30 EST is followed by 03:00 EDT.
    assert_eq!(
        strs(&fires(&s, "2026-03-08T06:15:00Z", "2026-03-08T07:30:00Z")),
        [
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:30:00Z"
        ]
    );
    // Hourly at :30 skips the missing hour and repeats the doubled one.
    let s = sched("30 * * * *", "America/New_York");
    assert_eq!(
        strs(&fires(&s, "2026-11-01T04:00:00Z", "2026-11-01T07:00:00Z")),
        [
            "2026-11-01T04:30:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z"
        ]
    );
}

#[test]
fn berlin_both_directions() {
    // 2026-03-29: 02:00 CET -> 03:00 CEST (01:00Z). The classic "0 2 * * *" backup.
    let s = sched("0 2 * * *", "Europe/Berlin");
    assert_eq!(
        strs(&fires(&s, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z")),
        [
            "2026-03-28T01:00:00Z",
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-30T00:00:00Z"
        ]
    );
    // 2026-10-25: 03:00 CEST -> 02:00 CET (01:00Z). 02:30 happens twice, fires once.
    let s = sched("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        strs(&fires(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z")),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
}

#[test]
fn sao_paulo_historic_midnight_dst_and_no_dst_today() {
    // 2018-11-04: 00:00 -03 -> 01:00 -02. Midnight does not exist that day.
    let s = sched("0 0 * * *", "America/Sao_Paulo");
    assert_eq!(
        strs(&fires(&s, "2018-11-02T12:00:00Z", "2018-11-05T12:00:00Z")),
        [
            "2018-11-03T03:00:00Z",
            "2018-11-04T03:00:00Z", // 01:00 -02, the end of the gap
            "2018-11-05T02:00:00Z"
        ]
    );
    // 2019-02-17 00:00 -02 -> 2019-02-16 23:00 -03: 23:xx on the 16th happens twice.
    let s = sched("30 23 * * *", "America/Sao_Paulo");
    assert_eq!(
        strs(&fires(&s, "2019-02-15T12:00:00Z", "2019-02-18T12:00:00Z")),
        [
            "2019-02-16T01:30:00Z",
            "2019-02-17T01:30:00Z", // 23:30 -02 only
            "2019-02-18T02:30:00Z"
        ]
    );
    // Brazil has had no DST since 2019: 02:00 is 05:00Z all year.
    let s = sched("0 2 * * *", "America/Sao_Paulo");
    for t in fires(&s, "2026-01-01T00:00:00Z", "2026-12-31T23:59:00Z") {
        assert_eq!(t.format("%H:%M").to_string(), "05:00");
    }
}

#[test]
fn lord_howe_half_hour_shift() {
    // 2026-04-05 02:00 +11 -> 01:30 +10:30 (2026-04-04T15:00Z): 01:30-01:59 twice.
    let s = sched("45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        strs(&fires(&s, "2026-04-03T12:00:00Z", "2026-04-06T12:00:00Z")),
        [
            "2026-04-03T14:45:00Z",
            "2026-04-04T14:45:00Z", // 01:45 +11 only
            "2026-04-05T15:15:00Z"  // 01:45 +10:30
        ]
    );
    // 2026-10-04 02:00 +10:30 -> 02:30 +11 (2026-10-03T15:30Z): 02:15 does not exist.
    let s = sched("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        strs(&fires(&s, "2026-10-02T12:00:00Z", "2026-10-05T12:00:00Z")),
        [
            "2026-10-02T15:45:00Z",
            "2026-10-03T15:30:00Z", // 02:30 +11, the end of the gap
            "2026-10-04T15:15:00Z"
        ]
    );
    let s = sched("*/15 * * * *", "Australia/Lord_Howe");
    assert_eq!(
        strs(&fires(&s, "2026-04-04T14:20:00Z", "2026-04-04T15:30:00Z")),
        [
            "2026-04-04T14:30:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-04T15:15:00Z",
            "2026-04-04T15:30:00Z"
        ]
    );
}

#[test]
fn a_whole_year_is_consistent_forward_and_backward() {
    let zones = [
        "America/New_York",
        "Europe/Berlin",
        "America/Sao_Paulo",
        "Australia/Lord_Howe",
        "UTC",
    ];
    for zone in zones {
        // Interval schedules: exactly 15 real minutes apart, all year, forward and backward.
        let s = sched("*/15 * * * *", zone);
        let forward = fires(&s, "2025-12-31T00:00:00Z", "2027-01-02T00:00:00Z");
        for pair in forward.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                TimeDelta::minutes(15),
                "{zone} at {}",
                pair[0]
            );
        }
        assert_eq!(
            forward,
            fires_backward(&s, "2025-12-31T00:00:00Z", "2027-01-02T00:00:00Z"),
            "{zone}"
        );

        // Wall-clock schedules: exactly one run per local calendar day, forward and backward.
        for expr in ["30 2 * * *", "45 1 * * *", "0 0 * * *", "30 23 * * *"] {
            let s = sched(expr, zone);
            let forward = fires(&s, "2026-01-01T12:00:00Z", "2026-12-31T12:00:00Z");
            let tz: Tz = zone.parse().unwrap();
            let mut days: Vec<_> = forward
                .iter()
                .map(|t| t.with_timezone(&tz).date_naive())
                .collect();
            days.dedup();
            assert_eq!(days.len(), forward.len(), "{expr} {zone}: one run per day");
            assert!((363..=366).contains(&forward.len()), "{expr} {zone}");
            assert_eq!(
                forward,
                fires_backward(&s, "2026-01-01T12:00:00Z", "2026-12-31T12:00:00Z"),
                "{expr} {zone}"
            );
        }
    }
}

#[test]
fn leap_days_and_year_boundaries() {
    let s = sched("0 0 29 2 *", "Europe/Berlin");
    assert_eq!(
        s.next_fire_after(utc("2026-01-01T00:00:00Z")),
        Some(utc("2028-02-28T23:00:00Z"))
    );
    assert_eq!(
        s.latest_fire_at_or_before(utc("2027-12-31T00:00:00Z")),
        Some(utc("2024-02-28T23:00:00Z"))
    );
    // 2100 is not a leap year.
    assert_eq!(
        s.next_fire_after(utc("2097-01-01T00:00:00Z")),
        Some(utc("2104-02-28T23:00:00Z"))
    );
    let s = sched("59 23 31 12 *", "UTC");
    assert_eq!(
        s.next_fire_after(utc("2026-12-31T23:59:00Z")),
        Some(utc("2027-12-31T23:59:00Z"))
    );
    let s = sched("0 0 1 1 *", "Pacific/Auckland");
    assert_eq!(
        s.next_fire_after(utc("2026-06-01T00:00:00Z")),
        Some(utc("2026-12-31T11:00:00Z"))
    );
}

// ---- run names ----

#[test]
fn scheduled_run_names_are_deterministic_and_bounded() {
    let t = utc("2026-11-22T02:00:00Z");
    assert_eq!(scheduled_run_name("nightly", t), "nightly-202611220200");
    let long = "a-very-long-policy-name-that-someone-wrote-to-describe-everything";
    let name = scheduled_run_name(long, t);
    assert!(name.len() <= 63, "{name}");
    assert!(name.ends_with("-202611220200"), "{name}");
    assert!(is_short_dns1123_subdomain(&name), "{name}");
    assert_eq!(name, scheduled_run_name(long, t));
    assert_ne!(name, scheduled_run_name(&format!("{long}-2"), t));
    // The two passes of a fall-back hour get different names (UTC stamps).
    assert_ne!(
        scheduled_run_name("p", utc("2026-11-01T05:30:00Z")),
        scheduled_run_name("p", utc("2026-11-01T06:30:00Z"))
    );
}

// ---- planning ----

fn input<'a>(active: &'a [ActiveRun]) -> ScheduleInput<'a> {
    ScheduleInput {
        policy_name: "nightly",
        created_at: utc("2026-11-20T10:05:00Z"),
        last_schedule_time: None,
        suspend: false,
        starting_deadline_seconds: None,
        concurrency_policy: ConcurrencyPolicy::Forbid,
        active_runs: active,
    }
}

fn hourly() -> Schedule {
    sched("0 * * * *", "UTC")
}

#[test]
fn a_new_policy_waits_for_its_first_fire_time() {
    let p = plan(&hourly(), utc("2026-11-20T10:30:00Z"), &input(&[]));
    assert_eq!(p.create_run, None);
    assert_eq!(p.skip_reason, None);
    assert_eq!(p.next_schedule_time, Some(utc("2026-11-20T11:00:00Z")));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30 * 60)));
    // Created exactly at a fire time: that time is not run.
    let mut i = input(&[]);
    i.created_at = utc("2026-11-20T10:00:00Z");
    assert_eq!(
        plan(&hourly(), utc("2026-11-20T10:00:00Z"), &i).create_run,
        None
    );
}

#[test]
fn a_due_fire_time_creates_exactly_one_run() {
    let now = utc("2026-11-20T11:00:00.250Z");
    let p = plan(&hourly(), now, &input(&[]));
    let run = p.create_run.expect("a run is due");
    assert_eq!(run.name, "nightly-202611201100");
    assert_eq!(run.scheduled_time, utc("2026-11-20T11:00:00Z"));
    assert_eq!(run.late_by, Duration::from_millis(250));
    assert_eq!(p.missed, MissedRuns::default());
    assert_eq!(p.next_schedule_time, Some(utc("2026-11-20T12:00:00Z")));
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_millis(59 * 60 * 1000 + 59_750))
    );

    // Once recorded in lastScheduleTime, the same time is not created again.
    let mut i = input(&[]);
    i.last_schedule_time = Some(run.scheduled_time);
    assert_eq!(plan(&hourly(), now, &i).create_run, None);
}

#[test]
fn after_downtime_only_the_most_recent_missed_time_runs() {
    let mut i = input(&[]);
    i.last_schedule_time = Some(utc("2026-11-20T11:00:00Z"));
    let p = plan(&hourly(), utc("2026-11-20T15:20:00Z"), &i);
    let run = p.create_run.expect("one catch-up run");
    assert_eq!(run.scheduled_time, utc("2026-11-20T15:00:00Z"));
    assert_eq!(run.late_by, Duration::from_secs(20 * 60));
    assert_eq!(
        p.missed,
        MissedRuns {
            count: 3,
            capped: false
        }
    ); // 12:00, 13:00, 14:00
    assert_eq!(p.next_schedule_time, Some(utc("2026-11-20T16:00:00Z")));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(40 * 60)));

    // A year of downtime on an every-minute schedule: still one run, count capped.
    let s = sched("* * * * *", "UTC");
    i.created_at = utc("2025-11-01T00:00:00Z");
    i.last_schedule_time = Some(utc("2025-11-20T11:00:00Z"));
    let p = plan(&s, utc("2026-11-20T11:00:30Z"), &i);
    assert_eq!(
        p.create_run.map(|r| r.scheduled_time),
        Some(utc("2026-11-20T11:00:00Z"))
    );
    assert_eq!(
        p.missed,
        MissedRuns {
            count: MISSED_COUNT_CAP,
            capped: true
        }
    );
}

#[test]
fn starting_deadline_drops_a_too_late_run() {
    let mut i = input(&[]);
    i.last_schedule_time = Some(utc("2026-11-20T11:00:00Z"));
    i.starting_deadline_seconds = Some(600);
    let p = plan(&hourly(), utc("2026-11-20T15:20:00Z"), &i);
    assert_eq!(p.create_run, None);
    let skip = p.skip_reason.expect("skipped");
    assert_eq!(skip.reason(), "MissedSchedule");
    assert!(
        skip.to_string().contains("startingDeadlineSeconds (600)"),
        "{skip}"
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(40 * 60)));

    i.starting_deadline_seconds = Some(1800);
    let p = plan(&hourly(), utc("2026-11-20T15:20:00Z"), &i);
    assert_eq!(
        p.create_run.map(|r| r.scheduled_time),
        Some(utc("2026-11-20T15:00:00Z"))
    );
    // Exactly at the deadline still runs.
    i.starting_deadline_seconds = Some(1200);
    assert!(
        plan(&hourly(), utc("2026-11-20T15:20:00Z"), &i)
            .create_run
            .is_some()
    );
}

#[test]
fn forbid_skips_while_active_and_runs_the_pending_time_afterwards() {
    let active = [ActiveRun {
        name: "nightly-202611201000".into(),
        scheduled_time: Some(utc("2026-11-20T10:00:00Z")),
    }];
    let mut i = input(&active);
    i.created_at = utc("2026-11-20T09:00:00Z");
    i.last_schedule_time = Some(utc("2026-11-20T10:00:00Z"));
    let p = plan(&hourly(), utc("2026-11-20T11:00:01Z"), &i);
    assert_eq!(p.create_run, None);
    let skip = p.skip_reason.expect("skipped");
    assert_eq!(skip.reason(), "ConcurrencyForbidden");
    assert!(
        skip.to_string().contains("run nightly-202611201000 is"),
        "{skip}"
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3599)));

    // The active run ends at 11:10: the 11:00 time still runs (late, once).
    i.active_runs = &[];
    let p = plan(&hourly(), utc("2026-11-20T11:10:00Z"), &i);
    assert_eq!(
        p.create_run.map(|r| r.scheduled_time),
        Some(utc("2026-11-20T11:00:00Z"))
    );

    // A manual run also blocks under Forbid.
    let manual = [ActiveRun {
        name: "before-migration".into(),
        scheduled_time: None,
    }];
    i.active_runs = &manual;
    assert!(matches!(
        plan(&hourly(), utc("2026-11-20T11:10:00Z"), &i).skip_reason,
        Some(SkipReason::ConcurrencyForbidden { .. })
    ));
}

#[test]
fn replace_cancels_scheduled_runs_but_not_manual_ones_and_allow_runs_alongside() {
    let active = [
        ActiveRun {
            name: "nightly-202611201000".into(),
            scheduled_time: Some(utc("2026-11-20T10:00:00Z")),
        },
        ActiveRun {
            name: "before-migration".into(),
            scheduled_time: None,
        },
    ];
    let mut i = input(&active);
    i.last_schedule_time = Some(utc("2026-11-20T10:00:00Z"));
    i.concurrency_policy = ConcurrencyPolicy::Replace;
    let p = plan(&hourly(), utc("2026-11-20T11:00:00Z"), &i);
    assert_eq!(p.replace_active, ["nightly-202611201000"]);
    assert!(p.create_run.is_some());

    i.concurrency_policy = ConcurrencyPolicy::Allow;
    let p = plan(&hourly(), utc("2026-11-20T11:00:00Z"), &i);
    assert!(p.replace_active.is_empty());
    assert!(p.create_run.is_some());
    assert_eq!(p.skip_reason, None);
}

#[test]
fn an_already_created_run_is_not_created_again() {
    // Crash after creating the run but before writing lastScheduleTime.
    let active = [ActiveRun {
        name: "nightly-202611201100".into(),
        scheduled_time: Some(utc("2026-11-20T11:00:00Z")),
    }];
    let mut i = input(&active);
    i.concurrency_policy = ConcurrencyPolicy::Replace;
    let p = plan(&hourly(), utc("2026-11-20T11:00:05Z"), &i);
    assert_eq!(p.create_run, None);
    assert!(p.replace_active.is_empty());
    assert_eq!(p.skip_reason, None);
}

#[test]
fn suspended_policies_do_nothing_and_do_not_requeue() {
    let mut i = input(&[]);
    i.suspend = true;
    let p = plan(&hourly(), utc("2026-11-21T11:00:00Z"), &i);
    assert_eq!(p.create_run, None);
    assert_eq!(p.skip_reason, Some(SkipReason::Suspended));
    assert_eq!(p.next_schedule_time, None);
    assert_eq!(p.requeue_after, None);
}

#[test]
fn clock_skew_and_rare_schedules() {
    // lastScheduleTime ahead of the clock: nothing is created.
    let mut i = input(&[]);
    i.last_schedule_time = Some(utc("2026-11-20T13:00:00Z"));
    assert_eq!(
        plan(&hourly(), utc("2026-11-20T12:30:00Z"), &i).create_run,
        None
    );
    // A leap-day schedule is years away: the requeue is capped.
    let p = plan(
        &sched("0 0 29 2 *", "UTC"),
        utc("2026-11-20T12:30:00Z"),
        &input(&[]),
    );
    assert_eq!(p.next_schedule_time, Some(utc("2028-02-29T00:00:00Z")));
    assert_eq!(p.requeue_after, Some(MAX_REQUEUE));
}

/// Drives [`plan`] like the reconciler would: reconcile when asked to, create what it says,
/// record lastScheduleTime. Returns the fire times of the runs created.
fn simulate(
    s: &Schedule,
    created: &str,
    until: &str,
    outage: Option<(&str, &str)>,
) -> Vec<DateTime<Utc>> {
    let until = utc(until);
    let mut now = utc(created);
    let mut last = None;
    let mut runs = Vec::new();
    let mut reconciles = 0;
    while now <= until {
        reconciles += 1;
        assert!(reconciles < 10_000, "too many reconciles: polling?");
        let i = ScheduleInput {
            last_schedule_time: last,
            concurrency_policy: ConcurrencyPolicy::Allow,
            created_at: utc(created),
            ..input(&[])
        };
        let p = plan(s, now, &i);
        if let Some(run) = p.create_run {
            assert!(runs.last() < Some(&run.scheduled_time), "no duplicate run");
            runs.push(run.scheduled_time);
            last = Some(run.scheduled_time);
        }
        let Some(after) = p.requeue_after else { break };
        // The timer fires a little late; an outage swallows reconciles.
        now += TimeDelta::from_std(after).unwrap() + TimeDelta::milliseconds(3);
        if let Some((down, up)) = outage
            && now > utc(down)
            && now < utc(up)
        {
            now = utc(up);
        }
    }
    runs
}

#[test]
fn a_simulated_controller_follows_the_schedule_across_dst_without_duplicates() {
    let s = sched("30 1 * * *", "America/New_York");
    let runs = simulate(&s, "2026-10-30T00:00:00Z", "2026-11-03T00:00:00Z", None);
    assert_eq!(
        strs(&runs),
        [
            "2026-10-30T05:30:00Z",
            "2026-10-31T05:30:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z"
        ]
    );
    let s = sched("*/20 * * * *", "Europe/Berlin");
    let runs = simulate(&s, "2026-03-28T23:50:00Z", "2026-03-29T02:10:00Z", None);
    assert_eq!(
        runs,
        fires(&s, "2026-03-28T23:50:00Z", "2026-03-29T02:10:00Z")
    );
    assert_eq!(runs.len(), 7);
}

#[test]
fn a_simulated_outage_produces_one_catch_up_run() {
    let s = sched("*/5 * * * *", "UTC");
    let runs = simulate(
        &s,
        "2026-11-20T10:00:00Z",
        "2026-11-20T16:00:00Z",
        Some(("2026-11-20T11:01:00Z", "2026-11-20T14:42:00Z")),
    );
    let expected: Vec<_> = fires(&s, "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z")
        .into_iter()
        .chain([utc("2026-11-20T14:40:00Z")]) // the single catch-up
        .chain(fires(&s, "2026-11-20T14:40:00Z", "2026-11-20T15:59:00Z"))
        .collect();
    assert_eq!(runs, expected);
}

#[test]
fn active_runs_and_policies_from_the_api() {
    let run: BackupRun = serde_yaml::from_str(
        r#"
metadata: {name: nightly-202611220500, namespace: shop}
spec: {policyRef: {name: nightly}, trigger: Scheduled, scheduledTime: "2026-11-22T05:00:00Z"}
status: {phase: Running}
"#,
    )
    .unwrap();
    assert_eq!(
        ActiveRun::from_run(&run),
        Some(ActiveRun {
            name: "nightly-202611220500".into(),
            scheduled_time: Some(utc("2026-11-22T05:00:00Z")),
        })
    );
    let mut manual = run.clone();
    manual.spec.trigger = Trigger::Manual;
    assert_eq!(ActiveRun::from_run(&manual).unwrap().scheduled_time, None);
    let mut done = run;
    done.status.as_mut().unwrap().phase = Some(BackupRunPhase::Failed);
    assert_eq!(ActiveRun::from_run(&done), None);

    let policy: crate::api::BackupPolicy = serde_yaml::from_str(
        r#"
metadata: {name: nightly, namespace: shop}
spec:
  source: {postgres: {host: db, database: shop, user: backup}}
  storageRef: {name: main}
  schedule: "0 2 * * *"
  timeZone: Europe/Berlin
"#,
    )
    .unwrap();
    let s = Schedule::from_policy(&policy.spec).unwrap();
    assert_eq!(s.time_zone(), chrono_tz::Europe::Berlin);
    assert_eq!(policy.spec.concurrency_policy, ConcurrencyPolicy::Forbid);
}

/// An independent oracle: scan every UTC minute of a window and decide from first principles
/// whether the schedule fires then (wall-clock match, DST rules of [`DstHandling`]).
fn oracle_fires(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    use chrono::LocalResult;
    let tz = s.time_zone();
    let matches = |local: NaiveDateTime| s.cron.is_time_matching(&local).unwrap();
    let mut out = Vec::new();
    let mut i = from + TimeDelta::minutes(1);
    while i <= to {
        let local = s.local(i);
        let second_pass = matches!(
            tz.from_local_datetime(&local),
            LocalResult::Ambiguous(_, later) if later.to_utc() == i
        );
        let fires = match s.dst_handling() {
            DstHandling::Interval => matches(local),
            DstHandling::WallClock => {
                let before = s.local(i - TimeDelta::minutes(1)) + TimeDelta::minutes(1);
                // Wall times skipped just before `i` (a spring-forward gap ends at `i`).
                let mut skipped = before;
                let mut gap_match = false;
                while skipped < local {
                    gap_match |= matches(skipped);
                    skipped += TimeDelta::minutes(1);
                }
                (matches(local) && !second_pass) || gap_match
            }
        };
        if fires {
            out.push(i);
        }
        i += TimeDelta::minutes(1);
    }
    out
}

/// Instants where the zone's UTC offset changes during 2026 (scanned hourly).
fn transitions_2026(tz: Tz) -> Vec<DateTime<Utc>> {
    let mut t = utc("2026-01-01T00:00:00Z");
    let mut out = Vec::new();
    while t < utc("2027-01-01T00:00:00Z") {
        let next = t + TimeDelta::hours(1);
        if tz.offset_from_utc_datetime(&t.naive_utc()).fix()
            != tz.offset_from_utc_datetime(&next.naive_utc()).fix()
        {
            out.push(next);
        }
        t = next;
    }
    out
}

/// Tiny deterministic PRNG for test inputs (xorshift64*).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn fire_times_agree_with_a_brute_force_oracle_around_every_2026_transition() {
    let zones = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"];
    let exprs = [
        "30 2 * * *",
        "0,30 2 * * *",
        "45 1 * * *",
        "0 1,13 * * *",
        "*/10 2 * * *",
        "*/15 * * * *",
        "30 * * * *",
        "0 */2 * * *",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for zone in zones {
        let tz: Tz = zone.parse().unwrap();
        let transitions = transitions_2026(tz);
        assert_eq!(transitions.len(), 2, "{zone}");
        for expr in exprs {
            let s = sched(expr, zone);
            for at in &transitions {
                let (from, to) = (*at - TimeDelta::hours(30), *at + TimeDelta::hours(30));
                let expected = oracle_fires(&s, from, to);
                let mut got = Vec::new();
                let mut t = from;
                while let Some(next) = s.next_fire_after(t).filter(|n| *n <= to) {
                    got.push(next);
                    t = next;
                }
                assert_eq!(strs(&got), strs(&expected), "{expr} in {zone} around {at}");
                // Arbitrary query times (inside gaps, overlaps, on fire times) agree too.
                for _ in 0..200 {
                    let offset = (next_random(&mut seed) % (60 * 3600 * 1000)) as i64;
                    let q = from + TimeDelta::milliseconds(offset);
                    let next = expected.iter().find(|f| **f > q).copied();
                    if next.is_some() {
                        assert_eq!(s.next_fire_after(q), next, "{expr} {zone} next after {q}");
                    }
                    let prev = expected.iter().rev().find(|f| **f <= q).copied();
                    if prev.is_some() {
                        assert_eq!(
                            s.latest_fire_at_or_before(q),
                            prev,
                            "{expr} {zone} latest at or before {q}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn an_overlap_at_the_end_of_the_only_matching_day_still_fires_in_both_passes() {
    // Sao Paulo 2019-02-17 00:00 -02 -> 2019-02-16 23:00 -03: the 16th's 23:xx repeats and
    // the next matching day is a month away, so the answer is not the next wall-clock match.
    let s = sched("*/15 * 16 * *", "America/Sao_Paulo");
    let from = utc("2019-02-17T01:40:00Z"); // 23:40 -02, first pass
    assert_eq!(
        strs(&fires(&s, "2019-02-17T01:40:00Z", "2019-03-16T03:00:00Z")),
        [
            "2019-02-17T01:45:00Z",
            "2019-02-17T02:00:00Z", // 23:00 -03, second pass
            "2019-02-17T02:15:00Z",
            "2019-02-17T02:30:00Z",
            "2019-02-17T02:45:00Z",
            "2019-03-16T03:00:00Z"
        ]
    );
    let oracle = oracle_fires(&s, from, utc("2019-02-17T06:00:00Z"));
    assert_eq!(oracle.len(), 5);
    assert_eq!(
        s.next_fire_after(utc("2019-02-17T01:50:00Z")),
        Some(oracle[1])
    );
    assert_eq!(
        s.latest_fire_at_or_before(utc("2019-03-16T02:59:00Z")),
        Some(utc("2019-02-17T02:45:00Z"))
    );
    // Backward: at 23:10 -03 (second pass) the latest fire is 23:45 -02 of the first pass,
    // a wall-clock time *after* the query's; the previous wall-clock match is 22 hours back.
    let s = sched("45 */23 16 * *", "America/Sao_Paulo");
    assert_eq!(
        s.latest_fire_at_or_before(utc("2019-02-17T02:10:00Z")),
        Some(utc("2019-02-17T01:45:00Z"))
    );
    assert_eq!(
        s.next_fire_after(utc("2019-02-17T01:45:00Z")),
        Some(utc("2019-02-17T02:45:00Z"))
    );
}

/// kubernetes/kubernetes#121594: a `0 2 * * *` Europe/Berlin CronJob ran twice when the
/// clocks went back. Here it fires once, also when driven like a controller.
#[test]
fn berlin_0200_fires_once_when_the_clocks_go_back() {
    let s = sched("0 2 * * *", "Europe/Berlin");
    let expected = [
        "2026-10-24T00:00:00Z",
        "2026-10-25T00:00:00Z",
        "2026-10-26T01:00:00Z",
    ];
    assert_eq!(
        strs(&fires(&s, "2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z")),
        expected
    );
    let runs = simulate(&s, "2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z", None);
    assert_eq!(strs(&runs), expected);
}

#[test]
fn a_simulated_controller_matches_the_fire_times_across_both_2026_transitions() {
    for zone in [
        "America/New_York",
        "Europe/Berlin",
        "America/Sao_Paulo",
        "Australia/Lord_Howe",
    ] {
        let tz: Tz = zone.parse().unwrap();
        let mut windows = transitions_2026(tz);
        if windows.is_empty() {
            windows.push(utc("2026-11-01T00:00:00Z")); // Sao Paulo: no DST any more
        }
        for expr in ["30 2 * * *", "15 2 * * *", "45 1 * * *", "*/20 * * * *"] {
            let s = sched(expr, zone);
            for at in &windows {
                let from = (*at - TimeDelta::hours(26)).to_rfc3339();
                let to = (*at + TimeDelta::hours(26)).to_rfc3339();
                let runs = simulate(&s, &from, &to, None);
                // The simulated timer fires 3 ms late, so a fire time exactly at `to` is
                // reconciled just after the simulation ends.
                let last = (*at + TimeDelta::hours(26) - TimeDelta::seconds(1)).to_rfc3339();
                assert_eq!(
                    strs(&runs),
                    strs(&fires(&s, &from, &last)),
                    "{expr} in {zone} around {at}"
                );
            }
        }
    }
}

/// Properties of schedule parsing and fire-time search: any `spec.schedule` and `spec.timeZone`
/// parse or are refused without panicking, and for valid ones the forward and backward searches
/// agree in every zone, across DST transitions included.
mod props {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn config(cases: u32) -> ProptestConfig {
        crate::proptest_config(cases)
    }

    /// One cron field: wildcards, steps, ranges, lists, names, and out-of-range values.
    fn field(max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            (1..=max.max(1)).prop_map(|n| format!("*/{n}")),
            (0..=max).prop_map(|n| n.to_string()),
            (0..=max, 0..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            proptest::collection::vec(0..=max, 1..4).prop_map(|v| v
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")),
        ]
    }

    fn expression() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (field(59), field(23), field(31), field(12), field(7))
                .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}")),
            1 => prop_oneof![
                Just("@daily"), Just("@hourly"), Just("@weekly"), Just("@monthly"),
                Just("@yearly"), Just("0 0 29 2 *"), Just("30 2 * * *"), Just("*/20 1-3 * * SUN"),
            ]
            .prop_map(str::to_owned),
        ]
    }

    fn zone() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            // Zones with DST, half-hour and 45-minute offsets, and a 30-minute DST shift.
            Just("UTC"),
            Just("Europe/Berlin"),
            Just("America/New_York"),
            Just("America/Sao_Paulo"),
            Just("Australia/Lord_Howe"),
            Just("Asia/Kathmandu"),
            Just("Pacific/Chatham"),
            Just("Antarctica/Troll"),
            proptest::sample::select(
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .map(|tz| tz.name())
                    .collect::<Vec<_>>()
            ),
        ]
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 1990..2040, to the second.
        (631_152_000i64..2_208_988_800).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn any_schedule_and_zone_parse_or_are_refused(
            expression in prop_oneof![any::<String>(), "[ 0-9*/,@A-Za-z-]{0,40}", expression()],
            zone in proptest::option::of(prop_oneof![any::<String>(), "[A-Za-z_/+-]{0,30}"]),
        ) {
            if let Err(e) = Schedule::parse(&expression, zone.as_deref()) {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(matches!(e.reason(), "InvalidSchedule" | "InvalidTimeZone"));
            }
        }
    }

    proptest! {
        #![proptest_config(config(96))]

        /// `next_fire_after(t)` is the first fire strictly after `t`: the backward search from
        /// it finds it, and finds nothing else in between.
        #[test]
        fn forward_and_backward_searches_agree(
            expression in expression(),
            zone in zone(),
            t in instant(),
        ) {
            let Ok(s) = Schedule::parse(&expression, Some(zone)) else {
                return Ok(());
            };
            let Some(next) = s.next_fire_after(t) else {
                return Ok(());
            };
            prop_assert!(next > t);
            prop_assert_eq!(s.latest_fire_at_or_before(next), Some(next));
            if let Some(before) = s.latest_fire_before(next) {
                prop_assert!(before <= t, "{} fires at {} between {} and {}", expression, before, t, next);
                prop_assert_eq!(s.next_fire_after(before), Some(next));
            }
            if let Some(latest) = s.latest_fire_at_or_before(t) {
                prop_assert!(latest <= t);
                prop_assert_eq!(s.next_fire_after(latest), Some(next));
            }
        }
    }
}
