//! The product installed the way a platform team installs it: the Helm chart (rendered by
//! `tools/helm-template`, Helm's own template engine) or the kustomize base, applied with
//! `kubectl apply --server-side` as cluster admin. The operator then runs in-cluster — a
//! 2-replica Deployment of the operator image, under the chart's ServiceAccount and exactly the
//! chart's ClusterRole — and people with the user roles work through `kubectl dataguardian`.
//! Then an upgrade rolls the pods (Lease handover, no duplicate Job) and an uninstall leaves
//! the CRDs, every BackupRun and the artifacts in place.
//!
//! On a real cluster (`E2E_KUBECONFIG`) the images `ghcr.io/dataguardian/dataguardian-operator`
//! with the tags `<version>` and `<version>-upgrade` and the agent image must be pullable there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use dataguardian::api::{BackupRun, BackupStorage, RestoreRun, RestoreRunPhase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::harness::{Cluster, Services, TestUser, agent_image, jobs, manual_run, wait_for};

const SYSTEM_NS: &str = "dataguardian-system";
const DEPLOYMENT: &str = "dataguardian";
const LEASE: &str = "dataguardian-operator";
/// The audit trail's BackupStorage (Helm install) and its Object-Locked bucket.
const AUDIT_STORAGE: &str = "audit";
const AUDIT_BUCKET: &str = "audit-trail";

/// How the product is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Installer {
    Helm,
    Kustomize,
}

/// The operator image of the first install and of the upgrade.
fn operator_image_tags() -> (String, String) {
    let version = env!("CARGO_PKG_VERSION").to_string();
    (version.clone(), format!("{version}-upgrade"))
}

/// The upgrade's image: the same binary under a new tag (a new pod template, so a rollout).
fn tag_upgrade_image() {
    if std::env::var_os("E2E_KUBECONFIG").is_some() {
        return;
    }
    let (from, to) = operator_image_tags();
    let repo = testkit::images::OPERATOR_REPOSITORY;
    let status = std::process::Command::new("docker")
        .args(["tag", &format!("{repo}:{from}"), &format!("{repo}:{to}")])
        .status()
        .expect("docker tag");
    assert!(status.success(), "docker tag of the upgrade image failed");
}

/// Renders the install (chart or kustomize base) with the operator image `tag`.
///
/// Settings for this environment, each one a documented knob of the chart (and the same patch
/// for kustomize users): the images are local (`pullPolicy: Never`), everything the tests reach
/// lives on 127.0.0.0/8 (the egress allow-list), the pods of the stand-in share the host network
/// (each replica binds its own pod IP), and a short lease so a handover is quick.
fn render(installer: Installer, tag: &str, dir: &Path) -> String {
    let agent = agent_image();
    let (agent_repo, agent_tag) = agent.rsplit_once(':').expect("agent image tag");
    let agent_repo = agent_repo
        .strip_prefix("ghcr.io/")
        .expect("agent image on ghcr.io");
    match installer {
        Installer::Helm => {
            let values = dir.join("values-e2e.yaml");
            std::fs::write(
                &values,
                format!(
                    r#"image:
  tag: "{tag}"
  pullPolicy: Never
agent:
  image:
    repository: {agent_repo}
    tag: "{agent_tag}"
operator:
  egressAllowCIDRs: ["127.0.0.0/8"]
  leaderElection:
    leaseDurationSeconds: 6
  audit:
    storage: {SYSTEM_NS}/{AUDIT_STORAGE}
metrics:
  bindAddress: "$(POD_IP)"
webhook:
  bindAddress: "$(POD_IP)"
"#
                ),
            )
            .expect("values file");
            testkit::chart::render_chart(&[values.as_path()], &[])
        }
        Installer::Kustomize => {
            let overlay = dir.join("overlay");
            std::fs::create_dir_all(&overlay).expect("overlay dir");
            // kustomize takes bases by relative path only.
            let base_abs = testkit::chart::repo_root().join("config/default");
            let overlay_abs = overlay.canonicalize().expect("overlay path");
            let base = Path::new(&"../".repeat(overlay_abs.components().count() - 1))
                .join(base_abs.strip_prefix("/").expect("absolute path"));
            std::fs::write(
                overlay.join("kustomization.yaml"),
                format!(
                    r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
images:
  - name: ghcr.io/dataguardian/dataguardian-operator
    newTag: "{tag}"
patches:
  - target: {{kind: Deployment, name: {DEPLOYMENT}}}
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: {DEPLOYMENT}}}
      spec:
        template:
          spec:
            containers:
              - name: operator
                imagePullPolicy: Never
                # A flag, not DG_METRICS_ADDR: the patch's env entries may land before POD_IP,
                # and $(VAR) only sees variables defined earlier in the list.
                args: ["operator", "--metrics-addr=$(POD_IP):8080", "--webhook-addr=$(POD_IP):9443"]
                env:
                  - name: DG_AGENT_IMAGE
                    value: "{agent}"
                  - name: DG_EGRESS_ALLOW_CIDRS
                    value: "127.0.0.0/8"
                  - name: DG_LEASE_DURATION_SECONDS
                    value: "6"
"#,
                    base = base.display(),
                ),
            )
            .expect("kustomization");
            let out = std::process::Command::new("kubectl")
                .arg("kustomize")
                .arg(&overlay)
                .output()
                .expect("kubectl kustomize");
            assert!(
                out.status.success(),
                "kubectl kustomize: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("utf-8")
        }
    }
}

