//! The agent and operator images (issue 12), built from the binary under test by
//! `scripts/build-images.sh` on the local Docker Engine:
//!
//! - both run as 65532 with a read-only root filesystem;
//! - the agent image's bundled PostgreSQL client is the one the agent selects: a real backup run
//!   inside the image records that tool in its manifest;
//! - no secret is in any layer, label or environment variable of either image;
//! - the operator in its image (read-only root, 65532, no capabilities, PID 1) becomes ready
//!   against the API stand-in and, on `docker stop` (SIGTERM), stops within seconds and
//!   releases its Lease.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::Postgres;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn images() -> testkit::images::Images {
    testkit::images::ensure(
        &workspace(),
        Path::new(env!("CARGO_BIN_EXE_dataguardian")),
        env!("CARGO_PKG_VERSION"),
    )
}

fn docker(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn both_images_run_as_65532_with_a_read_only_root() {
    let images = images();
    for image in [&images.agent, &images.operator] {
        let (ok, user, err) = docker(&["image", "inspect", "-f", "{{.Config.User}}", image]);
        assert!(ok, "{err}");
        assert_eq!(user, "65532:65532", "{image}");
        let (ok, version, err) = docker(&[
            "run",
            "--rm",
            "--read-only",
            "--network",
            "host",
            image,
            "--version",
        ]);
        assert!(ok, "{image}: {err}");
        assert_eq!(
            version,
            format!("dataguardian {}", env!("CARGO_PKG_VERSION"))
        );
    }
    // The agent image has a shell (for the keygen of validations); the root stays read-only.
    let (ok, out, err) = docker(&[
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "sh",
        &images.agent,
        "-c",
        "id -u; id -g; touch /usr/local/bin/x 2>&1 || echo refused",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["65532", "65532"]);
    assert_eq!(lines.last(), Some(&"refused"), "{out}");
    // The operator image has nothing but the program: no shell to run.
    let (ok, _, _) = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &images.operator,
        "-c",
        "true",
    ]);
    assert!(!ok, "the operator image must not carry a shell");
}

#[test]
fn the_agent_in_its_image_dumps_with_the_bundled_client_it_selects() {
    let images = images();
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    // The container user must be able to write the mounted volume, as with an emptyDir.
    std::fs::set_permissions(
        out.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let volume = format!("{}:/backups", out.path().display());
    let uri = pg.uri("shop");
    let (ok, stdout, stderr) = docker(&[
        "run",
        "--rm",
        "--read-only",
        "--network",
        "host",
        "--tmpfs",
        "/tmp",
        "-v",
        &volume,
        "--env",
        &format!("DG_URI={uri}"),
        &images.agent,
        "agent",
        "backup",
        "--engine",
        "postgres",
        "--to",
        "file:///backups",
        "--run-id",
        "in-image",
        "--termination-log",
        "/tmp/term",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(!stderr.contains(pg.password()) && !stdout.contains(pg.password()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("in-image/manifest.json")).unwrap())
            .unwrap();
    let (ok, bundled, err) = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/usr/lib/postgresql/15/bin/pg_dump",
        &images.agent,
        "--version",
    ]);
    assert!(ok, "{err}");
    assert_eq!(manifest["dumpTool"], bundled.as_str(), "{manifest}");
    let (ok, majors, _) = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.dataguardian.postgres-majors\"}}",
        &images.agent,
    ]);
    assert!(ok);
    assert_eq!(
        majors, "15",
        "Debian's client, as the Dockerfile documents for this machine"
    );
}

#[test]
fn no_secret_in_any_layer_label_or_environment() {
    let images = images();
    for image in [&images.agent, &images.operator] {
        let (ok, config, err) = docker(&["image", "inspect", "-f", "{{json .Config}}", image]);
        assert!(ok, "{err}");
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        for env in config["Env"].as_array().into_iter().flatten() {
            let name = env
                .as_str()
                .unwrap()
                .split('=')
                .next()
                .unwrap()
                .to_ascii_uppercase();
            for word in ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"] {
                assert!(!name.contains(word), "{image}: environment variable {name}");
            }
        }
        let labels = config["Labels"].to_string().to_ascii_lowercase();
        for word in ["password", "secret", "token", "private"] {
            assert!(
                !labels.contains(word),
                "{image}: label mentions {word}: {labels}"
            );
        }
        // Every file of every layer (deleted ones included): no age identity, no AWS secret
        // key, no PEM private key in a file. Compiled programs and libraries (ELF) name the
        // formats in their parsers and GnuTLS carries a self-test key, so the PEM check reads
        // files that are not ELF.
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut outer = tar::Archive::new(save.stdout.take().unwrap());
        let (mut files, mut layers) = (0usize, 0usize);
        for entry in outer.entries().unwrap() {
            let entry = entry.unwrap();
            if !entry
                .path()
                .unwrap()
                .to_string_lossy()
                .ends_with("layer.tar")
            {
                continue;
            }
            layers += 1;
            let mut layer = tar::Archive::new(entry);
            for file in layer.entries().unwrap() {
                let mut file = file.unwrap();
                let path = file.path().unwrap().to_string_lossy().into_owned();
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).unwrap();
                files += 1;
                let elf = bytes.starts_with(b"\x7fELF");
                if let Some(found) = secret_in(&bytes, !elf) {
                    panic!("{image}: {path} contains {found}");
                }
            }
        }
        assert!(save.wait().unwrap().success());
        assert!(
            layers >= 1 && files >= 5,
            "{image}: {layers} layers, {files} files"
        );
    }
}

