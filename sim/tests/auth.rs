//! Authentication, authorization and TLS of kube-sim, through the installed kubectl (v1.32) and
//! kube-rs: 401s, RBAC with the real 403 texts, aggregation, `kubectl auth can-i|whoami`,
//! impersonation, TokenRequest tokens bound to their ServiceAccount, escalation checks,
//! ServiceAccount admission and the `kube-root-ca.crt` ConfigMaps.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchParams};
use kube::{Client, ResourceExt};
use kube_sim::{RunningServer, ServerOptions, StaticUser};
use serde_json::{Value, json};

/// A client for the server with no credentials at all (anonymous), trusting its CA.
async fn anonymous(server: &RunningServer) -> Client {
    let ca = base64_encode(server.ca_pem().as_bytes());
    let kc: kube::config::Kubeconfig = serde_yaml::from_str(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        server.url()
    ))
    .unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A kubeconfig for `token` (e.g. a ServiceAccount token).
fn token_kubeconfig(server: &RunningServer, name: &str, token: &str) -> PathBuf {
    let path = server.state_dir().join(format!("{name}.kubeconfig"));
    kube_sim::server::write_kubeconfig(&path, &server.url(), server.ca_pem(), name, token).unwrap();
    path
}

/// GET `path` with `client`; the status code and body.
async fn raw_get(client: &Client, path: &str) -> (u16, Value) {
    let req = axum::http::Request::get(path)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (
        code,
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

async fn apply(server: &RunningServer, yaml: &str) {
    let out = kubectl_stdin(server, &["apply", "-f", "-"], Some(yaml)).await;
    assert!(out.ok, "apply: {}\n{yaml}", out.stderr);
}

async fn new_ns(server: &RunningServer, name: &str) {
    kubectl_ok(server, &["create", "namespace", name]).await;
}

fn err_line(out: &Kubectl) -> String {
    out.stderr.trim().to_string()
}

/// kubectl's verdict on a 401: "Unauthorized" (the Status message) on a request, the generic
/// text when discovery already failed (then client-go logs those failures first).
fn unauthorized(out: &Kubectl) -> bool {
    let last = out.stderr.trim().lines().last().unwrap_or_default();
    !out.ok
        && (last == "error: You must be logged in to the server (Unauthorized)"
            || last
                == "error: You must be logged in to the server (the server has asked for the client to provide credentials)")
}

#[tokio::test]
async fn https_with_the_generated_ca_and_anonymous_requests() {
    let server = start().await;
    assert!(server.url().starts_with("https://127.0.0.1:"));
    // kube-rs verifies the serving certificate (IP SAN 127.0.0.1) against the kubeconfig's CA.
    let client = server.client().await.unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.minor, "32");
    assert_eq!(
        std::fs::read_to_string(server.state_dir().join("ca.crt")).unwrap(),
        server.ca_pem()
    );
    // The CA is published in every namespace, as kube-controller-manager does.
    for ns in ["default", "kube-system", "kube-public"] {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get("kube-root-ca.crt")
            .await
            .unwrap();
        assert_eq!(
            cm.data.unwrap().get("ca.crt").map(String::as_str),
            Some(server.ca_pem())
        );
    }
    // No credentials: system:anonymous, allowed only the public info (version, healthz).
    let anon = anonymous(&server).await;
    let (code, _) = raw_get(&anon, "/version").await;
    assert_eq!(code, 200);
    let (code, _) = raw_get(&anon, "/healthz").await;
    assert_eq!(code, 200);
    let (code, body) = raw_get(&anon, "/api").await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "forbidden: User \"system:anonymous\" cannot get path \"/api\"",
               "reason": "Forbidden", "details": {}, "code": 403})
    );
    let (code, body) = raw_get(&anon, "/api/v1/namespaces/default/pods").await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(body["details"], json!({"kind": "pods"}));
}

#[tokio::test]
async fn unknown_tokens_are_401_for_kube_rs_and_kubectl() {
    let server = start().await;
    let bad = token_kubeconfig(&server, "mallory", "not-a-token");
    let client = server.client_for(&bad).await.unwrap();
    let err = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let status = api_err(err);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    // Even /version: a bad token is never treated as anonymous.
    assert_eq!(raw_get(&client, "/version").await.0, 401);
    // A forged JWT (valid shape, wrong key) too.
    let forged = token_kubeconfig(
        &server,
        "forged",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    );
    assert_eq!(
        raw_get(&server.client_for(&forged).await.unwrap(), "/version")
            .await
            .0,
        401
    );
    let out = kubectl_as(&server, &bad, &["get", "configmaps"]).await;
    assert!(!out.ok);
    assert!(unauthorized(&out), "{}", out.stderr);
}

