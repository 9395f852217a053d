//! The segment format and the hash chain (pure).
//!
//! A namespace's audit trail is a chain of segments `audit/<namespace>/<index>.jsonl` (index
//! zero-padded to 12 digits, from 0). A segment is JSON Lines: a header line, then one
//! [`AuditRecord`] per line, then a seal line `{"seal":"<SHA-256 of every byte before it>"}`.
//! The header carries the namespace, the segment's index, the SHA-256
//! of the whole previous segment (64 zeros for segment 0), the SHA-256 of its own record lines
//! and their count. So a segment deleted leaves a gap in the indices, a byte changed anywhere
//! breaks its own records hash or its successor's `previous`, and a segment moved to another
//! key holds a header whose index is not its key's.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::AuditRecord;

/// The `previous` of segment 0.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The format version in each header.
pub const FORMAT: u32 = 1;

/// A segment's first line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SegmentHeader {
    /// Format version ([`FORMAT`]).
    pub dataguardian_audit_segment: u32,
    pub namespace: String,
    pub index: u64,
    /// SHA-256 (hex) of the whole previous segment.
    pub previous: String,
    /// SHA-256 (hex) of the record lines (everything after the header line).
    pub records_sha256: String,
    /// How many records follow.
    pub records: usize,
    /// When the segment was written.
    pub created: chrono::DateTime<chrono::Utc>,
}

/// The folder of the audit trail, below the storage's prefix.
pub const ROOT: &str = "audit";

/// The key (below the storage's prefix) of segment `index` of `namespace`.
pub fn segment_key(namespace: &str, index: u64) -> String {
    format!("{ROOT}/{namespace}/{index:012}.jsonl")
}

/// The key prefix of `namespace`'s segments.
pub fn namespace_prefix(namespace: &str) -> String {
    format!("{ROOT}/{namespace}/")
}

/// The namespace and index of a segment key (below the storage's prefix), `None` for other keys.
pub fn parse_key(rel: &str) -> Option<(String, u64)> {
    let rest = rel.strip_prefix(ROOT)?.strip_prefix('/')?;
    let (ns, file) = rest.split_once('/')?;
    let digits = file.strip_suffix(".jsonl")?;
    if ns.is_empty() || digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ns.to_string(), digits.parse().ok()?))
}

/// SHA-256 in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The bytes of a segment.
pub fn encode_segment(
    namespace: &str,
    index: u64,
    previous: &str,
    records: &[AuditRecord],
    created: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        // A record always serializes (strings, a time, an enum).
        body.extend(serde_json::to_vec(r).unwrap_or_default());
        body.push(b'\n');
    }
    let header = SegmentHeader {
        dataguardian_audit_segment: FORMAT,
        namespace: namespace.to_string(),
        index,
        previous: previous.to_string(),
        records_sha256: sha256_hex(&body),
        records: records.len(),
        created,
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend(body);
    let seal = sha256_hex(&out);
    out.extend(format!("{{\"seal\":\"{seal}\"}}\n").into_bytes());
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seal {
    seal: String,
}

/// Why a segment cannot be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("the header line is missing or not a segment header")]
    Header,
    #[error("its seal is missing or does not match its bytes (a byte was changed)")]
    Seal,
    #[error("its records do not match the SHA-256 in its header (a byte was changed)")]
    RecordsHash,
    #[error("its header counts {expected} records, it holds {found}")]
    Count { expected: usize, found: usize },
    #[error("record line {line} is not a record")]
    Record { line: usize },
}

/// Reads a segment: its header and records, each checked against the header.
pub fn parse_segment(bytes: &[u8]) -> Result<(SegmentHeader, Vec<AuditRecord>), SegmentError> {
    let sealed = bytes.strip_suffix(b"\n").ok_or(SegmentError::Seal)?;
    let seal_at = sealed
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .ok_or(SegmentError::Seal)?;
    let seal: Seal = serde_json::from_slice(&sealed[seal_at..]).map_err(|_| SegmentError::Seal)?;
    let bytes = &bytes[..seal_at];
    if sha256_hex(bytes) != seal.seal {
        return Err(SegmentError::Seal);
    }
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(SegmentError::Header)?;
    let header: SegmentHeader =
        serde_json::from_slice(&bytes[..split]).map_err(|_| SegmentError::Header)?;
    if header.dataguardian_audit_segment != FORMAT {
        return Err(SegmentError::Header);
    }
    let body = &bytes[split + 1..];
    if sha256_hex(body) != header.records_sha256 {
        return Err(SegmentError::RecordsHash);
    }
    let mut records = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        records
            .push(serde_json::from_slice(line).map_err(|_| SegmentError::Record { line: i + 2 })?);
    }
    if records.len() != header.records {
        return Err(SegmentError::Count {
            expected: header.records,
            found: records.len(),
        });
    }
    Ok((header, records))
}

