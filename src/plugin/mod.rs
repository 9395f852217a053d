//! `kubectl dataguardian …`: the kubectl plugin. It creates the same objects a user would
//! apply (a manual BackupRun, a RestoreRun, a RestoreValidation), follows them until they end
//! with live progress, shows the policies at a glance and streams a run's logs. Everything goes
//! through the Kubernetes API with the user's own kubeconfig and RBAC: the plugin has no
//! privileges of its own.
//!
//! Exit codes: 0 success, 1 the run/restore/validation failed, 2 bad usage or an API error.

pub mod audit;
pub mod render;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::plugin::args::{BackupCommand, Plugin, PluginCommand, WaitArgs};
use chrono::Utc;
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};

use crate::api::common::{Decryption, SecretKeySelector, format_bytes};
use crate::api::restore_validation::ValidationResult;
use crate::api::{BackupPolicy, BackupRun, RestoreRun, RestoreValidation};
use render::{RestoreOptions, generated_name, progress_line};

/// Field manager of the objects the plugin creates (shown in managedFields and Events).
pub const FIELD_MANAGER: &str = "kubectl-dataguardian";

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("cannot reach the cluster: {0}")]
    Config(String),
}

async fn client(namespace: Option<String>) -> Result<(Client, String), PluginError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| PluginError::Config(e.to_string()))?;
    let ns = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
    Ok((client, ns))
}

