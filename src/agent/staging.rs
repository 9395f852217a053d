//! Staged restores: the artifact lands in a staging database on the target server, its
//! checksum is verified as the stream ends, masking and its guard run there, and only then is
//! it swapped in (PostgreSQL: two database renames in one transaction; MySQL/MariaDB: one
//! `RENAME TABLE` across schemas). Any failure before the swap drops the staging database and
//! leaves the target as it was.
//!
//! This file holds the pure planning (names, masking SQL, the guard's verdict); the engine
//! calls live in `engine::postgres` and `engine::mysql`.

use crate::api::restore_run::{MaskingRule, MaskingSpec};

use super::error::{AgentError, Result};
use super::manifest::Engine;

/// Suffix of staging databases.
pub const STAGING_SUFFIX: &str = "_dgstaging";
/// Marker of kept previous targets (`<db>_dgprev_<UTC time>`); the cleanup refuses any other
/// name.
pub const PREVIOUS_MARKER: &str = "_dgprev_";

/// How the agent restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Staging {
    /// Staged for a single-database backup, in place for `allDatabases`.
    #[default]
    Auto,
    /// Staged, or refuse.
    Staged,
    /// Straight into the target (the legacy way).
    InPlace,
}

impl std::str::FromStr for Staging {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Staging::Auto),
            "staged" => Ok(Staging::Staged),
            "in-place" | "inplace" => Ok(Staging::InPlace),
            other => Err(format!(
                "unknown staging mode {other:?} (auto, staged, in-place)"
            )),
        }
    }
}

/// Whether a restore is staged (pure): refuses what cannot be done, with the reason.
pub fn decide(staging: Staging, all_databases: bool, masking: bool) -> Result<bool> {
    let staged = match (staging, all_databases) {
        (Staging::Staged, true) => {
            return Err(AgentError::Config(
                "an allDatabases backup cannot be staged (it restores cluster-wide objects and every database); restore one database at a time, or restore in place".into(),
            ));
        }
        (Staging::InPlace, _) | (Staging::Auto, true) => false,
        (Staging::Staged | Staging::Auto, false) => true,
    };
    if masking && !staged {
        return Err(AgentError::Config(
            "masking runs in the staging database before the swap: it needs a staged restore of one database (not allDatabases, not in-place)".into(),
        ));
    }
    Ok(staged)
}

/// Longest database name (PostgreSQL: 63 bytes; MySQL: 64 characters).
fn max_len(engine: Engine) -> usize {
    match engine {
        Engine::Postgres => 63,
        Engine::Mysql => 64,
    }
}

/// `db` shortened so that `db + suffix` fits, with a short digest of the full name when cut
/// (so two long names never share a derived name).
fn derived(engine: Engine, db: &str, suffix: &str) -> String {
    let max = max_len(engine);
    if db.len() + suffix.len() <= max {
        return format!("{db}{suffix}");
    }
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(db.as_bytes())[..4]);
    let mut keep = max - suffix.len() - digest.len() - 1;
    while !db.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{digest}{suffix}", &db[..keep])
}

/// The staging database of `db` (deterministic: a retry after a killed attempt finds and
/// drops the leftover first; restores of one target are queued one at a time).
pub fn staging_name(engine: Engine, db: &str) -> String {
    derived(engine, db, STAGING_SUFFIX)
}

/// The name the previous target is kept under (or renamed to before it is dropped).
pub fn previous_name(engine: Engine, db: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    derived(
        engine,
        db,
        &format!("{PREVIOUS_MARKER}{}", now.format("%Y%m%d%H%M%S")),
    )
}

/// Whether `name` is one [`previous_name`] makes (the cleanup drops nothing else).
pub fn is_previous_name(name: &str) -> bool {
    name.rsplit_once(PREVIOUS_MARKER)
        .is_some_and(|(db, stamp)| {
            !db.is_empty() && stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit())
        })
}

/// A table name as written in a rule (`schema.table` or `table`), quoted for `engine`.
fn quote_table(engine: Engine, table: &str) -> String {
    table
        .split('.')
        .map(|part| quote_ident(engine, part))
        .collect::<Vec<_>>()
        .join(".")
}

fn quote_ident(engine: Engine, name: &str) -> String {
    match engine {
        Engine::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        // As `engine::mysql::quote_ident` (the engines use this module, not the reverse).
        Engine::Mysql => format!("`{}`", name.replace('`', "``")),
    }
}

/// The SQL of one rule (pure).
pub fn rule_sql(engine: Engine, rule: &MaskingRule) -> Result<String> {
    match (&rule.table, &rule.columns, &rule.sql) {
        (Some(table), Some(columns), None) if !columns.is_empty() => {
            let sets: Vec<String> = columns
                .iter()
                .map(|c| format!("{} = ({})", quote_ident(engine, &c.name), c.expression))
                .collect();
            let mut sql = format!(
                "UPDATE {} SET {}",
                quote_table(engine, table),
                sets.join(", ")
            );
            if let Some(cond) = &rule.r#where {
                sql.push_str(&format!(" WHERE ({cond})"));
            }
            Ok(sql)
        }
        (None, None, Some(sql)) => Ok(sql.trim().trim_end_matches(';').to_string()),
        _ => Err(AgentError::Config(
            "a masking rule sets exactly one of table (with columns) or sql".into(),
        )),
    }
}

