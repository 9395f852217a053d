//! Admission webhooks as kube-apiserver calls them, through the installed kubectl (v1.32): an
//! HTTPS webhook server in this test, verified against `caBundle`, reached by URL or through a
//! Service and a Ready pod; denials, mutations, warnings, failure policies, selectors and the
//! `AdmissionReview` it receives.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use serde_json::{Value, json};

/// A webhook server: every review it got, and a CA bundle (base64 PEM) trusting it.
struct Hook {
    addr: SocketAddr,
    ca_bundle: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct HookState {
    reviews: Arc<Mutex<Vec<Value>>>,
}

fn respond(review: &Value, response: Value) -> Json<Value> {
    let mut r = response;
    r["uid"] = review["request"]["uid"].clone();
    Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r}))
}

/// `/deny`: refuses objects labelled `deny`, with the label's value as message and code 403.
async fn deny(State(s): State<HookState>, Json(review): Json<Value>) -> Json<Value> {
    s.reviews.lock().unwrap().push(review.clone());
    let reason = review["request"]["object"]["metadata"]["labels"]["deny"].as_str();
    match reason {
        Some(why) => respond(
            &review,
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": why}}),
        ),
        None => respond(
            &review,
            json!({"allowed": true, "warnings": ["looked at it"]}),
        ),
    }
}

/// `/stamp`: adds the requester as an annotation.
async fn stamp(State(s): State<HookState>, Json(review): Json<Value>) -> Json<Value> {
    s.reviews.lock().unwrap().push(review.clone());
    let user = review["request"]["userInfo"]["username"]
        .as_str()
        .unwrap_or("");
    let has_annotations = review["request"]["object"]["metadata"]["annotations"].is_object();
    let mut patch = Vec::new();
    if !has_annotations {
        patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    patch.push(
        json!({"op": "add", "path": "/metadata/annotations/example.com~1requester", "value": user}),
    );
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&patch).unwrap());
    respond(
        &review,
        json!({"allowed": true, "patchType": "JSONPatch", "patch": encoded}),
    )
}

/// `/slow`: never answers in time.
async fn slow(Json(review): Json<Value>) -> Json<Value> {
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    respond(&review, json!({"allowed": true}))
}

async fn start_hook(names: &[&str]) -> Hook {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (listener, _accept) = kube_sim::tls::TlsListener::start(tcp, Arc::new(config)).unwrap();
    let reviews = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/deny", post(deny))
        .route("/stamp", post(stamp))
        .route("/slow", post(slow))
        .with_state(HookState {
            reviews: reviews.clone(),
        });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hook {
        addr,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca.pem()),
        reviews,
        _task: task,
    }
}

async fn admin_apply(server: &kube_sim::RunningServer, yaml: &str) -> Kubectl {
    kubectl_stdin(server, &["apply", "-f", "-"], Some(yaml)).await
}

fn configmap(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\ndata: {{a: b}}\n"
    )
}

#[tokio::test]
async fn url_webhooks_deny_mutate_warn_and_see_the_requester() {
    let server = start().await;
    let hook = start_hook(&["hook.example.com"]).await;
    assert!(admin_apply(&server, "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {hooked: \"yes\"}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n").await.ok);
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", hook.addr.port());
    let out = admin_apply(
        &server,
        &format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: deny-labelled}}
webhooks:
  - name: deny.example.com
    clientConfig: {{url: "{}", caBundle: {}}}
    rules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}}]
    namespaceSelector: {{matchLabels: {{hooked: "yes"}}}}
    sideEffects: None
    admissionReviewVersions: [v1]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: stamp-requester}}
webhooks:
  - name: stamp.example.com
    clientConfig: {{url: "{}", caBundle: {}}}
    rules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}]
    objectSelector: {{matchLabels: {{stamp: "yes"}}}}
    sideEffects: None
    admissionReviewVersions: [v1]