#[tokio::test]
async fn a_namespaced_role_allows_exactly_its_verbs() {
    let server = start().await;
    new_ns(&server, "shop").await;
    new_ns(&server, "other").await;
    let bob = server.add_user("bob", &["dev"]).unwrap();
    apply(
        &server,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-editor, namespace: shop}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, create, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-cm, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-editor}
subjects:
- {kind: Group, name: dev}
"#,
    )
    .await;
    let out = kubectl_as(
        &server,
        &bob,
        &[
            "-n",
            "shop",
            "create",
            "configmap",
            "c1",
            "--from-literal=a=b",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl_as(
        &server,
        &bob,
        &["-n", "shop", "get", "configmaps", "c1", "-o", "name"],
    )
    .await;
    assert_eq!(out.stdout.trim(), "configmap/c1", "{}", out.stderr);
    let out = kubectl_as(&server, &bob, &["-n", "shop", "delete", "configmap", "c1"]).await;
    assert!(out.ok, "{}", out.stderr);

    // Everything else is refused with kube-apiserver's text.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-n", "shop", "get", "secrets"],
            r#"Error from server (Forbidden): secrets is forbidden: User "bob" cannot list resource "secrets" in API group "" in the namespace "shop""#,
        ),
        (
            vec!["-n", "other", "get", "configmaps"],
            r#"Error from server (Forbidden): configmaps is forbidden: User "bob" cannot list resource "configmaps" in API group "" in the namespace "other""#,
        ),
        (
            vec!["-n", "shop", "get", "widgets", "w1"],
            r#"Error from server (Forbidden): widgets.test.kube-sim.io "w1" is forbidden: User "bob" cannot get resource "widgets" in API group "test.kube-sim.io" in the namespace "shop""#,
        ),
        (
            vec!["get", "namespaces"],
            r#"Error from server (Forbidden): namespaces is forbidden: User "bob" cannot list resource "namespaces" in API group "" at the cluster scope"#,
        ),
    ];
    for (args, want) in cases {
        let out = kubectl_as(&server, &bob, &args).await;
        assert!(!out.ok, "{args:?} must be refused");
        assert_eq!(err_line(&out), want, "{args:?}");
    }
    let out = kubectl_as(
        &server,
        &bob,
        &[
            "-n",
            "shop",
            "label",
            "configmap",
            "kube-root-ca.crt",
            "x=y",
        ],
    )
    .await;
    assert!(
        out.stderr.contains(r#"configmaps "kube-root-ca.crt" is forbidden: User "bob" cannot patch resource "configmaps" in API group "" in the namespace "shop""#),
        "{}",
        out.stderr
    );

    // kube-rs sees the same Status (details name the resource); watch is checked like list.
    let client = server.client_for(&bob).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let st = api_err(secrets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    let d = st.details.unwrap();
    assert_eq!((d.group.as_str(), d.kind.as_str()), ("", "secrets"));
    let st = api_err(
        secrets
            .watch(&WatchParams::default(), "0")
            .await
            .err()
            .expect("watch refused"),
    );
    assert_eq!(
        st.message,
        r#"secrets is forbidden: User "bob" cannot watch resource "secrets" in API group "" in the namespace "shop""#
    );
    let cms: Api<ConfigMap> = Api::namespaced(client, "shop");
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|c| c.name_any() == "kube-root-ca.crt")
    );
    // A binding to a role that does not exist grants nothing, and says so.
    apply(
        &server,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dangling, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: no-such-role}
subjects:
- {kind: User, name: bob}
"#,
    )
    .await;
    let out = kubectl_as(&server, &bob, &["-n", "shop", "get", "pods"]).await;
    assert_eq!(
        err_line(&out),
        r#"Error from server (Forbidden): pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "shop": RBAC: clusterrole.rbac.authorization.k8s.io "no-such-role" not found"#
    );
}

