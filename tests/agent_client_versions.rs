//! Client tool versions against real servers (issue 12): `pg_dump` refuses a server newer than
//! itself, so the agent picks, from the majors bundled under `DG_PG_BIN_ROOT`
//! (`/usr/lib/postgresql` in the image), the newest one not older than the server — and fails
//! with `client-too-old` naming both versions, before writing anything, when none fits.
//! `pg_restore` is chosen the same way against the version that wrote the archive.
//!
//! The newer server is a real PostgreSQL 16 (the pgserver wheel, unpacked by
//! scripts/install-deps.sh); the machine's own client tools are Debian's 15.

mod agent_common;

use std::path::{Path, PathBuf};

use agent_common::*;
use testkit::Postgres;

const PG15: &str = "/usr/lib/postgresql/15/bin";
const PG16: &str = "/opt/dataguardian-test/postgresql-16/bin";

/// A bundle root `<root>/<major>/bin` holding the given majors (links to real installs).
fn bundle(dir: &Path, majors: &[(&str, &str)]) -> PathBuf {
    let root = dir.join(format!(
        "bundle-{}",
        majors.iter().map(|m| m.0).collect::<Vec<_>>().join("-")
    ));
    for (major, bin) in majors {
        std::fs::create_dir_all(root.join(major)).unwrap();
        std::os::unix::fs::symlink(bin, root.join(major).join("bin")).unwrap();
    }
    root
}

fn pg16() -> Postgres {
    assert!(
        Path::new(PG16).join("postgres").exists(),
        "PostgreSQL 16 is missing: run scripts/install-deps.sh"
    );
    Postgres::builder().bin_dir(PG16).start().unwrap()
}

#[test]
fn a_server_newer_than_every_bundled_pg_dump_fails_client_too_old_before_writing() {
    let server = pg16();
    server.create_database("shop").unwrap();
    pg_fill(&server, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let only_15 = bundle(tmp.path(), &[("15", PG15)]);
    let store = tmp.path().join("store");
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &format!("file://{}", store.display()),
            "--run-id",
            "r1",
        ],
        &[
            ("DG_URI", &server.uri("shop")),
            ("DG_PG_BIN_ROOT", only_15.to_str().unwrap()),
        ],
    );
    run.assert_failed("client-too-old");
    assert_eq!(run.code, 16, "{}", run.stderr);
    let error = run.error();
    assert!(
        error.contains("16.2") && error.contains("majors: 15"),
        "the error names both versions: {error}"
    );
    assert!(
        files_below(&store).is_empty(),
        "nothing is written: {:?}",
        files_below(&store)
    );
}

#[test]
fn the_newest_fitting_major_dumps_and_restore_needs_a_pg_restore_as_new_as_the_archive() {
    let server = pg16();
    server.create_database("shop").unwrap();
    pg_fill(&server, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let both = bundle(tmp.path(), &[("15", PG15), ("16", PG16)]);
    let only_15 = bundle(tmp.path(), &[("15", PG15)]);
    let store = tmp.path().join("store");
    let to = format!("file://{}", store.display());
    let backup = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "r1",
        ],
        &[
            ("DG_URI", &server.uri("shop")),
            ("DG_PG_BIN_ROOT", both.to_str().unwrap()),
        ],
    );
    backup.assert_ok();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("r1/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["dumpTool"], "pg_dump (PostgreSQL) 16.2",
        "{manifest}"
    );
    assert!(
        manifest["serverVersion"]
            .as_str()
            .unwrap()
            .starts_with("16.")
    );

    // pg_restore 15 cannot read an archive of pg_dump 16: refused before the target is touched.
    let target = pg16();
    let from = format!("{to}/r1/manifest.json");
    let restore = |root: &Path, db: &str| {
        run_agent(
            &[
                "restore",
                "--engine",
                "postgres",
                "--from",
                &from,
                "--database",
                db,
                "--create-database",
            ],
            &[
                ("DG_URI", &target.uri("postgres")),
                ("DG_PG_BIN_ROOT", root.to_str().unwrap()),
            ],
        )
    };
    let old = restore(&only_15, "copy_old");
    old.assert_failed("client-too-old");
    assert!(
        old.error().contains("pg_dump (PostgreSQL) 16.2"),
        "{}",
        old.error()
    );
    assert_eq!(
        target
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'copy_old'"
            )
            .unwrap(),
        "0"
    );
    restore(&both, "copy").assert_ok();
    assert_eq!(
        pg_fingerprint(&target, "copy"),
        pg_fingerprint(&server, "shop")
    );
}
