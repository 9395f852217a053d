//! `agent restore`: read the manifest, check the target (pure planning + read-only queries),
//! optionally verify every artifact first, then stream each artifact into the restore tool and
//! check its SHA-256 at the end.
//!
//! A single-database restore is staged by default (see [`super::staging`]): the stream goes
//! into a staging database, its checksum is checked as it ends, masking and the guard run
//! there, and only then is it swapped in; any failure drops the staging database and leaves
//! the target as it was. The artifact is read once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::extra_args;
use crate::telemetry::otel::in_span;

use super::blocking;
use super::crypto::Identities;
use super::engine::pg_tools::{self, PgTools};
use super::engine::{DbUri, ToolProcess, mysql, postgres};
use super::envelope::{self, Unwrapper};
use super::error::{AgentError, Result};
use super::kms::KmsSettings;
use super::manifest::{Artifact, ArtifactKind, Engine, Manifest};
use super::pipeline::{
    DecodeError, DecodeOptions, DecodeStats, Filter, check_digest, decode_stream,
};
use super::progress::Progress;
use super::staging::{self, Staging};
use super::storage::{Location, S3Settings, Store};
use crate::api::restore_run::MaskingSpec;
use crate::contract::{ArtifactPin, SwapSummary};

/// Largest manifest accepted.
const MANIFEST_LIMIT: usize = 64 << 20;

/// Everything a restore needs.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Target engine (must match the manifest).
    pub engine: Engine,
    /// Target connection.
    pub uri: DbUri,
    /// Target database for a single-database backup (default: the URI's database).
    pub database: Option<String>,
    /// The manifest (`s3://…/manifest.json` or `file:///…/manifest.json`).
    pub from: Location,
    /// What the operator recorded about the backup (manifest digest, encryption, scope): a
    /// manifest that differs is refused before the target is touched.
    pub pin: ArtifactPin,
    /// age identity file for encrypted backups.
    pub identity_file: Option<PathBuf>,
    /// KMS settings when the data key may be unwrapped by KMS `Decrypt`; `None`: KMS is not
    /// asked.
    pub kms: Option<KmsSettings>,
    /// Create the target database(s) when missing.
    pub create_database: bool,
    /// Drop existing objects first (PostgreSQL `--clean --if-exists`; MySQL drops and recreates
    /// the database).
    pub clean: bool,
    /// Allow restoring into a non-empty database.
    pub overwrite: bool,
    /// Read and check every artifact completely before touching the target (a staged restore
    /// needs no extra pass for that: the target is swapped only after the checksum matched).
    pub verify_first: bool,
    /// PostgreSQL: `--no-owner`.
    pub no_owner: bool,
    /// PostgreSQL: `--single-transaction`.
    pub single_transaction: bool,
    /// Extra arguments for `pg_restore`.
    pub restore_args: Vec<String>,
    /// S3 settings.
    pub s3: S3Settings,
    /// Interval of progress log lines.
    pub progress_interval: Duration,
    /// Staged (swap) or in place.
    pub staging: Staging,
    /// Terminate sessions on the target for the swap.
    pub terminate_sessions: bool,
    /// Keep the previous target (`<db>_dgprev_<time>`) instead of dropping it after the swap.
    pub keep_previous: bool,
    /// Masking rules and guard, run in the staging database before the swap.
    pub masking: Option<MaskingSpec>,
    /// PostgreSQL parallel layout: how many `tableData` artifacts are restored at once, and
    /// `pg_restore --jobs` of the post-data section (indexes, constraints).
    pub parallelism: usize,
}

/// One step of a restore plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreStep {
    /// Index into the manifest's artifacts.
    pub artifact: usize,
    /// Database the artifact is restored into (`None`: the SQL names its databases, or
    /// cluster-level globals).
    pub target_database: Option<String>,
    /// Parallel layout: indices of the database's `tableData` artifacts.
    pub parts: Vec<usize>,
}

/// The `tableData` artifacts that belong to the database artifact `i` (parallel layout).
fn parts_of(manifest: &Manifest, i: usize) -> Vec<usize> {
    let db = &manifest.artifacts[i].database;
    manifest
        .artifacts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.kind == ArtifactKind::TableData && &a.database == db)
        .map(|(j, _)| j)
        .collect()
}

