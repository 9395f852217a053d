//! Redaction of failure text that crosses from the agent into status, Events and
//! notifications. Tool stderr (`pg_dump`, `pg_restore`, `mariadb`, …) is for the Job's log, where
//! only people who may read the pod see it; what the agent reports is read by everyone who can
//! read a run, and is sent to webhooks. So the report keeps the tool's error, not what the
//! database echoed with it:
//!
//! - PostgreSQL's `DETAIL:`, `HINT:`, `CONTEXT:`, `QUERY:`, `STATEMENT:` and `LINE n:` parts
//!   (row values, query text) are dropped;
//! - values in `Key (col)=(value)` and `Failing row contains (…)` are replaced by `…`;
//! - credentials are masked: `password=…`, URI user info (`scheme://user:pass@`), AWS access key
//!   ids and secret keys, presigned-URL signatures, age identities;
//! - control characters are removed and the text is bounded ([`MAX_REPORTED_ERROR`]).

/// Longest failure text kept (characters).
pub const MAX_REPORTED_ERROR: usize = 600;

const MASK: &str = "[redacted]";

/// `text` with database echoes and credentials removed, bounded.
pub fn redact_failure(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REPORTED_ERROR));
    for (i, segment) in split_echoes(text).into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(segment.trim());
    }
    let out = mask_values(&out);
    let out = mask_credentials(&out);
    let mut cleaned: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.chars().count() > MAX_REPORTED_ERROR {
        cleaned = cleaned.chars().take(MAX_REPORTED_ERROR).collect();
        cleaned.push('…');
    }
    cleaned.trim().to_string()
}

/// The parts of `text` before any PostgreSQL echo marker (`DETAIL:` …), line by line.
fn split_echoes(text: &str) -> Vec<&str> {
    const MARKERS: [&str; 7] = [
        "DETAIL:",
        "HINT:",
        "CONTEXT:",
        "QUERY:",
        "STATEMENT:",
        "Command was:",
        "LINE ",
    ];
    let mut kept = Vec::new();
    for line in text.split(['\n', '|']) {
        let cut = MARKERS
            .iter()
            .filter_map(|m| find_marker(line, m))
            .min()
            .unwrap_or(line.len());
        let part = &line[..cut];
        if !part.trim().is_empty() {
            kept.push(part);
        }
    }
    kept
}