/// `kubectl apply --server-side` of the install as cluster admin.
fn apply_install(cluster: &Cluster, yaml: &str) {
    cluster
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=e2e-install",
                "-f",
                "-",
            ],
            Some(yaml),
        )
        .unwrap_or_else(|e| panic!("installing failed: {e}"));
}

/// One rendered object: (apiVersion, kind, namespace, name, annotations).
struct Object {
    kind: String,
    namespace: Option<String>,
    name: String,
    keep: bool,
    api_version: String,
}

fn objects(yaml: &str) -> Vec<Object> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|v| v.is_mapping())
        .map(|v| {
            let s = |path: &[&str]| {
                let mut cur = &v;
                for p in path {
                    cur = cur.get(p)?;
                }
                cur.as_str().map(str::to_string)
            };
            Object {
                kind: s(&["kind"]).expect("kind"),
                api_version: s(&["apiVersion"]).expect("apiVersion"),
                namespace: s(&["metadata", "namespace"]),
                name: s(&["metadata", "name"]).expect("name"),
                keep: s(&["metadata", "annotations", "helm.sh/resource-policy"]).as_deref()
                    == Some("keep"),
            }
        })
        .collect()
}

/// Uninstalls the way each tool's docs say (docs/install.md): `helm uninstall` deletes every
/// object of the release except those annotated `helm.sh/resource-policy: keep` (the CRDs);
/// with kustomize the operator's parts are deleted (`config/webhook`, `config/manager`,
/// `config/rbac`), never the CRDs or the namespace.
fn uninstall(cluster: &Cluster, installer: Installer, yaml: &str) {
    for o in objects(yaml).iter().rev() {
        let kept = match installer {
            Installer::Helm => o.keep,
            Installer::Kustomize => o.kind == "CustomResourceDefinition" || o.kind == "Namespace",
        };
        if kept {
            continue;
        }
        let group = o.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        let resource = if group.is_empty() {
            o.kind.clone()
        } else {
            format!("{}.{group}", o.kind)
        };
        let mut args = vec!["delete", resource.as_str(), o.name.as_str(), "--wait=false"];
        if let Some(ns) = &o.namespace {
            args.extend(["-n", ns.as_str()]);
        }
        cluster
            .kubectl(&args)
            .unwrap_or_else(|e| panic!("uninstalling {} {}: {e}", o.kind, o.name));
    }
}

/// Waits until the operator Deployment has rolled out completely: every replica updated,
/// Ready (caches synced, leader or not) and Available.
async fn wait_rolled_out(cluster: &Cluster, what: &str) -> Deployment {
    let out = cluster.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{DEPLOYMENT}"),
        "-n",
        SYSTEM_NS,
        "--timeout=180s",
    ]);
    if let Err(e) = out {
        panic!(
            "{what}: the operator Deployment did not roll out: {e}\n{}",
            operator_diagnostics(cluster).await
        );
    }
    let deploy: Api<Deployment> = Api::namespaced(cluster.client.clone(), SYSTEM_NS);
    let d = deploy.get(DEPLOYMENT).await.expect("deployment");
    let st = d.status.clone().unwrap_or_default();
    assert_eq!(st.ready_replicas, Some(2), "{what}: {st:?}");
    assert_eq!(st.available_replicas, Some(2), "{what}: {st:?}");
    assert!(
        st.conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")),
        "{what}: not Available"
    );
    d
}