#[tokio::test]
async fn resource_names_subresources_and_wildcards() {
    let server = start().await;
    new_ns(&server, "x").await;
    let carol = server.add_user("carol", &[]).unwrap();
    apply(
        &server,
        r#"
apiVersion: v1
kind: Secret
metadata: {name: a, namespace: x}
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata: {name: b, namespace: x}
stringData: {k: v}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: narrow, namespace: x}
rules:
- {apiGroups: [""], resources: [secrets], resourceNames: [a], verbs: [get, list]}
- {apiGroups: ["*"], resources: ["*/status"], verbs: [get]}
- {apiGroups: [""], resources: [pods/log], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: carol, namespace: x}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: narrow}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}
"#,
    )
    .await;
    let client = server.client_for(&carol).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "x");
    assert_eq!(secrets.get("a").await.unwrap().name_any(), "a");
    let st = api_err(secrets.get("b").await.unwrap_err());
    assert_eq!(
        st.message,
        r#"secrets "b" is forbidden: User "carol" cannot get resource "secrets" in API group "" in the namespace "x""#
    );
    assert_eq!(st.details.unwrap().name, "b");
    // A list is a request without a name: a named rule does not allow it...
    assert_eq!(
        api_err(secrets.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    // ...unless a field selector narrows it to that name (kube-apiserver's RequestInfo).
    let one = secrets
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    // Subresources: */status and pods/log, not the pods themselves.
    for (args, ok) in [
        (
            vec![
                "auth",
                "can-i",
                "get",
                "jobs",
                "--subresource=status",
                "-n",
                "x",
            ],
            true,
        ),
        (
            vec![
                "auth",
                "can-i",
                "get",
                "pods",
                "--subresource=log",
                "-n",
                "x",
            ],
            true,
        ),
        (vec!["auth", "can-i", "get", "pods", "-n", "x"], false),
        (vec!["auth", "can-i", "get", "secrets/a", "-n", "x"], true),
        (vec!["auth", "can-i", "get", "secrets/b", "-n", "x"], false),
    ] {
        let out = kubectl_as(&server, &carol, &args).await;
        assert_eq!(
            out.stdout.trim(),
            if ok { "yes" } else { "no" },
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(out.ok, ok);
    }
}

#[tokio::test]
async fn aggregated_cluster_roles_follow_their_labels() {
    let server = start().await;
    new_ns(&server, "shop").await;
    let viewer = server.add_user("viewer", &[]).unwrap();
    let boss = server.add_user("boss", &[]).unwrap();
    kubectl_ok(
        &server,
        &[
            "create",
            "rolebinding",
            "v",
            "-n",
            "shop",
            "--clusterrole=view",
            "--user=viewer",
        ],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "create",
            "rolebinding",
            "b",
            "-n",
            "shop",
            "--clusterrole=admin",
            "--user=boss",
        ],
    )
    .await;
    let can = |who: PathBuf, args: Vec<&'static str>| {
        let server = &server;
        async move {
            kubectl_as(server, &who, &args)
                .await
                .stdout
                .trim()
                .to_string()
        }
    };
    // The bootstrap roles: view reads but does not write or read secrets, admin does.
    assert_eq!(
        can(
            viewer.clone(),
            vec!["auth", "can-i", "list", "pods", "-n", "shop"]
        )
        .await,
        "yes"
    );
    assert_eq!(
        can(
            viewer.clone(),
            vec!["auth", "can-i", "get", "secrets", "-n", "shop"]
        )
        .await,
        "no"
    );
    assert_eq!(
        can(
            viewer.clone(),
            vec!["auth", "can-i", "create", "jobs.batch", "-n", "shop"]
        )
        .await,
        "no"
    );
    assert_eq!(
        can(
            boss.clone(),
            vec!["auth", "can-i", "create", "jobs.batch", "-n", "shop"]
        )
        .await,
        "yes"
    );
    assert_eq!(
        can(
            boss.clone(),
            vec!["auth", "can-i", "create", "rolebindings", "-n", "shop"]
        )
        .await,
        "yes"
    );
    assert_eq!(
        can(
            viewer.clone(),
            vec!["auth", "can-i", "list", "widgets", "-n", "shop"]
        )
        .await,
        "no"
    );

    // A ClusterRole labelled aggregate-to-view is folded into view (and so into edit and admin).
    apply(
        &server,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- {apiGroups: [test.kube-sim.io], resources: [widgets], verbs: [get, list, watch]}
"#,
    )
    .await;
    let client = server.client().await.unwrap();
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    eventually("view aggregates widgets-view", || {
        let roles = roles.clone();
        async move {
            roles
                .get("view")
                .await
                .unwrap()
                .rules
                .unwrap_or_default()
                .iter()
                .any(|r| r.resources.as_deref() == Some(&["widgets".to_string()][..]))
        }
    })
    .await;
    eventually("admin aggregates it through edit", || {
        let roles = roles.clone();
        async move {
            roles
                .get("admin")
                .await
                .unwrap()
                .rules
                .unwrap_or_default()
                .iter()
                .any(|r| r.resources.as_deref() == Some(&["widgets".to_string()][..]))
        }
    })
    .await;
    assert_eq!(
        can(
            viewer.clone(),
            vec!["auth", "can-i", "list", "widgets", "-n", "shop"]
        )
        .await,
        "yes"
    );
    assert_eq!(
        can(
            boss.clone(),
            vec![
                "auth",
                "can-i",
                "watch",
                "widgets.test.kube-sim.io",
                "-n",
                "shop"
            ]
        )
        .await,
        "yes"
    );
    assert_eq!(
        can(
            viewer.clone(),
            vec!["auth", "can-i", "delete", "widgets", "-n", "shop"]
        )
        .await,
        "no"
    );

    // Dropping the label takes the rules out again.
    kubectl_ok(
        &server,
        &[
            "label",
            "clusterrole",
            "widgets-view",
            "rbac.authorization.k8s.io/aggregate-to-view-",
        ],
    )
    .await;
    eventually("view drops widgets-view", || {
        let roles = roles.clone();
        async move {
            !roles
                .get("view")
                .await
                .unwrap()
                .rules
                .unwrap_or_default()
                .iter()
                .any(|r| r.resources.as_deref() == Some(&["widgets".to_string()][..]))
        }
    })
    .await;
    assert_eq!(
        can(
            viewer,
            vec!["auth", "can-i", "list", "widgets", "-n", "shop"]
        )
        .await,
        "no"
    );
}