/// Where `marker` starts in `line` as a marker (`LINE ` only when a number and `:` follow).
fn find_marker(line: &str, marker: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = line[from..].find(marker) {
        let at = from + pos;
        if marker != "LINE " {
            return Some(at);
        }
        let rest = &line[at + marker.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(':') {
            return Some(at);
        }
        from = at + marker.len();
    }
    None
}

/// `Key (a, b)=(1, x)` → `Key (a, b)=(…)`; `Failing row contains (…)`.
fn mask_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let key = rest.find(")=(");
        let row = rest.find("row contains (");
        let (at, open_len) = match (key, row) {
            (Some(k), Some(r)) if r < k => (r, "row contains (".len()),
            (Some(k), _) => (k, ")=(".len()),
            (None, Some(r)) => (r, "row contains (".len()),
            (None, None) => break,
        };
        out.push_str(&rest[..at + open_len]);
        let after = &rest[at + open_len..];
        // Skip to the matching `)` (values may hold parentheses); unbalanced: drop the rest.
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push('…');
        match end {
            Some(i) => {
                out.push(')');
                rest = &after[i + 1..];
            }
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn mask_credentials(text: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(' ') {
        words.push(mask_word(word));
    }
    words.join(" ")
}

fn mask_word(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    // key=value pairs naming a credential.
    for key in [
        "password=",
        "pgpassword=",
        "mysql_pwd=",
        "aws_secret_access_key=",
        "aws_session_token=",
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "token=",
        "secret=",
    ] {
        if let Some(pos) = lower.find(key) {
            let keep = pos + key.len();
            let quote = word[..pos]
                .chars()
                .last()
                .filter(|c| *c == '"' || *c == '\'');
            let mut w = word[..keep].to_string();
            w.push_str(MASK);
            if let Some(q) = quote {
                w.push(q);
            }
            return w;
        }
    }
    // scheme://user:password@host
    if let Some(scheme_end) = word.find("://") {
        let after = &word[scheme_end + 3..];
        if let Some(at) = after.find('@') {
            let userinfo = &after[..at];
            if !userinfo.contains('/') {
                let user = userinfo.split(':').next().unwrap_or("");
                let masked = if userinfo.contains(':') {
                    format!("{user}:{MASK}")
                } else {
                    user.to_string()
                };
                return format!(
                    "{}://{masked}@{}",
                    &word[..scheme_end],
                    mask_word(&after[at + 1..])
                );
            }
        }
    }
    if word.contains("AGE-SECRET-KEY-") {
        return MASK.to_string();
    }
    // AWS access key ids (AKIA…/ASIA… + 16 upper-case letters or digits).
    let trimmed = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() == 20
        && (trimmed.starts_with("AKIA") || trimmed.starts_with("ASIA"))
        && trimmed
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return word.replace(trimmed, MASK);
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_echoes_are_dropped_and_the_error_kept() {
        let stderr = "pg_restore: error: could not execute query: ERROR:  duplicate key value violates unique constraint \"users_email_key\"\nDETAIL:  Key (email)=(alice@example.com) already exists.\nCONTEXT:  COPY users, line 3: \"3\talice@example.com\tAlice\"\nCommand was: COPY public.users (id, email) FROM stdin;";
        let r = redact_failure(stderr);
        assert!(
            r.contains("duplicate key value violates unique constraint"),
            "{r}"
        );
        assert!(!r.contains("alice"), "{r}");
        assert!(!r.contains("Alice"), "{r}");

        let r = redact_failure(
            "psql: error: ERROR:  new row for relation \"cards\" violates check constraint \"c\" | DETAIL:  Failing row contains (4111111111111111, 12/29).",
        );
        assert!(!r.contains("4111"), "{r}");
        assert!(r.contains("violates check constraint"), "{r}");

        let r = redact_failure("ERROR: duplicate key Key (id, note)=(7, (secret) text) exists");
        assert_eq!(r, "ERROR: duplicate key Key (id, note)=(…) exists");
        let r = redact_failure(
            "ERROR:  syntax error at or near \"x\" LINE 1: SELECT * FROM salaries WHERE ssn = '123'",
        );
        assert!(!r.contains("123"), "{r}");
        assert!(r.contains("syntax error"), "{r}");
    }

    #[test]
    fn credentials_are_masked() {
        for (text, secret) in [
            (
                "pg_dump: error: connection to server failed: host=db password=hunter2 user=x",
                "hunter2",
            ),
            (
                "mariadb-dump: Got error: 1045: Access denied; uri mysql://backup:hunter2@db:3306/shop",
                "hunter2",
            ),
            (
                "upload to https://b.s3.amazonaws.com/k?X-Amz-Signature=abcdef0123 failed",
                "abcdef0123",
            ),
            ("using AKIAIOSFODNN7EXAMPLE for s3", "AKIAIOSFODNN7EXAMPLE"),
            (
                "env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG leaked",
                "wJalrXUtnFEMI",
            ),
            (
                "identity AGE-SECRET-KEY-1QQQQQQ in stderr",
                "AGE-SECRET-KEY",
            ),
        ] {
            let r = redact_failure(text);
            assert!(!r.contains(secret), "{text} -> {r}");
            assert!(r.contains(MASK), "{r}");
        }
        // The user name and host stay: they help, and the spec names them anyway.
        let r = redact_failure("could not connect to postgres://backup:pw@db.shop.svc:5432/shop");
        assert!(
            r.contains("postgres://backup:[redacted]@db.shop.svc:5432/shop"),
            "{r}"
        );
    }

    #[test]
    fn text_is_bounded_and_single_line() {
        let long = format!("error: {}\u{1b}[31m", "x".repeat(5000));
        let r = redact_failure(&long);
        assert!(r.chars().count() <= MAX_REPORTED_ERROR + 1);
        assert!(!r.chars().any(char::is_control));
        assert_eq!(redact_failure("plain message"), "plain message");
    }
}