/// Plan where each artifact goes (pure). A `tableData` artifact is no step of its own: it
/// goes with its database's step.
pub fn plan_restore(
    manifest: &Manifest,
    target_database: Option<&str>,
) -> Result<Vec<RestoreStep>> {
    if manifest.all_databases {
        return Ok(manifest
            .artifacts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.kind != ArtifactKind::TableData)
            .map(|(i, a)| RestoreStep {
                artifact: i,
                target_database: match a.kind {
                    ArtifactKind::Database => a.database.clone(),
                    _ => None,
                },
                // MySQL all databases: the parts (no database of their own) go with the
                // all-databases artifact.
                parts: if matches!(a.kind, ArtifactKind::Database | ArtifactKind::AllDatabases) {
                    parts_of(manifest, i)
                } else {
                    Vec::new()
                },
            })
            .collect());
    }
    let db = target_database.ok_or_else(|| {
        AgentError::Config(
            "no target database: give --database or put the database in the URI".into(),
        )
    })?;
    let databases: Vec<usize> = manifest
        .artifacts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.kind != ArtifactKind::TableData)
        .map(|(i, _)| i)
        .collect();
    if databases.len() != 1 || manifest.artifacts[databases[0]].kind != ArtifactKind::Database {
        return Err(AgentError::Config(
            "a single-database backup must hold exactly one database artifact".into(),
        ));
    }
    let parts = parts_of(manifest, databases[0]);
    if parts.len() + 1 != manifest.artifacts.len() {
        return Err(AgentError::Config(
            "a tableData artifact of the backup belongs to another database".into(),
        ));
    }
    Ok(vec![RestoreStep {
        artifact: databases[0],
        target_database: Some(db.to_string()),
        parts,
    }])
}

/// What the parallel layout cannot do (pure): one transaction over several sessions, and
/// `--clean` in place (the pre-data section alone cannot drop tables that foreign keys of
/// other tables still reference; a staged restore, the default, needs no clean).
pub fn check_parallel_options(
    manifest: &Manifest,
    req_single_transaction: bool,
    in_place_clean: bool,
) -> Result<()> {
    if !manifest.is_parallel() {
        return Ok(());
    }
    if req_single_transaction {
        return Err(AgentError::Config(
            "--single-transaction cannot restore a backup of the parallel layout (its tables load in several sessions); a staged restore (the default) is all-or-nothing".into(),
        ));
    }
    if in_place_clean {
        return Err(AgentError::Config(
            "--clean in place cannot restore a backup of the parallel layout; use a staged restore (the default for one database) or an empty target database".into(),
        ));
    }
    Ok(())
}

/// Result of a finished restore.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The manifest restored from.
    pub manifest: Manifest,
    /// Databases restored into.
    pub databases: Vec<String>,
    /// Stored bytes read (restore pass only).
    pub stored_bytes: u64,
    /// Plain bytes fed to the restore tools.
    pub raw_bytes: u64,
    /// Whether a full verification pass ran before the target was touched.
    pub verified_first: bool,
    /// Wall time.
    pub duration_seconds: f64,
    /// What the staged restore did (`None`: in place).
    pub swap: Option<SwapSummary>,
}

/// Read and parse a manifest, refusing one that does not match `pin` (its bytes' SHA-256
/// first, then its encryption and scope). Every artifact digest the manifest lists is thereby
/// pinned too: the restore checks each artifact against them.
pub async fn load_manifest(store: &Store, at: &Location, pin: &ArtifactPin) -> Result<Manifest> {
    let bytes = store.get_small(at, MANIFEST_LIMIT).await?;
    parse_pinned_manifest(&bytes, at, pin)
}

