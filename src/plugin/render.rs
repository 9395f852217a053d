//! The plugin's pure half: the objects it creates and the lines and tables it prints.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::api::common::{
    DatabaseSpec, Decryption, Progress, find_condition, format_bytes, format_duration,
    time_to_chrono,
};
use crate::api::{BackupPolicy, BackupRun, RestoreRun, RestoreValidation};

/// A name for an object the plugin creates: `<base>-<what>-<UTC timestamp>`, cut to fit 63
/// characters (Job names derive from it).
pub fn generated_name(base: &str, what: &str, now: DateTime<Utc>) -> String {
    let suffix = format!("-{what}-{}", now.format("%Y%m%d%H%M%S"));
    let keep = 63usize.saturating_sub(suffix.len());
    let base: String = base.chars().take(keep).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// A manual BackupRun of `policy`.
pub fn backup_run(ns: &str, name: &str, policy: &str, reason: Option<&str>) -> BackupRun {
    serde_json::from_value(json!({
        "apiVersion": "dataguardian.io/v1alpha1",
        "kind": "BackupRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"policyRef": {"name": policy}, "trigger": "Manual", "reason": reason},
    }))
    .unwrap_or_else(|e| unreachable!("a BackupRun literal: {e}"))
}

/// What `restore` restores into, and how.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub database: String,
    pub create_database: bool,
    pub overwrite: bool,
    pub clean: bool,
    pub decryption: Option<Decryption>,
}

/// The restore target: the policy's own server (its source block, credentials included) with
/// another database, so `restore` needs no connection flags. Dump-only settings are dropped.
pub fn target_from_source(source: &DatabaseSpec, database: &str) -> DatabaseSpec {
    let mut target = source.clone();
    if let Some(pg) = target.postgres.as_mut() {
        pg.database = Some(database.to_string());
        pg.all_databases = None;
        pg.extra_args.clear();
    }
    if let Some(my) = target.mysql.as_mut() {
        my.database = Some(database.to_string());
        my.all_databases = None;
        my.extra_args.clear();
    }
    target
}

/// A RestoreRun of the BackupRun `backup` into `target`.
pub fn restore_run(
    ns: &str,
    name: &str,
    backup: &str,
    target: &DatabaseSpec,
    o: &RestoreOptions,
) -> RestoreRun {
    serde_json::from_value(json!({
        "apiVersion": "dataguardian.io/v1alpha1",
        "kind": "RestoreRun",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backupRunRef": {"name": backup},
            "target": target,
            "createDatabase": o.create_database,
            "overwrite": o.overwrite,
            "clean": o.clean,
            "decryption": o.decryption,
        },
    }))
    .unwrap_or_else(|e| unreachable!("a RestoreRun literal: {e}"))
}

/// A RestoreValidation of the BackupRun `backup` with the row-count check.
pub fn validation(
    ns: &str,
    name: &str,
    backup: &str,
    decryption: Option<&Decryption>,
) -> RestoreValidation {
    serde_json::from_value(json!({
        "apiVersion": "dataguardian.io/v1alpha1",
        "kind": "RestoreValidation",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backupRunRef": {"name": backup},
            "checks": [{"rowCounts": {}}],
            "decryption": decryption,
        },
    }))
    .unwrap_or_else(|e| unreachable!("a RestoreValidation literal: {e}"))
}

/// One progress line: `Running: 1.2 GiB read, 310 MiB written, 45.0 MiB/s`.
pub fn progress_line(phase: &str, progress: Option<&Progress>, detail: Option<&str>) -> String {
    let mut line = phase.to_string();
    if let Some(p) = progress.filter(|p| p.bytes_in > 0 || p.bytes_out > 0) {
        line.push_str(&format!(
            ": {} read, {} written, {}/s",
            format_bytes(p.bytes_in),
            format_bytes(p.bytes_out),
            format_bytes(p.bytes_per_second)
        ));
    } else if let Some(d) = detail.filter(|d| !d.is_empty()) {
        line.push_str(&format!(": {d}"));
    }
    line
}

fn age(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map(|t| format_duration((now - t).num_seconds().max(0) as u64) + " ago")
        .unwrap_or_else(|| "-".into())
}

fn until(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map(|t| "in ".to_string() + &format_duration((t - now).num_seconds().max(0) as u64))
        .unwrap_or_else(|| "-".into())
}

