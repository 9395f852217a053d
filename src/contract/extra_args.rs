//! The allow-list of `extraArgs`: which options a policy or restore target may add to the dump
//! and restore tools. Both sides check it: the operator before it builds a Job (reason
//! `ArgumentNotAllowed`), the agent before it starts a tool (a configuration error).
//!
//! The rules, chosen so that an argument can only narrow or shape *what* is dumped or
//! restored, never *where to* or *how the tool runs*:
//! - only options named here, spelled in full (`getopt_long` and MySQL accept unambiguous
//!   abbreviations and `_` for `-`: an exact match leaves no room for them);
//! - long options only (`--schema=app`, not `-n app`); an option that takes a value takes it
//!   as `--option=value` in the same argument, so no argument is ever read as another
//!   option's value and nothing positional slips through;
//! - refused, whatever the tool: anything that writes or reads files (`--file`, `--filter`,
//!   `--use-list`, `--result-file`, `--tab`, `--defaults-file`, `--log-error`), runs commands
//!   or loads code (`--plugin-dir`, `--default-auth`), changes the connection or the identity
//!   (`--dbname`, `--host`, `--port`, `--username`/`--user`, `--role`, `--superuser`, TLS
//!   options), overrides what the agent decides itself (`--snapshot`, `--format`,
//!   `--compress`, `--jobs`, `--clean`, `--create`, `--single-transaction`, `--databases`),
//!   reaches other servers (`--include-foreign-data`) or runs user SQL (`--where`);
//! - `--load-via-partition-root` is allowed: it only routes partition rows through their
//!   root table when restored (the same rows, the same rights);
//! - MySQL/MariaDB restores replay SQL through the client and take no extra arguments.
//!
//! `docs/threat-model.md` records the finding this closes.

use crate::api::common::Engine;

/// A tool that `extraArgs` reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `pg_dump` (PostgreSQL backups).
    PgDump,
    /// `pg_restore` (PostgreSQL restores).
    PgRestore,
    /// `mariadb-dump` / `mysqldump` (MySQL and MariaDB backups).
    MysqlDump,
    /// The `mariadb` / `mysql` client replaying a dump (MySQL and MariaDB restores).
    MysqlRestore,
}

impl Tool {
    /// The tool that dumps `engine`.
    pub fn dump(engine: Engine) -> Tool {
        match engine {
            Engine::Postgres => Tool::PgDump,
            Engine::Mysql => Tool::MysqlDump,
        }
    }

    /// The tool that restores `engine`.
    pub fn restore(engine: Engine) -> Tool {
        match engine {
            Engine::Postgres => Tool::PgRestore,
            Engine::Mysql => Tool::MysqlRestore,
        }
    }

    /// The tool's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::PgDump => "pg_dump",
            Tool::PgRestore => "pg_restore",
            Tool::MysqlDump => "mysqldump",
            Tool::MysqlRestore => "the mysql client",
        }
    }

    /// Options without a value this tool accepts from `extraArgs`.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Tool::PgDump => &[
                "--data-only",
                "--schema-only",
                "--no-comments",
                "--no-owner",
                "--no-privileges",
                "--no-acl",
                "--no-publications",
                "--no-subscriptions",
                "--no-security-labels",
                "--no-tablespaces",
                "--no-table-access-method",
                "--no-toast-compression",
                "--no-unlogged-table-data",
                "--no-large-objects",
                "--no-blobs",
                "--large-objects",
                "--blobs",
                "--quote-all-identifiers",
                "--enable-row-security",
                "--load-via-partition-root",
                "--strict-names",
                "--inserts",
                "--column-inserts",
                "--on-conflict-do-nothing",
                "--disable-dollar-quoting",
                "--disable-triggers",
            ],
            Tool::PgRestore => &[
                "--data-only",
                "--schema-only",
                "--no-comments",
                "--no-owner",
                "--no-privileges",
                "--no-acl",
                "--no-publications",
                "--no-subscriptions",
                "--no-security-labels",
                "--no-tablespaces",
                "--no-table-access-method",
                "--no-data-for-failed-tables",
                "--enable-row-security",
                "--strict-names",
                "--disable-triggers",
            ],
            Tool::MysqlDump => &[
                "--skip-comments",
                "--skip-dump-date",
                "--no-data",
                "--no-create-info",
                "--no-tablespaces",
                "--skip-triggers",
                "--skip-routines",
                "--skip-events",
                "--complete-insert",
                "--extended-insert",
                "--skip-extended-insert",
                "--insert-ignore",
                "--replace",
                "--add-drop-table",
                "--skip-add-drop-table",
                "--skip-add-locks",
                "--skip-lock-tables",
                "--order-by-primary",
                "--skip-tz-utc",
            ],
            Tool::MysqlRestore => &[],
        }
    }

    /// Options this tool accepts from `extraArgs` as `--option=value`.
    pub fn valued(self) -> &'static [&'static str] {
        match self {
            Tool::PgDump => &[
                "--schema",
                "--exclude-schema",
                "--table",
                "--exclude-table",
                "--table-and-children",
                "--exclude-table-and-children",
                "--exclude-table-data",
                "--exclude-table-data-and-children",
                "--extension",
                "--exclude-extension",
                "--section",
                "--lock-wait-timeout",
                "--extra-float-digits",
                "--rows-per-insert",
                "--encoding",
            ],
            Tool::PgRestore => &[
                "--schema",
                "--exclude-schema",
                "--table",
                "--index",
                "--function",
                "--trigger",
                "--section",
            ],
            Tool::MysqlDump => &[
                "--ignore-table",
                "--ignore-table-data",
                "--max-allowed-packet",
                "--net-buffer-length",
                "--column-statistics",
                "--set-gtid-purged",
            ],
            Tool::MysqlRestore => &[],
        }
    }
}