/// A segment as found in storage.
#[derive(Debug, Clone)]
pub struct Found {
    /// The index its key says.
    pub index: u64,
    /// Where it is (`s3://bucket/key`), for reports.
    pub location: String,
    /// Its bytes; `None` when its newest version is a delete marker (deleted in a versioned
    /// bucket).
    pub bytes: Option<Vec<u8>>,
    /// How many versions the key has (more than one: the segment was overwritten).
    pub versions: usize,
}

/// What is wrong with the chain.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A segment is gone (an index gap, or a delete marker).
    Missing,
    /// A segment's bytes are not those written.
    Altered,
    /// A segment holds another index's header (moved, swapped).
    Reordered,
}

/// One finding of [`verify`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: ProblemKind,
    pub index: u64,
    pub location: String,
    pub detail: String,
}

/// What [`verify`] found for one namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    pub namespace: String,
    pub segments: usize,
    pub records: usize,
    /// Index and SHA-256 of the last segment (the head), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<(u64, String)>,
    pub problems: Vec<Problem>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-reads `namespace`'s chain from the segments found (any order); `location_of` names
/// the location of an index that was not found (for gaps).
pub fn verify(
    namespace: &str,
    mut found: Vec<Found>,
    location_of: impl Fn(u64) -> String,
) -> ChainReport {
    found.sort_by_key(|f| f.index);
    let mut report = ChainReport {
        namespace: namespace.to_string(),
        ..ChainReport::default()
    };
    let mut expected = 0u64;
    // The hash of the segment just before (`None`: missing or unreadable, no link to check).
    let mut previous: Option<(u64, String, String)> = None;
    for f in found {
        for gap in expected..f.index {
            report.problems.push(Problem {
                kind: ProblemKind::Missing,
                index: gap,
                location: location_of(gap),
                detail: "segment not found: the chain has a gap here".into(),
            });
            previous = None;
        }
        expected = f.index + 1;
        let Some(bytes) = &f.bytes else {
            report.problems.push(Problem {
                kind: ProblemKind::Missing,
                index: f.index,
                location: f.location.clone(),
                detail: "segment deleted (its newest version is a delete marker)".into(),
            });
            previous = None;
            continue;
        };
        report.segments += 1;
        let hash = sha256_hex(bytes);
        let problem = |kind, detail: String| Problem {
            kind,
            index: f.index,
            location: f.location.clone(),
            detail,
        };
        if f.versions > 1 {
            report.problems.push(problem(
                ProblemKind::Altered,
                format!(
                    "segment overwritten: the key has {} versions, a segment is written once",
                    f.versions
                ),
            ));
        }
        match parse_segment(bytes) {
            Err(e) => {
                report.problems.push(problem(
                    ProblemKind::Altered,
                    format!("segment altered: {e}"),
                ));
            }
            Ok((header, records)) => {
                report.records += records.len();
                if header.index != f.index || header.namespace != namespace {
                    report.problems.push(problem(
                        ProblemKind::Reordered,
                        format!(
                            "segment out of place: it holds segment {} of namespace {}",
                            header.index, header.namespace
                        ),
                    ));
                } else if f.index == 0 && header.previous != GENESIS {
                    report.problems.push(problem(
                        ProblemKind::Altered,
                        "segment 0 does not start the chain (its previous hash is not zero)".into(),
                    ));
                } else if let Some((pi, ploc, phash)) = &previous
                    && *pi + 1 == f.index
                    && header.previous != *phash
                {
                    // This segment is intact: the one before it changed (or was replaced).
                    report.problems.push(Problem {
                        kind: ProblemKind::Altered,
                        index: *pi,
                        location: ploc.clone(),
                        detail: format!(
                            "segment altered: its SHA-256 is not the one segment {} recorded",
                            f.index
                        ),
                    });
                }
            }
        }
        report.head = Some((f.index, hash.clone()));
        previous = Some((f.index, f.location.clone(), hash));
    }
    // One finding per segment is enough: keep the first for each index and kind.
    let mut seen = std::collections::BTreeSet::new();
    report
        .problems
        .retain(|p| seen.insert((p.index, p.kind as u8)));
    report.problems.sort_by_key(|p| p.index);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditAction, record_id};
    use chrono::{TimeZone, Utc};

    fn rec(n: u64) -> AuditRecord {
        AuditRecord {
            id: record_id("uid", AuditAction::RunCreated, &n.to_string()),
            time: Utc.timestamp_opt(1_800_000_000 + n as i64, 0).unwrap(),
            action: AuditAction::RunCreated,
            namespace: "shop".into(),
            kind: "BackupRun".into(),
            name: format!("run-{n}"),
            uid: "uid".into(),
            actor: Some("alice".into()),
            approver: None,
            outcome: None,
            reason: None,
            detail: None,
        }
    }

    fn chain(n: u64) -> Vec<Found> {
        let mut previous = GENESIS.to_string();
        let mut out = Vec::new();
        for i in 0..n {
            let bytes = encode_segment(
                "shop",
                i,
                &previous,
                &[rec(i * 2), rec(i * 2 + 1)],
                Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            );
            previous = sha256_hex(&bytes);
            out.push(Found {
                index: i,
                location: format!("s3://b/{}", segment_key("shop", i)),
                bytes: Some(bytes),
                versions: 1,
            });
        }
        out
    }

    fn loc(i: u64) -> String {
        format!("s3://b/{}", segment_key("shop", i))
    }

    #[test]
    fn an_intact_chain_verifies_and_round_trips() {
        let found = chain(4);
        let (header, records) = parse_segment(found[2].bytes.as_ref().unwrap()).unwrap();
        assert_eq!(header.index, 2);
        assert_eq!(records, vec![rec(4), rec(5)]);
        let report = verify("shop", found, loc);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!((report.segments, report.records), (4, 8));
        assert_eq!(report.head.as_ref().map(|h| h.0), Some(3));
    }

    #[test]
    fn a_deleted_segment_is_reported_missing_with_its_location() {
        let mut found = chain(4);
        found.remove(1);
        let report = verify("shop", found, loc);
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.problems[0].kind, ProblemKind::Missing);
        assert_eq!(report.problems[0].location, loc(1));
        // A delete marker (versioned bucket) says the same, also for the last segment.
        let mut found = chain(3);
        found[2].bytes = None;
        let report = verify("shop", found, loc);
        assert_eq!(report.problems[0].kind, ProblemKind::Missing);
        assert_eq!(report.problems[0].index, 2);
    }

    #[test]
    fn a_flipped_byte_anywhere_is_reported_altered() {
        let len = chain(3)[1].bytes.as_ref().unwrap().len();
        for at in (0..len).step_by(7) {
            for index in [1usize, 2] {
                let mut found = chain(3);
                found[index].bytes.as_mut().unwrap()[at] ^= 0x01;
                let report = verify("shop", found, loc);
                assert!(
                    report.problems.iter().any(|p| p.index == index as u64
                        && matches!(p.kind, ProblemKind::Altered | ProblemKind::Reordered)),
                    "byte {at} of segment {index}: {report:?}"
                );
            }
        }
    }

    #[test]
    fn a_rewritten_segment_with_a_consistent_header_is_caught_by_its_successor() {
        // A forger rewrites segment 1 whole (new records, matching records hash): segment 2
        // still names the old segment 1.
        let mut found = chain(3);
        let prev = sha256_hex(found[0].bytes.as_ref().unwrap());
        found[1].bytes = Some(encode_segment(
            "shop",
            1,
            &prev,
            &[rec(99)],
            Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
        ));
        let report = verify("shop", found, loc);
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.problems[0].kind, ProblemKind::Altered);
        assert_eq!(report.problems[0].location, loc(1));
        // An overwritten key in a versioned bucket says so even for the head.
        let mut found = chain(2);
        found[1].versions = 2;
        let report = verify("shop", found, loc);
        assert_eq!(report.problems[0].kind, ProblemKind::Altered);
        assert_eq!(report.problems[0].index, 1);
    }

    #[test]
    fn swapped_segments_are_reported_reordered() {
        let mut found = chain(4);
        let (a, b) = (found[1].bytes.take(), found[2].bytes.take());
        found[1].bytes = b;
        found[2].bytes = a;
        let report = verify("shop", found, loc);
        let reordered: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::Reordered)
            .map(|p| p.index)
            .collect();
        assert_eq!(reordered, vec![1, 2], "{report:?}");
    }

    #[test]
    fn segment_keys_parse_back() {
        assert_eq!(
            parse_key(&segment_key("shop", 42)),
            Some(("shop".to_string(), 42))
        );
        assert_eq!(parse_key("audit/shop/42.jsonl"), None);
        assert_eq!(parse_key("other/shop/000000000042.jsonl"), None);
    }
}
