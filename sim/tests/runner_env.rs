//! Container environment as the kubelet builds it: `$(VAR)` expansion, envFrom, secretKeyRef,
//! configMapKeyRef, fieldRef, resourceFieldRef, optional references and their errors.

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube_sim::runner::env::{
    EnvError, EnvSources, expand_command, field_value, referenced_objects, resolve_env,
};
use kube_sim::runner::expand::expand;
use serde_json::json;

fn lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("alpha".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

#[test]
fn expansion_matches_kubernetes_rules() {
    let cases = [
        ("$(A)", "alpha"),
        ("x$(A)y", "xalphay"),
        ("$(A)$(A)", "alphaalpha"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$", "$"),
        ("a$b", "a$b"),
        ("$(A", "$(A"),
        ("$(EMPTY)-", "-"),
        ("${A}", "${A}"),
        ("$$$(A)", "$alpha"),
        ("ünï$(A)cödé", "ünïalphacödé"),
        ("$é", "$é"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, &lookup), want, "input {input:?}");
    }
}

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "job-abcde", "namespace": "shop", "uid": "pod-uid",
                     "labels": {"app": "agent"}, "annotations": {"note": "n"}},
        "spec": {"nodeName": "sim-node", "serviceAccountName": "dg", "containers": []},
        "status": {"podIP": "127.3.0.7", "podIPs": [{"ip": "127.3.0.7"}], "hostIP": "127.0.0.1"}
    }))
    .unwrap()
}

fn container(v: serde_json::Value) -> Container {
    let mut c = json!({"name": "main", "image": "busybox"});
    for (k, val) in v.as_object().unwrap() {
        c[k] = val.clone();
    }
    serde_json::from_value(c).unwrap()
}

fn sources() -> EnvSources {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db-creds"},
        "data": {"password": "czNjcjN0", "user": "YWRtaW4=", "bad name": "eA=="}
    }))
    .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"HOST": "db.shop.svc", "PORT": "5432"}
    }))
    .unwrap();
    let mut s = EnvSources::default();
    s.secrets.insert("db-creds".into(), secret);
    s.config_maps.insert("settings".into(), cm);
    s
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn resolves_every_source_in_kubelet_order() {
    let c = container(json!({
        "envFrom": [
            {"configMapRef": {"name": "settings"}},
            {"secretRef": {"name": "db-creds"}, "prefix": "DB_"}
        ],
        "env": [
            {"name": "PORT", "value": "6543"},
            {"name": "URL", "value": "postgres://$(DB_user)@$(HOST):$(PORT)/$(MISSING)"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "password"}}},
            {"name": "CM_HOST", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "HOST"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "LITERAL", "value": "$$(PORT)"}
        ]
    }));
    let env = resolve_env(&pod(), &c, &sources()).unwrap();
    assert_eq!(get(&env, "HOST"), Some("db.shop.svc"));
    assert_eq!(get(&env, "PORT"), Some("6543"), "env overrides envFrom");
    assert_eq!(get(&env, "DB_user"), Some("admin"));
    assert_eq!(get(&env, "DB_bad name"), None, "invalid names are skipped");
    assert_eq!(
        get(&env, "URL"),
        Some("postgres://admin@db.shop.svc:6543/$(MISSING)")
    );
    assert_eq!(get(&env, "PASSWORD"), Some("s3cr3t"));
    assert_eq!(get(&env, "CM_HOST"), Some("db.shop.svc"));
    assert_eq!(get(&env, "POD_NAME"), Some("job-abcde"));
    assert_eq!(get(&env, "POD_NS"), Some("shop"));
    assert_eq!(get(&env, "POD_IP"), Some("127.3.0.7"));
    assert_eq!(get(&env, "POD_UID"), Some("pod-uid"));
    assert_eq!(get(&env, "NODE"), Some("sim-node"));
    assert_eq!(get(&env, "APP"), Some("agent"));
    assert_eq!(get(&env, "CPU"), Some("2"));
    assert_eq!(get(&env, "LITERAL"), Some("$(PORT)"));
    // PORT keeps its first position (envFrom) with the overriding value.
    let pos = |k: &str| env.iter().position(|(n, _)| n == k).unwrap();
    assert!(pos("PORT") < pos("DB_user"));
}

#[test]
fn command_and_args_expand_against_the_final_env() {
    let env = vec![("POD_IP".to_string(), "127.3.0.7".to_string())];
    let out = expand_command(
        &[
            "--host=$(POD_IP)".into(),
            "$(NOPE)".into(),
            "$$(POD_IP)".into(),
        ],
        &env,
    );
    assert_eq!(out, vec!["--host=127.3.0.7", "$(NOPE)", "$(POD_IP)"]);
}

#[test]
fn missing_objects_and_keys_are_config_errors_with_kubelet_messages() {
    let c = container(
        json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}),
    );
    let err = resolve_env(&pod(), &c, &sources()).unwrap_err();
    assert_eq!(err, EnvError::SecretNotFound("nope".into()));
    assert_eq!(err.to_string(), "secret \"nope\" not found");

    let c = container(
        json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "k"}}}]}),
    );
    assert_eq!(
        resolve_env(&pod(), &c, &sources()).unwrap_err().to_string(),
        "couldn't find key k in Secret shop/db-creds"
    );
    let c = container(
        json!({"env": [{"name": "P", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "k"}}}]}),
    );
    assert_eq!(
        resolve_env(&pod(), &c, &sources()).unwrap_err().to_string(),
        "couldn't find key k in ConfigMap shop/settings"
    );
    let c = container(json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}));
    assert_eq!(
        resolve_env(&pod(), &c, &sources()).unwrap_err().to_string(),
        "configmap \"gone\" not found"
    );
    let c = container(
        json!({"env": [{"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}),
    );
    assert!(matches!(
        resolve_env(&pod(), &c, &sources()),
        Err(EnvError::UnsupportedField(_))
    ));
}

#[test]
fn optional_references_are_skipped() {
    let c = container(json!({
        "envFrom": [{"secretRef": {"name": "gone", "optional": true}}],
        "env": [
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "nokey", "optional": true}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "D", "value": "d"}
        ]
    }));
    let env = resolve_env(&pod(), &c, &sources()).unwrap();
    assert_eq!(env, vec![("D".to_string(), "d".to_string())]);
}

#[test]
fn referenced_objects_lists_secrets_and_config_maps() {
    let c = container(json!({
        "envFrom": [{"secretRef": {"name": "s1"}}, {"configMapRef": {"name": "c1"}}],
        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c2", "key": "k"}}}]
    }));
    let (s, c) = referenced_objects(&c);
    assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["s1", "s2"]);
    assert_eq!(c.into_iter().collect::<Vec<_>>(), vec!["c1", "c2"]);
}

#[test]
fn field_values() {
    let p = pod();
    assert_eq!(field_value(&p, "status.hostIP").unwrap(), "127.0.0.1");
    assert_eq!(field_value(&p, "status.podIPs").unwrap(), "127.3.0.7");
    assert_eq!(field_value(&p, "spec.serviceAccountName").unwrap(), "dg");
    assert_eq!(
        field_value(&p, "metadata.annotations['note']").unwrap(),
        "n"
    );
    assert_eq!(field_value(&p, "metadata.labels['missing']").unwrap(), "");
}