/// Why an extra argument is refused. Messages name the option, never its value (a value can
/// be anything a user typed, a password included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// The option is not on the tool's allow-list.
    #[error(
        "extra argument {option} is not allowed for {tool}: allowed are {allowed} (see docs/threat-model.md)"
    )]
    NotAllowed {
        /// The tool.
        tool: &'static str,
        /// The option as written, without a value.
        option: String,
        /// The allow-list, for the message.
        allowed: String,
    },
    /// A short option (`-n`) or a positional argument.
    #[error("extra argument #{index} for {tool} is not a long option (--name or --name=value)")]
    NotLongOption {
        /// The tool.
        tool: &'static str,
        /// 1-based position in the list.
        index: usize,
    },
    /// A valued option without `=value`.
    #[error("extra argument {option} for {tool} needs its value in the same argument: {option}=…")]
    ValueMissing {
        /// The tool.
        tool: &'static str,
        /// The option.
        option: String,
    },
    /// A flag given a value.
    #[error("extra argument {option} for {tool} takes no value")]
    ValueNotAllowed {
        /// The tool.
        tool: &'static str,
        /// The option.
        option: String,
    },
    /// A control character (a newline, NUL) in an argument.
    #[error("extra argument #{index} for {tool} contains a control character")]
    ControlCharacter {
        /// The tool.
        tool: &'static str,
        /// 1-based position in the list.
        index: usize,
    },
}