#[tokio::test]
async fn can_i_whoami_and_impersonation() {
    let server = start().await;
    new_ns(&server, "shop").await;
    let bob = server.add_user("bob", &["dev", "qa"]).unwrap();
    kubectl_ok(
        &server,
        &[
            "create",
            "role",
            "r",
            "-n",
            "shop",
            "--verb=get,list",
            "--resource=pods",
        ],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "create",
            "rolebinding",
            "r",
            "-n",
            "shop",
            "--role=r",
            "--group=qa",
        ],
    )
    .await;

    // The admin (system:masters) may do anything, and impersonate.
    let out = kubectl(&server, &["auth", "can-i", "delete", "nodes"]).await;
    assert_eq!((out.ok, out.stdout.trim()), (true, "yes"));
    let out = kubectl(
        &server,
        &[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "shop",
            "--as=bob",
            "--as-group=qa",
        ],
    )
    .await;
    assert_eq!((out.ok, out.stdout.trim()), (true, "yes"), "{}", out.stderr);
    let out = kubectl(
        &server,
        &["auth", "can-i", "list", "pods", "-n", "shop", "--as=bob"],
    )
    .await;
    assert_eq!((out.ok, out.stdout.trim()), (false, "no"));
    let out = kubectl(&server, &["auth", "whoami", "--as=alice", "--as-group=g1"]).await;
    assert!(
        out.stdout.contains("alice") && out.stdout.contains("[g1 system:authenticated]"),
        "{}",
        out.stdout
    );

    // bob's own view.
    let out = kubectl_as(
        &server,
        &bob,
        &["auth", "can-i", "list", "pods", "-n", "shop"],
    )
    .await;
    assert_eq!((out.ok, out.stdout.trim()), (true, "yes"));
    let out = kubectl_as(
        &server,
        &bob,
        &["auth", "can-i", "create", "pods", "-n", "shop"],
    )
    .await;
    assert_eq!((out.ok, out.stdout.trim()), (false, "no"));
    let out = kubectl_as(&server, &bob, &["auth", "can-i", "get", "/healthz"]).await;
    assert_eq!(out.stdout.trim(), "yes");
    let out = kubectl_as(&server, &bob, &["auth", "can-i", "get", "/metrics"]).await;
    assert_eq!(out.stdout.trim(), "no");
    let out = kubectl_as(&server, &bob, &["auth", "whoami", "-o", "json"]).await;
    let who: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(who["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["dev", "qa", "system:authenticated"])
    );
    let out = kubectl_as(&server, &bob, &["auth", "can-i", "--list", "-n", "shop"]).await;
    assert!(out.ok, "{}", out.stderr);
    let pods_row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(pods_row.ends_with("[get list]"), "{pods_row}");

    // bob may not impersonate.
    let out = kubectl_as(&server, &bob, &["get", "pods", "-n", "shop", "--as=alice"]).await;
    assert_eq!(
        err_line(&out),
        r#"Error from server (Forbidden): users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );

    // SubjectAccessReview needs its own permission; the admin gets the reason.
    let sar = r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "bob", "groups": ["qa"], "resourceAttributes": {"namespace": "shop", "verb": "list", "resource": "pods"}}}"#;
    // (--validate=false: kubectl validates kinds without a PATCH operation against
    // /openapi/v2, which kube-sim does not serve.)
    let create = ["create", "--validate=false", "-f", "-", "-o", "json"];
    let out = kubectl_with(&server, &bob, &create, Some(sar)).await;
    assert!(out.stderr.contains(r#"subjectaccessreviews.authorization.k8s.io is forbidden: User "bob" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#), "{}", out.stderr);
    let out = kubectl_stdin(&server, &create, Some(sar)).await;
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    assert_eq!(v["status"]["allowed"], true);
    assert_eq!(
        v["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "r/shop" of Role "r" to Group "qa""#
    );
}

#[tokio::test]
async fn token_request_tokens_are_bound_to_their_service_account() {
    let server = start().await;
    new_ns(&server, "shop").await;
    kubectl_ok(
        &server,
        &["create", "serviceaccount", "reader", "-n", "shop"],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "create",
            "rolebinding",
            "reader",
            "-n",
            "shop",
            "--clusterrole=view",
            "--serviceaccount=shop:reader",
        ],
    )
    .await;
    let token = kubectl_ok(
        &server,
        &["create", "token", "reader", "-n", "shop", "--duration=10m"],
    )
    .await;
    let token = token.trim();
    // A JWT whose lifetime is what was asked for.
    let payload: Value = {
        use base64::Engine as _;
        let p = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(payload["sub"], "system:serviceaccount:shop:reader");
    let kc = token_kubeconfig(&server, "reader", token);
    let out = kubectl_as(&server, &kc, &["auth", "whoami"]).await;
    assert!(
        out.stdout.contains("system:serviceaccount:shop:reader"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("[system:serviceaccounts system:serviceaccounts:shop system:authenticated]"),
        "{}",
        out.stdout
    );
    let out = kubectl_as(&server, &kc, &["get", "pods", "-n", "shop"]).await;
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl_as(&server, &kc, &["get", "secrets", "-n", "shop"]).await;
    assert!(
        out.stderr
            .contains(r#"User "system:serviceaccount:shop:reader" cannot list resource "secrets""#),
        "{}",
        out.stderr
    );

    // The TokenRequest API itself (kube-rs): defaults, validation, expiration.
    let client = server.client().await.unwrap();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "shop");
    let tr: Value = sas
        .create_subresource("token", "reader", &PostParams::default(), &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 1200}}))
        .await
        .unwrap();
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    let exp =
        chrono::DateTime::parse_from_rfc3339(tr["status"]["expirationTimestamp"].as_str().unwrap())
            .unwrap();
    let left = exp.timestamp() - chrono::Utc::now().timestamp();
    assert!((1190..=1200).contains(&left), "{left}");
    let st = api_err(
        sas.create_subresource::<_, Value>(
            "token",
            "reader",
            &PostParams::default(),
            &json!({"spec": {"expirationSeconds": 60}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (
            422,
            r#"TokenRequest.authentication.k8s.io "reader" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"#
        )
    );
    let st = api_err(
        sas.create_subresource::<_, Value>(
            "token",
            "ghost",
            &PostParams::default(),
            &json!({"spec": {}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (404, r#"serviceaccounts "ghost" not found"#)
    );
    // A token for another audience does not authenticate to the API server.
    let vault: Value = sas
        .create_subresource(
            "token",
            "reader",
            &PostParams::default(),
            &json!({"spec": {"audiences": ["vault"]}}),
        )
        .await
        .unwrap();
    let vkc = token_kubeconfig(&server, "vault", vault["status"]["token"].as_str().unwrap());
    assert_eq!(
        raw_get(&server.client_for(&vkc).await.unwrap(), "/version")
            .await
            .0,
        401
    );

    // Deleting the ServiceAccount invalidates its tokens, also after a new one of the same name.
    kubectl_ok(
        &server,
        &["delete", "serviceaccount", "reader", "-n", "shop"],
    )
    .await;
    let out = kubectl_as(&server, &kc, &["get", "pods", "-n", "shop"]).await;
    assert!(unauthorized(&out), "{}", out.stderr);
    kubectl_ok(
        &server,
        &["create", "serviceaccount", "reader", "-n", "shop"],
    )
    .await;
    let out = kubectl_as(&server, &kc, &["get", "pods", "-n", "shop"]).await;
    assert!(unauthorized(&out), "{}", out.stderr);
}

#[tokio::test]
async fn escalation_through_roles_and_bindings_is_refused() {
    let server = start().await;
    new_ns(&server, "shop").await;
    let dave = server.add_user("dave", &[]).unwrap();
    apply(
        &server,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: rbac-manager, namespace: shop}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], verbs: [create, get, list, update, patch, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dave, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-manager}
subjects: [{kind: User, name: dave}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get]}
"#,
    )
    .await;
    let run = |args: Vec<&'static str>| {
        let (server, dave) = (&server, dave.clone());
        async move { kubectl_as(server, &dave, &args).await }
    };
    // Binding a role with permissions dave lacks.
    let out = run(vec![
        "create",
        "rolebinding",
        "x",
        "-n",
        "shop",
        "--clusterrole=secret-reader",
        "--user=eve",
    ])
    .await;
    assert!(!out.ok);
    assert_eq!(
        err_line(&out),
        "error: failed to create rolebinding: rolebindings.rbac.authorization.k8s.io \"x\" is forbidden: user \"dave\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"
    );
    let out = run(vec![
        "create",
        "rolebinding",
        "x",
        "-n",
        "shop",
        "--clusterrole=cluster-admin",
        "--user=dave",
    ])
    .await;
    assert!(out.stderr.contains("is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}"), "{}", out.stderr);
    // A role with more than dave has.
    let out = run(vec![
        "create",
        "role",
        "more",
        "-n",
        "shop",
        "--verb=get,delete",
        "--resource=configmaps",
    ])
    .await;
    assert_eq!(
        err_line(&out),
        "Error from server (Forbidden): roles.rbac.authorization.k8s.io \"more\" is forbidden: user \"dave\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"configmaps\"], Verbs:[\"delete\"]}"
    );
    // What dave holds, dave may grant.
    let out = run(vec![
        "create",
        "role",
        "less",
        "-n",
        "shop",
        "--verb=get",
        "--resource=configmaps",
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = run(vec![
        "create",
        "rolebinding",
        "less",
        "-n",
        "shop",
        "--role=less",
        "--user=eve",
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
    // A binding's roleRef cannot change.
    let out = kubectl(
        &server,
        &[
            "patch",
            "rolebinding",
            "less",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"rbac-manager"}}"#,
        ],
    )
    .await;
    assert!(out.stderr.contains("roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"rbac-manager\"}: cannot change roleRef"), "{}", out.stderr);

    // The `bind` verb on that role (and `escalate` on roles) lift the checks.
    apply(
        &server,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: delegate, namespace: shop}
rules:
- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], resourceNames: [secret-reader], verbs: [bind]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles], verbs: [escalate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dave-delegate, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: delegate}
subjects: [{kind: User, name: dave}]
"#,
    )
    .await;
    let out = run(vec![
        "create",
        "rolebinding",
        "x",
        "-n",
        "shop",
        "--clusterrole=secret-reader",
        "--user=eve",
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
    let out = run(vec![
        "create",
        "rolebinding",
        "y",
        "-n",
        "shop",
        "--clusterrole=cluster-admin",
        "--user=dave",
    ])
    .await;
    assert!(!out.ok, "bind is granted for secret-reader only");
    let out = run(vec![
        "create",
        "role",
        "more",
        "-n",
        "shop",
        "--verb=get,delete",
        "--resource=configmaps",
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
}

#[tokio::test]
async fn pods_need_their_service_account_and_get_the_token_volume() {
    let server = start().await;
    new_ns(&server, "shop").await;
    let client = server.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pod = |name: &str, sa: Option<&str>| -> Pod {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(sa) = sa {
            p["spec"]["serviceAccountName"] = json!(sa);
        }
        serde_json::from_value(p).unwrap()
    };
    let st = api_err(
        pods.create(&PostParams::default(), &pod("p1", Some("ghost")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (
            403,
            r#"pods "p1" is forbidden: error looking up service account shop/ghost: serviceaccount "ghost" not found"#
        )
    );
    // The default ServiceAccount (made by the controller right after the namespace).
    let p = pods
        .create(&PostParams::default(), &pod("p2", None))
        .await
        .unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let vols = spec.volumes.unwrap();
    let v = vols
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .expect("token volume");
    let sources = v.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert_eq!(
        sources[0]
            .service_account_token
            .as_ref()
            .unwrap()
            .expiration_seconds,
        Some(3607)
    );
    assert_eq!(
        sources[1].config_map.as_ref().unwrap().name,
        "kube-root-ca.crt"
    );
    let m = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (m.name.as_str(), m.mount_path.as_str(), m.read_only),
        (
            v.name.as_str(),
            "/var/run/secrets/kubernetes.io/serviceaccount",
            Some(true)
        )
    );
    // automountServiceAccountToken: false on the ServiceAccount.
    apply(&server, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet, namespace: shop}\nautomountServiceAccountToken: false\n").await;
    let p = pods
        .create(&PostParams::default(), &pod("p3", Some("quiet")))
        .await
        .unwrap();
    assert!(p.spec.unwrap().volumes.is_none());
    pods.delete("p2", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn kube_root_ca_is_published_and_restored() {
    let server = start().await;
    new_ns(&server, "fresh").await;
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "fresh");
    let ca = server.ca_pem().to_string();
    let has_ca = |cms: Api<ConfigMap>, ca: String| async move {
        cms.get_opt("kube-root-ca.crt")
            .await
            .unwrap()
            .and_then(|c| c.data)
            .and_then(|d| d.get("ca.crt").cloned())
            == Some(ca)
    };
    eventually("kube-root-ca.crt in a new namespace", || {
        has_ca(cms.clone(), ca.clone())
    })
    .await;
    kubectl_ok(
        &server,
        &["delete", "configmap", "kube-root-ca.crt", "-n", "fresh"],
    )
    .await;
    eventually("recreated", || has_ca(cms.clone(), ca.clone())).await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "fresh",
            "--type=merge",
            "-p",
            r#"{"data":{"ca.crt":"tampered"}}"#,
        ],
    )
    .await;
    eventually("restored", || has_ca(cms.clone(), ca.clone())).await;
}

#[tokio::test]
async fn token_auth_file_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, "tok-ops-1,olga,1001,\"ops,oncall\"\n").unwrap();
    let server = start_with(ServerOptions {
        crds_dir: Some(fixtures()),
        token_auth_file: Some(file),
        users: vec![StaticUser {
            token: "tok-pete".into(),
            name: "pete".into(),
            uid: "7".into(),
            groups: vec![],
        }],
        ..Default::default()
    })
    .await;
    for (name, token, want) in [
        ("olga", "tok-ops-1", "[ops oncall system:authenticated]"),
        ("pete", "tok-pete", "[system:authenticated]"),
    ] {
        let kc = token_kubeconfig(&server, name, token);
        let out = kubectl_as(&server, &kc, &["auth", "whoami"]).await;
        assert!(
            out.stdout.contains(name) && out.stdout.contains(want),
            "{}",
            out.stdout
        );
    }
    // The file is parsed like kube-apiserver's: fewer than three columns is an error.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "tok,only-two\n").unwrap();
    let err = kube_sim::Server::start(ServerOptions {
        token_auth_file: Some(bad),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("at least 3 columns"), "{err}");
    let _: &Path = server.kubeconfig_path();
}
