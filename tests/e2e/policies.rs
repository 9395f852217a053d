//! The chart's library of ValidatingAdmissionPolicies (`admissionPolicies.*`, docs/policies.md)
//! on the API server: each shipped policy refuses what it should, with its message, in the
//! namespaces its binding selects and nowhere else; the examples a compliant team writes are
//! admitted; `Warn` admits with the API server's warning. No operator runs: the API server alone
//! enforces these rules.

use std::path::Path;

use crate::harness::*;

/// The values under test: every policy on, binding action `action`, approvers `group`.
fn render_policies(dir: &Path, action: &str, approver_group: &str) -> String {
    let values = dir.join(format!("values-policies-{action}.yaml"));
    std::fs::write(
        &values,
        format!(
            r#"admissionPolicies:
  enabled: true
  validationActions: [{action}]
  minimumRetention:
    enabled: true
    days: 30
  approvedStorages:
    enabled: true
    approverGroups: ["{approver_group}"]
"#
        ),
    )
    .expect("values file");
    let all = testkit::chart::render_chart(&[values.as_path()], &[]);
    // Only the policy library (and its parameter ConfigMap): the API server is what is tested.
    testkit::chart::split_documents(&all)
        .into_iter()
        .filter(|d| d.text.contains("templates/admission-policies.yaml") || is_policy_doc(&d.text))
        .map(|d| d.text)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn is_policy_doc(text: &str) -> bool {
    text.contains("kind: ValidatingAdmissionPolicy")
        || text.contains("kind: ValidatingAdmissionPolicyBinding")
        || text.contains("-policy-params")
}

fn bind_admin(cluster: &Cluster, ns: &str, user: &TestUser) {
    cluster.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: admin-{name}, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
subjects:
  - {subject}
"#,
        name = user.name,
        subject = user.subject,
    ));
}

/// `kubectl apply -f -` as `user`: Ok(stderr, where warnings go) or Err(stderr).
fn apply_as(user: &TestUser, yaml: &str) -> Result<String, String> {
    let out = testkit::kubectl(&user.kubeconfig, &["apply", "-f", "-"], Some(yaml));
    if out.success() {
        Ok(out.stderr)
    } else {
        Err(format!("{}{}", out.stderr, out.stdout))
    }
}

#[track_caller]
fn admitted(user: &TestUser, yaml: &str) -> String {
    apply_as(user, yaml).unwrap_or_else(|e| panic!("refused: {e}\n---\n{yaml}"))
}

/// Refused by one of `policies` (names without the release prefix), with `message` in the
/// reason.
#[track_caller]
fn refused(user: &TestUser, yaml: &str, policies: &[&str], message: &str) {
    let err = match apply_as(user, yaml) {
        Ok(_) => panic!("admitted, expected a refusal by {policies:?}\n---\n{yaml}"),
        Err(e) => e,
    };
    assert!(
        policies.iter().any(|p| err.contains(&format!(
            "ValidatingAdmissionPolicy '{RELEASE}-{p}' with binding '{RELEASE}-{p}' denied request"
        ))) && err.contains(message),
        "expected a refusal by {policies:?} saying {message:?}, got: {err}\n---\n{yaml}"
    );
}

const RELEASE: &str = testkit::chart::RELEASE;

/// A BackupPolicy every policy admits, with `retention`, `validation` and `encryption` lines
/// replaceable.
fn backup_policy(ns: &str, name: &str, storage: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  source:
    postgres: {{host: db, database: shop, user: backup, passwordSecretRef: {{name: db-creds, key: password}}}}
  storageRef: {{name: {storage}}}
  schedule: "0 2 * * *"
{spec_extra}"#
    )
}

const ENCRYPTION: &str =
    "  encryption: {recipientsSecretRef: {name: backup-age, key: recipients}}\n";
const VALIDATION: &str = "  validation: {everyNthBackup: 1}\n";
const RETENTION: &str = "  retention: {keepDaily: 7, keepMonthly: 3, maxAge: 120d}\n";

fn storage(ns: &str, name: &str, labels: &str, lock: bool) -> String {
    let lock = if lock {
        "    objectLock: {mode: COMPLIANCE, days: 30}\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{labels}}}
spec:
  s3:
    bucket: {name}-backups
    region: us-east-1
{lock}"#
    )
}

