//! `agent backup`: plan the artifacts (pure), then dump, stream and commit each one, and write
//! the manifest last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::contract::extra_args;
use crate::telemetry::otel::in_span;

use super::blocking;
use super::compress::Compression;
use super::crypto::Recipients;
use super::engine::mysql::RowCounter;
use super::engine::pg_tools::{self, PgTools};
use super::engine::{DbUri, ToolProcess, mysql, postgres};
use super::envelope::{self, DataKey, ENVELOPE_SCHEME, WrapTargets};
use super::error::{AgentError, Result};
use super::kms::KmsSettings;
use super::manifest::{
    Artifact, ArtifactKind, ENVELOPE_FORMAT_VERSION, EncryptionInfo, Engine, FORMAT_VERSION,
    MANIFEST_NAME, Manifest, PayloadFormat, TableCount, artifact_name,
};
use super::pipeline::{StreamStats, encode_stream};
use super::progress::Progress;
use super::storage::{Location, S3Settings, Store, StoredObject};

/// Everything a backup needs.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// Source engine.
    pub engine: Engine,
    /// Source connection (password inside, redacted in Debug).
    pub uri: DbUri,
    /// The database to back up (`None` with `all_databases`).
    pub database: Option<String>,
    /// Back up every database (PostgreSQL: plus roles and tablespaces).
    pub all_databases: bool,
    /// Destination base (`s3://bucket/prefix` or `file:///dir`).
    pub destination: Location,
    /// Name of this run's directory under the destination.
    pub run_id: String,
    /// Compression.
    pub compression: Compression,
    /// age recipients the run's data key is wrapped for (with `kms` empty: not encrypted).
    pub recipients: Recipients,
    /// KMS key (id, ARN or alias) the run's data key is wrapped by, and how to reach it.
    pub kms: Option<(String, KmsSettings)>,
    /// S3 settings.
    pub s3: S3Settings,
    /// Extra arguments for the dump tool.
    pub dump_args: Vec<String>,
    /// Interval of progress log lines.
    pub progress_interval: Duration,
}

/// One planned artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedArtifact {
    /// What it holds.
    pub kind: ArtifactKind,
    /// Its database.
    pub database: Option<String>,
    /// Key relative to the run directory.
    pub key: String,
}

/// Plan the artifacts of a backup (pure): PostgreSQL gets globals plus one archive per
/// database with `--all-databases`; MySQL gets one SQL stream.
pub fn plan_artifacts(
    engine: Engine,
    database: Option<&str>,
    all_databases: bool,
    databases: &[String],
    compression: Compression,
    encrypted: bool,
) -> Result<Vec<PlannedArtifact>> {
    let one = |kind, db: Option<&str>| PlannedArtifact {
        kind,
        database: db.map(str::to_string),
        key: artifact_name(engine, kind, db, compression, encrypted),
    };
    match (engine, all_databases, database) {
        (_, true, Some(_)) => Err(AgentError::Config(
            "--database and --all-databases exclude each other".into(),
        )),
        (_, false, None) => Err(AgentError::Config(
            "no database: give --database, a database in the URI, or --all-databases".into(),
        )),
        (_, false, Some(db)) => Ok(vec![one(ArtifactKind::Database, Some(db))]),
        (Engine::Mysql, true, None) => Ok(vec![one(ArtifactKind::AllDatabases, None)]),
        (Engine::Postgres, true, None) => {
            if databases.is_empty() {
                return Err(AgentError::Source(
                    "the server lists no database to back up".into(),
                ));
            }
            let mut out = vec![one(ArtifactKind::Globals, None)];
            let mut seen = std::collections::HashSet::new();
            for db in databases {
                let a = one(ArtifactKind::Database, Some(db));
                if !seen.insert(a.key.clone()) {
                    return Err(AgentError::Source(format!(
                        "two databases map to the same artifact key {}",
                        a.key
                    )));
                }
                out.push(a);
            }
            Ok(out)
        }
    }
}

/// Result of a finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The committed manifest.
    pub manifest: Manifest,
    /// Where the manifest is (`s3://…/manifest.json` or `file:///…/manifest.json`).
    pub manifest_location: Location,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: String,
}

