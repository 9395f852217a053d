//! The command line of the kubectl plugin `kubectl-dataguardian` (its clap types).

use clap::{Args, Parser, Subcommand};

/// `kubectl dataguardian`.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-dataguardian",
    version,
    about = "Back up, restore and validate databases managed by DataGuardian"
)]
pub struct Plugin {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// The plugin's commands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Backups: `backup now POLICY`.
    Backup {
        #[command(subcommand)]
        what: BackupCommand,
    },
    /// Restore a BackupRun into another database on the policy's server.
    Restore(RestoreArgs),
    /// Prove a BackupRun restores: a RestoreValidation with the row-count check.
    Validate(ValidateArgs),
    /// The namespace's policies: readiness, RPO, last runs, next run, last validation.
    Status {
        /// Only this policy.
        policy: Option<String>,
    },
    /// Approve someone else's RestoreRun that waits in AwaitingApproval (the two-person rule):
    /// needs the verb `approve` on restoreruns (ClusterRole dataguardian-approver). Again after
    /// an approval expired; `--withdraw` takes an approval back before the restore starts.
    Approve {
        /// The RestoreRun.
        name: String,
        /// Withdraw the approval instead.
        #[arg(long)]
        withdraw: bool,
    },
    /// The logs of a BackupRun's, RestoreRun's or RestoreValidation's Job.
    Logs {
        /// The run's name.
        name: String,
        /// Keep streaming while the Job runs.
        #[arg(short, long)]
        follow: bool,
    },
    /// The WORM audit trail in the audit storage: `audit verify` re-reads the hash chain and
    /// reports a missing, altered or reordered segment with its location (exit 1);
    /// `audit show` prints the records. `-n NS`: one namespace's chain (default: every one).
    /// Reads S3 with the audit storage's credentials Secret.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
        /// The audit BackupStorage, `NAMESPACE/NAME` (the operator's `--audit-storage`).
        #[arg(
            long,
            global = true,
            env = "DATAGUARDIAN_AUDIT_STORAGE",
            default_value = "dataguardian-system/audit"
        )]
        storage: String,
    },
    /// The OpenTelemetry trace id of a BackupRun, RestoreRun or RestoreValidation (recorded
    /// when the operator exports traces), to look the run up in a tracing backend. With
    /// `DATAGUARDIAN_TRACE_URL` set (e.g. `https://jaeger.example/trace/{traceId}`), also the link.
    Trace {
        /// The run's name.
        name: String,
    },
}

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-read every segment and check the hash chain.
    Verify {
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Print the records, in chain order.
    Show {
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// `backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Start a manual backup of POLICY now.
    Now {
        /// The BackupPolicy.
        policy: String,
        /// Name of the BackupRun (default: `<policy>-manual-<timestamp>`).
        #[arg(long)]
        name: Option<String>,
        /// Why (recorded in the run's spec).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Following a run until it ends.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Follow the run with live progress until it ends; the exit code tells how it ended.
    #[arg(short, long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the run goes on).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The BackupRun to restore.
    pub backup_run: String,
    /// The database to restore into, on the backed-up server with the policy's credentials.
    #[arg(long)]
    pub database: String,
    /// Create the database first.
    #[arg(long)]
    pub create_database: bool,
    /// Allow restoring into a database that already has tables.
    #[arg(long)]
    pub overwrite: bool,
    /// Drop existing objects first (needs --overwrite).
    #[arg(long)]
    pub clean: bool,
    /// Secret with the age identity for an encrypted backup, as NAME or NAME:KEY (default key
    /// `identity`; default Secret: the policy's validation identity, if any).
    #[arg(long)]
    pub identity_secret: Option<String>,
    /// Name of the RestoreRun (default: `<backup run>-restore-<timestamp>`).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The BackupRun to validate.
    pub backup_run: String,
    /// Name of the RestoreValidation (default: `<backup run>-check-<timestamp>`).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}
