//! The two-person rule for destructive restores, pure: does this RestoreRun need a second
//! person's approval, and does it hold a valid one?
//!
//! Which restores need approval comes from the backup's policy (`spec.restoreApproval`) or,
//! without one (a policy that sets none, a `storageRef` + `key` restore), the operator-wide
//! default (`--restore-approval`, `--restore-approval-valid-for`).
//!
//! An approval is the pair of annotations `dataguardian.io/approved-by` and
//! `dataguardian.io/approved-at` that only the operator's admission webhook writes (when a user
//! who may `approve` `restoreruns` and is not the requester sets `dataguardian.io/approve`; see
//! [`crate::admission::review`]). Without the webhook anyone who may patch a RestoreRun could
//! write them, so a restore that needs approval then waits with `ApprovalUnavailable`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::ObjectMeta;

use crate::admission::{APPROVED_AT, APPROVED_BY};
use crate::api::backup_policy::{ApprovalRequirement, RestoreApproval};
use crate::api::common::{format_duration, parse_duration, time_from_chrono};
use crate::api::restore_run::{ApprovalStatus, RestoreRun};
use crate::controller::common::reason::Reason;

/// The approval rule in force for one restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalRule {
    /// Which restores need approval.
    pub required: ApprovalRequirement,
    /// How long an approval lets a restore start.
    pub valid_for: Duration,
}

impl ApprovalRule {
    /// The policy's rule where it sets one, else the operator-wide default; a policy's
    /// `validFor` left out (or unreadable) takes the default's.
    pub fn effective(policy: Option<&RestoreApproval>, default: ApprovalRule) -> ApprovalRule {
        match policy {
            None => default,
            Some(p) => ApprovalRule {
                required: p.required,
                valid_for: p
                    .valid_for
                    .as_deref()
                    .and_then(parse_duration)
                    .map(Duration::from_secs)
                    .unwrap_or(default.valid_for),
            },
        }
    }
}

/// What approval says about starting the restore now.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// No approval is needed.
    NotRequired,
    /// A valid approval is held; `status` records it.
    Approved {
        /// For `status.approval`.
        status: ApprovalStatus,
        /// For the `Approved` Event.
        message: String,
    },
    /// The restore waits in `AwaitingApproval`.
    Waiting {
        /// `AwaitingApproval`, `ApprovalExpired` or `ApprovalUnavailable`.
        reason: Reason,
        /// What to do about it.
        message: String,
        /// For `status.approval`.
        status: ApprovalStatus,
    },
}