/// The operator pods' logs and the system namespace's objects, for a failure message.
async fn operator_diagnostics(cluster: &Cluster) -> String {
    let mut out = String::new();
    for args in [
        vec![
            "get",
            "deploy,rs,pods,lease,events",
            "-n",
            SYSTEM_NS,
            "-o",
            "wide",
        ],
        vec![
            "logs",
            "-n",
            SYSTEM_NS,
            "-l",
            "app.kubernetes.io/name=dataguardian",
            "--tail=80",
            "--prefix",
        ],
    ] {
        out.push_str(&format!("$ kubectl {}\n", args.join(" ")));
        match cluster.kubectl(&args) {
            Ok(s) | Err(s) => out.push_str(&s),
        }
    }
    out
}

/// The running operator pods (not being deleted).
async fn operator_pods(cluster: &Cluster) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), SYSTEM_NS);
    pods.list(&ListParams::default().labels("app.kubernetes.io/name=dataguardian"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn lease(cluster: &Cluster) -> Option<Lease> {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), SYSTEM_NS);
    leases.get_opt(LEASE).await.ok().flatten()
}

/// The current holder of the Lease, waiting until there is one.
async fn wait_leader(cluster: &Cluster, among: &BTreeSet<String>) -> (String, i32) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(l) = lease(cluster).await {
            let spec = l.spec.unwrap_or_default();
            if let Some(holder) = spec.holder_identity.filter(|h| among.contains(h)) {
                return (holder, spec.lease_transitions.unwrap_or(0));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "no pod of {among:?} holds the Lease\n{}",
        operator_diagnostics(cluster).await
    );
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// A test user bound to `role` (a ClusterRole) in the tenant namespace with a RoleBinding.
fn bind(cluster: &Cluster, ns: &str, user: &TestUser, role: &str) {
    cluster.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {role}-{name}, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}
subjects:
  - {subject}
"#,
        name = user.name,
        subject = user.subject,
    ));
}

fn restore_phase(r: &RestoreRun) -> Option<RestoreRunPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

fn restore_reason(r: &RestoreRun) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default()
}