/// Run a backup end to end.
pub async fn run(mut req: BackupRequest) -> Result<BackupOutcome> {
    let started_at = Utc::now();
    let clock = Instant::now();
    validate_run_id(&req.run_id)?;
    // Extra dump arguments come from the policy: only the allow-listed options reach pg_dump or
    // mysqldump (nothing that writes files, runs commands or changes the connection).
    extra_args::check(extra_args::Tool::dump(req.engine), &req.dump_args)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let run_dir = req.destination.join(&req.run_id);
    let manifest_location = run_dir.join(MANIFEST_NAME);
    let store = Store::open(&run_dir, &req.s3).await?;
    if store.exists(&manifest_location).await? {
        return Err(AgentError::Config(format!(
            "a backup already exists at {manifest_location}; choose another --run-id"
        )));
    }
    // Envelope encryption: a fresh data key for this run, wrapped for the recipients and/or by
    // the KMS key before anything is dumped (a KMS key that cannot encrypt fails the run here).
    // From here on the artifacts are encrypted to the data key only.
    let targets = WrapTargets {
        recipients: std::mem::take(&mut req.recipients),
        kms: req.kms.take(),
    };
    let data_key = if targets.is_empty() {
        None
    } else {
        let key = DataKey::generate();
        let wraps = in_span(
            tracing::info_span!("wrap-data-key"),
            envelope::wrap(&key, &targets),
        )
        .await?;
        tracing::info!(data_key = %wraps.fingerprint, wrapped_for = %envelope::describe(&wraps), "data key drawn and wrapped");
        req.recipients = key.recipients();
        Some(wraps)
    };

    let (uri, engine, all) = (req.uri.clone(), req.engine, req.all_databases);
    // The server's version picks the client tools (never a pg_dump older than the server);
    // nothing is written before they are known to fit.
    let connect = tracing::info_span!("connect", db.system.name = super::db_system(engine));
    let (server_version, databases, tools, dump_tool) = in_span(
        connect,
        blocking(move || match engine {
            Engine::Postgres => {
                let db = uri.database.as_deref().unwrap_or(postgres::MAINTENANCE_DB);
                let version = postgres::server_version(&uri, db)?;
                let tools = pg_tools::for_server(&version)?;
                let dump_tool = tools.version_of("pg_dump")?;
                let dbs = if all {
                    postgres::list_databases(&uri)?
                } else {
                    Vec::new()
                };
                Ok((version, dbs, Some(tools), dump_tool))
            }
            Engine::Mysql => {
                let version = mysql::server_version(&uri)?;
                let dump_tool = mysql::dump_tool_version()?;
                mysql::check_pair(&dump_tool, &version)?;
                Ok((version, Vec::new(), None, dump_tool))
            }
        }),
    )
    .await?;
    let plan = plan_artifacts(
        req.engine,
        req.database.as_deref(),
        req.all_databases,
        &databases,
        req.compression,
        !req.recipients.is_empty(),
    )?;
    tracing::info!(
        engine = %req.engine, server_version, dump_tool, source = %req.uri.redacted(), destination = %run_dir,
        artifacts = plan.len(), compression = %req.compression, encrypted = !req.recipients.is_empty(),
        "backup started"
    );

    let progress = Progress::new("backup");
    let _reporter = progress.start_reporter(req.progress_interval);
    let mut artifacts = Vec::new();
    for item in &plan {
        let span = tracing::info_span!(
            "artifact",
            artifact.key = %item.key,
            artifact.kind = ?item.kind,
            artifact.size_bytes = tracing::field::Empty,
            artifact.raw_bytes = tracing::field::Empty,
        );
        let artifact = in_span(
            span.clone(),
            backup_artifact(&req, tools.as_ref(), &store, &run_dir, item, &progress),
        )
        .await?;
        span.record("artifact.size_bytes", artifact.size_bytes);
        span.record("artifact.raw_bytes", artifact.raw_bytes);
        tracing::info!(key = %artifact.key, size_bytes = artifact.size_bytes, raw_bytes = artifact.raw_bytes,
            sha256 = %artifact.sha256, tables = artifact.tables.len(), "artifact stored");
        artifacts.push(artifact);
    }

    let manifest = Manifest {
        format_version: if data_key.is_some() {
            ENVELOPE_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        },
        tool: format!("dataguardian {}", env!("CARGO_PKG_VERSION")),
        engine: req.engine,
        server_version,
        dump_tool: Some(dump_tool),
        database: req.database.clone(),
        all_databases: req.all_databases,
        compression: req.compression,
        encryption: data_key.as_ref().map(|wraps| EncryptionInfo {
            scheme: ENVELOPE_SCHEME.into(),
            recipients: wraps.age_recipients(),
        }),
        data_key,
        artifacts,
        started_at,
        completed_at: Utc::now(),
        duration_seconds: round3(clock.elapsed().as_secs_f64()),
    };
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| AgentError::Storage(format!("cannot encode manifest: {e}")))?;
    let manifest_sha256 = super::hash::sha256_hex(&bytes);
    in_span(
        tracing::info_span!("manifest", artifacts = manifest.artifacts.len()),
        store.put_small(&manifest_location, bytes),
    )
    .await?;
    tracing::info!(manifest = %manifest_location, "manifest written; backup complete");
    Ok(BackupOutcome {
        manifest,
        manifest_location,
        manifest_sha256,
    })
}

