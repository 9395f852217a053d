//! docs/disaster-recovery.md is run as written: its command blocks (```` ```sh dr-… ````) restore
//! real envelope-encrypted backups with the standard tools only — the aws CLI against moto
//! (S3 and KMS), jq, sha256sum, the age CLI, zstd, pg_restore and the mariadb client — once
//! unwrapping the data key with an age identity and once with `aws kms decrypt`.

mod agent_common;

use std::path::Path;
use std::process::Command;

use agent_common::*;
use testkit::{MariaDb, Moto, Postgres};

const DOC: &str = include_str!("../docs/disaster-recovery.md");

/// The command block tagged `tag` (```` ```sh tag ````).
fn block(tag: &str) -> String {
    let opening = format!("```sh {tag}");
    let mut lines = DOC.lines().skip_while(|l| l.trim() != opening);
    assert!(
        lines.next().is_some(),
        "no block {tag} in docs/disaster-recovery.md"
    );
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    assert!(!body.is_empty(), "block {tag} is empty");
    body.join("\n")
}

/// Runs the blocks in order in one bash (`set -euo pipefail`) in `dir` with `env`.
fn run_blocks(dir: &Path, tags: &[&str], env: &[(&str, String)]) {
    let script = format!(
        "set -euo pipefail\n{}\n",
        tags.iter().map(|t| block(t)).collect::<Vec<_>>().join("\n")
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("PG") || k.starts_with("DG_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bash");
    assert!(
        out.status.success(),
        "the documented commands failed ({tags:?}):\n{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tools_present() {
    for tool in [
        "aws",
        "jq",
        "age",
        "age-keygen",
        "zstd",
        "sha256sum",
        "pg_restore",
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is required (scripts/install-deps.sh installs it)"
        );
    }
}

/// moto with a bucket and a KMS key aliased `alias/dr`.
fn moto_with_key() -> Moto {
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    let key = moto.kms_create_key("disaster recovery").unwrap();
    moto.kms(
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/dr", "TargetKeyId": key}),
    )
    .unwrap();
    moto
}

fn aws_env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", testkit::ACCESS_KEY_ID.to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            testkit::SECRET_ACCESS_KEY.to_string(),
        ),
        ("AWS_DEFAULT_REGION", testkit::REGION.to_string()),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

#[test]
fn postgres_backup_restores_with_the_documented_commands_by_age_and_by_kms() {
    tools_present();
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let moto = moto_with_key();
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _) = age_keypair(tmp.path(), "me.txt");
    let endpoint = moto.endpoint();
    let uri = pg.uri("shop");
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/team/shop",
            "--run-id",
            "dr",
            "--recipient",
            &public,
            "--kms-key",
            "alias/dr",
            "--kms-endpoint",
            &endpoint,
        ],
        &env,
    )
    .assert_ok();

    for (how, unwrap) in [("age", "dr-unwrap-age"), ("kms", "dr-unwrap-kms")] {
        let target = format!("dr_{how}");
        pg.create_database(&target).unwrap();
        let dir = tmp.path().join(how);
        std::fs::create_dir_all(&dir).unwrap();
        let mut vars = aws_env(&moto);
        vars.extend([
            ("BACKUP_URL", "s3://backups/team/shop/dr".to_string()),
            ("AGE_IDENTITY", identity.display().to_string()),
            ("TARGET", pg.uri(&target)),
        ]);
        run_blocks(
            &dir,
            &["dr-fetch", "dr-verify", unwrap, "dr-restore-postgres"],
            &vars,
        );
        assert_eq!(pg_fingerprint(&pg, &target), before, "restored by {how}");
    }
}

#[test]
fn mariadb_backup_restores_with_the_documented_commands() {
    tools_present();
    let db = MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    my_fill(&db, "shop", 500);
    let before = my_fingerprint(&db, "shop");
    let moto = moto_with_key();
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _) = age_keypair(tmp.path(), "me.txt");
    let endpoint = moto.endpoint();
    let uri = db.uri("shop");
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            "s3://backups/team/shop",
            "--run-id",
            "dr",
            "--recipient",
            &public,
        ],
        &env,
    )
    .assert_ok();
    db.create_database("restored").unwrap();
    // The client's connection settings from ~/.my.cnf, as the page says.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(db.client_config(), home.join(".my.cnf")).unwrap();
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let mut vars = aws_env(&moto);
    vars.extend([
        ("BACKUP_URL", "s3://backups/team/shop/dr".to_string()),
        ("AGE_IDENTITY", identity.display().to_string()),
        ("MARIADB_DATABASE", "restored".to_string()),
        ("HOME", home.display().to_string()),
    ]);
    run_blocks(
        &dir,
        &[
            "dr-fetch",
            "dr-verify",
            "dr-unwrap-age",
            "dr-restore-mariadb",
        ],
        &vars,
    );
    assert_eq!(my_fingerprint(&db, "restored"), before);
}
