//! `agent backup`: plan the artifacts (pure), then dump, stream and commit each one, and write
//! the manifest last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::contract::extra_args;
use crate::telemetry::otel::in_span;

use super::blocking;
use super::compress::{Compression, zstd_workers};
use super::crypto::Recipients;
use super::engine::mysql::RowCounter;
use super::engine::pg_tools::{self, PgTools};
use super::engine::{DbUri, ToolProcess, mysql, postgres};
use super::envelope::{self, DataKey, ENVELOPE_SCHEME, WrapTargets};
use super::error::{AgentError, Result};
use super::kms::KmsSettings;
use super::manifest::{
    Artifact, ArtifactKind, ENVELOPE_FORMAT_VERSION, EncryptionInfo, Engine, FORMAT_VERSION,
    MANIFEST_NAME, Manifest, PARALLEL_FORMAT_VERSION, PayloadFormat, TableCount, artifact_name,
    table_data_name,
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
    /// How many dumps of one PostgreSQL database may run at once (1: the single stream).
    pub parallelism: usize,
    /// The parallel layout is used only for a database whose tables hold at least this many
    /// bytes (below it one stream is as fast and keeps one artifact).
    pub parallel_min_bytes: u64,
}

/// Default of [`BackupRequest::parallel_min_bytes`]: 256 MiB of tables.
pub const DEFAULT_PARALLEL_MIN_BYTES: u64 = 256 << 20;

/// How many dumps run at once by default: the CPUs this process may use (cgroup CPU limit and
/// affinity included), at most 8.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// One group of tables whose rows go into one `tableData` artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableGroup {
    /// `(schema, table)` of each table, largest first.
    pub tables: Vec<(String, String)>,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Plan the parallel layout of one PostgreSQL database (pure): `None` keeps the single