/// The pure part of [`load_manifest`].
pub fn parse_pinned_manifest(bytes: &[u8], at: &Location, pin: &ArtifactPin) -> Result<Manifest> {
    pin.check_bytes(bytes)
        .map_err(|e| AgentError::Integrity(format!("{at}: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| AgentError::Integrity(format!("{at} is not a valid manifest: {e}")))?;
    manifest
        .validate()
        .map_err(|e| AgentError::Integrity(format!("{at}: {e}")))?;
    pin.check_contents(manifest.encryption.as_ref(), manifest.all_databases)
        .map_err(|e| AgentError::Integrity(format!("{at}: {e}")))?;
    Ok(manifest)
}

/// Run a restore end to end.
pub async fn run(req: RestoreRequest) -> Result<RestoreOutcome> {
    let clock = Instant::now();
    // Checked before anything is read or touched (see contract::extra_args).
    extra_args::check(extra_args::Tool::restore(req.engine), &req.restore_args)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let (dir, _) = req.from.split_last()?;
    let store = Store::open(&req.from, &req.s3).await?;
    let manifest = in_span(
        tracing::info_span!("manifest"),
        load_manifest(&store, &req.from, &req.pin),
    )
    .await?;
    if manifest.engine != req.engine {
        return Err(AgentError::Config(format!(
            "the backup is a {} backup; the target engine is {}",
            manifest.engine, req.engine
        )));
    }
    // The data key is unwrapped (or, for a manifest of an older agent, the identity file
    // loaded) before the target is looked at: a disabled KMS key fails here, untouched.
    let identities = in_span(
        tracing::info_span!("unwrap-data-key"),
        envelope::artifact_identities(
            manifest.encryption.as_ref(),
            manifest.data_key.as_ref(),
            &Unwrapper {
                identity_file: req.identity_file.clone(),
                kms: req.kms.clone(),
            },
        ),
    )
    .await?;
    let target_db = req.database.clone().or_else(|| req.uri.database.clone());
    let steps = plan_restore(&manifest, target_db.as_deref())?;
    let staged = staging::decide(req.staging, manifest.all_databases, req.masking.is_some())?;
    check_parallel_options(&manifest, req.single_transaction, req.clean && !staged)?;
    // Never a pg_restore older than the pg_dump that wrote the archive.
    let tools = match manifest.engine {
        Engine::Postgres => Some(pg_tools::for_archive(
            manifest.dump_tool.as_deref(),
            &manifest.server_version,
        )?),
        Engine::Mysql => None,
    };
    tracing::info!(
        from = %req.from, engine = %manifest.engine, server_version = %manifest.server_version,
        target = %req.uri.redacted(), artifacts = steps.len(), verify_first = req.verify_first, staged, "restore started"
    );

    // Read-only checks of the target before anything is written.
    let (uri, create, overwrite, engine) = (
        req.uri.clone(),
        req.create_database,
        req.overwrite,
        req.engine,
    );
    let dbs: Vec<String> = steps
        .iter()
        .filter_map(|s| s.target_database.clone())
        .collect();
    let missing = in_span(
        tracing::info_span!("connect", db.system.name = super::db_system(engine)),
        blocking(move || check_targets(engine, &uri, &dbs, create, overwrite)),
    )
    .await?;

    // A staged restore keeps the promise of --verify-first without a second read: the target
    // is not touched before the checksum, verified as the stream ends, has matched.
    if req.verify_first && !staged {
        let progress = Progress::new("verify");
        let _reporter = progress.start_reporter(req.progress_interval);
        for i in steps
            .iter()
            .flat_map(|s| std::iter::once(s.artifact).chain(s.parts.iter().copied()))
        {
            let a = &manifest.artifacts[i];
            let span = tracing::info_span!("verify", artifact.key = %a.key);
            let reader = store.open_reader(&dir.join(&a.key)).await?;
            let (ids, compression, p) = (
                identities.clone(),
                manifest.compression,
                Arc::clone(&progress),
            );
            let stats = in_span(
                span.clone(),
                blocking(move || {
                    let opts = DecodeOptions {
                        compression,
                        identities: ids,
                        filter: None,
                    };
                    decode_stream(reader, opts, &mut std::io::sink(), &p).map_err(|e| match e {
                        DecodeError::Source(e) => e,
                        DecodeError::Sink(e) => AgentError::Io(e),
                    })
                }),
            )
            .await?;
            if let Err(e) = check_digest(
                &format!("verification of {}", a.key),
                &stats,
                a.size_bytes,
                &a.sha256,
            ) {
                crate::telemetry::otel::fail(&span, &e);
                return Err(e);
            }
            tracing::info!(key = %a.key, sha256 = %a.sha256, "artifact verified");
        }
    }

    let progress = Progress::new("restore");
    let _reporter = progress.start_reporter(req.progress_interval);
    if staged {
        let step = &steps[0];
        let target = step
            .target_database
            .clone()
            .ok_or_else(|| AgentError::Config("a staged restore needs a target database".into()))?;
        let (stats, swap) = staged_restore(
            &req,
            tools.as_ref(),
            &store,
            &dir,
            &manifest,
            step,
            &target,
            identities,
            &progress,
        )
        .await?;
        return Ok(RestoreOutcome {
            manifest,
            databases: vec![target],
            stored_bytes: stats.stored_bytes,
            raw_bytes: stats.raw_bytes,
            verified_first: req.verify_first,
            duration_seconds: (clock.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            swap: Some(swap),
        });
    }
    let (mut stored, mut raw) = (0u64, 0u64);
    let mut restored = Vec::new();
    for step in &steps {
        let a = manifest.artifacts[step.artifact].clone();
        if let Some(db) = &step.target_database {
            let (uri, db2, is_missing) = (req.uri.clone(), db.clone(), missing.contains(db));
            let (engine, clean) = (req.engine, req.clean);
            blocking(move || prepare_target(engine, &uri, &db2, is_missing, clean)).await?;
        }
        let span = tracing::info_span!(
            "artifact",
            artifact.key = %a.key,
            artifact.kind = ?a.kind,
            artifact.size_bytes = a.size_bytes,
        );
        let stats = in_span(
            span,
            restore_unit(
                &req,
                tools.as_ref(),
                &store,
                &dir,
                &manifest,
                step,
                identities.clone(),
                &progress,
                false,
            ),
        )
        .await?;
        stored += stats.stored_bytes;
        raw += stats.raw_bytes;
        if let Some(db) = &step.target_database {
            restored.push(db.clone());
        }
        tracing::info!(key = %a.key, database = ?step.target_database, "artifact restored, checksum verified");
    }
    Ok(RestoreOutcome {
        manifest,
        databases: restored,
        stored_bytes: stored,
        raw_bytes: raw,
        verified_first: req.verify_first,
        duration_seconds: (clock.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        swap: None,
    })
}

/// Restore one artifact into the staging database of `target`, mask it, check the guard and
/// swap it in. Every failure before the swap drops the staging database.
#[allow(clippy::too_many_arguments)]
async fn staged_restore(
    req: &RestoreRequest,
    tools: Option<&PgTools>,
    store: &Store,
    dir: &Location,
    manifest: &Manifest,
    step: &RestoreStep,
    target: &str,
    identities: Option<Arc<Identities>>,
    progress: &Arc<Progress>,
) -> Result<(DecodeStats, SwapSummary)> {
    let engine = req.engine;
    let a = &manifest.artifacts[step.artifact];
    let stage = staging::staging_name(engine, target);
    {
        // A leftover of a killed attempt (restores of one target run one at a time).
        let (uri, stage) = (req.uri.clone(), stage.clone());
        blocking(move || match engine {
            Engine::Postgres => {
                postgres::drop_database(&uri, &stage)?;
                postgres::create_database(&uri, &stage)
            }
            Engine::Mysql => {
                mysql::drop_database(&uri, &stage)?;
                mysql::create_database(&uri, &stage)
            }
        })
        .await?;
    }
    tracing::info!(staging = %stage, target, "staging database created");
    let result = async {
        // The staging database is new: nothing to clean.
        let mut sreq = req.clone();
        sreq.clean = false;
        let step = RestoreStep {
            artifact: step.artifact,
            target_database: Some(stage.clone()),
            parts: step.parts.clone(),
        };
        let span = tracing::info_span!(
            "artifact",
            artifact.key = %a.key,
            artifact.kind = ?a.kind,
            artifact.size_bytes = a.size_bytes,
            staged = true,
        );
        let stats = in_span(
            span,
            restore_unit(
                &sreq, tools, store, dir, manifest, &step, identities, progress, true,
            ),
        )
        .await?;
        tracing::info!(key = %a.key, staging = %stage, "artifact restored into staging, checksum verified");
        let mut swap = SwapSummary {
            staging_database: stage.clone(),
            target_database: target.to_string(),
            ..Default::default()
        };
        if let Some(masking) = req.masking.clone() {
            let script = staging::masking_script(engine, &masking)?;
            swap.masking_rules = masking.rules.len() as u32;
            let (uri, db) = (req.uri.clone(), stage.clone());
            let passed = blocking(move || {
                if !script.is_empty() {
                    match engine {
                        Engine::Postgres => postgres::run_masking(&uri, &db, &script)?,
                        Engine::Mysql => mysql::run_masking(&uri, &db, &script)?,
                    }
                }
                let Some(guard) = masking.guard else {
                    return Ok(None);
                };
                let out = match engine {
                    Engine::Postgres => postgres::run_guard(&uri, &db, &guard)?,
                    Engine::Mysql => mysql::run_guard(&uri, &db, &guard)?,
                };
                staging::guard_holds(&out)
                    .map(|_| Some(true))
                    .map_err(|why| AgentError::Target(format!("guard failed: {why}; the target was left as it was")))
            })
            .await?;
            swap.guard_passed = passed;
            tracing::info!(rules = swap.masking_rules, guard = ?passed, "masking applied in staging");
        }
        let previous = staging::previous_name(engine, target, chrono::Utc::now());
        let (uri, t, st, prev, terminate) = (
            req.uri.clone(),
            target.to_string(),
            stage.clone(),
            previous.clone(),
            req.terminate_sessions,
        );
        swap.sessions_terminated = blocking(move || match engine {
            Engine::Postgres => postgres::swap_databases(&uri, &t, &st, &prev, terminate),
            Engine::Mysql => mysql::swap_schemas(&uri, &t, &st, &prev, terminate),
        })
        .await?;
        tracing::info!(target, staging = %stage, previous = %previous, "staging database swapped in");
        Ok::<_, AgentError>((stats, swap, previous))
    }
    .await;
    // After a swap the staging name is free (PostgreSQL) or holds only what was recreated
    // (MySQL); after a failure it holds the unswapped copy. Either way it goes.
    let (uri, st) = (req.uri.clone(), stage.clone());
    let dropped = blocking(move || match engine {
        Engine::Postgres => postgres::drop_database(&uri, &st),
        Engine::Mysql => mysql::drop_database(&uri, &st),
    })
    .await;
    if let Err(e) = &dropped {
        tracing::warn!(staging = %stage, error = %e, "could not drop the staging database");
    }
    let (stats, mut swap, previous) = result?;
    if req.keep_previous {
        swap.previous_database = Some(previous);
        swap.previous_kept = true;
    } else {
        let (uri, prev) = (req.uri.clone(), previous.clone());
        let gone = blocking(move || match engine {
            Engine::Postgres => postgres::drop_database(&uri, &prev),
            Engine::Mysql => mysql::drop_database(&uri, &prev),
        })
        .await;
        if let Err(e) = gone {
            tracing::warn!(previous = %previous, error = %e, "could not drop the previous target");
            swap.previous_database = Some(previous);
        }
    }
    Ok((stats, swap))
}

/// `agent drop-previous`: drop a previous target kept by a staged restore. Only names the
/// swap makes (`<db>_dgprev_<UTC time>`) are accepted.
pub fn drop_previous(engine: Engine, uri: &DbUri, name: &str) -> Result<bool> {
    if !staging::is_previous_name(name) {
        return Err(AgentError::Config(format!(
            "{name:?} is not a previous target kept by a staged restore (<database>{}<UTC time>); refusing to drop it",
            staging::PREVIOUS_MARKER
        )));
    }
    let existed = match engine {
        Engine::Postgres => postgres::database_exists(uri, name)?,
        Engine::Mysql => mysql::database_exists(uri, name)?,
    };
    match engine {
        Engine::Postgres => postgres::drop_database(uri, name)?,
        Engine::Mysql => mysql::drop_database(uri, name)?,
    }
    Ok(existed)
}

/// Check each target database (read-only): returns the ones that do not exist yet. Refuses a
/// missing database without `create`, and a non-empty one without `overwrite`.
fn check_targets(
    engine: Engine,
    uri: &DbUri,
    dbs: &[String],
    create: bool,
    overwrite: bool,
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for db in dbs {
        let exists = match engine {
            Engine::Postgres => postgres::database_exists(uri, db)?,
            Engine::Mysql => mysql::database_exists(uri, db)?,
        };
        if !exists {
            if !create {
                return Err(AgentError::Target(format!(
                    "database {db:?} does not exist (use --create-database)"
                )));
            }
            missing.push(db.clone());
            continue;
        }
        let objects = match engine {
            Engine::Postgres => postgres::user_relation_count(uri, db)?,
            Engine::Mysql => mysql::user_object_count(uri, db)?,
        };
        if objects > 0 && !overwrite {
            return Err(AgentError::Target(format!(
                "database {db:?} is not empty ({objects} objects); refusing to restore into it without --overwrite"
            )));
        }
    }
    Ok(missing)
}

fn prepare_target(engine: Engine, uri: &DbUri, db: &str, missing: bool, clean: bool) -> Result<()> {
    match (engine, missing) {
        (Engine::Postgres, true) => postgres::create_database(uri, db),
        (Engine::Mysql, true) => mysql::create_database(uri, db),
        (Engine::Mysql, false) if clean => mysql::recreate_database(uri, db),
        _ => Ok(()),
    }
}

/// Restore one step: its artifact, and with the parallel layout its `tableData` artifacts.
#[allow(clippy::too_many_arguments)]
async fn restore_unit(
    req: &RestoreRequest,
    tools: Option<&PgTools>,
    store: &Store,
    dir: &Location,
    manifest: &Manifest,
    step: &RestoreStep,
    identities: Option<Arc<Identities>>,
    progress: &Arc<Progress>,
    staged: bool,
) -> Result<DecodeStats> {
    let a = &manifest.artifacts[step.artifact];
    if step.parts.is_empty() {
        return restore_artifact(
            req,
            tools,
            store,
            dir,
            a,
            step,
            identities,
            manifest.compression,
            progress,
            staged,
        )
        .await;
    }
    if manifest.engine == Engine::Mysql {
        // All databases: no target database; the parts' SQL names theirs.
        let db = step.target_database.as_deref();
        return restore_mysql_parallel(
            req, store, dir, manifest, step, db, identities, progress, staged,
        )
        .await;
    }
    let db = step
        .target_database
        .clone()
        .ok_or_else(|| AgentError::Config("a parallel restore needs a database".into()))?;
    let tools = tools.ok_or_else(|| AgentError::Config("no PostgreSQL tools".into()))?;
    restore_parallel(
        req, tools, store, dir, manifest, step, &db, identities, progress, staged,
    )
    .await
}

/// The `tableData` (PostgreSQL) or table (MySQL) artifacts of `step`, `parallelism` at a time,
/// each in its own `part` span, read once and its checksum checked as it ends. Every part runs
/// to its end before the first error is returned. Returns the stored and raw bytes.
#[allow(clippy::too_many_arguments)]
async fn restore_parts(
    req: &RestoreRequest,
    tools: Option<&PgTools>,
    store: &Store,
    dir: &Location,
    manifest: &Manifest,
    step: &RestoreStep,
    db: Option<&str>,
    identities: Option<Arc<Identities>>,
    progress: &Arc<Progress>,
    staged: bool,
) -> Result<(u64, u64)> {
    use futures::StreamExt as _;
    let jobs = req.parallelism.max(1);
    let results = futures::stream::iter(step.parts.iter().copied())
        .map(|i| {
            let part = &manifest.artifacts[i];
            let ids = identities.clone();
            async move {
                let span = tracing::info_span!(
                    "part",
                    artifact.key = %part.key,
                    artifact.size_bytes = part.size_bytes,
                );
                let one = RestoreStep {
                    artifact: i,
                    target_database: db.map(str::to_string),
                    parts: Vec::new(),
                };
                in_span(
                    span,
                    restore_artifact(
                        req,
                        tools,
                        store,
                        dir,
                        part,
                        &one,
                        ids,
                        manifest.compression,
                        progress,
                        staged,
                    ),
                )
                .await
            }
        })
        .buffer_unordered(jobs)
        .collect::<Vec<_>>()
        .await;
    let (mut stored, mut raw) = (0u64, 0u64);
    for r in results {
        let stats = r?;
        stored += stats.stored_bytes;
        raw += stats.raw_bytes;
    }
    Ok((stored, raw))
}

/// MySQL/MariaDB parallel layout: the tables' artifacts (structure, rows, triggers) in
/// `parallelism` concurrent client sessions, each read once and its checksum checked as it
/// ends; then the database artifact (views, routines, events), which refers to them. With all
/// databases (`db` is `None`) the SQL of every artifact names its databases (`CREATE DATABASE
/// IF NOT EXISTS`, `USE`): the parts create the databases of their tables, the all-databases
/// artifact every other one with the views, routines and events.
#[allow(clippy::too_many_arguments)]
async fn restore_mysql_parallel(
    req: &RestoreRequest,
    store: &Store,
    dir: &Location,
    manifest: &Manifest,
    step: &RestoreStep,
    db: Option<&str>,
    identities: Option<Arc<Identities>>,
    progress: &Arc<Progress>,
    staged: bool,
) -> Result<DecodeStats> {
    let jobs = req.parallelism.max(1);
    let (stored, raw) = restore_parts(
        req,
        None,
        store,
        dir,
        manifest,
        step,
        db,
        identities.clone(),
        progress,
        staged,
    )
    .await?;
    let one = RestoreStep {
        artifact: step.artifact,
        target_database: db.map(str::to_string),
        parts: Vec::new(),
    };
    let mut total = restore_artifact(
        req,
        None,
        store,
        dir,
        &manifest.artifacts[step.artifact],
        &one,
        identities,
        manifest.compression,
        progress,
        staged,
    )
    .await?;
    total.stored_bytes += stored;
    total.raw_bytes += raw;
    tracing::info!(
        parts = step.parts.len(),
        jobs,
        "tables, then views and routines restored, checksums verified"
    );
    Ok(total)
}

/// A local file removed when dropped (the spooled database archive of a parallel restore).
struct SpoolFile(PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The parallel layout: the database artifact (schema, sequences, large objects; no table
/// rows) is read once into a private spool file in `TMPDIR`, its checksum checked; then
/// `pg_restore --section=pre-data` from it, the rows of every `tableData` artifact streamed
/// into `parallelism` concurrent `pg_restore` sessions (each artifact read once, its checksum
/// checked as it ends) beside `--section=data` of the spool, and last `pg_restore
/// --section=post-data --jobs=N` (indexes and constraints built in parallel).
#[allow(clippy::too_many_arguments)]
async fn restore_parallel(
    req: &RestoreRequest,
    tools: &PgTools,
    store: &Store,
    dir: &Location,
    manifest: &Manifest,
    step: &RestoreStep,
    db: &str,
    identities: Option<Arc<Identities>>,
    progress: &Arc<Progress>,
    staged: bool,
) -> Result<DecodeStats> {
    let a = &manifest.artifacts[step.artifact];
    let jobs = req.parallelism.max(1);
    let consequence = if staged {
        "the staging database is dropped, the target was left as it was"
    } else {
        "the target was written; restore again from a good copy"
    };
    // 1. The database artifact into the spool.
    let spool = SpoolFile(std::env::temp_dir().join(format!(
        "dataguardian-restore-{}.pgdump",
        super::engine::random_hex()?
    )));
    let reader = store.open_reader(&dir.join(&a.key)).await?;
    let (path, ids, compression, p) = (
        spool.0.clone(),
        identities.clone(),
        manifest.compression,
        Arc::clone(progress),
    );
    let mut total = in_span(
        tracing::info_span!("spool", artifact.key = %a.key),
        blocking(move || {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    AgentError::Io(std::io::Error::other(format!(
                        "cannot create the spool file {}: {e}",
                        path.display()
                    )))
                })?;
            let opts = DecodeOptions {
                compression,
                identities: ids,
                filter: None,
            };
            let stats = decode_stream(reader, opts, &mut file, &p).map_err(|e| match e {
                DecodeError::Source(e) => e,
                DecodeError::Sink(e) => AgentError::Io(std::io::Error::other(format!(
                    "writing the spool file: {e}"
                ))),
            })?;
            file.sync_all().map_err(AgentError::Io)?;
            Ok(stats)
        }),
    )
    .await?;
    check_digest(
        &format!("{} (nothing was restored)", a.key),
        &total,
        a.size_bytes,
        &a.sha256,
    )?;
    tracing::info!(key = %a.key, raw_bytes = total.raw_bytes, "database archive spooled, checksum verified");
    let opts = postgres::RestoreOptions {
        clean: req.clean,
        no_owner: req.no_owner,
        single_transaction: false,
        extra: req.restore_args.clone(),
    };
    let file_part = |part: postgres::RestorePart, name: &'static str| {
        let (tools, uri, db, path, opts) = (
            tools.clone(),
            req.uri.clone(),
            db.to_string(),
            spool.0.clone(),
            opts.clone(),
        );
        in_span(
            tracing::info_span!("section", section = name),
            blocking(move || {
                postgres::restore_part_from_file(&tools, &uri, &db, &path, part, &opts, jobs)
            }),
        )
    };
    // 2. Pre-data.
    file_part(postgres::RestorePart::PreData, "pre-data").await?;
    // 3. The rows: the spool's own data section, then every tableData artifact, `jobs` at a
    // time.
    file_part(postgres::RestorePart::Data, "data").await?;
    let (stored, raw) = restore_parts(
        req,
        Some(tools),
        store,
        dir,
        manifest,
        step,
        Some(db),
        identities.clone(),
        progress,
        staged,
    )
    .await?;
    total.stored_bytes += stored;
    total.raw_bytes += raw;
    tracing::info!(
        parts = step.parts.len(),
        jobs,
        consequence,
        "table rows restored, checksums verified"
    );
    // 4. Post-data, in parallel.
    file_part(postgres::RestorePart::PostData, "post-data").await?;
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
async fn restore_artifact(
    req: &RestoreRequest,
    tools: Option<&PgTools>,
    store: &Store,
    dir: &Location,
    a: &Artifact,
    step: &RestoreStep,
    identities: Option<Arc<Identities>>,
    compression: super::compress::Compression,
    progress: &Arc<Progress>,
    staged: bool,
) -> Result<DecodeStats> {
    let reader = store.open_reader(&dir.join(&a.key)).await?;
    let (mut tool, filter): (ToolProcess, Option<Filter>) =
        match (req.engine, a.kind, &step.target_database) {
            (
                Engine::Postgres,
                kind @ (ArtifactKind::Database | ArtifactKind::TableData),
                Some(db),
            ) => {
                // A tableData artifact holds only rows: nothing to clean, and it is one of
                // several sessions.
                let whole = kind == ArtifactKind::Database;
                let opts = postgres::RestoreOptions {
                    clean: req.clean && whole,
                    no_owner: req.no_owner,
                    single_transaction: req.single_transaction && whole,
                    extra: req.restore_args.clone(),
                };
                let tools =
                    tools.ok_or_else(|| AgentError::Config("no PostgreSQL tools".into()))?;
                (postgres::spawn_restore(tools, &req.uri, db, &opts)?, None)
            }
            (Engine::Postgres, _, _) => {
                // The role the restore connects as is left as it is on the target.
                let me = req.uri.user.clone().unwrap_or_else(|| "postgres".into());
                // psql runs in restricted mode under a key made for this restore: an
                // artifact's meta-commands are refused, never run.
                let key = super::engine::random_hex()?;
                let filter: Filter =
                    Box::new(move |r| Box::new(postgres::GlobalsFilter::new(r, Some(me), &key)));
                (
                    postgres::spawn_sql_restore(&req.uri, postgres::MAINTENANCE_DB)?,
                    Some(filter),
                )
            }
            (Engine::Mysql, _, db) => (mysql::spawn_restore(&req.uri, db.as_deref())?, None),
        };
    let Some(mut stdin) = tool.take_stdin() else {
        tool.kill();
        return Err(AgentError::Target("restore tool has no stdin".into()));
    };
    let p = Arc::clone(progress);
    let joined = tokio::task::spawn_blocking(move || {
        let opts = DecodeOptions {
            compression,
            identities,
            filter,
        };
        let res = decode_stream(reader, opts, &mut stdin, &p);
        drop(stdin); // EOF for the tool
        res
    })
    .await
    .map_err(|e| {
        AgentError::Io(std::io::Error::other(format!(
            "pipeline thread failed: {e}"
        )))
    })?;
    match joined {
        Ok(stats) => {
            tool.finish(AgentError::Target)?;
            let consequence = if staged {
                "the staging database is dropped, the target was left as it was"
            } else {
                "the target was written; restore again from a good copy"
            };
            check_digest(
                &format!("{} ({consequence})", a.key),
                &stats,
                a.size_bytes,
                &a.sha256,
            )?;
            Ok(stats)
        }
        Err(DecodeError::Source(e)) => {
            tool.kill();
            Err(e)
        }
        Err(DecodeError::Sink(io)) => {
            // The tool stopped reading: its exit status and stderr say why.
            Err(tool.finish(AgentError::Target).err().unwrap_or_else(|| {
                AgentError::Target(format!("the restore tool stopped reading its input: {io}"))
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::compress::Compression;
    use crate::agent::manifest::{FORMAT_VERSION, PayloadFormat};

    fn manifest(all: bool, kinds: &[(ArtifactKind, Option<&str>)]) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tool: "t".into(),
            engine: Engine::Postgres,
            server_version: "15".into(),
            dump_tool: None,
            database: None,
            all_databases: all,
            compression: Compression::None,
            encryption: None,
            data_key: None,
            artifacts: kinds
                .iter()
                .map(|(k, d)| Artifact {
                    key: "k".into(),
                    kind: *k,
                    database: d.map(str::to_string),
                    format: PayloadFormat::Sql,
                    size_bytes: 0,
                    raw_bytes: 0,
                    sha256: "0".repeat(64),
                    tables: vec![],
                    data_tables: vec![],
                    duration_seconds: 0.0,
                    confirmed_by: None,
                })
                .collect(),
            started_at: chrono::Utc::now(),
            completed_at: chrono::Utc::now(),
            duration_seconds: 0.0,
        }
    }

    #[test]
    fn a_pinned_manifest_is_refused_when_swapped_or_when_it_claims_less() {
        use crate::contract::{BackupScope, ExpectedEncryption};
        let at: Location = "file:///b/r/manifest.json".parse().unwrap();
        let honest = manifest(false, &[(ArtifactKind::Database, Some("shop"))]);
        let bytes = serde_json::to_vec(&honest).unwrap();
        let pin = ArtifactPin {
            manifest_sha256: Some(crate::contract::manifest::sha256_hex(&bytes)),
            encryption: Some(ExpectedEncryption::None),
            scope: Some(BackupScope::Database),
        };
        assert_eq!(parse_pinned_manifest(&bytes, &at, &pin).unwrap(), honest);
        // A consistent rewrite (another artifact digest) hashes differently.
        let mut swapped = honest.clone();
        swapped.artifacts[0].sha256 = "1".repeat(64);
        let e =
            parse_pinned_manifest(&serde_json::to_vec(&swapped).unwrap(), &at, &pin).unwrap_err();
        assert_eq!(e.category(), "integrity");
        assert!(e.to_string().contains("replaced or altered"), "{e}");
        // Without a digest pin, the scope and encryption pins still hold.
        let loose = ArtifactPin {
            manifest_sha256: None,
            ..pin
        };
        let mut all = honest.clone();
        all.all_databases = true;
        let e = parse_pinned_manifest(&serde_json::to_vec(&all).unwrap(), &at, &loose).unwrap_err();
        assert!(e.to_string().contains("scope AllDatabases"), "{e}");
    }

    #[test]
    fn plans_single_and_all() {
        let m = manifest(false, &[(ArtifactKind::Database, Some("shop"))]);
        assert_eq!(
            plan_restore(&m, Some("copy")).unwrap()[0]
                .target_database
                .as_deref(),
            Some("copy")
        );
        assert!(plan_restore(&m, None).is_err());
        let m = manifest(
            true,
            &[
                (ArtifactKind::Globals, None),
                (ArtifactKind::Database, Some("a")),
            ],
        );
        let p = plan_restore(&m, Some("ignored")).unwrap();
        assert_eq!(p[0].target_database, None);
        assert_eq!(p[1].target_database.as_deref(), Some("a"));
    }

    #[test]
    fn table_data_goes_with_its_database() {
        let mut m = manifest(
            false,
            &[
                (ArtifactKind::Database, Some("shop")),
                (ArtifactKind::TableData, Some("shop")),
                (ArtifactKind::TableData, Some("shop")),
            ],
        );
        m.format_version = crate::agent::manifest::PARALLEL_FORMAT_VERSION;
        let p = plan_restore(&m, Some("copy")).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].artifact, p[0].parts.clone()), (0, vec![1, 2]));
        assert_eq!(p[0].target_database.as_deref(), Some("copy"));
        // Parts of another database in a single-database backup: refused.
        m.artifacts[2].database = Some("other".into());
        assert!(plan_restore(&m, Some("copy")).is_err());
        // All databases: each database takes its own parts.
        let m = manifest(
            true,
            &[
                (ArtifactKind::Globals, None),
                (ArtifactKind::Database, Some("a")),
                (ArtifactKind::TableData, Some("a")),
                (ArtifactKind::Database, Some("b")),
                (ArtifactKind::TableData, Some("b")),
            ],
        );
        let p = plan_restore(&m, None).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[1].artifact, p[1].parts.clone()), (1, vec![2]));
        assert_eq!((p[2].artifact, p[2].parts.clone()), (3, vec![4]));
        assert!(p[0].parts.is_empty());
        // MySQL all databases in the parallel layout: one step, the all-databases artifact
        // with every part, no target database (the SQL names them).
        let mut my = manifest(
            true,
            &[
                (ArtifactKind::AllDatabases, None),
                (ArtifactKind::TableData, None),
                (ArtifactKind::TableData, None),
            ],
        );
        my.engine = Engine::Mysql;
        let p = plan_restore(&my, None).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].artifact, p[0].parts.clone()), (0, vec![1, 2]));
        assert_eq!(p[0].target_database, None);
        // What the parallel layout refuses, and only for it.
        let mut par = m.clone();
        par.format_version = crate::agent::manifest::PARALLEL_FORMAT_VERSION;
        assert!(check_parallel_options(&par, true, false).is_err());
        assert!(check_parallel_options(&par, false, true).is_err());
        assert!(check_parallel_options(&par, false, false).is_ok());
        let single = manifest(false, &[(ArtifactKind::Database, Some("shop"))]);
        assert!(check_parallel_options(&single, true, true).is_ok());
    }
}