/// An overwrite restore needs a second person: alice (dataguardian-operator) asks; neither she
/// nor bob (readonly) may even patch it, dave (dataguardian-admin: may patch, lacks the verb
/// `approve`) is refused by the webhook; carol (dataguardian-approver) approves and the restore
/// runs. Then carol asks herself and cannot approve her own restore; frank, a namespace
/// `admin` (approve aggregated), approves, but the approval expires before the restore can
/// start and is refused; a fresh one lets it run.
async fn approvals(
    cluster: &Cluster,
    services: &Services,
    ns: &str,
    alice: &TestUser,
    bob: &TestUser,
) {
    let carol = cluster.user("carol", &["reviewers"]);
    let dave = cluster.user("dave", &["shop-admins"]);
    let frank = cluster.user("frank", &["shop-owners"]);
    bind(cluster, ns, &carol, "dataguardian-approver");
    bind(cluster, ns, &carol, "dataguardian-operator");
    bind(cluster, ns, &dave, "dataguardian-admin");
    bind(cluster, ns, &frank, "admin");
    cluster
        .kubectl(&[
            "patch",
            "backuppolicy",
            "shop",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"restoreApproval":{"required":"OnOverwrite","validFor":"10m"}}}"#,
        ])
        .expect("the platform team requires approval for overwrites");
    let (code, out, err) = cluster.plugin_as(
        alice,
        &[
            "restore",
            "nightly-1",
            "-n",
            ns,
            "--database",
            "shop_restored",
            "--overwrite",
            "--clean",
            "--name",
            "overwrite-shop",
        ],
    );
    assert_eq!(code, 0, "alice asks\nstdout:\n{out}\nstderr:\n{err}");
    let waiting = wait_for::<RestoreRun, _>(
        cluster,
        None,
        ns,
        "overwrite-shop",
        Duration::from_secs(60),
        "the overwrite waits for approval",
        |r: &RestoreRun| restore_phase(r) == Some(RestoreRunPhase::AwaitingApproval),
    )
    .await;
    assert_eq!(restore_reason(&waiting), "AwaitingApproval");
    assert!(
        waiting
            .status
            .as_ref()
            .and_then(|s| s.job_name.as_ref())
            .is_none(),
        "no Job before approval"
    );
    let events = crate::harness::wait_for_events(cluster, ns, "overwrite-shop", |events| {
        events.iter().any(|e| e.starts_with("AwaitingApproval:"))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("kubectl dataguardian approve overwrite-shop")),
        "{events:#?}"
    );
    let approve =
        |user: &TestUser, name: &str| cluster.plugin_as(user, &["approve", name, "-n", ns]);
    for user in [alice, bob] {
        let (code, _, err) = approve(user, "overwrite-shop");
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("cannot patch resource \"restoreruns\""),
            "{}: {err}",
            user.name
        );
    }
    let (code, _, err) = approve(&dave, "overwrite-shop");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("may not approve restoreruns in namespace")
            && err.contains("dataguardian-approver"),
        "dave may patch but lacks the verb approve: {err}"
    );
    let whoami = |user: &TestUser| {
        cluster
            .kubectl_as(
                user,
                &[
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ],
            )
            .expect("whoami")
            .trim()
            .to_string()
    };
    let carol_name = whoami(&carol);
    // Nobody stamps an approval by hand, not even the approver.
    let forged = cluster
        .kubectl_as(
            &carol,
            &[
                "annotate",
                "restorerun",
                "overwrite-shop",
                "-n",
                ns,
                "dataguardian.io/approved-by=carol",
            ],
        )
        .expect_err("a hand-made stamp is refused");
    assert!(forged.contains("never by hand"), "{forged}");
    // A valid approval: the restore starts.
    let (code, out, err) = approve(&carol, "overwrite-shop");
    assert_eq!(
        code, 0,
        "carol approves
stdout:
{out}
stderr:
{err}"
    );
    assert!(out.contains(&format!("approved by {carol_name}")), "{out}");
    let done = wait_for::<RestoreRun, _>(
        cluster,
        None,
        ns,
        "overwrite-shop",
        Duration::from_secs(120),
        "the approved restore finishes",
        |r: &RestoreRun| restore_phase(r).is_some_and(|p| p.is_finished()),
    )
    .await;
    assert_eq!(
        restore_phase(&done),
        Some(RestoreRunPhase::Succeeded),
        "{done:?}"
    );
    let approval = done
        .status
        .as_ref()
        .and_then(|s| s.approval.clone())
        .expect("status.approval");
    assert_eq!(approval.approved_by.as_deref(), Some(carol_name.as_str()));
    let events = crate::harness::events_for(cluster, ns, "overwrite-shop").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Approved:") && e.contains(&carol_name)),
        "{events:#?}"
    );
    audit_trail_names_requester_and_approver(
        cluster,
        services,
        ns,
        "overwrite-shop",
        &whoami(alice),
        &carol_name,
    )
    .await;

    // An approval that expires before the restore can start: approvals now hold 3 s; the
    // target's Secret is missing, carol approves, the Secret comes 4 s later.
    cluster
        .kubectl(&[
            "patch",
            "backuppolicy",
            "shop",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"restoreApproval":{"validFor":"3s"}}}"#,
        ])
        .expect("short approvals");
    let late = format!(
        "apiVersion: dataguardian.io/v1alpha1\nkind: RestoreRun\nmetadata: {{name: late, namespace: {ns}}}\nspec:\n  backupRunRef: {{name: nightly-1}}\n  overwrite: true\n  clean: true\n  target: {{postgres: {}}}\n",
        services
            .postgres_endpoint("shop_restored")
            .replace("db-creds", "late-creds")
    );
    cluster
        .kubectl_stdin_as(&carol, &["create", "-f", "-"], Some(&late))
        .expect("carol asks");
    wait_for::<RestoreRun, _>(
        cluster,
        None,
        ns,
        "late",
        Duration::from_secs(60),
        "the restore waits for its Secret",
        |r: &RestoreRun| restore_reason(r) == "SecretNotFound",
    )
    .await;
    let (code, _, err) = approve(&carol, "late");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot approve it"), "the requester: {err}");
    let (code, _, err) = approve(&frank, "late");
    assert_eq!(code, 0, "a namespace admin approves: {err}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: late-creds, namespace: {ns}}}\nstringData: {{password: \"{}\"}}\n",
        services.pg.password()
    ));
    let expired = wait_for::<RestoreRun, _>(
        cluster,
        None,
        ns,
        "late",
        Duration::from_secs(60),
        "the expired approval is refused",
        |r: &RestoreRun| restore_reason(r) == "ApprovalExpired",
    )
    .await;
    assert_eq!(
        restore_phase(&expired),
        Some(RestoreRunPhase::AwaitingApproval)
    );
    assert!(
        expired
            .status
            .as_ref()
            .and_then(|s| s.job_name.as_ref())
            .is_none(),
        "no Job on an expired approval"
    );
    let (code, _, err) = approve(&frank, "late");
    assert_eq!(code, 0, "{err}");
    let done = wait_for::<RestoreRun, _>(
        cluster,
        None,
        ns,
        "late",
        Duration::from_secs(120),
        "the re-approved restore finishes",
        |r: &RestoreRun| restore_phase(r).is_some_and(|p| p.is_finished()),
    )
    .await;
    assert_eq!(
        restore_phase(&done),
        Some(RestoreRunPhase::Succeeded),
        "{done:?}"
    );
    cluster
        .kubectl(&[
            "patch",
            "backuppolicy",
            "shop",
            "-n",
            ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/restoreApproval"}]"#,
        ])
        .expect("back to the default");
}

