//! `kubectl dataguardian audit verify|show`: reads the audit trail straight from the audit
//! storage, with the storage's own credentials Secret (so the user needs `get` on that
//! BackupStorage and its Secret, as the platform team grants), never through the operator.

use std::process::ExitCode;

use kube::Client;

use crate::audit::chain::{ChainReport, ProblemKind};
use crate::audit::record::AuditRecord;
use crate::audit::{self, StorageRef};
use crate::cli::plugin::args::{AuditCommand, OutputFormat};
use crate::controller::common::storage_access::StorageAccess;
use crate::egress::EgressPolicy;

use super::PluginError;

/// Runs `audit …` for `namespace` (`None`: every namespace with a chain).
pub async fn run(
    client: &Client,
    storage: &str,
    namespace: Option<&str>,
    what: AuditCommand,
) -> Result<ExitCode, PluginError> {
    let storage: StorageRef = storage.parse().map_err(PluginError::Usage)?;
    // The user's own machine: any address they can reach (link-local still refused).
    let egress = EgressPolicy::from_list("0.0.0.0/0,::/0")
        .map_err(|e| PluginError::Usage(e.to_string()))?
        .with_proxy(crate::egress::ProxyConfig::from_env().unwrap_or_default());
    let target = audit::open(client, &storage, &egress)
        .await
        .map_err(|e| PluginError::Usage(e.to_string()))?;
    let access = &target.access;
    let namespaces = match namespace {
        Some(ns) => vec![ns.to_string()],
        None => audit::namespaces(access).await.map_err(s3)?,
    };
    match what {
        AuditCommand::Verify { output } => {
            let mut reports = Vec::new();
            for ns in &namespaces {
                reports.push(read(access, ns).await?.0);
            }
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&reports).unwrap_or_default()
                ),
                OutputFormat::Table => print!("{}", verify_text(&storage, &reports)),
            }
            Ok(if reports.iter().all(ChainReport::is_intact) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Show { output } => {
            let mut records = Vec::new();
            let mut broken = Vec::new();
            for ns in &namespaces {
                let (report, rs) = read(access, ns).await?;
                if !report.is_intact() {
                    broken.push(ns.clone());
                }
                records.extend(rs);
            }
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&records).unwrap_or_default()
                ),
                OutputFormat::Table => print!("{}", records_table(&records)),
            }
            if !broken.is_empty() {
                eprintln!(
                    "warning: the audit chain of {} does not verify: run `kubectl dataguardian audit verify`",
                    broken.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn read(
    access: &StorageAccess,
    ns: &str,
) -> Result<(ChainReport, Vec<AuditRecord>), PluginError> {
    audit::read_chain(access, ns).await.map_err(s3)
}

fn s3(e: crate::controller::common::storage_access::AccessError) -> PluginError {
    PluginError::Usage(format!("reading the audit storage: {e}"))
}

/// The verdict per namespace, one line per problem with its location.
pub fn verify_text(storage: &StorageRef, reports: &[ChainReport]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str(&format!("no audit chain in storage {storage}\n"));
    }
    for r in reports {
        if r.is_intact() {
            out.push_str(&format!(
                "{}: intact, {} segments, {} records{}\n",
                r.namespace,
                r.segments,
                r.records,
                r.head
                    .as_ref()
                    .map(|(i, h)| format!(", head segment {i} sha256 {h}"))
                    .unwrap_or_default()
            ));
            continue;
        }
        out.push_str(&format!(
            "{}: BROKEN, {} problem(s) in {} segments\n",
            r.namespace,
            r.problems.len(),
            r.segments
        ));
        for p in &r.problems {
            let kind = match p.kind {
                ProblemKind::Missing => "MISSING",
                ProblemKind::Altered => "ALTERED",
                ProblemKind::Reordered => "REORDERED",
            };
            out.push_str(&format!(
                "  {kind} segment {} at {}: {}\n",
                p.index, p.location, p.detail
            ));
        }
    }
    out
}

/// The records as a table, in chain order.
pub fn records_table(records: &[AuditRecord]) -> String {
    let header = [
        "TIME",
        "NAMESPACE",
        "ACTION",
        "KIND",
        "NAME",
        "ACTOR",
        "APPROVER",
        "OUTCOME",
        "DETAIL",
    ];
    let rows: Vec<[String; 9]> = records
        .iter()
        .map(|r| {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            [
                r.time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                r.namespace.clone(),
                r.action.as_str().to_string(),
                r.kind.clone(),
                r.name.clone(),
                dash(&r.actor),
                dash(&r.approver),
                dash(&r.outcome),
                dash(&r.detail),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}   "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Problem;
    use crate::audit::record::{AuditAction, record_id};
    use chrono::TimeZone;

    #[test]
    fn the_table_names_requester_and_approver() {
        let r = AuditRecord {
            id: record_id("u", AuditAction::RestoreApproved, ""),
            time: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            action: AuditAction::RestoreApproved,
            namespace: "shop".into(),
            kind: "RestoreRun".into(),
            name: "refresh".into(),
            uid: "u".into(),
            actor: Some("alice".into()),
            approver: Some("bob".into()),
            outcome: None,
            reason: None,
            detail: Some("backup run nightly-1".into()),
        };
        let t = records_table(&[r]);
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{t}");
        assert!(lines[1].contains("RestoreApproved"), "{t}");
        assert!(
            lines[1].contains("alice") && lines[1].contains("bob"),
            "{t}"
        );
    }

    #[test]
    fn a_broken_chain_names_each_problem_and_its_location() {
        let storage: StorageRef = "ops/audit".parse().unwrap();
        let report = ChainReport {
            namespace: "shop".into(),
            segments: 3,
            records: 9,
            head: None,
            problems: vec![Problem {
                kind: ProblemKind::Missing,
                index: 1,
                location: "s3://b/audit/shop/000000000001.jsonl".into(),
                detail: "segment not found".into(),
            }],
        };
        let text = verify_text(&storage, &[report]);
        assert!(text.contains("shop: BROKEN"), "{text}");
        assert!(
            text.contains("MISSING segment 1 at s3://b/audit/shop/000000000001.jsonl"),
            "{text}"
        );
    }
}