"#,
            url("/deny"),
            hook.ca_bundle,
            url("/stamp"),
            hook.ca_bundle
        ),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // Denied with the webhook's message and code.
    let out = admin_apply(&server, &configmap("team", "bad", "deny: not-today")).await;
    assert!(
        !out.ok
            && out.stderr.contains("Error from server (Forbidden)")
            && out
                .stderr
                .contains("admission webhook \"deny.example.com\" denied the request: not-today"),
        "{}",
        out.stderr
    );
    // Allowed, with the webhook's warning; the review carried the requester and the object
    // as it would be stored.
    let alice = server.add_user("alice", &["devs"]).unwrap();
    kubectl_ok(
        &server,
        &[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "team",
        ],
    )
    .await;
    let out = kubectl_with(
        &server,
        &alice,
        &["apply", "-f", "-"],
        Some(&configmap("team", "good", "stamp: \"yes\"")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("Warning: looked at it"),
        "{}",
        out.stderr
    );
    let stored: Value = serde_json::from_str(
        &kubectl_ok(
            &server,
            &["get", "configmap", "good", "-n", "team", "-o", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["example.com/requester"], "alice",
        "{stored:#}"
    );
    {
        let reviews = hook.reviews.lock().unwrap();
        let v = reviews
            .iter()
            .find(|r| {
                r["request"]["name"] == "good"
                    && r["request"]["object"]["metadata"]["annotations"]["example.com/requester"]
                        == "alice"
            })
            .expect("the validating webhook saw the mutated object");
        assert_eq!(v["request"]["operation"], "CREATE");
        assert_eq!(v["request"]["namespace"], "team");
        assert_eq!(v["request"]["userInfo"]["username"], "alice");
        assert_eq!(v["request"]["userInfo"]["groups"][0], "devs");
        assert_eq!(v["request"]["kind"]["kind"], "ConfigMap");
        assert_eq!(v["request"]["object"]["metadata"]["namespace"], "team");
        assert!(v["request"]["oldObject"].is_null());
    }
    // An update: oldObject is the stored object, and the denial applies.
    let out = admin_apply(
        &server,
        &configmap("team", "good", "stamp: \"yes\", deny: later"),
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("denied the request: later"),
        "{}",
        out.stderr
    );
    assert!(
        hook.reviews
            .lock()
            .unwrap()
            .iter()
            .any(|r| r["request"]["operation"] == "UPDATE"
                && r["request"]["oldObject"]["metadata"]["name"] == "good")
    );
    // Not selected: another namespace (namespaceSelector), an unlabelled object (objectSelector).
    assert!(
        admin_apply(&server, &configmap("other", "free", "deny: x"))
            .await
            .ok
    );
    let plain: Value = serde_json::from_str(
        &kubectl_ok(
            &server,
            &["get", "configmap", "free", "-n", "other", "-o", "json"],
        )
        .await,
    )
    .unwrap();
    assert!(
        plain["metadata"]["annotations"]
            .get("example.com/requester")
            .is_none()
    );
    // A dry run is admitted like the real thing and stores nothing.
    let out = kubectl_stdin(
        &server,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&configmap("team", "dry", "deny: dry")),
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("denied the request: dry"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn service_webhooks_failure_policies_timeouts_and_trust() {
    let server = start().await;
    let hook = start_hook(&["hook.team.svc"]).await;
    assert!(
        admin_apply(
            &server,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
        )
        .await
        .ok
    );
    // The webhook's Service selects a Ready pod whose IP is where the server listens.
    assert!(
        admin_apply(
            &server,
            &format!(
                r#"apiVersion: v1
kind: Service
metadata: {{name: hook, namespace: team}}
spec:
  selector: {{app: hook}}
  ports: [{{port: 443, targetPort: https}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hook-0, namespace: team, labels: {{app: hook}}}}
spec:
  containers: [{{name: hook, image: hook, ports: [{{name: https, containerPort: {}}}]}}]
"#,
                hook.addr.port()
            ),
        )
        .await
        .ok
    );
    let config = |policy: &str, path: &str, ca: &str, timeout: u32| {
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: svc-hook}}
webhooks:
  - name: svc.example.com
    clientConfig:
      service: {{namespace: team, name: hook, path: "{path}"}}
      caBundle: {ca}
    rules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [secrets]}}]
    failurePolicy: {policy}
    timeoutSeconds: {timeout}
    sideEffects: None
    admissionReviewVersions: [v1]
"#
        )
    };
    assert!(
        admin_apply(&server, &config("Fail", "/deny", &hook.ca_bundle, 10))
            .await
            .ok
    );
    let secret = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: team\n  labels: {{{labels}}}\n"
        )
    };
    // The pod is not Ready: no endpoints, and Fail refuses.
    let out = admin_apply(&server, &secret("s1", "")).await;
    assert!(
        !out.ok
            && out.stderr.contains("Internal error occurred: failed calling webhook \"svc.example.com\": failed to call webhook: Post \"https://hook.team.svc:443/deny?timeout=10s\": no endpoints available for service \"hook\""),
        "{}",
        out.stderr
    );
    kubectl_ok(
        &server,
        &[
            "patch", "pod", "hook-0", "-n", "team", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"phase":"Running","podIP":"127.0.0.1","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
    )
    .await;
    assert!(admin_apply(&server, &secret("s1", "")).await.ok);
    let out = admin_apply(&server, &secret("s2", "deny: nope")).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("admission webhook \"svc.example.com\" denied the request: nope"),
        "{}",
        out.stderr
    );
    // A CA bundle that does not trust the server: Fail refuses, Ignore admits.
    let stranger = start_hook(&["hook.team.svc"]).await;
    assert!(
        admin_apply(&server, &config("Fail", "/deny", &stranger.ca_bundle, 10))
            .await
            .ok
    );
    let out = admin_apply(&server, &secret("s3", "")).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("failed calling webhook \"svc.example.com\"")
            && out.stderr.contains("certificate"),
        "{}",
        out.stderr
    );
    assert!(
        admin_apply(&server, &config("Ignore", "/deny", &stranger.ca_bundle, 10))
            .await
            .ok
    );
    assert!(admin_apply(&server, &secret("s3", "")).await.ok);
    // A webhook slower than its timeout.
    assert!(
        admin_apply(&server, &config("Fail", "/slow", &hook.ca_bundle, 1))
            .await
            .ok
    );
    let out = admin_apply(&server, &secret("s4", "")).await;
    assert!(
        !out.ok && out.stderr.contains("context deadline exceeded"),
        "{}",
        out.stderr
    );
}
