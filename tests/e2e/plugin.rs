//! The kubectl plugin end to end: `kubectl dataguardian …` found by the installed kubectl on
//! PATH, against the operator, real PostgreSQL and S3.

use crate::backup::scenario;

/// The line a `--wait` ends with: how the run ended.
fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kubectl_plugin_backs_up_validates_restores_and_reports() {
    let _serial = crate::serial().await;
    let s = scenario("plugin", "0 0 1 1 *", "").await;
    let ns = s.ns.as_str();

    // A manual backup, followed to the end.
    let (code, out, err) = s.cluster.plugin(&[
        "backup",
        "now",
        "shop",
        "-n",
        ns,
        "--name",
        "via-plugin",
        "--reason",
        "before upgrade",
        "--wait",
    ]);
    assert_eq!(
        code,
        0,
        "stdout:\n{out}\nstderr:\n{err}\n{}",
        s.operator.log()
    );
    assert!(out.starts_with("backuprun/via-plugin created"), "{out}");
    let last = last_line(&out);
    assert!(
        last.starts_with("Succeeded:") && last.contains("stored") && last.contains("sha256"),
        "{out}"
    );

    // The policies at a glance.
    let (code, out, err) = s.cluster.plugin(&["status", "-n", ns]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("POLICY") && lines[0].contains("LAST SUCCESS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("shop") && lines[1].contains("via-plugin ("),
        "{out}"
    );

    // The run's logs (the agent's JSON lines).
    let (code, out, err) = s.cluster.plugin(&["logs", "via-plugin", "-n", ns]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"level\""), "{out}");
    // Following a finished run's logs prints them and ends with the stream.
    let (code, followed, err) = s.cluster.plugin(&["logs", "-f", "via-plugin", "-n", ns]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(followed.lines().count(), out.lines().count(), "{followed}");

    // Proven restorable.
    let (code, out, err) = s.cluster.plugin(&[
        "validate",
        "via-plugin",
        "-n",
        ns,
        "--name",
        "plugin-check",
        "--wait",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(last_line(&out).starts_with("Passed:"), "{out}");

    // Restored into another database on the same server, with the policy's credentials.
    let (code, out, err) = s.cluster.plugin(&[
        "restore",
        "via-plugin",
        "-n",
        ns,
        "--database",
        "shop_plugin",
        "--create-database",
        "--wait",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        last_line(&out).starts_with("Succeeded: restored into shop_plugin"),
        "{out}"
    );
    assert_eq!(
        s.services
            .pg
            .psql("shop_plugin", "SELECT count(*) FROM orders")
            .unwrap()
            .trim(),
        "500"
    );

    // A restore the operator refuses ends with exit code 1 and the reason.
    let (code, out, _) = s.cluster.plugin(&[
        "restore",
        "via-plugin",
        "-n",
        ns,
        "--database",
        "shop",
        "--wait",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        last_line(&out).starts_with("Failed: TargetNotEmpty"),
        "{out}"
    );

    // Bad usage: exit code 2 and a clear message.
    let (code, _, err) = s.cluster.plugin(&["backup", "now", "nosuch", "-n", ns]);
    assert_eq!(code, 2);
    assert!(err.contains("BackupPolicy nosuch not found"), "{err}");
}
