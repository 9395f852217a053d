//! The shipped Prometheus alert rules are valid and fire when they should (promtool unit tests),
//! and every metric they use is one the operator exports.

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (apt-get install prometheus): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn alert_rules_are_valid() {
    let out = promtool(&["check", "rules", "dataguardian-alerts.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_fire_when_they_should() {
    let out = promtool(&["test", "rules", "dataguardian-alerts.test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_only_use_exported_metrics() {
    let rules = std::fs::read_to_string(dir().join("dataguardian-alerts.yaml")).unwrap();
    let metrics = dataguardian::telemetry::metrics::Metrics::new();
    // Make every family visible in the exposition.
    let p = dataguardian::telemetry::metrics::PolicyLabels {
        namespace: "n".into(),
        policy: "p".into(),
    };
    let run = |result| dataguardian::telemetry::metrics::RunLabels {
        namespace: "n".into(),
        policy: "p".into(),
        result,
    };
    metrics
        .backup_runs
        .get_or_create(&run(dataguardian::telemetry::metrics::RunResult::Failed))
        .inc();
    metrics
        .validations
        .get_or_create(&run(dataguardian::telemetry::metrics::RunResult::Failed))
        .inc();
    metrics.last_success.get_or_create(&p).set(1.0);
    metrics.rpo_met.get_or_create(&p).set(1);
    metrics.rto_met.get_or_create(&p).set(1);
    metrics.validation_rto.get_or_create(&p).set(12.5);
    metrics
        .start_latency
        .get_or_create(&dataguardian::telemetry::metrics::StartLabels {
            kind: "BackupRun".into(),
            trigger: "Manual".into(),
        })
        .observe(0.05);
    let copy = dataguardian::telemetry::metrics::CopyLabels {
        namespace: "n".into(),
        policy: "p".into(),
        storage: "dr".into(),
    };
    metrics.copy_last_success.get_or_create(&copy).set(1.0);
    metrics.copy_pending.get_or_create(&copy).set(1);
    metrics
        .reconcile_errors
        .get_or_create(&dataguardian::telemetry::metrics::ErrorLabels {
            controller: "c".into(),
            category: "k".into(),
        })
        .inc();
    metrics
        .queue_depth
        .get_or_create(&dataguardian::telemetry::metrics::QueueLabels {
            queue: "backup".into(),
        })
        .set(1);
    metrics
        .notifications
        .get_or_create(&dataguardian::telemetry::metrics::NotificationLabels {
            namespace: "n".into(),
            policy: "p".into(),
            event: "BackupFailed".into(),
            result: "rejected".into(),
        })
        .inc();
    metrics
        .leader
        .get_or_create(&dataguardian::telemetry::metrics::LeaderLabels {
            identity: "replica-a".into(),
        })
        .set(1);
    let exposition = metrics.encode();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("dataguardian_"))
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(
            exposition.lines().any(|l| l.starts_with(name)),
            "alert rules use {name}, which the operator does not export:\n{exposition}"
        );
    }
}

/// Every alert links its runbook (`docs/runbooks/<alert>.md`, in this repository), and every
/// runbook says what the alert means, how to confirm it, what to do and how to verify recovery.
#[test]
fn every_alert_links_a_runbook_that_says_what_to_do() {
    const BASE: &str = "https://github.com/dataguardian/dataguardian/blob/main/";
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir().join("dataguardian-alerts.yaml")).unwrap(),
    )
    .unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut alerts = 0;
    let mut linked = std::collections::BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
            let path = url
                .strip_prefix(BASE)
                .unwrap_or_else(|| panic!("{alert}: {url} is not a file of this repository"));
            assert!(
                path.starts_with("docs/runbooks/") && path.ends_with(".md"),
                "{alert}: {url}"
            );
            let text = std::fs::read_to_string(repo.join(path))
                .unwrap_or_else(|e| panic!("{alert}: {path}: {e}"));
            for section in ["## Meaning", "## Confirm", "## Act", "## Verify recovery"] {
                assert!(text.contains(section), "{path} lacks {section:?}");
            }
            linked.insert(path.to_string());
        }
    }
    assert!(alerts >= 15, "{alerts} alerts");
    // No runbook is left without an alert.
    for entry in std::fs::read_dir(repo.join("docs/runbooks")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            linked.contains(&format!("docs/runbooks/{name}")),
            "docs/runbooks/{name} belongs to no alert"
        );
    }
}