/// Run-ids become one key segment: no slashes, no dot-dot.
pub fn validate_run_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 200
        || id == "."
        || id == ".."
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(AgentError::Config(format!(
            "invalid run id {id:?}: use 1-200 characters of [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn backup_artifact(
    req: &BackupRequest,
    tools: Option<&PgTools>,
    store: &Store,
    run_dir: &Location,
    item: &PlannedArtifact,
    progress: &Arc<Progress>,
) -> Result<Artifact> {
    let clock = Instant::now();
    let at = run_dir.join(&item.key);
    let (stats, stored, tables, format) = match (req.engine, item.kind) {
        (Engine::Postgres, ArtifactKind::Database) => {
            let db = item.database.clone().unwrap_or_default();
            let tools = tools.ok_or_else(|| AgentError::Config("no PostgreSQL tools".into()))?;
            let (stats, stored, tables) =
                postgres_database(req, tools, store, &at, &db, progress).await?;
            (stats, stored, tables, PayloadFormat::PgDumpCustom)
        }
        (Engine::Postgres, _) => {
            let tools = tools.ok_or_else(|| AgentError::Config("no PostgreSQL tools".into()))?;
            let tool = postgres::spawn_globals(tools, &req.uri, &[])?;
            let (stats, stored, _) = stream_tool(req, store, &at, tool, None, progress).await?;
            (stats, stored, Vec::new(), PayloadFormat::Sql)
        }
        (Engine::Mysql, kind) => {
            let db = if kind == ArtifactKind::Database {
                item.database.as_deref()
            } else {
                None
            };
            let tool = mysql::spawn_dump(&req.uri, db, &req.dump_args)?;
            let counter = RowCounter::new(db.unwrap_or(""));
            let (stats, stored, counter) =
                stream_tool(req, store, &at, tool, Some(counter), progress).await?;
            (
                stats,
                stored,
                counter.map(RowCounter::finish).unwrap_or_default(),
                PayloadFormat::Sql,
            )
        }
    };
    Ok(Artifact {
        key: item.key.clone(),
        kind: item.kind,
        database: item.database.clone(),
        format,
        size_bytes: stats.stored_bytes,
        raw_bytes: stats.raw_bytes,
        sha256: stats.sha256,
        tables,
        duration_seconds: round3(clock.elapsed().as_secs_f64()),
        confirmed_by: Some(stored.confirmed_by),
    })
}

/// One PostgreSQL database: export a snapshot, dump in it, count rows in it concurrently.
async fn postgres_database(
    req: &BackupRequest,
    tools: &PgTools,
    store: &Store,
    at: &Location,
    db: &str,
    progress: &Arc<Progress>,
) -> Result<(StreamStats, StoredObject, Vec<TableCount>)> {
    let (uri, dbname) = (req.uri.clone(), db.to_string());
    let session = in_span(
        tracing::info_span!("snapshot"),
        blocking(move || postgres::SnapshotSession::open(&uri, &dbname)),
    )
    .await?;
    tracing::info!(database = db, snapshot = %session.snapshot, "snapshot exported");
    let tool = match postgres::spawn_dump(tools, &req.uri, db, &session.snapshot, &req.dump_args) {
        Ok(t) => t,
        Err(e) => {
            let _ = session.close_with_error();
            return Err(e);
        }
    };
    // The counts run inside the exporting transaction while pg_dump streams.
    let counts = tokio::task::spawn_blocking(move || {
        let mut session = session;
        let counts = session.row_counts();
        (session, counts)
    });
    let streamed = stream_to_pending(req, store, at, tool, None, progress).await;
    let (session, counts) = counts.await.map_err(|e| {
        AgentError::Io(std::io::Error::other(format!(
            "row count thread failed: {e}"
        )))
    })?;
    match streamed {
        Err(e) => {
            let _ = session.close_with_error();
            Err(e)
        }
        Ok((pending, stats, _)) => {
            let counts = match counts.and_then(|c| {
                session.close()?;
                Ok(c)
            }) {
                Ok(c) => c,
                Err(e) => {
                    pending.abort().await;
                    return Err(e);
                }
            };
            let stored = pending.commit(stats.stored_bytes, &stats.sha256).await?;
            Ok((stats, stored, counts))
        }
    }
}

/// Stream a dump tool's stdout into storage. Returns the pending upload (not yet committed:
/// the caller may still have consistency work) together with the stats. One `dump` span: the
/// dump tool's output compressed, encrypted and hashed on its way to storage.
async fn stream_to_pending(
    req: &BackupRequest,
    store: &Store,
    at: &Location,
    tool: ToolProcess,
    counter: Option<RowCounter>,
    progress: &Arc<Progress>,
) -> Result<(super::storage::Pending, StreamStats, Option<RowCounter>)> {
    let span = tracing::info_span!(
        "dump",
        compression = %req.compression,
        encrypted = !req.recipients.is_empty(),
        bytes.raw = tracing::field::Empty,
        bytes.stored = tracing::field::Empty,
    );
    let out = in_span(
        span.clone(),
        stream_dump(req, store, at, tool, counter, progress),
    )
    .await;
    if let Ok((_, stats, _)) = &out {
        span.record("bytes.raw", stats.raw_bytes);
        span.record("bytes.stored", stats.stored_bytes);
    }
    out
}

async fn stream_dump(
    req: &BackupRequest,
    store: &Store,
    at: &Location,
    mut tool: ToolProcess,
    counter: Option<RowCounter>,
    progress: &Arc<Progress>,
) -> Result<(super::storage::Pending, StreamStats, Option<RowCounter>)> {
    let stdout = match tool.take_stdout() {
        Some(s) => s,
        None => {
            tool.kill();
            return Err(AgentError::Source("dump tool has no stdout".into()));
        }
    };
    let (writer, pending) = match store.begin_upload(at).await {
        Ok(x) => x,
        Err(e) => {
            tool.kill();
            return Err(e);
        }
    };
    let (compression, recipients, progress2) = (
        req.compression,
        req.recipients.clone(),
        Arc::clone(progress),
    );
    let span = tracing::Span::current();
    let joined = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut counter = counter;
        let res = encode_stream(
            stdout,
            writer,
            compression,
            &recipients,
            &progress2,
            counter.as_mut(),
        );
        (res, counter)
    })
    .await;
    let (res, counter) = match joined {
        Ok(x) => x,
        Err(e) => (
            Err(AgentError::Io(std::io::Error::other(format!(
                "pipeline thread failed: {e}"
            )))),
            None,
        ),
    };
    match res {
        Ok(stats) => match tool.finish(AgentError::Source) {
            Ok(_) => Ok((pending, stats, counter)),
            Err(e) => {
                pending.abort().await;
                Err(e)
            }
        },
        Err(pipeline_err) => {
            tool.kill();
            // An upload failure surfaces in the pipeline as a broken pipe; report the cause.
            let cause = pending.abort_with_cause().await;
            Err(cause.unwrap_or(pipeline_err))
        }
    }
}