impl Gate {
    /// The `status.approval` to record, when approval applies.
    pub fn status(&self) -> Option<&ApprovalStatus> {
        match self {
            Gate::NotRequired => None,
            Gate::Approved { status, .. } | Gate::Waiting { status, .. } => Some(status),
        }
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Decides the gate for `run` under `rule` at `now`. `recorded`: whether this operator's
/// admission webhook records approvals (only then are the annotations believed).
pub fn gate(run: &RestoreRun, rule: ApprovalRule, recorded: bool, now: DateTime<Utc>) -> Gate {
    if !rule.required.applies(run.spec.overwrite, run.spec.clean) {
        return Gate::NotRequired;
    }
    let name = run.metadata.name.as_deref().unwrap_or_default();
    let ns = run.metadata.namespace.as_deref().unwrap_or_default();
    let why = match rule.required {
        ApprovalRequirement::Always => "every restore needs a second person's approval",
        _ => "a restore with overwrite or clean needs a second person's approval",
    };
    let mut status = ApprovalStatus {
        required: rule.required,
        ..ApprovalStatus::default()
    };
    if !recorded {
        return Gate::Waiting {
            reason: Reason::ApprovalUnavailable,
            message: format!(
                "{why}, but this operator's admission webhook is off (--webhook-addr \"\"), so \
                 no approval can be trusted: enable the webhook (chart value webhook.enabled) or \
                 set restoreApproval.required: Never where no approval is wanted"
            ),
            status,
        };
    }
    let ask = format!(
        "another person who may approve restoreruns (e.g. the role dataguardian-approver) runs: \
         kubectl dataguardian approve {name} -n {ns}"
    );
    let by = annotation(&run.metadata, APPROVED_BY);
    let at = annotation(&run.metadata, APPROVED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let (Some(by), Some(at)) = (by, at) else {
        return Gate::Waiting {
            reason: Reason::AwaitingApproval,
            message: format!("{why}: {ask}"),
            status,
        };
    };
    let valid_for = chrono::Duration::from_std(rule.valid_for).unwrap_or(chrono::Duration::MAX);
    let until = at
        .checked_add_signed(valid_for)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    status.approved_by = Some(by.to_string());
    status.approved_at = Some(time_from_chrono(at));
    status.valid_until = Some(time_from_chrono(until));
    let validity = format_duration(rule.valid_for.as_secs());
    if now > until {
        return Gate::Waiting {
            reason: Reason::ApprovalExpired,
            message: format!(
                "approved by {by} at {}, but an approval is valid for {validity} and this one \
                 expired at {} before the restore could start: {ask}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            status,
        };
    }
    Gate::Approved {
        message: format!(
            "approved by {by} at {} (valid until {})",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::restore_run::RestoreRunSpec;
    use chrono::TimeZone;

    const HOUR: Duration = Duration::from_secs(3600);

    fn run(overwrite: bool, clean: bool, annotations: &[(&str, &str)]) -> RestoreRun {
        let mut spec: RestoreRunSpec = serde_json::from_value(serde_json::json!({
            "backupRunRef": {"name": "nightly"},
            "target": {"postgres": {"host": "db", "database": "shop"}},
        }))
        .unwrap();
        spec.overwrite = overwrite;
        spec.clean = clean;
        let mut r = RestoreRun::new("refresh", spec);
        r.metadata.namespace = Some("shop".into());
        r.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        r
    }

    fn rule(required: ApprovalRequirement) -> ApprovalRule {
        ApprovalRule {
            required,
            valid_for: HOUR,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
    }

    #[test]
    fn which_restores_need_approval() {
        use ApprovalRequirement::*;
        let cases = [
            (Never, true, true, false),
            (OnOverwrite, false, false, false),
            (OnOverwrite, true, false, true),
            (OnOverwrite, true, true, true),
            (Always, false, false, true),
        ];
        for (required, overwrite, clean, needs) in cases {
            let g = gate(&run(overwrite, clean, &[]), rule(required), true, now());
            assert_eq!(
                g != Gate::NotRequired,
                needs,
                "{required:?} overwrite={overwrite} clean={clean}: {g:?}"
            );
        }
    }

    #[test]
    fn without_an_approval_it_waits_and_says_how_to_get_one() {
        let g = gate(
            &run(true, false, &[]),
            rule(ApprovalRequirement::OnOverwrite),
            true,
            now(),
        );
        let Gate::Waiting {
            reason, message, ..
        } = g
        else {
            panic!("{g:?}")
        };
        assert_eq!(reason, Reason::AwaitingApproval);
        assert!(
            message.contains("kubectl dataguardian approve refresh -n shop"),
            "{message}"
        );
    }

    #[test]
    fn an_approval_holds_for_its_validity_then_expires() {
        let approved = run(
            true,
            false,
            &[
                (APPROVED_BY, "carol"),
                (APPROVED_AT, "2026-12-07T11:30:00Z"),
            ],
        );
        let g = gate(
            &approved,
            rule(ApprovalRequirement::OnOverwrite),
            true,
            now(),
        );
        let Gate::Approved { status, message } = &g else {
            panic!("{g:?}")
        };
        assert_eq!(status.approved_by.as_deref(), Some("carol"));
        assert!(
            message.contains("valid until 2026-12-07T12:30:00Z"),
            "{message}"
        );
        let later = now() + chrono::Duration::minutes(31);
        let g = gate(
            &approved,
            rule(ApprovalRequirement::OnOverwrite),
            true,
            later,
        );
        let Gate::Waiting {
            reason,
            message,
            status,
        } = &g
        else {
            panic!("{g:?}")
        };
        assert_eq!(*reason, Reason::ApprovalExpired);
        assert!(
            message.contains("expired at 2026-12-07T12:30:00Z"),
            "{message}"
        );
        assert_eq!(status.approved_by.as_deref(), Some("carol"));
    }

    #[test]
    fn annotations_are_not_believed_without_the_webhook() {
        let forged = run(
            true,
            false,
            &[(APPROVED_BY, "me"), (APPROVED_AT, "2026-12-07T11:59:00Z")],
        );
        let g = gate(&forged, rule(ApprovalRequirement::Always), false, now());
        assert!(
            matches!(
                g,
                Gate::Waiting {
                    reason: Reason::ApprovalUnavailable,
                    ..
                }
            ),
            "{g:?}"
        );
        // An unreadable time is no approval.
        let garbled = run(
            true,
            false,
            &[(APPROVED_BY, "carol"), (APPROVED_AT, "soon")],
        );
        assert!(matches!(
            gate(&garbled, rule(ApprovalRequirement::Always), true, now()),
            Gate::Waiting {
                reason: Reason::AwaitingApproval,
                ..
            }
        ));
    }

    #[test]
    fn the_policy_rule_wins_over_the_default() {
        let default = rule(ApprovalRequirement::Never);
        assert_eq!(ApprovalRule::effective(None, default), default);
        let policy = RestoreApproval {
            required: ApprovalRequirement::Always,
            valid_for: Some("15m".into()),
        };
        assert_eq!(
            ApprovalRule::effective(Some(&policy), default),
            ApprovalRule {
                required: ApprovalRequirement::Always,
                valid_for: Duration::from_secs(900)
            }
        );
        let no_validity = RestoreApproval {
            required: ApprovalRequirement::OnOverwrite,
            valid_for: None,
        };
        assert_eq!(
            ApprovalRule::effective(Some(&no_validity), default).valid_for,
            HOUR
        );
    }
}
