//! The image table: the committed `sim/images.yaml` and resolution of image + command/args to a
//! host program, the way a container runtime combines ENTRYPOINT/CMD with command/args.

use std::path::Path;

use kube_sim::runner::images::{ImageTable, ResolveError, glob_match, normalize_image, substitute};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const TABLE: &str = r#"
passEnv: [RUST_LOG]
images:
  - match: ["ghcr.io/dataguardian/dataguardian:*", "dataguardian"]
    entrypoint: ["/usr/local/bin/dataguardian"]
    binaries:
      dataguardian: "${BIN:-${WORKSPACE}/target/debug/dataguardian}"
  - match: "postgres:15*"
    entrypoint: ["docker-entrypoint.sh"]
    cmd: ["postgres"]
    stopSignal: SIGINT
    env: {PGDATA: /var/lib/postgresql/data}
    binaries:
      docker-entrypoint.sh: /sim/images/postgres.sh
      postgres: ["/sim/images/postgres.sh", "postgres"]
    hostCommands: true
  - match: ["busybox*"]
    cmd: ["sh"]
    hostCommands: true
"#;

fn table() -> ImageTable {
    ImageTable::parse(TABLE, &|name| match name {
        "WORKSPACE" => Some("/repo".into()),
        _ => None,
    })
    .unwrap()
}

#[test]
fn globs() {
    assert!(glob_match("postgres:15*", "postgres:15"));
    assert!(glob_match("postgres:15*", "postgres:15.4-bookworm"));
    assert!(!glob_match("postgres:15*", "postgres:16"));
    assert!(glob_match("a?c", "abc"));
    assert!(!glob_match("a?c", "ac"));
    assert!(glob_match("*", ""));
    assert!(glob_match("*x*y", "axbxy"));
    assert!(!glob_match("abc", "abcd"));
    assert_eq!(
        normalize_image("docker.io/library/postgres:15"),
        "postgres:15"
    );
    assert_eq!(normalize_image("docker.io/bitnami/x"), "bitnami/x");
}

#[test]
fn substitution_with_defaults() {
    let vars = |n: &str| (n == "SET").then(|| "v".to_string());
    assert_eq!(substitute("a${SET}b", &vars).unwrap(), "avb");
    assert_eq!(substitute("${UNSET:-d}", &vars).unwrap(), "d");
    assert_eq!(substitute("${UNSET:-${SET}/x}", &vars).unwrap(), "v/x");
    assert!(substitute("${UNSET}", &vars).is_err());
    assert_eq!(substitute("no refs $(X)", &vars).unwrap(), "no refs $(X)");
}

#[test]
fn agent_image_runs_the_built_binary() {
    let t = table();
    // args only: the image's entrypoint, mapped to the host binary by basename.
    let l = t
        .resolve(
            "ghcr.io/dataguardian/dataguardian:v1",
            &[],
            &s(&["agent", "backup"]),
        )
        .unwrap();
    assert_eq!(
        l.argv,
        s(&["/repo/target/debug/dataguardian", "agent", "backup"])
    );
    // command given: it replaces the entrypoint.
    let l = t
        .resolve(
            "dataguardian",
            &s(&["dataguardian", "agent"]),
            &s(&["validate"]),
        )
        .unwrap();
    assert_eq!(
        l.argv,
        s(&["/repo/target/debug/dataguardian", "agent", "validate"])
    );
    assert_eq!(l.stop_signal, libc::SIGTERM);
    // Programs that the image does not have are a start error.
    let e = t
        .resolve("dataguardian", &s(&["sh", "-c", "true"]), &[])
        .unwrap_err();
    assert!(matches!(e, ResolveError::CommandNotFound { .. }), "{e}");
    assert!(e.to_string().contains("executable file not found"));
}

