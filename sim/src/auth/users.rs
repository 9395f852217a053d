//! Static users (kube-apiserver's `--token-auth-file` CSV: `token,user,uid,"group1,group2"`)
//! and the kubeconfigs kube-sim writes for them.

use std::path::Path;

use base64::Engine as _;
use serde_json::json;

use super::StaticUser;

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn csv_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => quoted = false,
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' => return Err("bare \" in non-quoted field".into()),
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
            }
            _ => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("extraneous or missing \" in quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Parses a token file's contents. Like kube-apiserver: at least three columns (token, user
/// name, uid), an optional fourth with comma-separated groups; blank lines are skipped.
pub fn parse_token_file(text: &str) -> Result<Vec<StaticUser>, String> {
    let mut out: Vec<StaticUser> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let rec = csv_record(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if rec.len() < 3 {
            return Err(format!(
                "token file must have at least 3 columns (token, user name, user uid), found {} on line {}",
                rec.len(),
                i + 1
            ));
        }
        if rec[0].is_empty() {
            return Err(format!("line {}: empty token", i + 1));
        }
        if out.iter().any(|u| u.token == rec[0]) {
            return Err(format!("line {}: duplicate token", i + 1));
        }
        let groups = rec
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.push(StaticUser {
            token: rec[0].clone(),
            name: rec[1].clone(),
            uid: rec[2].clone(),
            groups,
        });
    }
    Ok(out)
}

/// Writes a kubeconfig for `server` (an `https://` URL) trusting `ca_pem`, authenticating as
/// `user` with `token`; mode 0600 (it holds a credential).
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": user, "namespace": "default"}}],
        "current-context": "kube-sim",
    });
    let text = serde_yaml::to_string(&doc).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_like_kube_apiserver() {
        let users = parse_token_file(
            "t1,alice,u1,\"dev,ops\"\n\nt2,bob,u2\n\"t,3\",\"carol \"\"c\"\"\",u3,g\n",
        )
        .unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users[0].groups, ["dev", "ops"]);
        assert_eq!((users[1].name.as_str(), users[1].groups.len()), ("bob", 0));
        assert_eq!(users[2].token, "t,3");
        assert_eq!(users[2].name, "carol \"c\"");
        assert!(
            parse_token_file("t1,alice\n")
                .unwrap_err()
                .contains("at least 3 columns")
        );
        assert!(parse_token_file("t1,a,1\nt1,b,2\n").is_err());
        assert!(parse_token_file("t1,\"a,1\n").is_err());
    }
}
