//! ValidatingAdmissionPolicies, through the installed kubectl (v1.32): what kube-apiserver's
//! admission plugin does with `matchConstraints`, bindings' `matchResources`, parameters (by
//! name and by selector, `parameterNotFoundAction`), `matchConditions`, `variables`,
//! `messageExpression`, `reason`, `failurePolicy` and `validationActions` (Deny, Warn, Audit),
//! with the apiserver's texts.

mod common;

use common::*;

/// Applies `yaml` as the cluster admin; panics on failure.
async fn admin_apply(server: &kube_sim::RunningServer, yaml: &str) {
    let out = kubectl_stdin(server, &["apply", "-f", "-"], Some(yaml)).await;
    assert!(out.ok, "apply: {}\n{yaml}", out.stderr);
}

const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: small-configmaps}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: [CREATE, UPDATE]
        resources: [configmaps]
  matchConditions:
    - name: not-exempt
      expression: "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"
  variables:
    - name: count
      expression: "has(object.data) ? size(object.data) : 0"
  validations:
    - expression: variables.count <= int(params.data.maxKeys)
      messageExpression: "'at most ' + params.data.maxKeys + ' keys, got ' + string(variables.count)"
    - expression: "!has(object.data) || !('password' in object.data)"
      message: passwords belong in Secrets
      reason: Forbidden
"#;

fn binding(actions: &str, ns_label: &str) -> String {
    format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: small-configmaps-binding}}
spec:
  policyName: small-configmaps
  validationActions: {actions}
  paramRef: {{name: limits, namespace: policy-params, parameterNotFoundAction: Deny}}
  matchResources:
    namespaceSelector:
      matchLabels: {{{ns_label}: "true"}}
"#
    )
}

fn configmap(ns: &str, name: &str, keys: usize, extra: &str) -> String {
    let data: Vec<String> = (0..keys).map(|i| format!("  k{i}: v")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n{extra}data:\n{}\n",
        data.join("\n")
    )
}

#[tokio::test]
async fn deny_warn_params_conditions_and_selectors() {
    let server = start().await;
    admin_apply(
        &server,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: policy-params}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: governed, labels: {governed: \"true\"}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: free}\n",
    )
    .await;
    admin_apply(&server, POLICY).await;
    admin_apply(&server, &binding("[Deny]", "governed")).await;

    // The parameter object does not exist and the binding says Deny.
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(&configmap("governed", "a", 1, "")),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "The configmaps \"a\" is invalid: : ValidatingAdmissionPolicy 'small-configmaps' with binding 'small-configmaps-binding' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
        ),
        "{}",
        out.stderr
    );
    admin_apply(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: limits, namespace: policy-params}\ndata: {maxKeys: \"2\"}\n",
    )
    .await;

    // Within the limit: admitted. Over it: the messageExpression, reason Invalid (422, which
    // kubectl prints as in the Kubernetes documentation's example: `is invalid: : …`).
    admin_apply(&server, &configmap("governed", "a", 2, "")).await;
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(&configmap("governed", "b", 3, "")),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
                "The configmaps \"b\" is invalid: : ValidatingAdmissionPolicy 'small-configmaps' with binding 'small-configmaps-binding' denied request: at most 2 keys, got 3"
            ),
        "{}",
        out.stderr
    );
    // An update is checked too.
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(&configmap("governed", "a", 3, "")),
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("at most 2 keys, got 3"),
        "{}",
        out.stderr
    );
    // A validation's own reason: Forbidden (403) with its message.
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: governed}\ndata: {password: x}\n"),
    )
    .await;
    assert!(
        !out.ok
            && out.stderr.contains("Error from server (Forbidden)")
            && out.stderr.contains("configmaps \"c\" is forbidden: ValidatingAdmissionPolicy 'small-configmaps' with binding 'small-configmaps-binding' denied request: passwords belong in Secrets"),
        "{}",
        out.stderr
    );
    // matchConditions: an exempt object is not checked; other namespaces are not bound.
    admin_apply(
        &server,
        &configmap("governed", "d", 5, "  labels: {exempt: \"yes\"}\n"),
    )
    .await;
    admin_apply(&server, &configmap("free", "e", 5, "")).await;
    // Server-side dry run is admitted the same way.
    let out = kubectl_stdin(
        &server,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&configmap("governed", "f", 4, "")),
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("at most 2 keys, got 4"),
        "{}",
        out.stderr
    );

    // Warn: admitted with the apiserver's warning text.
    admin_apply(&server, &binding("[Warn]", "governed")).await;
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(&configmap("governed", "g", 3, "")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'small-configmaps' with binding 'small-configmaps-binding': at most 2 keys, got 3"
        ),
        "{}",
        out.stderr
    );
    // Audit only: admitted silently.
    admin_apply(&server, &binding("[Audit]", "governed")).await;
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(&configmap("governed", "h", 3, "")),
    )
    .await;
    assert!(out.ok && !out.stderr.contains("Warning"), "{}", out.stderr);

    // A binding without its policy does nothing; a policy without a binding neither.
    kubectl_ok(
        &server,
        &["delete", "validatingadmissionpolicy", "small-configmaps"],
    )
    .await;
    admin_apply(&server, &binding("[Deny]", "governed")).await;
    admin_apply(&server, &configmap("governed", "i", 9, "")).await;
}