/// Each document of the examples (namespace `shop` replaced by `ns`), with its file.
fn example_documents(ns: &str) -> Vec<(String, serde_yaml::Value, String)> {
    use serde::Deserialize;
    let dir = testkit::chart::repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("namespace: shop", &format!("namespace: {ns}"));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            if v.is_null() || v["kind"] == "Namespace" {
                continue;
            }
            let yaml = serde_yaml::to_string(&v).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, v, yaml));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admission_policy_library_refuses_what_it_should_and_admits_the_examples() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (platform, approvers) = cluster.group_member("platform", "platform-admins");
    let dev = cluster.user("dev", &["developers"]);

    let _ = cluster.kubectl(&["create", "namespace", testkit::chart::NAMESPACE]);
    cluster.apply(&render_policies(dir.path(), "Deny", &approvers));
    let enforced = cluster.namespace("policy-enforced");
    cluster
        .kubectl(&[
            "label",
            "namespace",
            &enforced,
            "dataguardian.io/policy=enforced",
        ])
        .expect("label namespace");
    let free = cluster.namespace("policy-free");
    for ns in [&enforced, &free] {
        bind_admin(&cluster, ns, &platform);
        bind_admin(&cluster, ns, &dev);
    }

    // The examples: storages are the platform team's, the rest the application team's.
    // Refused: the storages without Object Lock, and the MariaDB policy (unencrypted, 14 days
    // of retention). Admitted: everything else, once the platform team approved `main`.
    let mut refused_examples = Vec::new();
    for (file, v, yaml) in example_documents(&enforced) {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let who = if kind == "BackupStorage" {
            &platform
        } else {
            &dev
        };
        match (kind.as_str(), name.as_str()) {
            ("BackupStorage", "minio" | "local") => {
                refused(who, &yaml, &["require-object-lock"], "must be immutable");
                refused_examples.push(name);
            }
            ("BackupPolicy", "catalog") => {
                refused(
                    who,
                    &yaml,
                    &["require-encryption", "minimum-retention"],
                    "BackupPolicies in this namespace must",
                );
                refused_examples.push(name);
            }
            _ => {
                admitted(who, &yaml);
                if kind == "BackupStorage" {
                    admitted(
                        &platform,
                        &yaml.replace(
                            "metadata:\n",
                            "metadata:\n  labels:\n    dataguardian.io/approved: \"true\"\n",
                        ),
                    );
                }
            }
        }
        let _ = file;
    }
    assert_eq!(refused_examples, ["minio", "local", "catalog"]);
    // The very same examples in a namespace without the label: nothing is checked.
    for (_, v, yaml) in example_documents(&free) {
        let who = if v["kind"] == "BackupStorage" {
            &platform
        } else {
            &dev
        };
        admitted(who, &yaml);
    }

    // One rule broken at a time, each with its own message.
    let ns = &enforced;
    let all = format!("{ENCRYPTION}{VALIDATION}{RETENTION}");
    admitted(&dev, &backup_policy(ns, "compliant", "main", &all));
    refused(
        &dev,
        &backup_policy(ns, "plain", "main", &format!("{VALIDATION}{RETENTION}")),
        &["require-encryption"],
        "must encrypt their backups: set spec.encryption.recipientsSecretRef",
    );
    refused(
        &dev,
        &backup_policy(ns, "unproven", "main", &format!("{ENCRYPTION}{RETENTION}")),
        &["require-validation"],
        "must prove their backups restore",
    );
    refused(
        &dev,
        &backup_policy(
            ns,
            "short",
            "main",
            &format!("{ENCRYPTION}{VALIDATION}  retention: {{keepLast: 100, keepDaily: 14}}\n"),
        ),
        &["minimum-retention"],
        "must keep backups for at least 30 days",
    );
    refused(
        &dev,
        &backup_policy(ns, "none", "main", &format!("{ENCRYPTION}{VALIDATION}")),
        &["minimum-retention"],
        "must keep backups for at least 30 days",
    );
    refused(
        &dev,
        &backup_policy(
            ns,
            "pruned",
            "main",
            &format!("{ENCRYPTION}{VALIDATION}  retention: {{keepMonthly: 12, maxAge: 10d}}\n"),
        ),
        &["minimum-retention"],
        "spec.retention.maxAge deletes backups after 10 days; this namespace must keep them for at least 30",
    );
    refused(
        &dev,
        &backup_policy(
            ns,
            "mixed-units",
            "main",
            &format!("{ENCRYPTION}{VALIDATION}  retention: {{keepMonthly: 12, maxAge: 1w3d}}\n"),
        ),
        &["minimum-retention"],
        "write spec.retention.maxAge in one unit",
    );
    admitted(
        &dev,
        &backup_policy(
            ns,
            "weekly",
            "main",
            &format!("{ENCRYPTION}{VALIDATION}  retention: {{keepWeekly: 5, maxAge: 6w}}\n"),
        ),
    );
    // An update is checked like a create.
    refused(
        &dev,
        &backup_policy(ns, "compliant", "main", &format!("{VALIDATION}{RETENTION}")),
        &["require-encryption"],
        "must encrypt",
    );

    // Storages: Object Lock, and approval by the approver group only.
    refused(
        &platform,
        &storage(ns, "unlocked", "", false),
        &["require-object-lock"],
        "must be immutable",
    );
    admitted(&dev, &storage(ns, "team-bucket", "", true));
    refused(
        &dev,
        &backup_policy(ns, "to-team-bucket", "team-bucket", &all),
        &["approved-storages"],
        "BackupStorage team-bucket is not approved for backups in this namespace",
    );
    refused(
        &dev,
        &backup_policy(
            ns,
            "copy-to-team-bucket",
            "main",
            &format!("{all}  secondaryStorageRefs: [{{name: team-bucket}}]\n"),
        ),
        &["approved-storages"],
        "BackupStorage team-bucket is not approved",
    );
    let approved = "dataguardian.io/approved: \"true\"";
    refused(
        &dev,
        &storage(ns, "team-bucket", approved, true),
        &["storage-approval"],
        &format!("only members of {approvers} may approve a BackupStorage"),
    );
    admitted(&platform, &storage(ns, "team-bucket", approved, true));
    admitted(
        &dev,
        &backup_policy(ns, "to-team-bucket", "team-bucket", &all),
    );
    // An approved storage cannot be repointed by someone who may not approve it …
    refused(
        &dev,
        &storage(ns, "team-bucket", approved, true).replace("team-bucket-backups", "elsewhere"),
        &["storage-approval"],
        "may approve a BackupStorage or change an approved one",
    );
    // … but anyone may withdraw an approval.
    admitted(
        &dev,
        &storage(
            ns,
            "team-bucket",
            "dataguardian.io/approved: \"false\"",
            true,
        ),
    );

    // Production namespaces (environment=production, this policy's own default selector):
    // restores there need a second person's approval.
    let prod = cluster.namespace("policy-production");
    cluster
        .kubectl(&["label", "namespace", &prod, "environment=production"])
        .expect("label namespace");
    bind_admin(&cluster, &prod, &dev);
    refused(
        &dev,
        &backup_policy(&prod, "unguarded", "main", ""),
        &["restore-approval"],
        "restores in this namespace need a second person's approval: set spec.restoreApproval.required",
    );
    refused(
        &dev,
        &backup_policy(
            &prod,
            "never",
            "main",
            "  restoreApproval: {required: Never}\n",
        ),
        &["restore-approval"],
        "set spec.restoreApproval.required to OnOverwrite or Always",
    );
    admitted(
        &dev,
        &backup_policy(
            &prod,
            "guarded",
            "main",
            "  restoreApproval: {required: OnOverwrite, validFor: 30m}\n",
        ),
    );
    let restore = |name: &str, source: &str| {
        format!(
            "apiVersion: dataguardian.io/v1alpha1\nkind: RestoreRun\nmetadata: {{name: {name}, namespace: {prod}}}\nspec:\n  {source}\n  target: {{postgres: {{host: db, database: shop, user: restore}}}}\n"
        )
    };
    // The chart's operator default is never: a restore without a policy would need nobody.
    refused(
        &dev,
        &restore("by-key", "storageRef: {name: main}\n  key: shop/x.dump"),
        &["restore-approval"],
        "a storageRef + key restore has no policy to require one",
    );
    admitted(&dev, &restore("by-run", "backupRunRef: {name: nightly-1}"));
    // Outside production nothing of this is checked.
    admitted(&dev, &backup_policy(&free, "unguarded", "main", ""));

    // Warn: the same rules, admitted with the API server's warning.
    cluster.apply(&render_policies(dir.path(), "Warn", &approvers));
    let warnings = admitted(
        &dev,
        &backup_policy(ns, "plain", "main", &format!("{VALIDATION}{RETENTION}")),
    );
    assert!(
        warnings.contains(&format!(
            "Warning: Validation failed for ValidatingAdmissionPolicy '{RELEASE}-require-encryption' with binding '{RELEASE}-require-encryption': BackupPolicies in this namespace must encrypt"
        )),
        "{warnings}"
    );
}