/// The WORM audit trail (docs/audit.md), read back with `kubectl dataguardian audit`: the
/// restore's records name who asked and who approved; the chain verifies; every segment in the
/// bucket carries Object Lock retention.
async fn audit_trail_names_requester_and_approver(
    cluster: &Cluster,
    services: &Services,
    ns: &str,
    restore: &str,
    requester: &str,
    approver: &str,
) {
    let storage = format!("--storage={SYSTEM_NS}/{AUDIT_STORAGE}");
    let started = Instant::now();
    let records = loop {
        let (code, out, err) = cluster.plugin(&["audit", "show", "-n", ns, "-o", "json", &storage]);
        let records: Vec<serde_json::Value> = if code == 0 {
            serde_json::from_str(&out).unwrap_or_else(|e| {
                panic!(
                    "audit show -o json: {e}
{out}"
                )
            })
        } else {
            Vec::new()
        };
        let finished = records
            .iter()
            .any(|r| r["name"] == restore && r["action"] == "RestoreFinished");
        if finished {
            break records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the restore's audit records never arrived (exit {code})\nstdout:\n{out}\nstderr:\n{err}\n{}",
            operator_diagnostics(cluster).await
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let of = |action: &str| {
        records
            .iter()
            .find(|r| r["name"] == restore && r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} record of {restore}: {records:#?}"))
    };
    for action in [
        "RestoreRequested",
        "RestoreApproved",
        "RestoreStarted",
        "RestoreFinished",
    ] {
        assert_eq!(of(action)["actor"], requester, "{action}: {records:#?}");
    }
    for action in ["RestoreApproved", "RestoreStarted", "RestoreFinished"] {
        assert_eq!(of(action)["approver"], approver, "{action}: {records:#?}");
    }
    assert_eq!(of("RestoreFinished")["outcome"], "Succeeded");
    // The table names them too.
    let (code, table, err) = cluster.plugin(&["audit", "show", "-n", ns, &storage]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.lines().any(|l| l.contains("RestoreApproved")
            && l.contains(requester)
            && l.contains(approver)),
        "{table}"
    );
    let (code, out, err) = cluster.plugin(&["audit", "verify", "-n", ns, &storage]);
    assert_eq!(code, 0, "audit verify\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("{ns}: intact")), "{out}");
    // Retention headers on every segment.
    let client = services.s3.s3_client();
    let keys = services
        .s3
        .list_keys(AUDIT_BUCKET, "trail/audit/")
        .expect("audit keys");
    assert!(!keys.is_empty());
    for key in keys {
        let head = client
            .head_object()
            .bucket(AUDIT_BUCKET)
            .key(&key)
            .send()
            .await
            .expect("head segment");
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        assert!(head.object_lock_retain_until_date().is_some(), "{key}");
    }
}

fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or_default()
}

async fn install_scenario(installer: Installer) {
    let _serial = crate::serial().await;
    // A cluster without DataGuardian: the install brings the CRDs.
    let cluster = Cluster::start_with_crds(false).await;
    tag_upgrade_image();
    let services = Services::start();
    let dir = tempfile::Builder::new()
        .prefix("dg-install-")
        .tempdir()
        .expect("temp dir");
    let (tag, upgrade_tag) = operator_image_tags();

    // ---- Install as cluster admin. Helm's `--create-namespace` makes the release namespace;
    // the kustomize base brings its own Namespace object.
    if installer == Installer::Helm {
        // (kept by an earlier scenario's uninstall on a real cluster: apply, not create)
        cluster.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SYSTEM_NS}}}\n"
        ));
    }
    let rendered = render(installer, &tag, dir.path());
    apply_install(&cluster, &rendered);
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/backupstorages.dataguardian.io",
            "crd/backuppolicies.dataguardian.io",
            "crd/backupruns.dataguardian.io",
            "crd/restoreruns.dataguardian.io",
            "crd/restorevalidations.dataguardian.io",
            "--timeout=60s",
        ])
        .expect("the CRDs are established");
    let d = wait_rolled_out(&cluster, "install").await;
    let pod_spec = d.spec.template.spec.expect("pod spec");
    assert_eq!(
        pod_spec.service_account_name.as_deref(),
        Some("dataguardian"),
        "the operator runs as the chart's ServiceAccount"
    );
    let first_pods = operator_pods(&cluster).await;
    assert_eq!(first_pods.len(), 2, "two replicas");
    for p in &first_pods {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(
            ready,
            "leader and follower are both Ready: {:?}",
            p.metadata.name
        );
    }
    let (first_leader, first_transitions) = wait_leader(&cluster, &names(&first_pods)).await;
    if installer == Installer::Helm {
        // The platform team's audit storage, on a bucket with Object Lock (docs/audit.md). The
        // operator was told about it by the chart and opens it once it exists.
        services
            .s3
            .create_bucket_with_object_lock(AUDIT_BUCKET)
            .expect("audit bucket");
        cluster.apply(&format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: audit-s3, namespace: {SYSTEM_NS}}}
