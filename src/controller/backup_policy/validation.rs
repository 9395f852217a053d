//! A policy's automatic validations: a second controller over BackupPolicies that creates a
//! RestoreValidation for the BackupRun the plan ([`super::validation_plan`]) picks, prunes old
//! ones and writes the policy's validation status fields.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use crate::api::backup_policy::POLICY_LABEL;
use crate::api::common::condition_types::RTO_MET;
use crate::api::common::{LocalObjectReference, find_condition};
use crate::api::restore_validation::RestoreValidationSpec;
use crate::api::{BackupPolicy, RestoreValidation};
use crate::controller::common::context::Context;
use crate::controller::common::error::Result;
use crate::controller::common::reason::Reason;
use crate::controller::common::reconcile::{RUNS_CACHE_WAIT, namespace_and_name};
use crate::telemetry::metrics::PolicyLabels;

use super::validation_plan::{auto_validation_name, plan_policy};

/// Field manager of the policy's validation status fields. The RestoreValidation controller
/// wrote them under this name before this controller had a room of its own; keeping it keeps
/// the fields' ownership (a new name would leave the old entries behind in managedFields).
const FIELD_MANAGER: &str = "dataguardian-restorevalidation";

/// Reconciles a BackupPolicy's automatic validations and its validation status fields.
pub async fn reconcile_policy(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.runs_synced() {
        return Ok(Action::requeue(RUNS_CACHE_WAIT));
    }
    let (ns, name) = namespace_and_name(policy.as_ref())?;
    if policy.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let vals_api: Api<RestoreValidation> = Api::namespaced(ctx.client.clone(), &ns);
    let validations = vals_api.list(&ListParams::default()).await?.items;
    // The policy's finished runs, from the shared cache. A policy without automatic
    // validations, in a namespace without any RestoreValidation, has nothing to plan: skip
    // copying its runs.
    let runs = if policy.spec.validation.is_none() && validations.is_empty() {
        Vec::new()
    } else {
        ctx.runs.finished_of(&ns, &name)
    };
    let now = Utc::now();
    let p = plan_policy(&policy, &runs, &validations, now);
    let cfg = policy.spec.validation.clone();

    if let (Some(run), Some(cfg)) = (&p.create_for, &cfg) {
        let owner = policy.controller_owner_ref(&()).map(|o| OwnerReference {
            controller: Some(false),
            ..o
        });
        let rv = RestoreValidation {
            metadata: ObjectMeta {
                name: Some(auto_validation_name(run)),
                namespace: Some(ns.clone()),
                labels: Some(
                    [(
                        POLICY_LABEL.to_string(),
                        crate::jobs::naming::label_value(&name),
                    )]
                    .into(),
                ),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: RestoreValidationSpec {
                backup_run_ref: Some(LocalObjectReference::new(run.clone())),
                policy_ref: None,
                latest: None,
                sandbox: cfg.sandbox.clone(),
                checks: cfg.checks.clone(),
                decryption: cfg.decryption.clone(),
                active_deadline_seconds: None,
                read_from: None,
            },
            status: None,
        };
        match vals_api.create(&PostParams::default(), &rv).await {
            Ok(_) => {
                ctx.event(
                    policy.as_ref(),
                    EventType::Normal,
                    "ValidationCreated",
                    "CreateValidation",
                    format!("RestoreValidation {} created to prove BackupRun {run} ({} successful backups since the last validation)", auto_validation_name(run), p.backups_since_validation),
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for old in &p.prune {
        match vals_api.delete(old, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(policy = %name, validation = %old, "pruned a RestoreValidation beyond the history limit")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The recovery time objective: a gauge, and a Warning Event when it was just missed.
    let labels = PolicyLabels {
        namespace: ns.clone(),
        policy: name.clone(),
    };
    let old = policy.status.clone().unwrap_or_default();
    match p.rto.as_ref().and_then(|r| r.met) {
        Some(met) => {
            ctx.metrics
                .rto_met
                .get_or_create(&labels)
                .set(i64::from(met));
        }
        None => {
            ctx.metrics.rto_met.remove(&labels);
        }
    }
    if let Some(rto) = &p.rto
        && rto.met == Some(false)
        && find_condition(&old.conditions, RTO_MET).is_none_or(|c| c.status != "False")
    {
        ctx.event(
            policy.as_ref(),
            EventType::Warning,
            Reason::RtoNotMet.as_str(),
            "EvaluateRTO",
            rto.condition.message.clone(),
        )
        .await;
    }

    if cfg.is_some() || p.last_validation.is_some() || p.rto.is_some() {
        // A condition keeps its transition time while its status holds.
        let keep_transition = |mut c: Condition| {
            if let Some(prev) = find_condition(&old.conditions, &c.type_)
                && prev.status == c.status
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        };
        let mut conditions = vec![keep_transition(p.verified.clone())];
        conditions.extend(p.rto.as_ref().map(|r| keep_transition(r.condition.clone())));
        let same = |c: &Condition| {
            find_condition(&old.conditions, &c.type_).is_some_and(|o| {
                o.status == c.status
                    && o.reason == c.reason
                    && o.message == c.message
                    && o.observed_generation == c.observed_generation
            })
        };
        // An objective removed from the spec: its condition goes (this manager owns it).
        let stale_rto = p.rto.is_none() && find_condition(&old.conditions, RTO_MET).is_some();
        let unchanged = old.last_validation.as_deref() == p.last_validation.as_ref()
            && old.backups_since_validation == Some(p.backups_since_validation)
            && conditions.iter().all(same)
            && !stale_rto;
        if !unchanged {
            let api: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
            let body = json!({
                "apiVersion": BackupPolicy::api_version(&()),
                "kind": BackupPolicy::kind(&()),
                "status": {
                    "lastValidation": p.last_validation,
                    "backupsSinceValidation": p.backups_since_validation,
                    "conditions": conditions,
                },
            });
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        }
    }
    Ok(match next_wake(p.next_check, now) {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Longest wait before a scheduled validation is checked again.
const MAX_SCHEDULE_WAIT: Duration = Duration::from_secs(300);

/// When to look at the policy again without being told: a scheduled validation's next check
/// (at most [`MAX_SCHEDULE_WAIT`] away), or never. Nothing else in the plan depends on the
/// clock: it changes only with the policy, its BackupRuns and its RestoreValidations, and each
/// of those wakes this controller. (Requeueing every policy every 5 minutes kept an entry per
/// policy in the controller's scheduler — about 0.7 KB each — and listed each namespace's
/// RestoreValidations 10,000 times per 5 minutes at 10,000 policies.)
fn next_wake(
    next_check: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    next_check.map(|t| {
        (t - now)
            .to_std()
            .map_or(Duration::from_secs(1), |d| d + Duration::from_secs(1))
            .min(MAX_SCHEDULE_WAIT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> chrono::DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_scheduled_check_wakes_the_policy_by_time() {
        let now = t("2026-12-08T12:00:00Z");
        assert_eq!(next_wake(None, now), None);
        assert_eq!(
            next_wake(Some(t("2026-12-08T12:01:00Z")), now),
            Some(Duration::from_secs(61))
        );
        assert_eq!(
            next_wake(Some(t("2026-12-09T03:00:00Z")), now),
            Some(MAX_SCHEDULE_WAIT)
        );
        // Already due (a clock step): soon, never a hot loop.
        assert_eq!(
            next_wake(Some(t("2026-12-08T11:59:00Z")), now),
            Some(Duration::from_secs(1))
        );
    }
}