#[tokio::test]
async fn selected_params_failure_policy_and_users() {
    let server = start().await;
    admin_apply(
        &server,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
    )
    .await;
    // One evaluation per selected parameter (here: the namespace's ConfigMaps labelled
    // `banned`), none selected and Allow: nothing to check.
    admin_apply(
        &server,
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-banned-names}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: [CREATE], resources: [secrets]}
  validations:
    - expression: object.metadata.name != params.data.name
      messageExpression: "'the name ' + params.data.name + ' is banned by ' + params.metadata.name + ' (asked by ' + request.userInfo.username + ')'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-banned-names}
spec:
  policyName: no-banned-names
  validationActions: [Deny]
  paramRef:
    selector: {matchLabels: {banned: "yes"}}
    parameterNotFoundAction: Allow
"#,
    )
    .await;
    admin_apply(
        &server,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: admin, namespace: team}\n",
    )
    .await;
    admin_apply(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ban-admin, namespace: team, labels: {banned: \"yes\"}}\ndata: {name: admin2}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ban-root, namespace: team, labels: {banned: \"yes\"}}\ndata: {name: root}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated, namespace: team}\ndata: {name: fine}\n",
    )
    .await;
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
    let out = kubectl_as(
        &server,
        &alice,
        &["create", "secret", "generic", "root", "-n", "team"],
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("denied request: the name root is banned by ban-root (asked by alice)"),
        "{}",
        out.stderr
    );
    let out = kubectl_as(
        &server,
        &alice,
        &["create", "secret", "generic", "fine", "-n", "team"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // An expression that fails to evaluate: failurePolicy Fail denies, Ignore admits.
    let broken = |fp: &str| {
        format!(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: broken}}
spec:
  failurePolicy: {fp}
  matchConstraints:
    resourceRules:
      - {{apiGroups: [""], apiVersions: ["v1"], operations: [CREATE], resources: [configmaps]}}
  validations:
    - expression: object.data.missing == 'x'
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: broken}}
spec:
  policyName: broken
  validationActions: [Deny]
  matchResources:
    objectSelector: {{matchLabels: {{check: "yes"}}}}
"#
        )
    };
    admin_apply(&server, &broken("Fail")).await;
    let labelled = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: team, labels: {check: \"yes\"}}\ndata: {a: b}\n";
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(labelled)).await;
    assert!(
        !out.ok
            && out.stderr.contains(
                "denied request: expression 'object.data.missing == 'x'' resulted in error"
            ),
        "{}",
        out.stderr
    );
    // The objectSelector: an unlabelled object is not checked.
    admin_apply(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain, namespace: team}\ndata: {a: b}\n",
    )
    .await;
    admin_apply(&server, &broken("Ignore")).await;
    admin_apply(&server, labelled).await;
}

#[tokio::test]
async fn policies_and_bindings_are_validated_on_write() {
    let server = start().await;
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: bad}
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: [CREATE], resources: [configmaps]}
  validations:
    - expression: "object.metadata.name =="
"#,
        ),
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("spec.validations[0].expression: Invalid value")
            && out.stderr.contains("compilation failed"),
        "{}",
        out.stderr
    );
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: bad}
spec:
  policyName: whatever
  validationActions: [Deny, Warn]
"#,
        ),
    )
    .await;
    assert!(
        !out.ok && out.stderr.contains("must not contain both Deny and Warn"),
        "{}",
        out.stderr
    );
    // Defaults are filled in as the apiserver does.
    kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: good}
spec:
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: ["v1"], operations: [CREATE], resources: [configmaps]}
  validations:
    - expression: "true"
"#,
        ),
    )
    .await;
    let got = kubectl_ok(
        &server,
        &["get", "validatingadmissionpolicy", "good", "-o", "json"],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["spec"]["failurePolicy"], "Fail");
    assert_eq!(v["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
    assert_eq!(
        v["spec"]["matchConstraints"]["resourceRules"][0]["scope"],
        "*"
    );
}