/// stream (one job, extra dump arguments, or tables smaller than `min_bytes` in total).
/// Otherwise every table's rows go into one of the groups, largest group first: a table of at
/// least `total / (2 × jobs)` bytes is a group of its own, smaller ones are packed together up
/// to that size, so `jobs` workers taking the next group as they finish stay evenly busy and
/// a database of thousands of small tables does not become thousands of objects.
pub fn plan_table_groups(
    tables: &[postgres::TableSize],
    jobs: usize,
    min_bytes: u64,
    has_dump_args: bool,
) -> Option<Vec<TableGroup>> {
    let total: u64 = tables.iter().map(|t| t.bytes).sum();
    if jobs < 2 || has_dump_args || tables.len() < 2 || total < min_bytes {
        return None;
    }
    let target = (total / (2 * jobs as u64)).max(1);
    let mut sorted: Vec<&postgres::TableSize> = tables.iter().collect();
    sorted.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)))
    });
    let mut groups: Vec<TableGroup> = Vec::new();
    let mut open: Option<TableGroup> = None;
    for t in sorted {
        let name = (t.schema.clone(), t.name.clone());
        if t.bytes >= target {
            groups.push(TableGroup {
                tables: vec![name],
                bytes: t.bytes,
            });
            continue;
        }
        let g = open.get_or_insert_with(|| TableGroup {
            tables: Vec::new(),
            bytes: 0,
        });
        g.tables.push(name);
        g.bytes += t.bytes;
        if g.bytes >= target {
            groups.extend(open.take());
        }
    }
    groups.extend(open.take());
    groups.sort_by_key(|g| std::cmp::Reverse(g.bytes));
    Some(groups)
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
/// database with `--all-databases`; MySQL gets one SQL stream (the parallel layout, decided when
/// it is dumped, splits a database or all databases into parts).
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
        let stored = in_span(
            span.clone(),
            backup_artifact(&req, tools.as_ref(), &store, &run_dir, item, &progress),
        )
        .await?;
        span.record(
            "artifact.size_bytes",
            stored.iter().map(|a| a.size_bytes).sum::<u64>(),
        );
        span.record(
            "artifact.raw_bytes",
            stored.iter().map(|a| a.raw_bytes).sum::<u64>(),
        );
        for artifact in stored {
            tracing::info!(key = %artifact.key, size_bytes = artifact.size_bytes, raw_bytes = artifact.raw_bytes,
                sha256 = %artifact.sha256, tables = artifact.tables.len().max(artifact.data_tables.len()), "artifact stored");
            artifacts.push(artifact);
        }
    }

    let parallel = artifacts.iter().any(|a| a.kind == ArtifactKind::TableData);
    let manifest = Manifest {
        format_version: if parallel {
            PARALLEL_FORMAT_VERSION
        } else if data_key.is_some() {
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
) -> Result<Vec<Artifact>> {
    let clock = Instant::now();
    let at = run_dir.join(&item.key);
    if req.engine == Engine::Mysql
        && item.kind == ArtifactKind::Database
        && req.parallelism > 1
        && req.dump_args.is_empty()
    {
        let db = item.database.clone().unwrap_or_default();
        if let Some(parts) = mysql_parallel(req, store, run_dir, item, &db, progress).await? {
            return Ok(parts);
        }
    }
    if req.engine == Engine::Mysql
        && item.kind == ArtifactKind::AllDatabases
        && req.parallelism > 1
        && req.dump_args.is_empty()
        && let Some(parts) = mysql_parallel_all(req, store, run_dir, item, progress).await?
    {
        return Ok(parts);
    }
    let (stats, stored, tables, format) = match (req.engine, item.kind) {
        (Engine::Postgres, ArtifactKind::Database) => {
            let db = item.database.clone().unwrap_or_default();
            let tools = tools.ok_or_else(|| AgentError::Config("no PostgreSQL tools".into()))?;
            return postgres_database(req, tools, store, run_dir, item, &db, progress).await;
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
    Ok(vec![artifact_of(
        item.key.clone(),
        item.kind,
        item.database.clone(),
        format,
        &stats,
        &stored,
        tables,
        clock.elapsed(),
    )])
}

#[allow(clippy::too_many_arguments)]
fn artifact_of(
    key: String,
    kind: ArtifactKind,
    database: Option<String>,
    format: PayloadFormat,
    stats: &StreamStats,
    stored: &StoredObject,
    tables: Vec<TableCount>,
    took: Duration,
) -> Artifact {
    let (tables, data_tables) = if kind == ArtifactKind::TableData {
        (Vec::new(), tables)
    } else {
        (tables, Vec::new())
    };
    Artifact {
        key,
        kind,
        database,
        format,
        size_bytes: stats.stored_bytes,
        raw_bytes: stats.raw_bytes,
        sha256: stats.sha256.clone(),
        tables,
        data_tables,
        duration_seconds: round3(took.as_secs_f64()),
        confirmed_by: Some(stored.confirmed_by),
    }
}

/// One PostgreSQL database: export a snapshot, plan the layout, dump in it (one stream, or
/// several in parallel), count rows in it concurrently.
async fn postgres_database(
    req: &BackupRequest,
    tools: &PgTools,
    store: &Store,
    run_dir: &Location,
    item: &PlannedArtifact,
    db: &str,
    progress: &Arc<Progress>,
) -> Result<Vec<Artifact>> {
    let clock = Instant::now();
    let (uri, dbname, jobs) = (req.uri.clone(), db.to_string(), req.parallelism);
    let (session, sizes) = in_span(
        tracing::info_span!("snapshot"),
        blocking(move || {
            let mut session = postgres::SnapshotSession::open(&uri, &dbname)?;
            if jobs < 2 {
                return Ok((session, Vec::new()));
            }
            match session.table_sizes() {
                Ok(sizes) => Ok((session, sizes)),
                Err(e) => Err(session.close_with_error().unwrap_or(e)),
            }
        }),
    )
    .await?;
    tracing::info!(database = db, snapshot = %session.snapshot, "snapshot exported");
    let groups = plan_table_groups(
        &sizes,
        req.parallelism,
        req.parallel_min_bytes,
        !req.dump_args.is_empty(),
    );
    if let Some(groups) = groups {
        return postgres_parallel(
            req, tools, store, run_dir, item, db, session, groups, progress,
        )
        .await;
    }
    if jobs > 1 {
        tracing::info!(
            database = db,
            table_bytes = sizes.iter().map(|t| t.bytes).sum::<u64>(),
            min_bytes = req.parallel_min_bytes,
            extra_dump_args = !req.dump_args.is_empty(),
            "one stream: the database is below the parallel threshold, or extra dump arguments are set"
        );
    }
    let at = run_dir.join(&item.key);
    let (stats, stored, tables) =
        postgres_single(req, tools, store, &at, db, session, progress).await?;
    Ok(vec![artifact_of(
        item.key.clone(),
        ArtifactKind::Database,
        item.database.clone(),
        PayloadFormat::PgDumpCustom,
        &stats,
        &stored,
        tables,
        clock.elapsed(),
    )])
}

/// The parallel layout: the database artifact (everything but the rows of the planned
/// tables) and one `tableData` artifact per group, at most `parallelism` dumps at a time, all
/// in the session's exported snapshot; committed only when every dump and the counts
/// succeeded.
#[allow(clippy::too_many_arguments)]
async fn postgres_parallel(
    req: &BackupRequest,
    tools: &PgTools,
    store: &Store,
    run_dir: &Location,
    item: &PlannedArtifact,
    db: &str,
    session: postgres::SnapshotSession,
    groups: Vec<TableGroup>,
    progress: &Arc<Progress>,
) -> Result<Vec<Artifact>> {
    use futures::StreamExt as _;
    let encrypted = !req.recipients.is_empty();
    let every: Vec<(String, String)> = groups.iter().flat_map(|g| g.tables.clone()).collect();
    tracing::info!(
        database = db,
        groups = groups.len(),
        tables = every.len(),
        table_bytes = groups.iter().map(|g| g.bytes).sum::<u64>(),
        jobs = req.parallelism,
        "parallel layout"
    );
    let snapshot = session.snapshot.clone();
    // The counts run inside the exporting transaction while the dumps stream.
    let counts = tokio::task::spawn_blocking(move || {
        let mut session = session;
        let counts = session.row_counts();
        (session, counts)
    });
    // Job 0 is the database artifact; job i > 0 is group i - 1.
    let keys: Vec<String> = std::iter::once(item.key.clone())
        .chain(
            (0..groups.len())
                .map(|i| table_data_name(Engine::Postgres, db, i, req.compression, encrypted)),
        )
        .collect();
    let (keys_ref, every_ref, groups_ref) = (&keys, &every, &groups);
    // Streams running at once: they share the cores, so zstd's threads per stream.
    let streams = req.parallelism.clamp(1, keys.len().max(1));
    let dumps = futures::stream::iter(0..keys.len())
        .map(|i| {
            let scope = if i == 0 {
                postgres::DumpScope::WithoutDataOf(every_ref)
            } else {
                postgres::DumpScope::DataOf(&groups_ref[i - 1].tables)
            };
            let at = run_dir.join(&keys_ref[i]);
            let snapshot = &snapshot;
            async move {
                let clock = Instant::now();
                let span = tracing::info_span!("part", artifact.key = %keys_ref[i], part = i);
                let out = async {
                    let tool = postgres::spawn_scoped_dump(
                        tools,
                        &req.uri,
                        db,
                        snapshot,
                        scope,
                        &req.dump_args,
                    )?;
                    stream_to_pending(req, store, &at, tool, None, progress, None, streams).await
                };
                (i, in_span(span, out).await, clock.elapsed())
            }
        })
        .buffer_unordered(req.parallelism.max(1))
        .collect::<Vec<_>>()
        .await;
    let (session, counts) = counts.await.map_err(|e| {
        AgentError::Io(std::io::Error::other(format!(
            "row count thread failed: {e}"
        )))
    })?;
    let mut done = Vec::new();
    let mut first_err = None;
    for (i, res, took) in dumps {
        match res {
            Ok((pending, stats, _)) => done.push((i, pending, stats, took)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let counts = match first_err {
        Some(e) => Err(e),
        None => counts.and_then(|c| {
            session.close()?;
            Ok(c)
        }),
    };
    let counts = match counts {
        Ok(c) => c,
        Err(e) => {
            for (_, pending, _, _) in done {
                pending.abort().await;
            }
            return Err(e);
        }
    };
    done.sort_by_key(|(i, ..)| *i);
    let mut out = Vec::with_capacity(done.len());
    let mut pendings = done.into_iter();
    while let Some((i, pending, stats, took)) = pendings.next() {
        let stored = match pending.commit(stats.stored_bytes, &stats.sha256).await {
            Ok(s) => s,
            Err(e) => {
                for (_, p, _, _) in pendings {
                    p.abort().await;
                }
                return Err(e);
            }
        };
        let (kind, tables) = if i == 0 {
            (ArtifactKind::Database, counts.clone())
        } else {
            let mine = &groups[i - 1].tables;
            let tables: Vec<TableCount> = counts
                .iter()
                .filter(|c| mine.iter().any(|(s, t)| *s == c.schema && *t == c.name))
                .cloned()
                .collect();
            if tables.len() != mine.len() {
                for (_, p, _, _) in pendings {
                    p.abort().await;
                }
                return Err(AgentError::Source(format!(
                    "the snapshot counted {} of the {} tables dumped into {}",
                    tables.len(),
                    mine.len(),
                    keys[i]
                )));
            }
            (ArtifactKind::TableData, tables)
        };
        out.push(artifact_of(
            keys[i].clone(),
            kind,
            item.database.clone(),
            PayloadFormat::PgDumpCustom,
            &stats,
            &stored,
            tables,
            took,
        ));
    }
    Ok(out)
}

/// The single stream: one `pg_dump` in the session's snapshot.
async fn postgres_single(
    req: &BackupRequest,
    tools: &PgTools,
    store: &Store,
    at: &Location,
    db: &str,
    session: postgres::SnapshotSession,
    progress: &Arc<Progress>,
) -> Result<(StreamStats, StoredObject, Vec<TableCount>)> {
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
    let streamed = stream_to_pending(req, store, at, tool, None, progress, None, 1).await;
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
/// dump tool's output compressed, encrypted and hashed on its way to storage. `streams`: how many
/// such streams run at once (they share the cores: [`zstd_workers`]).
#[allow(clippy::too_many_arguments)]
async fn stream_to_pending(
    req: &BackupRequest,
    store: &Store,
    at: &Location,
    tool: ToolProcess,
    counter: Option<RowCounter>,
    progress: &Arc<Progress>,
    started: Option<std::sync::mpsc::Sender<()>>,
    streams: usize,
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
        stream_dump(req, store, at, tool, counter, progress, started, streams),
    )
    .await;
    if let Ok((_, stats, _)) = &out {
        span.record("bytes.raw", stats.raw_bytes);
        span.record("bytes.stored", stats.stored_bytes);
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn stream_dump(
    req: &BackupRequest,
    store: &Store,
    at: &Location,
    mut tool: ToolProcess,
    counter: Option<RowCounter>,
    progress: &Arc<Progress>,
    started: Option<std::sync::mpsc::Sender<()>>,
    streams: usize,
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
        let stdout = StartSignal {
            inner: stdout,
            started,
            tail: Vec::new(),
        };
        let res = encode_stream(
            stdout,
            writer,
            compression,
            zstd_workers(streams),
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

/// Passes a dump's output through and says once (on `started`) that the dump is past its
/// snapshot ([`mysql::past_snapshot`]), or ended.
struct StartSignal<R> {
    inner: R,
    started: Option<std::sync::mpsc::Sender<()>>,
    tail: Vec<u8>,
}

impl<R: std::io::Read> std::io::Read for StartSignal<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.started.is_some() {
            let seen = n == 0 || {
                let mut chunk = std::mem::take(&mut self.tail);
                chunk.extend_from_slice(&buf[..n]);
                let seen = mysql::past_snapshot(&chunk);
                let keep = chunk.len().saturating_sub(64);
                self.tail = chunk.split_off(keep);
                seen
            };
            if seen && let Some(tx) = self.started.take() {
                let _ = tx.send(());
            }
        }
        Ok(n)
    }
}

/// Merge planned groups into `n` bins of about equal size, largest first (pure): MySQL's
/// dumps must all start under one brief lock, so there are as many as there are jobs.
pub fn into_bins(groups: Vec<TableGroup>, n: usize) -> Vec<TableGroup> {
    let mut bins: Vec<TableGroup> = Vec::new();
    for g in groups {
        if bins.len() < n.max(1) {
            bins.push(g);
            continue;
        }
        if let Some(b) = bins.iter_mut().min_by_key(|b| b.bytes) {
            b.bytes += g.bytes;
            b.tables.extend(g.tables);
        }
    }
    bins.sort_by_key(|b| std::cmp::Reverse(b.bytes));
    bins
}

/// What the dumps of a MySQL/MariaDB parallel backup hold (owned: each dump's
/// [`mysql::DumpScope`] borrows from it). Dump 0 is the schema artifact, dump `i > 0` the
/// `tableData` artifact of bin `i - 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MysqlPlan {
    /// One database.
    One {
        /// The database.
        db: String,
        /// Every table in a bin.
        every: Vec<String>,
        /// The bins' tables.
        bins: Vec<Vec<String>>,
    },
    /// Every user database (`--all-databases`).
    All {
        /// The databases (with or without tables).
        databases: Vec<String>,
        /// Every base table `(database, table)`.
        every: Vec<(String, String)>,
        /// The bins' tables, which may belong to several databases.
        bins: Vec<Vec<(String, String)>>,
        /// Per bin: the other tables and views of its databases (left out of its dump).
        ignores: Vec<Vec<(String, String)>>,
    },
}

impl MysqlPlan {
    /// Plan the all-databases layout (pure): the base tables packed into `jobs` bins as for one
    /// database (`None`: keep the single stream, as [`plan_table_groups`] decides).
    pub fn all(objects: &mysql::ServerObjects, jobs: usize, min_bytes: u64) -> Option<Self> {
        let sizes: Vec<postgres::TableSize> = objects
            .tables
            .iter()
            .filter(|(db, name, _)| !mysql::always_dumped(db, name))
            .map(|(db, name, bytes)| postgres::TableSize {
                schema: db.clone(),
                name: name.clone(),
                bytes: *bytes,
            })
            .collect();
        let bins = into_bins(plan_table_groups(&sizes, jobs, min_bytes, false)?, jobs);
        let bins: Vec<Vec<(String, String)>> = bins.into_iter().map(|b| b.tables).collect();
        let every: Vec<(String, String)> = objects
            .tables
            .iter()
            .filter(|(db, name, _)| !mysql::always_dumped(db, name))
            .map(|(d, t, _)| (d.clone(), t.clone()))
            .collect();
        let ignores = bins
            .iter()
            .map(|bin| {
                every
                    .iter()
                    .chain(&objects.others)
                    .filter(|(d, t)| {
                        bin.iter().any(|(bd, _)| bd == d)
                            && !bin.iter().any(|x| x.0 == *d && x.1 == *t)
                    })
                    .cloned()
                    .collect()
            })
            .collect();
        Some(MysqlPlan::All {
            databases: objects.databases.clone(),
            every,
            bins,
            ignores,
        })
    }

    /// Number of dumps (the schema artifact and one per bin).
    pub fn dumps(&self) -> usize {
        1 + match self {
            MysqlPlan::One { bins, .. } => bins.len(),
            MysqlPlan::All { bins, .. } => bins.len(),
        }
    }

    /// What dump `i` holds.
    pub fn scope(&self, i: usize) -> mysql::DumpScope<'_> {
        match (self, i) {
            (MysqlPlan::One { db, every, .. }, 0) => mysql::DumpScope::AllBut { db, tables: every },
            (MysqlPlan::One { db, bins, .. }, i) => mysql::DumpScope::Tables {
                db,
                tables: &bins[i - 1],
            },
            (
                MysqlPlan::All {
                    databases, every, ..
                },
                0,
            ) => mysql::DumpScope::Schemas {
                databases,
                ignore: every,
            },
            (MysqlPlan::All { bins, ignores, .. }, i) => mysql::DumpScope::TablesOf {
                tables: &bins[i - 1],
                ignore: &ignores[i - 1],
            },
        }
    }

    /// The tables whose rows dump `i > 0` must hold, `(database, table)`, sorted.
    pub fn expected(&self, i: usize) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match self {
            MysqlPlan::One { db, bins, .. } => bins[i - 1]
                .iter()
                .map(|t| (db.clone(), t.clone()))
                .collect(),
            MysqlPlan::All { bins, .. } => bins[i - 1].clone(),
        };
        out.sort();
        out
    }

    /// The database the row counter starts in (`USE` switches it with all databases).
    fn counter_db(&self) -> &str {
        match self {
            MysqlPlan::One { db, .. } => db,
            MysqlPlan::All { .. } => "",
        }
    }
}

/// MySQL/MariaDB parallel layout of one database: under a brief `FLUSH TABLES WITH READ
/// LOCK` one dump per bin of tables (structure, rows, triggers) and one of everything else
/// (views, routines, events) start their `START TRANSACTION WITH CONSISTENT SNAPSHOT`; the
/// lock is released as soon as every one of them is past it. `None`: keep the single stream
/// (below the threshold, one table, or no RELOAD privilege for the lock).
async fn mysql_parallel(
    req: &BackupRequest,
    store: &Store,
    run_dir: &Location,
    item: &PlannedArtifact,
    db: &str,
    progress: &Arc<Progress>,
) -> Result<Option<Vec<Artifact>>> {
    let (uri, dbname) = (req.uri.clone(), db.to_string());
    let sizes = blocking(move || mysql::table_sizes(&uri, &dbname)).await?;
    let sizes: Vec<postgres::TableSize> = sizes
        .into_iter()
        .map(|(name, bytes)| postgres::TableSize {
            schema: db.to_string(),
            name,
            bytes,
        })
        .collect();
    let Some(groups) = plan_table_groups(&sizes, req.parallelism, req.parallel_min_bytes, false)
    else {
        return Ok(None);
    };
    let bins = into_bins(groups, req.parallelism);
    let uri = req.uri.clone();
    let lock = match blocking(move || mysql::ReadLock::acquire(&uri)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(database = db, error = %e, "no global read lock for a parallel dump (it needs the RELOAD privilege): one stream");
            return Ok(None);
        }
    };
    let bins: Vec<Vec<String>> = bins
        .into_iter()
        .map(|b| b.tables.into_iter().map(|(_, t)| t).collect())
        .collect();
    let plan = MysqlPlan::One {
        db: db.to_string(),
        every: bins.iter().flatten().cloned().collect(),
        bins,
    };
    let encrypted = !req.recipients.is_empty();
    let keys: Vec<String> = std::iter::once(item.key.clone())
        .chain(
            (0..plan.dumps() - 1)
                .map(|i| table_data_name(Engine::Mysql, db, i, req.compression, encrypted)),
        )
        .collect();
    mysql_dumps_under_lock(req, store, run_dir, item, &plan, keys, lock, progress)
        .await
        .map(Some)
}

/// MySQL/MariaDB parallel layout of every user database (`--all-databases`): the base tables
/// of all databases in `parallelism` bins, one dump each (`--databases … --ignore-table=…`: a
/// part may hold tables of several databases, each with its `CREATE DATABASE IF NOT EXISTS`
/// and `USE`), and one dump of every database's `CREATE DATABASE`, views, routines and events
/// (the all-databases artifact), all started under one brief read lock as for one database.
/// The tables are listed again under the lock (no DDL can run then), so the plan is exactly
/// the snapshot's. `None`: keep the single stream.
async fn mysql_parallel_all(
    req: &BackupRequest,
    store: &Store,
    run_dir: &Location,
    item: &PlannedArtifact,
    progress: &Arc<Progress>,
) -> Result<Option<Vec<Artifact>>> {
    let uri = req.uri.clone();
    let objects = blocking(move || mysql::server_objects(&uri)).await?;
    if MysqlPlan::all(&objects, req.parallelism, req.parallel_min_bytes).is_none() {
        return Ok(None);
    }
    let uri = req.uri.clone();
    let lock = match blocking(move || mysql::ReadLock::acquire(&uri)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no global read lock for a parallel dump (it needs the RELOAD privilege): one stream");
            return Ok(None);
        }
    };
    let uri = req.uri.clone();
    let listed = blocking(move || mysql::server_objects(&uri)).await;
    let plan = match listed {
        Ok(objects) => MysqlPlan::all(&objects, req.parallelism, 0),
        Err(e) => {
            let _ = blocking(move || lock.release()).await;
            return Err(e);
        }
    };
    let Some(plan) = plan else {
        blocking(move || lock.release()).await?;
        return Ok(None);
    };
    let encrypted = !req.recipients.is_empty();
    let keys: Vec<String> = std::iter::once(item.key.clone())
        .chain((0..plan.dumps() - 1).map(|i| {
            table_data_name(
                Engine::Mysql,
                ALL_DATABASES_PARTS,
                i,
                req.compression,
                encrypted,
            )
        }))
        .collect();
    mysql_dumps_under_lock(req, store, run_dir, item, &plan, keys, lock, progress)
        .await
        .map(Some)
}

/// Where the parts of a MySQL all-databases parallel backup go: `all-databases.tables/NNN.sql…`.
pub const ALL_DATABASES_PARTS: &str = "all-databases";

/// Start every dump of `plan` while `lock` is held, release it once all are past their
/// snapshot, stream them, check each part's counted tables against the plan and commit.
#[allow(clippy::too_many_arguments)]
async fn mysql_dumps_under_lock(
    req: &BackupRequest,
    store: &Store,
    run_dir: &Location,
    item: &PlannedArtifact,
    plan: &MysqlPlan,
    keys: Vec<String>,
    lock: mysql::ReadLock,
    progress: &Arc<Progress>,
) -> Result<Vec<Artifact>> {
    use futures::StreamExt as _;
    tracing::info!(
        database = item.database.as_deref().unwrap_or("(all)"),
        dumps = plan.dumps(),
        "parallel layout"
    );
    let mut signals = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..keys.len() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        senders.push(Some(tx));
        signals.push(rx);
    }
    // Every dump starts now (all under the lock); the lock goes once all are past it.
    let unlock = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut late = false;
        for rx in signals {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(left) {
                late = true;
            }
        }
        let released = lock.release();
        if late {
            return Err(AgentError::Source(
                "a dump did not start within 120 s under the read lock; its snapshot could differ"
                    .into(),
            ));
        }
        released
    });
    let keys_ref = &keys;
    // Every dump streams at once: they share the cores, so zstd's threads per stream.
    let streams = keys.len();
    let started: Vec<_> = senders.iter_mut().map(Option::take).collect();
    let dumps = futures::stream::iter(started.into_iter().enumerate())
        .map(|(i, tx)| {
            let at = run_dir.join(&keys_ref[i]);
            async move {
                let clock = Instant::now();
                let span = tracing::info_span!("part", artifact.key = %keys_ref[i], part = i);
                let out = async {
                    let tool = mysql::spawn_scoped_dump(&req.uri, plan.scope(i))?;
                    let counter = (i > 0).then(|| RowCounter::new(plan.counter_db()));
                    stream_to_pending(req, store, &at, tool, counter, progress, tx, streams).await
                };
                (i, in_span(span, out).await, clock.elapsed())
            }
        })
        .buffer_unordered(keys.len())
        .collect::<Vec<_>>()
        .await;
    let unlocked = unlock
        .await
        .map_err(|e| AgentError::Io(std::io::Error::other(format!("lock thread failed: {e}"))))?;
    let mut done = Vec::new();
    let mut first_err = unlocked.err();
    for (i, res, took) in dumps {
        match res {
            Ok((pending, stats, counter)) => done.push((i, pending, stats, counter, took)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    done.sort_by_key(|(i, ..)| *i);
    let counts: Vec<(usize, Vec<TableCount>)> = done
        .iter_mut()
        .map(|(i, _, _, counter, _)| {
            let mut c = counter.take().map(RowCounter::finish).unwrap_or_default();
            // The log tables' structure comes with every dump of `mysql`: no part holds them.
            if *i > 0 {
                let planned = plan.expected(*i);
                c.retain(|t| {
                    !mysql::always_dumped(&t.schema, &t.name)
                        || planned.iter().any(|(d, n)| *d == t.schema && *n == t.name)
                });
            }
            (*i, c)
        })
        .collect();
    // Each part holds exactly the tables planned for it (a table in two parts, or in none,
    // would restore twice or not at all).
    for (i, c) in counts.iter().filter(|(i, _)| *i > 0) {
        let mut seen: Vec<(String, String)> = c
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        seen.sort();
        let planned = plan.expected(*i);
        if seen != planned && first_err.is_none() {
            let name = |(d, t): &(String, String)| format!("{d}.{t}");
            let missing: Vec<String> = planned
                .iter()
                .filter(|t| !seen.contains(t))
                .take(5)
                .map(name)
                .collect();
            let extra: Vec<String> = seen
                .iter()
                .filter(|t| !planned.contains(t))
                .take(5)
                .map(name)
                .collect();
            first_err = Some(AgentError::Source(format!(
                "{} holds {} tables where {} were planned (missing: {missing:?}, not planned: {extra:?})",
                keys[*i],
                seen.len(),
                planned.len()
            )));
        }
    }
    if let Some(e) = first_err {
        for (_, pending, ..) in done {
            pending.abort().await;
        }
        return Err(e);
    }
    let mut all: Vec<TableCount> = counts.iter().flat_map(|(_, c)| c.clone()).collect();
    all.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let mut out = Vec::with_capacity(done.len());
    let mut pendings = done.into_iter();
    while let Some((i, pending, stats, _, took)) = pendings.next() {
        let stored = match pending.commit(stats.stored_bytes, &stats.sha256).await {
            Ok(s) => s,
            Err(e) => {
                for (_, p, ..) in pendings {
                    p.abort().await;
                }
                return Err(e);
            }
        };
        let (kind, tables) = if i == 0 {
            (item.kind, all.clone())
        } else {
            let mine = counts
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            (ArtifactKind::TableData, mine)
        };
        out.push(artifact_of(
            keys[i].clone(),
            kind,
            item.database.clone(),
            PayloadFormat::Sql,
            &stats,
            &stored,
            tables,
            took,
        ));
    }
    Ok(out)
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
        stream_to_pending(req, store, at, tool, counter, progress, None, 1).await?;
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

    fn size(name: &str, mib: u64) -> postgres::TableSize {
        postgres::TableSize {
            schema: "public".into(),
            name: name.into(),
            bytes: mib << 20,
        }
    }

    #[test]
    fn parallel_groups_balance_big_tables_and_pack_small_ones() {
        // 16 tables of 128 MiB with 4 jobs: groups of 256 MiB, two per worker.
        let equal: Vec<_> = (0..16).map(|i| size(&format!("t{i:02}"), 128)).collect();
        let g = plan_table_groups(&equal, 4, 256 << 20, false).unwrap();
        assert_eq!(g.len(), 8);
        assert!(
            g.iter()
                .all(|g| g.tables.len() == 2 && g.bytes == 256 << 20)
        );
        let mut all: Vec<_> = g.iter().flat_map(|g| g.tables.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 16, "every table exactly once");
        // One big table alone, a thousand small ones packed into few groups.
        let mut skewed = vec![size("big", 1024)];
        skewed.extend((0..1000).map(|i| postgres::TableSize {
            schema: "s".into(),
            name: format!("small{i}"),
            bytes: 1 << 20,
        }));
        let g = plan_table_groups(&skewed, 2, 0, false).unwrap();
        assert_eq!(g[0].tables, vec![("public".to_string(), "big".to_string())]);
        assert!(g.len() <= 4, "{} groups", g.len());
        assert_eq!(g.iter().map(|g| g.tables.len()).sum::<usize>(), 1001);
        assert!(g.windows(2).all(|w| w[0].bytes >= w[1].bytes));
        // The single stream: one job, a small database, extra dump arguments, one table.
        assert!(plan_table_groups(&equal, 1, 0, false).is_none());
        assert!(plan_table_groups(&equal, 4, 4 << 30, false).is_none());
        assert!(plan_table_groups(&equal, 4, 0, true).is_none());
        assert!(plan_table_groups(&equal[..1], 4, 0, false).is_none());
        assert!(plan_table_groups(&[], 4, 0, false).is_none());
        // Empty tables still get a group (their schema is in the database artifact).
        let empties = vec![size("a", 0), size("b", 0)];
        let g = plan_table_groups(&empties, 2, 0, false).unwrap();
        assert_eq!(g.iter().map(|g| g.tables.len()).sum::<usize>(), 2);
    }

    #[test]
    fn mysql_bins_are_as_many_as_jobs() {
        let equal: Vec<_> = (0..16).map(|i| size(&format!("t{i:02}"), 128)).collect();
        let groups = plan_table_groups(&equal, 4, 0, false).unwrap();
        let bins = into_bins(groups, 4);
        assert_eq!(bins.len(), 4);
        assert!(
            bins.iter()
                .all(|b| b.bytes == 512 << 20 && b.tables.len() == 4)
        );
        let few = plan_table_groups(&equal[..2], 4, 0, false).unwrap();
        assert_eq!(into_bins(few, 4).len(), 2);
    }

    #[test]
    fn mysql_all_databases_bins_span_databases_and_ignore_the_rest_of_theirs() {
        let t = |d: &str, n: &str, mib: u64| (d.to_string(), n.to_string(), mib << 20);
        let objects = mysql::ServerObjects {
            databases: vec!["a".into(), "b".into(), "mysql".into(), "only_views".into()],
            tables: vec![
                t("a", "big", 100),
                t("a", "small", 1),
                t("b", "mid", 60),
                t("b", "tiny", 1),
                t("mysql", "db", 0),
                t("mysql", "general_log", 0),
            ],
            others: vec![("a".into(), "v".into()), ("only_views".into(), "w".into())],
        };
        // Below the threshold, or one job: the single stream.
        assert!(MysqlPlan::all(&objects, 2, 1 << 30).is_none());
        assert!(MysqlPlan::all(&objects, 1, 0).is_none());
        let plan = MysqlPlan::all(&objects, 2, 0).unwrap();
        assert_eq!(plan.dumps(), 3);
        // Every base table in exactly one part.
        let mut placed: Vec<(String, String)> =
            (1..plan.dumps()).flat_map(|i| plan.expected(i)).collect();
        placed.sort();
        // (but the log tables mariadb-dump writes into every dump of `mysql` by itself)
        let mut every: Vec<(String, String)> = objects
            .tables
            .iter()
            .filter(|(_, n, _)| n != "general_log")
            .map(|(d, n, _)| (d.clone(), n.clone()))
            .collect();
        every.sort();
        assert_eq!(placed, every);
        assert_eq!(plan.expected(1), [("a".to_string(), "big".to_string())]);
        for i in 1..plan.dumps() {
            let mine = plan.expected(i);
            let mysql::DumpScope::TablesOf { tables, ignore } = plan.scope(i) else {
                panic!("part {i} is not TablesOf");
            };
            assert_eq!(tables.len(), mine.len());
            // It ignores every other table and view of its databases, and nothing of others.
            for (d, n) in every.iter().chain(&objects.others) {
                let in_my_db = mine.iter().any(|(md, _)| md == d);
                let mine_too = mine.iter().any(|(md, mn)| md == d && mn == n);
                let ignored = ignore.iter().any(|(id, i_n)| id == d && i_n == n);
                assert_eq!(ignored, in_my_db && !mine_too, "part {i}: {d}.{n}");
            }
        }
        // The schema dump: every database (those without tables too), no base table.
        let mysql::DumpScope::Schemas { databases, ignore } = plan.scope(0) else {
            panic!("dump 0 is not Schemas");
        };
        assert_eq!(databases, objects.databases.as_slice());
        assert_eq!(ignore.len(), objects.tables.len() - 1);
    }

    #[test]
    fn run_ids() {
        assert!(validate_run_id("20260101T000000Z-shop").is_ok());
        for bad in ["", "..", "a/b", "a b", "x?"] {
            assert!(validate_run_id(bad).is_err(), "{bad}");
        }
    }
}
