//! The agent's exit codes: one per failure category (the `category` of a failure summary), and
//! for each Job kind the codes no retry can fix (the Job's pod failure policy fails the Job at
//! once on them instead of retrying).

use serde::{Deserialize, Serialize};

/// The agent finished its work (for `agent validate`: the verdict is Passed).
pub const SUCCESS: u8 = 0;

/// `agent validate` reached a verdict and it is Failed (a verdict about the backup, not an
/// error; the summary's status is still `succeeded`).
pub const VALIDATION_FAILED: u8 = 1;

/// Why the agent failed: the `category` of a failure summary, a metric label, and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureCategory {
    /// The command line or environment is invalid (bad URI, missing identity, …).
    Config,
    /// The database dump or a query on the source failed.
    Source,
    /// The restore target refused the data, is not empty, or could not be prepared.
    Target,
    /// Reading or writing the artifact store failed.
    Storage,
    /// The storage refused a request for a reason no retry fixes: access denied (credentials,
    /// permissions), a missing bucket, a request the server rejects as invalid.
    #[serde(rename = "storage-refused")]
    StorageRefused,
    /// The stored bytes are not the ones that were written (size or SHA-256 mismatch, corrupt
    /// stream), or a manifest lists paths outside its directory.
    Integrity,
    /// Encryption or decryption failed (wrong identity, bad recipient).
    Crypto,
    /// A local I/O error that belongs to none of the above.
    Io,
    /// The bundled client tools are older than the server or the archive (`pg_dump` refuses a
    /// newer server), or the client and server are a known-incompatible pair.
    #[serde(rename = "client-too-old")]
    ClientTooOld,
    /// The key that wraps the backup's data key cannot be used: the KMS key is disabled,
    /// pending deletion or deleted (crypto-erasure), or the KMS does not know it.
    #[serde(rename = "key-unavailable")]
    KeyUnavailable,
}

impl FailureCategory {
    /// Every category.
    pub const ALL: [FailureCategory; 10] = [
        FailureCategory::Config,
        FailureCategory::Source,
        FailureCategory::Target,
        FailureCategory::Storage,
        FailureCategory::Integrity,
        FailureCategory::Crypto,
        FailureCategory::Io,
        FailureCategory::ClientTooOld,
        FailureCategory::StorageRefused,
        FailureCategory::KeyUnavailable,
    ];

    /// The name in the summary's `category` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureCategory::Config => "config",
            FailureCategory::Source => "source",
            FailureCategory::Target => "target",
            FailureCategory::Storage => "storage",
            FailureCategory::Integrity => "integrity",
            FailureCategory::Crypto => "crypto",
            FailureCategory::Io => "io",
            FailureCategory::ClientTooOld => "client-too-old",
            FailureCategory::StorageRefused => "storage-refused",
            FailureCategory::KeyUnavailable => "key-unavailable",
        }
    }

    /// The agent's process exit code for this category (distinct per category, never 0 or 1).
    pub const fn exit_code(self) -> u8 {
        match self {
            FailureCategory::Config => 2,
            FailureCategory::Source => 10,
            FailureCategory::Target => 11,
            FailureCategory::Storage => 12,
            FailureCategory::Integrity => 13,
            FailureCategory::Crypto => 14,
            FailureCategory::Io => 15,
            FailureCategory::ClientTooOld => 16,
            FailureCategory::StorageRefused => 17,
            FailureCategory::KeyUnavailable => 18,
        }
    }

    /// The category named `name` (a summary's `category`); `None` for anything else.
    pub fn parse(name: &str) -> Option<FailureCategory> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const fn code(category: FailureCategory) -> i32 {
    category.exit_code() as i32
}

/// Backup Jobs fail at once on invalid configuration, on encryption setup (a malformed
/// recipient), on client tools too old, on a storage that refuses the agent (access denied,
/// no such bucket, an invalid request) and on a KMS key that is disabled or deleted;
/// everything else is retried up to the policy's `backoffLimit`.
pub const BACKUP_NON_RETRYABLE: [i32; 5] = [
    code(FailureCategory::Config),
    code(FailureCategory::Crypto),
    code(FailureCategory::ClientTooOld),
    code(FailureCategory::StorageRefused),
    code(FailureCategory::KeyUnavailable),
];

/// Restore Jobs fail at once on invalid configuration, a target that refuses the restore (e.g.
/// not empty), an artifact whose checksum does not match, a wrong identity, a storage that
/// refuses the agent and a KMS key that is disabled or deleted (crypto-erasure).
pub const RESTORE_NON_RETRYABLE: [i32; 7] = [
    code(FailureCategory::Config),
    code(FailureCategory::Target),
    code(FailureCategory::Integrity),
    code(FailureCategory::Crypto),
    code(FailureCategory::ClientTooOld),
    code(FailureCategory::StorageRefused),
    code(FailureCategory::KeyUnavailable),
];

/// Prune Jobs fail at once on invalid configuration, on a manifest listing paths outside its
/// directory and on a storage that refuses the agent.
pub const PRUNE_NON_RETRYABLE: [i32; 3] = [
    code(FailureCategory::Config),
    code(FailureCategory::Integrity),
    code(FailureCategory::StorageRefused),
];

/// Copy Jobs fail at once on invalid configuration, on bytes that do not match the pinned
/// manifest (copying them again cannot help) and on a storage that refuses the agent.
pub const COPY_NON_RETRYABLE: [i32; 3] = [
    code(FailureCategory::Config),
    code(FailureCategory::Integrity),
    code(FailureCategory::StorageRefused),
];

/// Validation Jobs have `backoffLimit: 0` (a verdict is final): no exit-code rule, only the
/// eviction rule.
pub const VALIDATION_NON_RETRYABLE: [i32; 0] = [];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_have_distinct_names_and_codes() {
        let codes: Vec<u8> = FailureCategory::ALL.iter().map(|c| c.exit_code()).collect();
        assert_eq!(codes, [2, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
        let names: Vec<&str> = FailureCategory::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "config",
                "source",
                "target",
                "storage",
                "integrity",
                "crypto",
                "io",
                "client-too-old",
                "storage-refused",
                "key-unavailable"
            ]
        );
        for c in FailureCategory::ALL {
            assert!(c.exit_code() != SUCCESS && c.exit_code() != VALIDATION_FAILED);
            assert_eq!(FailureCategory::parse(c.as_str()), Some(c));
            // The serde name is the summary's `category`.
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert_eq!(FailureCategory::parse("dump"), None);
    }

    #[test]
    fn non_retryable_codes_per_job_kind() {
        // The values the Job builders used before the contract existed, plus client-too-old
        // (retrying cannot make the tools newer) and storage-refused (nor fix credentials or
        // create a bucket), and key-unavailable (a disabled or deleted KMS key stays so).
        assert_eq!(BACKUP_NON_RETRYABLE, [2, 14, 16, 17, 18]);
        assert_eq!(RESTORE_NON_RETRYABLE, [2, 11, 13, 14, 16, 17, 18]);
        assert_eq!(PRUNE_NON_RETRYABLE, [2, 13, 17]);
        assert_eq!(COPY_NON_RETRYABLE, [2, 13, 17]);
        assert!(VALIDATION_NON_RETRYABLE.is_empty());
    }
}