/// Stream a dump tool into storage and commit when the tool exits cleanly.
async fn stream_tool(
    req: &BackupRequest,
    store: &Store,
    at: &Location,
    tool: ToolProcess,
    counter: Option<RowCounter>,
    progress: &Arc<Progress>,
) -> Result<(StreamStats, StoredObject, Option<RowCounter>)> {
    let (pending, stats, counter) =
        stream_to_pending(req, store, at, tool, counter, progress).await?;
    let stored = pending.commit(stats.stored_bytes, &stats.sha256).await?;
    Ok((stats, stored, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let c = Compression::Zstd { level: 3 };
        let p = plan_artifacts(Engine::Postgres, Some("shop"), false, &[], c, true).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "databases/shop.pgdump.zst.age");
        let dbs = vec!["a".to_string(), "postgres".to_string()];
        let p = plan_artifacts(Engine::Postgres, None, true, &dbs, c, false).unwrap();
        assert_eq!(
            p.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            [
                "globals.sql.zst",
                "databases/a.pgdump.zst",
                "databases/postgres.pgdump.zst"
            ]
        );
        let p = plan_artifacts(Engine::Mysql, None, true, &[], Compression::None, false).unwrap();
        assert_eq!(p[0].kind, ArtifactKind::AllDatabases);
        assert!(plan_artifacts(Engine::Mysql, None, false, &[], c, false).is_err());
        assert!(plan_artifacts(Engine::Mysql, Some("x"), true, &[], c, false).is_err());
        assert!(plan_artifacts(Engine::Postgres, None, true, &[], c, false).is_err());
    }

    #[test]
    fn run_ids() {
        assert!(validate_run_id("20260101T000000Z-shop").is_ok());
        for bad in ["", "..", "a/b", "a b", "x?"] {
            assert!(validate_run_id(bad).is_err(), "{bad}");
        }
    }
}