#[test]
fn postgres_image_uses_entrypoint_cmd_and_stop_signal() {
    let t = table();
    let l = t
        .resolve("docker.io/library/postgres:15.6", &[], &[])
        .unwrap();
    assert_eq!(l.argv, s(&["/sim/images/postgres.sh", "postgres"]));
    assert_eq!(l.stop_signal, libc::SIGINT);
    assert_eq!(
        l.image_env,
        vec![("PGDATA".to_string(), "/var/lib/postgresql/data".to_string())]
    );
    // args replace CMD but keep the ENTRYPOINT.
    let l = t
        .resolve("postgres:15", &[], &s(&["-c", "fsync=off"]))
        .unwrap();
    assert_eq!(l.argv, s(&["/sim/images/postgres.sh", "-c", "fsync=off"]));
    // command: postgres → the script in server mode.
    let l = t
        .resolve("postgres:15", &s(&["postgres"]), &s(&["-c", "x=y"]))
        .unwrap();
    assert_eq!(
        l.argv,
        s(&["/sim/images/postgres.sh", "postgres", "-c", "x=y"])
    );
    // host tools of the image (pg_isready for probes, sh) come from the host.
    let l = t
        .resolve("postgres:15", &s(&["sh", "-c", "exit 0"]), &[])
        .unwrap();
    assert_eq!(l.argv[0], "sh");
}

#[test]
fn unknown_images_and_missing_commands() {
    let t = table();
    let e = t.resolve("postgres:16", &[], &[]).unwrap_err();
    assert_eq!(
        e,
        ResolveError::UnknownImage {
            image: "postgres:16".into()
        }
    );
    assert!(e.to_string().contains("sim/images.yaml"));
    let e = t
        .resolve("busybox", &s(&["/definitely/not/here"]), &[])
        .unwrap_err();
    assert!(matches!(e, ResolveError::CommandNotFound { .. }));
    let l = t.resolve("busybox:1.36", &[], &[]).unwrap();
    assert_eq!(l.argv, s(&["sh"]));
}

#[test]
fn committed_table_loads_and_maps_expected_images() {
    let t = ImageTable::load_default().expect("sim/images.yaml must load");
    for image in [
        "ghcr.io/dataguardian/dataguardian:latest",
        "dataguardian:dev",
        "postgres:15",
        "postgres:15.8-bookworm",
        "mariadb:11",
        "mysql:8.0",
        "busybox",
        "debian:bookworm-slim",
    ] {
        assert!(t.entry(image).is_some(), "{image} must be in the table");
    }
    assert!(
        t.entry("postgres:16").is_none(),
        "only the installed PostgreSQL major is offered"
    );
    let l = t.resolve("postgres:15", &[], &[]).unwrap();
    assert!(Path::new(&l.argv[0]).is_file(), "{} must exist", l.argv[0]);
    assert!(l.argv[0].ends_with("sim/images/postgres.sh"));
    let l = t.resolve("mariadb:11", &[], &[]).unwrap();
    assert!(Path::new(&l.argv[0]).is_file());
    assert_eq!(l.argv[1], "mariadbd");
    let l = t
        .resolve(
            "ghcr.io/dataguardian/dataguardian:v0.1.0",
            &[],
            &s(&["agent"]),
        )
        .unwrap();
    match std::env::var("DATAGUARDIAN_BIN") {
        Ok(bin) if !bin.is_empty() => assert_eq!(l.argv[0], bin),
        _ => assert!(
            l.argv[0].ends_with("target/debug/dataguardian"),
            "{}",
            l.argv[0]
        ),
    }
}

#[test]
fn bad_tables_are_rejected() {
    let none = |_: &str| None;
    assert!(ImageTable::parse("images: [{match: x, bogus: 1}]", &none).is_err());
    assert!(ImageTable::parse("images: [{match: x, stopSignal: SIGNOPE}]", &none).is_err());
    assert!(ImageTable::parse("images: [{match: x, entrypoint: ['${NOT_SET}']}]", &none).is_err());
}