/// Every rule's SQL, in order, each ending in `;` on its own line.
pub fn masking_script(engine: Engine, masking: &MaskingSpec) -> Result<String> {
    let mut out = String::new();
    for rule in &masking.rules {
        out.push_str(&rule_sql(engine, rule)?);
        out.push_str(";\n");
    }
    Ok(out)
}

/// Whether the guard's output (one value) means true.
pub fn guard_holds(output: &[String]) -> std::result::Result<(), String> {
    match output {
        [one] if matches!(one.trim(), "t" | "true" | "1" | "TRUE") => Ok(()),
        [one] => Err(format!(
            "the guard query returned {:?}, not true",
            one.chars().take(32).collect::<String>()
        )),
        rows => Err(format!(
            "the guard query must return one value, it returned {} rows",
            rows.len()
        )),
    }
}

/// Remove quoted literals from a server's error line: a failed masking statement must not
/// carry the unmasked values it choked on into status, Events or logs.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '(' => {
                out.push(c);
                quote = Some(if c == '(' { ')' } else { c });
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out.lines()
        .filter(|l| !l.trim_start().starts_with("DETAIL"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::restore_run::ColumnMask;

    #[test]
    fn decides_staging_and_refuses_what_cannot_be_staged() {
        assert!(decide(Staging::Auto, false, false).unwrap());
        assert!(!decide(Staging::Auto, true, false).unwrap());
        assert!(!decide(Staging::InPlace, false, false).unwrap());
        assert!(decide(Staging::Staged, true, false).is_err());
        let e = decide(Staging::Auto, true, true).unwrap_err();
        assert!(e.to_string().contains("masking"), "{e}");
        assert!(decide(Staging::InPlace, false, true).is_err());
        assert_eq!("in-place".parse::<Staging>(), Ok(Staging::InPlace));
        assert!("x".parse::<Staging>().is_err());
    }

    #[test]
    fn names_fit_the_engines_limits_and_stay_distinct() {
        assert_eq!(staging_name(Engine::Postgres, "shop"), "shop_dgstaging");
        let long = "x".repeat(70);
        let a = staging_name(Engine::Postgres, &long);
        let b = staging_name(Engine::Postgres, &format!("{long}y"));
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T08:30:05Z")
            .unwrap()
            .to_utc();
        let prev = previous_name(Engine::Mysql, "shop", now);
        assert_eq!(prev, "shop_dgprev_20261207083005");
        assert!(is_previous_name(&prev));
        assert!(is_previous_name(&previous_name(
            Engine::Postgres,
            &long,
            now
        )));
        assert!(!is_previous_name("shop"));
        assert!(!is_previous_name("_dgprev_20261207083005"));
        assert!(!is_previous_name("shop_dgprev_2026"));
    }

    #[test]
    fn masking_sql_quotes_names_and_keeps_expressions() {
        let rule = MaskingRule {
            table: Some("public.cus\"tomers".into()),
            columns: Some(vec![
                ColumnMask {
                    name: "email".into(),
                    expression: "'user' || id || '@example.invalid'".into(),
                },
                ColumnMask {
                    name: "name".into(),
                    expression: "'Customer ' || id".into(),
                },
            ]),
            r#where: Some("id > 0".into()),
            sql: None,
        };
        assert_eq!(
            rule_sql(Engine::Postgres, &rule).unwrap(),
            "UPDATE \"public\".\"cus\"\"tomers\" SET \"email\" = ('user' || id || '@example.invalid'), \"name\" = ('Customer ' || id) WHERE (id > 0)"
        );
        let my = MaskingRule {
            table: Some("people".into()),
            columns: Some(vec![ColumnMask {
                name: "national_id".into(),
                expression: "NULL".into(),
            }]),
            ..Default::default()
        };
        assert_eq!(
            rule_sql(Engine::Mysql, &my).unwrap(),
            "UPDATE `people` SET `national_id` = (NULL)"
        );
        let stmt = MaskingRule {
            sql: Some("TRUNCATE audit_log;".into()),
            ..Default::default()
        };
        let spec = MaskingSpec {
            rules: vec![stmt, my],
            guard: None,
        };
        assert_eq!(
            masking_script(Engine::Mysql, &spec).unwrap(),
            "TRUNCATE audit_log;\nUPDATE `people` SET `national_id` = (NULL);\n"
        );
        assert!(rule_sql(Engine::Mysql, &MaskingRule::default()).is_err());
    }

    #[test]
    fn the_guard_needs_exactly_one_true_value() {
        assert!(guard_holds(&["t".into()]).is_ok());
        assert!(guard_holds(&["1".into()]).is_ok());
        assert!(guard_holds(&["f".into()]).is_err());
        assert!(guard_holds(&[]).is_err());
        assert!(guard_holds(&["t".into(), "t".into()]).is_err());
    }

    #[test]
    fn scrubbed_errors_carry_no_values() {
        let e = "psql:<stdin>:3: ERROR:  duplicate key value violates unique constraint \"c_email_key\"\nDETAIL:  Key (email)=(alice@example.com) already exists.";
        let s = scrub(e);
        assert!(!s.contains("alice"), "{s}");
        assert!(s.contains("duplicate key value"), "{s}");
        let s = scrub("ERROR: invalid input syntax for type integer: \"Alice Smith\"");
        assert!(!s.contains("Alice"), "{s}");
    }
}
