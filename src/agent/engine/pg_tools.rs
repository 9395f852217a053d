//! Which PostgreSQL client tools a run uses.
//!
//! `pg_dump` refuses a server newer than itself, and `pg_restore` an archive written by a newer
//! `pg_dump`. The agent image bundles the client tools of every supported major under
//! `/usr/lib/postgresql/<N>/bin` (`DG_PG_BIN_ROOT` overrides the root); a run picks the
//! **newest bundled major not older than** what it must read — the server's major for a
//! backup, the archive's `pg_dump` major for a restore. When none fits, the run fails with
//! [`AgentError::ClientTooOld`] naming both versions, before anything is written. Where no
//! major is bundled (a developer's machine with other layouts), the tools on `PATH` are the one
//! candidate, with the major their `--version` reports.

use std::path::{Path, PathBuf};

use crate::agent::error::{AgentError, Result};

/// Where the agent image puts the client tools of each major.
pub const BUNDLED_ROOT: &str = "/usr/lib/postgresql";
/// Environment variable overriding [`BUNDLED_ROOT`].
pub const ROOT_ENV: &str = "DG_PG_BIN_ROOT";

/// One set of client tools of one major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTools {
    /// The major version (`15`; `9` stands for every 9.x).
    pub major: u32,
    /// Their directory; `None` = on `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl PgTools {
    /// The program to run for `tool` (`pg_dump`, `pg_restore`, `psql`, …).
    pub fn program(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        }
    }

    /// What `<tool> --version` prints (`pg_dump (PostgreSQL) 15.20 (Debian …)`), for the
    /// manifest.
    pub fn version_of(&self, tool: &str) -> Result<String> {
        super::tool_version(&self.program(tool))
    }
}

/// The major of a PostgreSQL version as servers and tools print it: `15.20 (Debian …)` → 15,
/// `pg_dump (PostgreSQL) 16.2` → 16, `9.6.24` → 9, `17beta1` → 17.
pub fn major_of(version: &str) -> Option<u32> {
    let start = version.find(|c: char| c.is_ascii_digit())?;
    let digits: String = version[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The majors bundled under `root` (`<root>/<N>/bin/pg_dump` exists), oldest first.
pub fn bundled(root: &Path) -> Vec<PgTools> {
    let mut found: Vec<PgTools> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            dir.join("pg_dump").is_file().then_some(PgTools {
                major,
                bin_dir: Some(dir),
            })
        })
        .collect();
    found.sort_by_key(|t| t.major);
    found
}

/// The root to look in (`DG_PG_BIN_ROOT`, else [`BUNDLED_ROOT`]).
fn root() -> PathBuf {
    std::env::var_os(ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BUNDLED_ROOT))
}

/// Every candidate: the bundled majors, else the tools on `PATH`.
pub fn available() -> Vec<PgTools> {
    let found = bundled(&root());
    if !found.is_empty() {
        return found;
    }
    let on_path = PgTools {
        major: 0,
        bin_dir: None,
    };
    match on_path
        .version_of("pg_dump")
        .ok()
        .as_deref()
        .and_then(major_of)
    {
        Some(major) => vec![PgTools { major, ..on_path }],
        None => Vec::new(),
    }
}

/// The newest of `available` whose major is at least `need` (pure).
pub fn choose(available: &[PgTools], need: u32) -> Option<&PgTools> {
    available
        .iter()
        .filter(|t| t.major >= need)
        .max_by_key(|t| t.major)
}

fn listing(available: &[PgTools]) -> String {
    if available.is_empty() {
        return "none".into();
    }
    available
        .iter()
        .map(|t| t.major.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tools for dumping a server that reports `server_version`.
pub fn for_server(server_version: &str) -> Result<PgTools> {
    let need = major_of(server_version).ok_or_else(|| {
        AgentError::Source(format!("cannot read the server version {server_version:?}"))
    })?;
    let all = available();
    choose(&all, need).cloned().ok_or_else(|| {
        AgentError::ClientTooOld(format!(
            "the server runs PostgreSQL {server_version}, newer than every bundled pg_dump \
             (majors: {}); use an agent image with PostgreSQL {need} client tools",
            listing(&all)
        ))
    })
}

/// The tools for restoring an archive written by `dump_tool` (`pg_dump (PostgreSQL) 16.2`)
/// from a server of `server_version` (the manifest's; used when the tool is not recorded).
pub fn for_archive(dump_tool: Option<&str>, server_version: &str) -> Result<PgTools> {
    let written_by = dump_tool.unwrap_or(server_version);
    let need = major_of(written_by).ok_or_else(|| {
        AgentError::Config(format!("cannot read the archive's version {written_by:?}"))
    })?;
    let all = available();
    choose(&all, need).cloned().ok_or_else(|| {
        AgentError::ClientTooOld(format!(
            "the archive was written by {written_by}, newer than every bundled pg_restore \
             (majors: {}); use an agent image with PostgreSQL {need} client tools",
            listing(&all)
        ))
    })
}

/// The newest tools (for `psql`, which talks to any server version).
pub fn newest() -> PgTools {
    available().pop().unwrap_or(PgTools {
        major: 0,
        bin_dir: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(major: u32) -> PgTools {
        PgTools {
            major,
            bin_dir: Some(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))),
        }
    }

    #[test]
    fn majors_from_what_servers_and_tools_print() {
        assert_eq!(major_of("15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(major_of("pg_dump (PostgreSQL) 16.2"), Some(16));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(major_of("17beta1"), Some(17));
        assert_eq!(major_of("unknown"), None);
    }

    #[test]
    fn the_newest_bundled_major_not_older_than_needed() {
        let all = [t(13), t(14), t(15), t(16), t(17)];
        assert_eq!(choose(&all, 15).unwrap().major, 17);
        assert_eq!(choose(&all, 17).unwrap().major, 17);
        assert_eq!(choose(&all, 12).unwrap().major, 17);
        assert!(choose(&all, 18).is_none());
        assert!(choose(&[t(15)], 16).is_none());
        assert!(choose(&[], 15).is_none());
    }

    #[test]
    fn bundled_majors_are_found_by_their_pg_dump() {
        let root = tempfile::tempdir().unwrap();
        for (major, with_dump) in [("13", true), ("16", true), ("14", false), ("notes", true)] {
            let bin = root.path().join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            if with_dump {
                std::fs::write(bin.join("pg_dump"), "").unwrap();
            }
        }
        let found: Vec<u32> = bundled(root.path()).iter().map(|t| t.major).collect();
        assert_eq!(found, [13, 16]);
        assert!(bundled(&root.path().join("missing")).is_empty());
    }
}