/// Key material in `bytes`: an age identity (`AGE-SECRET-KEY-1` + 58 bech32 characters), a PEM
/// private key with a body, or an AWS secret key assignment.
fn secret_in(bytes: &[u8], pem: bool) -> Option<&'static str> {
    const BECH32: &[u8] = b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";
    let find_all = |needle: &'static [u8]| {
        bytes
            .windows(needle.len())
            .enumerate()
            .filter(move |(_, w)| *w == needle)
            .map(move |(i, _)| i + needle.len())
    };
    if find_all(b"AGE-SECRET-KEY-1").any(|end| {
        bytes.len() >= end + 58 && bytes[end..end + 58].iter().all(|c| BECH32.contains(c))
    }) {
        return Some("an age identity");
    }
    if pem
        && find_all(b"PRIVATE KEY-----")
            .any(|end| bytes[end..].starts_with(b"\nMI") || bytes[end..].starts_with(b"\r\nMI"))
    {
        return Some("a PEM private key");
    }
    if find_all(b"AWS_SECRET_ACCESS_KEY=").any(|end| {
        bytes.len() > end + 20 && bytes[end..end + 20].iter().all(u8::is_ascii_alphanumeric)
    }) {
        return Some("an AWS secret key");
    }
    None
}

#[test]
fn the_secret_scanner_finds_key_material_and_not_format_names() {
    assert_eq!(secret_in(b"parse AGE-SECRET-KEY-1 prefix", true), None);
    let identity = format!(
        "x AGE-SECRET-KEY-1{} y",
        "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L".repeat(2)
    );
    assert_eq!(
        secret_in(identity.as_bytes(), false),
        Some("an age identity")
    );
    assert_eq!(secret_in(b"-----BEGIN PRIVATE KEY-----", true), None);
    assert_eq!(
        secret_in(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg", true),
        Some("a PEM private key")
    );
    assert_eq!(
        secret_in(
            b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
            false
        ),
        Some("an AWS secret key")
    );
}

#[test]
fn the_operator_in_its_image_runs_read_only_and_releases_the_lease_on_sigterm() {
    let images = images();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(kube_sim::Server::start(kube_sim::ServerOptions {
            crds_dir: Some(workspace().join("crds")),
            ..Default::default()
        }))
        .expect("the API stand-in");
    let client = rt.block_on(sim.client()).unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    rt.block_on(
        namespaces.create(
            &Default::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "dataguardian-system"}}),
            )
            .unwrap(),
        ),
    )
    .unwrap();
    let port = testkit::free_port();
    let name = format!("dg-operator-test-{}", std::process::id());
    // The stand-in writes its admin kubeconfig for its owner only (it holds a token); the
    // container's user 65532 reads a copy.
    let readable = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::copy(sim.kubeconfig_path(), readable.path()).expect("copy kubeconfig");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(readable.path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod kubeconfig");
    }
    let kubeconfig = format!(
        "{}:/etc/dataguardian/kubeconfig:ro",
        readable.path().display()
    );
    let (ok, _, err) = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--user",
        "65532:65532",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "host",
        "-v",
        &kubeconfig,
        "-e",
        "KUBECONFIG=/etc/dataguardian/kubeconfig",
        "-e",
        &format!("DG_METRICS_ADDR=127.0.0.1:{port}"),
        "-e",
        "POD_NAMESPACE=dataguardian-system",
        "-e",
        "POD_NAME=in-image",
        &images.operator,
    ]);
    assert!(ok, "{err}");
    // Whatever happens below, the container this test started goes away.
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["rm", "-f", &self.0])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _remove = Remove(name.clone());
    let logs = || docker(&["logs", &name]).2;
    let start = std::time::Instant::now();
    loop {
        if let Some((200, body)) = http_get(port, "/readyz")
            && body.contains("ok (leader)")
        {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the operator in its image did not become ready; log:\n{}",
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A rolling update's SIGTERM (to PID 1): a prompt, clean stop that hands the lease over.
    let stopping = std::time::Instant::now();
    let (ok, _, err) = docker(&["stop", "-t", "30", &name]);
    assert!(ok, "{err}");
    let took = stopping.elapsed();
    assert!(
        took < std::time::Duration::from_secs(12),
        "stopping took {took:?}"
    );
    let (_, code, _) = docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(code, "0", "log:\n{}", logs());
    assert!(logs().contains("released the lease"), "{}", logs());
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client, "dataguardian-system");
    let lease = rt.block_on(leases.get("dataguardian-operator")).unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the lease is free for the next replica"
    );
    drop(sim);
}

/// GET on the operator's health server: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}
