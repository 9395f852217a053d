//! Deterministic, length-bounded names for the objects the operator creates.
//!
//! Kubernetes object names of the kinds we create (BackupRun, Job) are DNS-1123 subdomains, but a
//! Job's name is also copied into the `batch.kubernetes.io/job-name` label of its pods, and label
//! values are limited to 63 characters. Names built here therefore always fit
//! [`MAX_LABEL_LEN`]. When the natural name (`<base>-<suffix>`) is too long, the base is truncated
//! and a short hash of the *full* base is inserted, so two long bases that share a prefix still
//! produce different names, and the same inputs always produce the same name.

use sha2::{Digest, Sha256};

/// The longest name or label value this module produces (the Kubernetes label value limit).
pub const MAX_LABEL_LEN: usize = 63;

/// Hex characters of the SHA-256 digest used to disambiguate truncated names.
const HASH_LEN: usize = 8;

/// Joins `base` and `suffix` as `<base>-<suffix>`, never longer than `max` characters.
///
/// `base` is expected to be a valid Kubernetes object name (lowercase alphanumerics, `-`, `.`);
/// `suffix` a short lowercase alphanumeric string. When the joined name would exceed `max`, the
/// result is `<truncated base>-<hash>-<suffix>` where `<hash>` is derived from the whole `base`.
/// An empty suffix yields just the (possibly truncated and hashed) base.
///
/// # Panics
///
/// Panics if `max` cannot hold the suffix plus a hash (`suffix.len() + 10`); callers pass
/// constants, so this is a programming error, not a runtime condition.
pub fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    let joined = if suffix.is_empty() {
        base.to_owned()
    } else {
        format!("{base}-{suffix}")
    };
    if joined.len() <= max {
        return joined;
    }
    let tail = if suffix.is_empty() {
        short_hash(base)
    } else {
        format!("{}-{suffix}", short_hash(base))
    };
    assert!(
        max > tail.len() + 1,
        "bounded_name: max {max} cannot hold suffix {suffix:?} and a hash"
    );
    let room = max - tail.len() - 1;
    // Object names are ASCII, but stay on a char boundary for any input.
    let mut cut = room.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = base[..cut].trim_end_matches(['-', '.']);
    if head.is_empty() {
        tail
    } else {
        format!("{head}-{tail}")
    }
}

/// The name of an object belonging to the pair (`first`, `second`), e.g. the Job copying a run
/// to a storage: `<first>-<second>-<hash>-<suffix>`, bounded like [`bounded_name`]. The hash is
/// taken over both parts with a separator no object name contains, so two different pairs
/// never share a name even when their joined text does (`a` + `b-c` and `a-b` + `c`), and the
/// name cannot be the `<run>-<suffix>` of another run's Job short of a run named after the hash.
pub fn pair_name(first: &str, second: &str, suffix: &str) -> String {
    let hash = short_hash(&format!("{first}/{second}"));
    bounded_name(&format!("{first}-{second}-{hash}"), suffix, MAX_LABEL_LEN)
}

/// A label value for `value` that fits [`MAX_LABEL_LEN`] (truncated and hashed when longer).
pub fn label_value(value: &str) -> String {
    bounded_name(value, "", MAX_LABEL_LEN)
}

/// The first [`HASH_LEN`] hex characters of the SHA-256 of `input`.
fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(HASH_LEN);
    hex
}

/// Whether `name` is a DNS-1123 label: at most 63 characters of lowercase alphanumerics and
/// `-`, starting and ending with an alphanumeric.
pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Whether `name` is a DNS-1123 subdomain of at most 63 characters (labels joined by `.`), the
/// form of every object name this module produces from valid object-name inputs.
pub fn is_short_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_LABEL_LEN && name.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_joined_unchanged() {
        assert_eq!(
            bounded_name("nightly", "202611220200", 63),
            "nightly-202611220200"
        );
        assert_eq!(bounded_name("nightly", "", 63), "nightly");
        assert_eq!(label_value("shop"), "shop");
    }

    #[test]
    fn exactly_max_is_kept_and_one_more_is_hashed() {
        let base = "a".repeat(63 - 4);
        let name = bounded_name(&base, "123", 63);
        assert_eq!(name.len(), 63);
        assert_eq!(name, format!("{base}-123"));

        let base = "a".repeat(63 - 3);
        let name = bounded_name(&base, "123", 63);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-123"));
        assert_ne!(name, format!("{base}-123"));
        assert!(is_dns1123_label(&name), "{name}");
    }

    #[test]
    fn long_names_with_a_shared_prefix_stay_distinct_and_deterministic() {
        let prefix = "x".repeat(80);
        let a = bounded_name(&format!("{prefix}-alpha"), "7", 63);
        let b = bounded_name(&format!("{prefix}-beta"), "7", 63);
        assert_ne!(a, b);
        assert_eq!(a, bounded_name(&format!("{prefix}-alpha"), "7", 63));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert!(is_dns1123_label(&a) && is_dns1123_label(&b));
    }

    #[test]
    fn truncation_never_leaves_a_dangling_separator() {
        // The cut lands right after a '-' or '.' in the base: they are trimmed.
        for sep in ['-', '.'] {
            let base = format!("{}{sep}{}", "b".repeat(52), "c".repeat(40));
            for suffix in ["", "1", "12", "202611220200"] {
                let name = bounded_name(&base, suffix, 63);
                assert!(is_short_dns1123_subdomain(&name), "{name}");
                assert!(!name.contains("-.") && !name.contains(".-") && !name.contains("--"));
            }
        }
    }

    #[test]
    fn pair_names_are_distinct_where_the_joined_text_is_not() {
        let a = pair_name("nightly", "1-dr", "copy");
        let b = pair_name("nightly-1", "dr", "copy");
        assert_ne!(a, b);
        assert!(
            a.starts_with("nightly-1-dr-") && a.ends_with("-copy"),
            "{a}"
        );
        assert_eq!(a, pair_name("nightly", "1-dr", "copy"));
        assert_ne!(a, bounded_name("nightly-1-dr", "copy", MAX_LABEL_LEN));
        let long = pair_name(&"r".repeat(70), &"s".repeat(70), "prune");
        assert!(
            long.len() <= MAX_LABEL_LEN && is_dns1123_label(&long),
            "{long}"
        );
        assert_ne!(long, pair_name(&"r".repeat(70), &"s".repeat(69), "prune"));
    }

    #[test]
    fn label_values_fit_and_keep_dots() {
        let long = format!("{}.example", "p".repeat(250));
        let v = label_value(&long);
        assert!(v.len() <= MAX_LABEL_LEN);
        assert!(is_short_dns1123_subdomain(&v), "{v}");
        assert_eq!(label_value("db.prod"), "db.prod");
    }

    #[test]
    fn label_checks_reject_bad_names() {
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_label("a-1"));
        assert!(!is_short_dns1123_subdomain("a..b"));
    }
}