/// Checks every argument of `args` against `tool`'s allow-list.
pub fn check(tool: Tool, args: &[String]) -> Result<(), ArgError> {
    let name = tool.as_str();
    for (i, arg) in args.iter().enumerate() {
        let index = i + 1;
        if arg.chars().any(char::is_control) {
            return Err(ArgError::ControlCharacter { tool: name, index });
        }
        let Some(body) = arg.strip_prefix("--").filter(|b| !b.is_empty()) else {
            return Err(ArgError::NotLongOption { tool: name, index });
        };
        let (option, value) = match body.split_once('=') {
            Some((o, v)) => (format!("--{o}"), Some(v)),
            None => (format!("--{body}"), None),
        };
        let flag = tool.flags().contains(&option.as_str());
        let valued = tool.valued().contains(&option.as_str());
        match (flag, valued, value) {
            (true, _, None) => {}
            (true, _, Some(_)) => return Err(ArgError::ValueNotAllowed { tool: name, option }),
            (false, true, Some(v)) if !v.is_empty() => {}
            (false, true, _) => return Err(ArgError::ValueMissing { tool: name, option }),
            (false, false, _) => {
                let allowed: Vec<String> = tool
                    .flags()
                    .iter()
                    .map(|f| (*f).to_owned())
                    .chain(tool.valued().iter().map(|v| format!("{v}=…")))
                    .collect();
                return Err(ArgError::NotAllowed {
                    tool: name,
                    option,
                    allowed: if allowed.is_empty() {
                        "none".into()
                    } else {
                        allowed.join(", ")
                    },
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn content_options_pass() {
        check(
            Tool::PgDump,
            &args(&[
                "--exclude-table=audit_*",
                "--schema=app",
                "--no-comments",
                "--load-via-partition-root",
            ]),
        )
        .unwrap();
        check(Tool::PgRestore, &args(&["--no-owner", "--schema=app"])).unwrap();
        check(
            Tool::MysqlDump,
            &args(&["--ignore-table=shop.sessions", "--skip-comments"]),
        )
        .unwrap();
        check(Tool::MysqlRestore, &[]).unwrap();
    }

    #[test]
    fn options_that_write_files_run_commands_or_change_the_connection_are_refused() {
        let refused = [
            (Tool::PgDump, "--file=/tmp/x"),
            (Tool::PgDump, "--filter=/etc/dataguardian/identity/identity"),
            (Tool::PgDump, "--dbname=postgres://evil"),
            (Tool::PgDump, "--host=10.0.0.1"),
            (Tool::PgDump, "--port=6432"),
            (Tool::PgDump, "--username=postgres"),
            (Tool::PgDump, "--role=admin"),
            (Tool::PgDump, "--snapshot=00000003-1"),
            (Tool::PgDump, "--format=plain"),
            (Tool::PgDump, "--compress=9"),
            (Tool::PgDump, "--jobs=4"),
            (Tool::PgDump, "--include-foreign-data=remote"),
            (Tool::PgDump, "--fil=/tmp/x"),
            (Tool::PgRestore, "--file=/tmp/x"),
            (Tool::PgRestore, "--use-list=/tmp/list"),
            (Tool::PgRestore, "--clean"),
            (Tool::PgRestore, "--create"),
            (Tool::PgRestore, "--superuser=postgres"),
            (Tool::PgRestore, "--single-transaction"),
            (Tool::MysqlDump, "--result-file=/tmp/x"),
            (Tool::MysqlDump, "--tab=/tmp"),
            (Tool::MysqlDump, "--defaults-extra-file=/tmp/my.cnf"),
            (Tool::MysqlDump, "--plugin-dir=/tmp"),
            (Tool::MysqlDump, "--default-auth=evil"),
            (Tool::MysqlDump, "--host=10.0.0.1"),
            (Tool::MysqlDump, "--where=1=1 OR sleep(100)"),
            (Tool::MysqlDump, "--log-error=/tmp/x"),
            (Tool::MysqlDump, "--ignore_table=shop.x"),
            (Tool::MysqlDump, "--loose-tab=/tmp"),
            (Tool::MysqlRestore, "--force"),
        ];
        for (tool, arg) in refused {
            let err = check(tool, &args(&[arg])).unwrap_err();
            assert!(matches!(err, ArgError::NotAllowed { .. }), "{arg}: {err}");
            let option = arg.split('=').next().unwrap();
            let message = err.to_string();
            assert!(message.contains(option), "{message}");
            if let Some((_, value)) = arg.split_once('=') {
                assert!(!message.contains(value), "the value leaks: {message}");
            }
        }
    }

    #[test]
    fn short_options_positionals_split_values_and_control_characters_are_refused() {
        for arg in ["-f/tmp/x", "-n", "app", "--", "-", "--="] {
            let err = check(Tool::PgDump, &args(&[arg])).unwrap_err();
            assert!(
                matches!(
                    err,
                    ArgError::NotLongOption { .. } | ArgError::NotAllowed { .. }
                ),
                "{arg}: {err}"
            );
        }
        // `--schema` followed by a separate value would make the value the next argument.
        assert!(matches!(
            check(Tool::PgDump, &args(&["--schema", "-f/tmp/x"])).unwrap_err(),
            ArgError::ValueMissing { .. }
        ));
        assert!(matches!(
            check(Tool::PgDump, &args(&["--schema="])).unwrap_err(),
            ArgError::ValueMissing { .. }
        ));
        assert!(matches!(
            check(Tool::PgDump, &args(&["--no-comments=false"])).unwrap_err(),
            ArgError::ValueNotAllowed { .. }
        ));
        assert!(matches!(
            check(Tool::PgDump, &args(&["--schema=a\nb"])).unwrap_err(),
            ArgError::ControlCharacter { index: 1, .. }
        ));
    }
}