/// The `status` table: one line per policy.
pub fn status_table(policies: &[BackupPolicy], now: DateTime<Utc>) -> String {
    let mut rows = vec![[
        "POLICY".to_string(),
        "READY".into(),
        "RPO".into(),
        "LAST SUCCESS".into(),
        "LAST FAILURE".into(),
        "NEXT".into(),
        "ACTIVE".into(),
        "LAST VALIDATION".into(),
    ]];
    for p in policies {
        let st = p.status.clone().unwrap_or_default();
        let cond = |t: &str| {
            find_condition(&st.conditions, t)
                .map(|c| {
                    if c.status == "True" {
                        c.status.clone()
                    } else {
                        format!("{} ({})", c.status, c.reason)
                    }
                })
                .unwrap_or_else(|| "-".into())
        };
        let run = |r: &Option<crate::api::common::RunSummary>| {
            r.as_ref()
                .map(|r| {
                    format!(
                        "{} ({})",
                        r.name,
                        age(r.completion_time.as_ref().map(time_to_chrono), now)
                    )
                })
                .unwrap_or_else(|| "-".into())
        };
        let validation = st
            .last_validation
            .as_ref()
            .map(|v| {
                format!(
                    "{} {}",
                    v.result
                        .map(|r| format!("{r:?}"))
                        .unwrap_or_else(|| "Running".into()),
                    age(v.completion_time.as_ref().map(time_to_chrono), now)
                )
            })
            .unwrap_or_else(|| "-".into());
        rows.push([
            p.metadata.name.clone().unwrap_or_default(),
            cond("Ready"),
            cond("RPOMet"),
            run(&st.last_successful_run),
            run(&st.last_failed_run),
            if p.spec.suspend {
                "suspended".into()
            } else {
                until(st.next_schedule_time.as_ref().map(time_to_chrono), now)
            },
            st.active_runs.len().to_string(),
            validation,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn generated_names_fit_and_sort_by_time() {
        let n = generated_name("nightly", "manual", t("2026-11-23T06:05:09Z"));
        assert_eq!(n, "nightly-manual-20261123060509");
        let long = generated_name(&"x".repeat(80), "restore", t("2026-11-23T06:05:09Z"));
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("-restore-20261123060509"));
    }

    #[test]
    fn objects_are_valid_api_objects() {
        let r = backup_run("shop", "n1", "nightly", Some("before migration"));
        assert_eq!(r.spec.policy_ref.name, "nightly");
        assert_eq!(format!("{:?}", r.spec.trigger), "Manual");
        assert_eq!(r.spec.reason.as_deref(), Some("before migration"));

        let policy: BackupPolicy = serde_yaml::from_str(
            r#"
metadata: {name: nightly, namespace: shop}
spec:
  source: {postgres: {host: db, port: 5432, database: shop, user: backup,
           passwordSecretRef: {name: db-creds, key: password}, extraArgs: ["--no-owner"]}}
  storageRef: {name: main}
  schedule: "0 2 * * *"
"#,
        )
        .unwrap();
        let target = target_from_source(&policy.spec.source, "shop_copy");
        let pg = target.postgres.as_ref().unwrap();
        assert_eq!(pg.database.as_deref(), Some("shop_copy"));
        assert_eq!(pg.host.as_deref(), Some("db"));
        assert_eq!(pg.password_secret_ref.as_ref().unwrap().name, "db-creds");
        assert!(
            pg.extra_args.is_empty(),
            "dump arguments are not restore arguments"
        );
        let o = RestoreOptions {
            database: "shop_copy".into(),
            create_database: true,
            ..Default::default()
        };
        let rr = restore_run("shop", "r1", "nightly-1", &target, &o);
        assert_eq!(rr.spec.backup_run_ref.as_ref().unwrap().name, "nightly-1");
        assert!(rr.spec.create_database && !rr.spec.overwrite);
        let v = validation("shop", "v1", "nightly-1", None);
        assert_eq!(v.spec.checks.len(), 1);
        assert_eq!(v.spec.backup_run_ref.as_ref().unwrap().name, "nightly-1");
    }

    #[test]
    fn progress_lines_show_bytes_and_rate() {
        let p = Progress {
            bytes_in: 3 << 30,
            bytes_out: 512 << 20,
            bytes_per_second: 40 << 20,
            updated: None,
        };
        assert_eq!(
            progress_line("Running", Some(&p), None),
            "Running: 3.0 GiB read, 512 MiB written, 40.0 MiB/s"
        );
        assert_eq!(
            progress_line("Pending", None, Some("queued at position 2 of 3")),
            "Pending: queued at position 2 of 3"
        );
        assert_eq!(progress_line("Pending", None, None), "Pending");
    }

    #[test]
    fn the_status_table_lines_up() {
        let now = t("2026-11-23T06:00:00Z");
        let p: BackupPolicy = serde_yaml::from_str(
            r#"
metadata: {name: nightly, namespace: shop}
spec:
  source: {postgres: {host: db, database: shop, user: u, passwordSecretRef: {name: s, key: p}}}
  storageRef: {name: main}
  schedule: "0 2 * * *"
status:
  conditions:
    - {type: Ready, status: "True", reason: Ready, message: "", lastTransitionTime: "2026-11-22T00:00:00Z"}
    - {type: RPOMet, status: "False", reason: BackupTooOld, message: "", lastTransitionTime: "2026-11-22T00:00:00Z"}
  lastSuccessfulRun: {name: nightly-1, completionTime: "2026-11-23T05:00:00Z"}
  nextScheduleTime: "2026-11-24T02:00:00Z"
  activeRuns: [nightly-2]
"#,
        )
        .unwrap();
        let table = status_table(&[p], now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("POLICY    READY"), "{table}");
        assert!(lines[1].contains("False (BackupTooOld)"), "{table}");
        assert!(lines[1].contains("nightly-1 (1h0m ago)"), "{table}");
        assert!(lines[1].contains("in 20h0m"), "{table}");
        assert_eq!(
            lines[0].find("RPO"),
            lines[1].find("False"),
            "columns line up: {table}"
        );
    }
}

/// What the plugin prints once it created a run: `backuprun/NAME created`, with the requester
/// the admission webhook recorded (`, requested by alice`) when there is one.
/// What `trace NAME` prints: the trace id, and the link when a URL template (with
/// `{traceId}`) is given; `Err` says why there is none.
pub fn trace_lines(
    name: &str,
    trace_id: Option<&str>,
    url: Option<&str>,
) -> Result<String, String> {
    let Some(id) = trace_id else {
        return Err(format!(
            "{name} has no trace id: the operator records one only when it exports traces \
             (OTEL_EXPORTER_OTLP_ENDPOINT set), from the run's start on"
        ));
    };
    Ok(match url.filter(|u| u.contains("{traceId}")) {
        Some(template) => format!("{id}\n{}", template.replace("{traceId}", id)),
        None => id.to_string(),
    })
}

pub fn created_line(kind: &str, meta: &kube::api::ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    // The API server's answer to the plugin's own create: the annotation is there only if
    // the webhook stamped it (the plugin never writes it).
    match crate::controller::common::requester::requested_by(meta, true) {
        Some(user) => format!("{kind}/{name} created, requested by {user}"),
        None => format!("{kind}/{name} created"),
    }
}

#[cfg(test)]
mod created_line_tests {
    use super::*;

    #[test]
    fn the_created_line_names_the_recorded_requester() {
        let mut meta = kube::api::ObjectMeta {
            name: Some("nightly-1".into()),
            ..Default::default()
        };
        assert_eq!(
            created_line("backuprun", &meta),
            "backuprun/nightly-1 created"
        );
        meta.annotations = Some(
            [(
                crate::admission::REQUESTED_BY.to_string(),
                "alice".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            created_line("backuprun", &meta),
            "backuprun/nightly-1 created, requested by alice"
        );
    }

    #[test]
    fn the_trace_line_shows_the_id_and_the_link() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_lines("r", Some(id), None).unwrap(), id);
        assert_eq!(
            trace_lines(
                "r",
                Some(id),
                Some("https://jaeger.example/trace/{traceId}")
            )
            .unwrap(),
            format!("{id}\nhttps://jaeger.example/trace/{id}")
        );
        // A template without the placeholder is not a link to this run.
        assert_eq!(trace_lines("r", Some(id), Some("https://x")).unwrap(), id);
        let why = trace_lines("nightly-1", None, None).unwrap_err();
        assert!(
            why.contains("nightly-1") && why.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{why}"
        );
    }
}