/// Runs one command.
pub async fn run(plugin: Plugin) -> Result<ExitCode, PluginError> {
    let explicit_ns = plugin.namespace.clone();
    let (client, ns) = client(plugin.namespace).await?;
    let now = Utc::now();
    match plugin.command {
        PluginCommand::Backup {
            what:
                BackupCommand::Now {
                    policy,
                    name,
                    reason,
                    wait,
                },
        } => {
            must_get::<BackupPolicy>(&client, &ns, &policy, "BackupPolicy").await?;
            let name = name.unwrap_or_else(|| generated_name(&policy, "manual", now));
            let run = render::backup_run(&ns, &name, &policy, reason.as_deref());
            let api: Api<BackupRun> = Api::namespaced(client, &ns);
            let created = api.create(&post_params(), &run).await?;
            println!("{}", render::created_line("backuprun", &created.metadata));
            if !wait.wait {
                return Ok(ExitCode::SUCCESS);
            }
            follow(&api, &name, &wait, |r: &BackupRun| {
                let st = r.status.clone().unwrap_or_default();
                let done = st.phase.and_then(|p| p.outcome());
                let phase = st.phase.map(|p| format!("{p:?}")); // shown, never matched on
                let line = match (done, st.artifact.as_deref()) {
                    (Some(true), Some(a)) => format!(
                        "Succeeded: {} stored ({} raw) in {}, sha256 {}",
                        format_bytes(a.size_bytes),
                        format_bytes(a.raw_bytes),
                        st.duration.clone().unwrap_or_default(),
                        a.sha256
                    ),
                    (Some(false), _) => failure_line(&st.reason, &st.message),
                    _ => progress_line(
                        phase.as_deref().unwrap_or("Pending"),
                        st.progress.as_deref(),
                        st.message.as_deref(),
                    ),
                };
                (line, done)
            })
            .await
        }
        PluginCommand::Restore(a) => {
            let backup: BackupRun = must_get(&client, &ns, &a.backup_run, "BackupRun").await?;
            let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
            let Some(policy) = policies.get_opt(&backup.spec.policy_ref.name).await? else {
                return Err(PluginError::Usage(format!(
                    "BackupPolicy {} of BackupRun {} not found: restore into an explicit target with a RestoreRun manifest",
                    backup.spec.policy_ref.name, a.backup_run
                )));
            };
            let decryption = match &a.identity_secret {
                Some(s) => Some(identity(s)),
                None => policy
                    .spec
                    .validation
                    .as_ref()
                    .and_then(|v| v.decryption.clone()),
            };
            let o = RestoreOptions {
                database: a.database.clone(),
                create_database: a.create_database,
                overwrite: a.overwrite,
                clean: a.clean,
                decryption,
            };
            let target = render::target_from_source(&policy.spec.source, &a.database);
            let name = a
                .name
                .unwrap_or_else(|| generated_name(&a.backup_run, "restore", now));
            let rr = render::restore_run(&ns, &name, &a.backup_run, &target, &o);
            let api: Api<RestoreRun> = Api::namespaced(client, &ns);
            let created = api.create(&post_params(), &rr).await?;
            println!("{}", render::created_line("restorerun", &created.metadata));
            if !a.wait.wait {
                return Ok(ExitCode::SUCCESS);
            }
            follow(&api, &name, &a.wait, |r: &RestoreRun| {
                let st = r.status.clone().unwrap_or_default();
                let done = st.phase.and_then(|p| p.outcome());
                let phase = st.phase.map(|p| format!("{p:?}")); // shown, never matched on
                let line = match done {
                    Some(true) => format!(
                        "Succeeded: restored into {} in {}{}",
                        a.database,
                        st.duration.clone().unwrap_or_default(),
                        if st.checksum.as_ref().is_some_and(|c| c.verified) {
                            ", checksum verified"
                        } else {
                            ""
                        }
                    ),
                    Some(false) => failure_line(&st.reason, &st.message),
                    None => progress_line(
                        phase.as_deref().unwrap_or("Queued"),
                        st.progress.as_ref(),
                        st.message.as_deref(),
                    ),
                };
                (line, done)
            })
            .await
        }
        PluginCommand::Validate(a) => {
            let backup: BackupRun = must_get(&client, &ns, &a.backup_run, "BackupRun").await?;
            let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
            let decryption = policies
                .get_opt(&backup.spec.policy_ref.name)
                .await?
                .and_then(|p| p.spec.validation.and_then(|v| v.decryption));
            let name = a
                .name
                .unwrap_or_else(|| generated_name(&a.backup_run, "check", now));
            let v = render::validation(&ns, &name, &a.backup_run, decryption.as_ref());
            let api: Api<RestoreValidation> = Api::namespaced(client, &ns);
            let created = api.create(&post_params(), &v).await?;
            println!(
                "{}",
                render::created_line("restorevalidation", &created.metadata)
            );
            if !a.wait.wait {
                return Ok(ExitCode::SUCCESS);
            }
            follow(&api, &name, &a.wait, |v: &RestoreValidation| {
                let st = v.status.clone().unwrap_or_default();
                let passed = st.result.map(|r| r == ValidationResult::Passed);
                let finished = st.phase.is_some_and(|p| p.is_finished());
                let phase = st.phase.map(|p| format!("{p:?}")); // shown, never matched on
                let done = finished.then(|| passed.unwrap_or(false));
                let line = if finished {
                    let checks: Vec<String> = st
                        .checks
                        .iter()
                        .map(|c| format!("{} {:?}", c.name, c.result))
                        .collect();
                    format!(
                        "{}: {}{}{}",
                        if done == Some(true) {
                            "Passed"
                        } else {
                            "Failed"
                        },
                        st.message.clone().unwrap_or_default(),
                        st.restore_duration_seconds
                            .map(|s| format!("; restore took {s:.1}s"))
                            .unwrap_or_default(),
                        if checks.is_empty() {
                            String::new()
                        } else {
                            format!("; checks: {}", checks.join(", "))
                        }
                    )
                } else {
                    progress_line(
                        phase.as_deref().unwrap_or("Pending"),
                        None,
                        st.message.as_deref(),
                    )
                };
                (line, done)
            })
            .await
        }
        PluginCommand::Status { policy } => {
            let api: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
            let mut policies = match &policy {
                Some(p) => vec![must_get(&client, &ns, p, "BackupPolicy").await?],
                None => api.list(&ListParams::default()).await?.items,
            };
            if policies.is_empty() {
                println!("No BackupPolicies in namespace {ns}.");
                return Ok(ExitCode::SUCCESS);
            }
            policies.sort_by_key(|p| p.name_any());
            println!("{}", render::status_table(&policies, now));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Logs { name, follow } => logs(&client, &ns, &name, follow).await,
        PluginCommand::Approve { name, withdraw } => approve(&client, &ns, &name, withdraw).await,
        PluginCommand::Audit { what, storage } => {
            audit::run(&client, &storage, explicit_ns.as_deref(), what).await
        }
        PluginCommand::Trace { name } => {
            let (_, trace_id) = run_of(&client, &ns, &name).await?;
            let link = std::env::var(TRACE_URL_ENV).ok();
            match render::trace_lines(&name, trace_id.as_deref(), link.as_deref()) {
                Ok(lines) => {
                    println!("{lines}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    eprintln!("{why}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `approve NAME`: sets (or removes) the approval annotation; the operator's admission webhook
/// decides and stamps who approved. A refusal is printed with the webhook's reason (exit 1).
async fn approve(
    client: &Client,
    ns: &str,
    name: &str,
    withdraw: bool,
) -> Result<ExitCode, PluginError> {
    use crate::admission::{APPROVE, APPROVED_AT, APPROVED_BY};
    use crate::api::RestoreRunPhase;
    let run: RestoreRun = must_get(client, ns, name, "RestoreRun").await?;
    let phase = run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    if !matches!(
        phase,
        RestoreRunPhase::Queued | RestoreRunPhase::AwaitingApproval
    ) {
        return Err(PluginError::Usage(format!(
            "RestoreRun {name} is {phase:?}: an approval only matters before a restore starts"
        )));
    }
    let value = if withdraw {
        serde_json::Value::Null
    } else {
        // A new value each time: approving again after an approval expired is a change.
        serde_json::Value::String(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
    };
    let patch = serde_json::json!({"metadata": {"annotations": {APPROVE: value}}});
    let api: Api<RestoreRun> = Api::namespaced(client.clone(), ns);
    let params = kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch(name, &params, &kube::api::Patch::Merge(&patch))
        .await
    {
        Ok(updated) => {
            let annotations = updated.metadata.annotations.unwrap_or_default();
            if withdraw {
                println!("restorerun/{name}: approval withdrawn");
            } else {
                println!(
                    "restorerun/{name} approved by {} at {}; it starts when its turn in the restore queue comes (see kubectl get restorerun {name} -n {ns})",
                    annotations
                        .get(APPROVED_BY)
                        .map(String::as_str)
                        .unwrap_or("?"),
                    annotations
                        .get(APPROVED_AT)
                        .map(String::as_str)
                        .unwrap_or("?"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
            eprintln!("approval of restorerun/{name} refused: {}", status.message);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// `name` of kind `K` in `ns`, or a usage error saying it does not exist.
async fn must_get<K>(client: &Client, ns: &str, name: &str, kind: &str) -> Result<K, PluginError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::Usage(format!("{kind} {name} not found in namespace {ns}")))
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn identity(spec: &str) -> Decryption {
    let (name, key) = spec.split_once(':').unwrap_or((spec, "identity"));
    Decryption {
        identity_secret_ref: Some(SecretKeySelector::new(name, key)),
        kms: None,
    }
}

fn failure_line(reason: &Option<String>, message: &Option<String>) -> String {
    format!(
        "Failed: {}: {}",
        reason.as_deref().unwrap_or("Failed"),
        message.as_deref().unwrap_or_default()
    )
}

/// Polls `name` every second, printing `describe`'s line whenever it changes, until it says
/// the object is done (`Some(success)`) or the timeout passes.
async fn follow<K>(
    api: &Api<K>,
    name: &str,
    wait: &WaitArgs,
    describe: impl Fn(&K) -> (String, Option<bool>),
) -> Result<ExitCode, PluginError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(wait.timeout);
    let mut last = String::new();
    loop {
        if let Some(obj) = api.get_opt(name).await? {
            let (line, done) = describe(&obj);
            if line != last {
                println!("{line}");
                last = line;
            }
            if let Some(ok) = done {
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
        } else {
            return Err(PluginError::Usage(format!(
                "{name} was deleted while waiting"
            )));
        }
        if Instant::now() >= deadline {
            eprintln!(
                "still running after {}s; follow it with `kubectl get` or `logs -f`",
                wait.timeout
            );
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The environment variable with a tracing backend's URL template (`{traceId}` is replaced).
pub const TRACE_URL_ENV: &str = "DATAGUARDIAN_TRACE_URL";

/// The Job behind `name`: a BackupRun's (from status), a RestoreRun's or a
/// RestoreValidation's.
async fn job_of(client: &Client, ns: &str, name: &str) -> Result<Option<String>, PluginError> {
    Ok(run_of(client, ns, name).await?.0)
}

/// The Job and the trace id (from status) of the BackupRun, RestoreRun or RestoreValidation
/// `name`.
async fn run_of(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<(Option<String>, Option<String>), PluginError> {
    if let Some(r) = Api::<BackupRun>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    {
        let st = r.status.unwrap_or_default();
        return Ok((st.job_name, st.trace_id));
    }
    if let Some(r) = Api::<RestoreRun>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    {
        let st = r.status.unwrap_or_default();
        return Ok((st.job_name, st.trace_id));
    }
    if let Some(v) = Api::<RestoreValidation>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    {
        let st = v.status.unwrap_or_default();
        return Ok((st.job_name, st.trace_id));
    }
    Err(PluginError::Usage(format!(
        "no BackupRun, RestoreRun or RestoreValidation {name} in namespace {ns}"
    )))
}

async fn logs(
    client: &Client,
    ns: &str,
    name: &str,
    follow: bool,
) -> Result<ExitCode, PluginError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    // A run just created has no Job (or Pod) yet: wait a little for one when following.
    let pod = loop {
        let job = job_of(client, ns, name).await?;
        let pod = match &job {
            Some(job) => Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await?
                .items
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0)),
            None => None,
        };
        match pod {
            Some(p) => break p,
            None if follow && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => {
                return Err(PluginError::Usage(match job {
                    Some(job) => format!("Job {job} of {name} has no Pod (yet)"),
                    None => format!("{name} has no Job (yet)"),
                }));
            }
        }
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = LogParams {
        container: Some(crate::contract::AGENT_CONTAINER.into()),
        follow,
        ..Default::default()
    };
    let pod_name = pod.name_any();
    if follow {
        let mut lines = pods.log_stream(&pod_name, &params).await?.lines();
        while let Some(line) = lines
            .try_next()
            .await
            .map_err(|e| PluginError::Config(format!("reading the logs of {pod_name}: {e}")))?
        {
            println!("{line}");
        }
    } else {
        print!("{}", pods.logs(&pod_name, &params).await?);
    }
    Ok(ExitCode::SUCCESS)
}