stringData: {{AWS_ACCESS_KEY_ID: {key}, AWS_SECRET_ACCESS_KEY: {secret}}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: {AUDIT_STORAGE}, namespace: {SYSTEM_NS}}}
spec:
  s3: {{bucket: {AUDIT_BUCKET}, region: us-east-1, endpoint: "{endpoint}", forcePathStyle: true,
       prefix: trail/, credentialsSecretRef: {{name: audit-s3}},
       objectLock: {{mode: GOVERNANCE, days: 1}}}}
"#,
            key = services.s3.access_key_id(),
            secret = services.s3.secret_access_key(),
            endpoint = services.s3.endpoint(),
        ));
    }

    // ---- The tenant: the platform team (admin) sets up storage and policy in `shop`.
    // One tenant namespace per scenario, so both run one after the other on a real cluster.
    let ns = cluster.namespace(match installer {
        Installer::Helm => "shop",
        Installer::Kustomize => "shop-kustomize",
    });
    cluster.apply(&services.manifests(&ns, "shop", "0 0 1 1 *", ""));
    wait_for::<BackupStorage, _>(
        &cluster,
        None,
        &ns,
        "main",
        Duration::from_secs(90),
        "storage Ready (probed by the in-cluster operator)",
        |s: &BackupStorage| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await;

    // ---- People: alice may trigger (dataguardian-operator), bob may only look
    // (dataguardian-readonly).
    let alice = cluster.user("alice", &["shop-devs"]);
    let bob = cluster.user("bob", &["auditors"]);
    bind(&cluster, &ns, &alice, "dataguardian-operator");
    bind(&cluster, &ns, &bob, "dataguardian-readonly");

    // alice backs up, validates and restores through the plugin.
    let (code, out, err) = cluster.plugin_as(
        &alice,
        &[
            "backup",
            "now",
            "shop",
            "-n",
            &ns,
            "--name",
            "nightly-1",
            "--wait",
        ],
    );
    assert_eq!(
        code,
        0,
        "alice's backup\nstdout:\n{out}\nstderr:\n{err}\n{}",
        operator_diagnostics(&cluster).await
    );
    assert!(last_line(&out).starts_with("Succeeded:"), "{out}");
    let (code, out, err) = cluster.plugin_as(
        &alice,
        &[
            "validate",
            "nightly-1",
            "-n",
            &ns,
            "--name",
            "nightly-1-check",
            "--wait",
        ],
    );
    assert_eq!(
        code, 0,
        "alice's validation\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(last_line(&out).starts_with("Passed:"), "{out}");
    let (code, out, err) = cluster.plugin_as(
        &alice,
        &[
            "restore",
            "nightly-1",
            "-n",
            &ns,
            "--database",
            "shop_restored",
            "--create-database",
            "--wait",
        ],
    );
    assert_eq!(code, 0, "alice's restore\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        last_line(&out).starts_with("Succeeded: restored into shop_restored"),
        "{out}"
    );
    assert_eq!(
        services
            .pg
            .psql("shop_restored", "SELECT count(*) FROM orders")
            .expect("restored table")
            .trim(),
        "500"
    );

    // Who asked is recorded by the operator's admission webhook from the API server's own
    // user info, for every run kind, and nobody can rewrite it: not alice, not an admin.
    let whoami = |user: &TestUser| {
        cluster
            .kubectl_as(
                user,
                &[
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ],
            )
            .expect("kubectl auth whoami")
            .trim()
            .to_string()
    };
    let alice_name = whoami(&alice);
    let requested_by = |resource: &str| {
        cluster
            .kubectl(&[
                "get",
                resource,
                "-n",
                &ns,
                "-o",
                r"jsonpath={.items[*].metadata.annotations.dataguardian\.io/requested-by}",
            ])
            .expect("reading the requester")
            .trim()
            .to_string()
    };
    for resource in ["backupruns", "restorevalidations", "restoreruns"] {
        assert_eq!(requested_by(resource), alice_name, "{resource}");
        // Copied into status when the Job starts.
        let in_status = cluster
            .kubectl(&[
                "get",
                resource,
                "-n",
                &ns,
                "-o",
                "jsonpath={.items[*].status.requestedBy}",
            ])
            .expect("reading status.requestedBy");
        assert_eq!(in_status.trim(), alice_name, "{resource} status");
    }
    let started = crate::harness::wait_for_events(&cluster, &ns, "nightly-1", |events| {
        events.iter().any(|e| e.starts_with("Started:"))
    })
    .await;
    assert!(
        started.iter().any(
            |e| e.starts_with("Started:") && e.ends_with(&format!("requested by {alice_name}"))
        ),
        "{started:#?}"
    );
    let forged = format!(
        "apiVersion: dataguardian.io/v1alpha1\nkind: BackupRun\nmetadata:\n  name: forged\n  namespace: {ns}\n  annotations: {{dataguardian.io/requested-by: mallory}}\nspec: {{policyRef: {{name: shop}}, trigger: Manual}}\n"
    );
    cluster
        .kubectl_stdin_as(&alice, &["create", "-f", "-"], Some(&forged))
        .expect("alice may create a run");
    let stamped = cluster
        .kubectl(&[
            "get",
            "backuprun",
            "forged",
            "-n",
            &ns,
            "-o",
            r"jsonpath={.metadata.annotations.dataguardian\.io/requested-by}",
        ])
        .expect("get the run");
    assert_eq!(
        stamped.trim(),
        alice_name,
        "the claimed requester is replaced"
    );
    let rewrite = cluster
        .kubectl(&[
            "annotate",
            "backuprun",
            "nightly-1",
            "-n",
            &ns,
            "--overwrite",
            "dataguardian.io/requested-by=mallory",
        ])
        .expect_err("nobody may rewrite the requester");
    assert!(
        rewrite.contains("admission webhook \"runs.admission.dataguardian.io\" denied the request")
            && rewrite.contains("records who asked for it"),
        "{rewrite}"
    );
    // The platform team's policy records who changed it last.
    let changed_by = cluster
        .kubectl(&[
            "get",
            "backuppolicy",
            "shop",
            "-n",
            &ns,
            "-o",
            r"jsonpath={.metadata.annotations.dataguardian\.io/last-changed-by}",
        ])
        .expect("get the policy");
    let admin_name = cluster
        .kubectl(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .expect("whoami");
    assert_eq!(changed_by.trim(), admin_name.trim());

    // bob reads, and is refused a backup with the API server's own words.
    let listed = cluster
        .kubectl_as(&bob, &["get", "backupruns", "-n", &ns])
        .expect("bob may list runs");
    assert!(listed.contains("nightly-1"), "{listed}");
    let refused = cluster
        .kubectl_stdin_as(
            &bob,
            &["create", "-f", "-"],
            Some(&manual_run(&ns, "bobs-run", "shop")),
        )
        .expect_err("bob may not create a BackupRun");
    assert!(
        refused.contains("Forbidden")
            && refused.contains(&format!("cannot create resource \"backupruns\" in API group \"dataguardian.io\" in the namespace \"{ns}\"")),
        "{refused}"
    );
    let (code, _, err) = cluster.plugin_as(&bob, &["backup", "now", "shop", "-n", &ns]);
    assert_ne!(code, 0, "bob's plugin backup must fail");
    assert!(
        err.contains("forbidden") || err.contains("Forbidden"),
        "{err}"
    );

    // ---- The two-person rule (Helm only: the kustomize base ships the same webhook and roles).
    if installer == Installer::Helm {
        approvals(&cluster, &services, &ns, &alice, &bob).await;
    }

    // ---- Upgrade: a new image tag. A backup is started just before, so the handover happens
    // while work is in flight; it must end with exactly one Job.
    let before_upgrade = jobs(&cluster, &ns).await.len();
    cluster.apply(&manual_run(&ns, "during-upgrade", "shop"));
    let upgraded = render(installer, &upgrade_tag, dir.path());
    apply_install(&cluster, &upgraded);
    wait_rolled_out(&cluster, "upgrade").await;
    let new_pods = operator_pods(&cluster).await;
    for p in &new_pods {
        let image = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        assert!(image.ends_with(&format!(":{upgrade_tag}")), "{image}");
    }
    assert!(
        names(&new_pods).is_disjoint(&names(&first_pods)),
        "every pod was replaced"
    );
    let (new_leader, transitions) = wait_leader(&cluster, &names(&new_pods)).await;
    assert_ne!(new_leader, first_leader);
    assert!(
        transitions > first_transitions,
        "the Lease changed hands ({first_transitions} → {transitions})"
    );
    let run = wait_for::<BackupRun, _>(
        &cluster,
        None,
        &ns,
        "during-upgrade",
        Duration::from_secs(180),
        "the run started before the upgrade finishes",
        |r: &BackupRun| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    assert_eq!(
        crate::harness::phase(&run).as_deref(),
        Some("Succeeded"),
        "{run:?}"
    );
    // Exactly one Job per run: nobody started a second one across the handover.
    let all = jobs(&cluster, &ns).await;
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for j in all.values() {
        if let Some(run) = j
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("dataguardian.io/run"))
        {
            *per_run.entry(run.clone()).or_default() += 1;
        }
    }
    assert_eq!(per_run.get("during-upgrade"), Some(&1), "{per_run:?}");
    assert!(per_run.values().all(|n| *n == 1), "{per_run:?}");
    assert_eq!(all.len(), before_upgrade + 1, "{:?}", all.keys());

    // ---- Uninstall: the operator goes; CRDs, BackupRuns and artifacts stay.
    let artifacts = services.keys("e2e/");
    assert!(!artifacts.is_empty());
    uninstall(&cluster, installer, &upgraded);
    let start = Instant::now();
    while !operator_pods(&cluster).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "operator pods still running after uninstall\n{}",
            operator_diagnostics(&cluster).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let crds = cluster
        .kubectl(&["get", "crd", "-o", "name"])
        .expect("list CRDs");
    for kind in [
        "backupstorages",
        "backuppolicies",
        "backupruns",
        "restoreruns",
        "restorevalidations",
    ] {
        assert!(
            crds.contains(&format!("{kind}.dataguardian.io")),
            "{kind} CRD kept: {crds}"
        );
    }
    let runs: Api<BackupRun> = Api::namespaced(cluster.client.clone(), &ns);
    let kept: BTreeSet<String> = runs
        .list(&ListParams::default())
        .await
        .expect("runs")
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    assert!(
        kept.contains("nightly-1") && kept.contains("during-upgrade"),
        "{kept:?}"
    );
    assert_eq!(
        services.keys("e2e/"),
        artifacts,
        "the uninstall deleted or wrote artifacts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_helm_chart_installs_runs_under_its_own_rbac_upgrades_and_uninstalls() {
    install_scenario(Installer::Helm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kustomize_base_installs_runs_under_its_own_rbac_upgrades_and_uninstalls() {
    install_scenario(Installer::Kustomize).await;
}
