//! `examples/` is valid against the generated CRDs, and every file in `tests/bad-examples/`
//! is refused with a message that names the field and says what is wrong.
//!
//! Validation is done the way the API server does it (prune unknown fields, apply defaults,
//! OpenAPI schema via a JSON-Schema library, CEL rules with transition rules on update) by
//! `kube_sim::validation`, against the schemas of `dataguardian::api::crds()`.
//!
//! A bad example states what must be reported in header comments:
//! `# expect: <the exact error line>`, one per error; every reported error must be expected
//! and every expectation must be reported (so each file holds exactly the mistakes it claims).
//! A file with two documents is an update: the first document is the stored object, the
//! second the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kube_sim::validation::SchemaValidator;
use serde_json::Value;

#[path = "shared/released_crds.rs"]
mod released_crds;
use released_crds::{admit, is_dataguardian, parse_documents, releases, yaml_files};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_documents(&text, &path.display().to_string())
}

/// Schema validators by kind, from the generated CRDs.
fn validators() -> BTreeMap<String, (Value, SchemaValidator)> {
    dataguardian::api::crds()
        .into_iter()
        .map(|crd| {
            let schema = serde_json::to_value(
                crd.spec.versions[0]
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            let validator = SchemaValidator::new(&schema).unwrap();
            (crd.spec.names.kind.clone(), (schema, validator))
        })
        .collect()
}

/// What the API server would do with a write: prune, default, validate.
/// Returns the pruned unknown fields and the validation errors.
fn typed_round_trip(obj: &Value) {
    fn check<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) {
        let typed: T = serde_json::from_value(obj.clone())
            .unwrap_or_else(|e| panic!("{}: does not deserialize: {e}", obj["metadata"]["name"]));
        serde_json::to_value(&typed).unwrap();
    }
    use dataguardian::api::*;
    match obj["kind"].as_str().unwrap() {
        "BackupStorage" => check::<BackupStorage>(obj),
        "BackupPolicy" => check::<BackupPolicy>(obj),
        "BackupRun" => check::<BackupRun>(obj),
        "RestoreRun" => check::<RestoreRun>(obj),
        "RestoreValidation" => check::<RestoreValidation>(obj),
        other => panic!("unknown DataGuardian kind {other}"),
    }
}

#[test]
fn every_example_is_valid_against_the_generated_crds() {
    let validators = validators();
    let mut checked = 0;
    for file in yaml_files(&root().join("examples")) {
        for obj in documents(&file) {
            if obj["kind"] == "Namespace" {
                assert_eq!(obj["metadata"]["name"], "shop");
                continue;
            }
            assert_eq!(
                obj["metadata"]["namespace"],
                "shop",
                "{}: every example lives in namespace shop",
                file.display()
            );
            if !is_dataguardian(&obj) {
                continue;
            }
            let name = format!(
                "{} {}/{}",
                file.display(),
                obj["kind"],
                obj["metadata"]["name"]
            );
            let (unknown, errors) = admit(&validators, &obj, None);
            assert!(unknown.is_empty(), "{name}: unknown fields {unknown:?}");
            let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert!(errors.is_empty(), "{name} is invalid: {rendered:#?}");
            // Updating an object with itself passes the transition rules too.
            let (_, errors) = admit(&validators, &obj, Some(&obj));
            assert!(
                errors.is_empty(),
                "{name}: no-op update refused: {errors:?}"
            );
            typed_round_trip(&obj);
            checked += 1;
        }
    }
    assert!(
        checked >= 9,
        "only {checked} DataGuardian objects in examples/"
    );
}

/// Every object of a kind in examples/, by name.
fn objects_by_kind() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for file in yaml_files(&root().join("examples")) {
        for obj in documents(&file) {
            let kind = obj["kind"].as_str().unwrap().to_string();
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            out.insert((kind, name), obj);
        }
    }
    out
}

fn walk_refs(v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k.ends_with("Ref") || k.ends_with("Refs") {
                    match child {
                        Value::Array(items) => {
                            out.extend(items.iter().map(|i| (k.clone(), i.clone())))
                        }
                        other => out.push((k.clone(), other.clone())),
                    }
                }
                walk_refs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk_refs(i, out)),
        _ => {}
    }
}

#[test]
fn every_reference_in_the_examples_resolves_within_the_examples() {
    let objects = objects_by_kind();
    for ((kind, name), obj) in objects.iter().filter(|(_, o)| is_dataguardian(o)) {
        let mut refs = Vec::new();
        walk_refs(&obj["spec"], &mut refs);
        for (field, reference) in refs {
            let target = reference["name"].as_str().unwrap().to_string();
            let target_kind = match field.as_str() {
                "storageRef" | "secondaryStorageRefs" => "BackupStorage",
                "policyRef" => "BackupPolicy",
                "backupRunRef" => "BackupRun",
                f if f.ends_with("SecretRef") => "Secret",
                other => panic!("{kind}/{name}: unexpected reference field {other}"),
            };
            let found = objects
                .get(&(target_kind.to_string(), target.clone()))
                .unwrap_or_else(|| {
                    panic!("{kind}/{name}.{field} -> {target_kind}/{target} is not in examples/")
                });
            if let Some(key) = reference.get("key").and_then(Value::as_str) {
                let has_key =
                    found["stringData"].get(key).is_some() || found["data"].get(key).is_some();
                assert!(
                    has_key,
                    "{kind}/{name}.{field}: Secret {target} has no key {key}"
                );
            }
        }
    }
}

#[test]
fn examples_cover_what_a_platform_engineer_needs() {
    let objects = objects_by_kind();
    let has = |pred: &dyn Fn(&Value) -> bool| objects.values().any(pred);
    assert!(has(
        &|o| o["kind"] == "BackupStorage" && o["spec"]["s3"]["objectLock"].is_object()
    ));
    assert!(has(&|o| o["kind"] == "BackupStorage"
        && o["spec"]["s3"].is_object()
        && o["spec"]["s3"]["objectLock"].is_null()));
    assert!(has(
        &|o| o["kind"] == "BackupStorage" && o["spec"]["filesystem"].is_object()
    ));
    assert!(has(
        &|o| o["kind"] == "BackupPolicy" && o["spec"]["source"]["postgres"].is_object()
    ));
    assert!(has(
        &|o| o["kind"] == "BackupPolicy" && o["spec"]["source"]["mysql"].is_object()
    ));
    assert!(has(
        &|o| o["kind"] == "BackupRun" && o["spec"]["trigger"] == "Manual"
    ));
    assert!(has(&|o| o["kind"] == "RestoreRun"));
    assert!(has(&|o| o["kind"] == "RestoreValidation"));
    assert!(has(&|o| o["kind"] == "Secret"));
}

/// The `# expect:` lines of a bad example.
fn expectations(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn every_bad_example_is_refused_with_a_message_naming_field_and_problem() {
    let validators = validators();
    let files = yaml_files(&root().join("tests/bad-examples"));
    assert!(files.len() >= 15, "too few bad examples: {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let expected = expectations(file);
        assert!(
            !expected.is_empty(),
            "{}: no `# expect:` line",
            file.display()
        );
        let docs = documents(file);
        let (old, new) = match docs.as_slice() {
            [new] => (None, new),
            [old, new] => (Some(old), new),
            _ => panic!("{}: one document, or two (stored, updated)", file.display()),
        };
        assert!(is_dataguardian(new), "{}", file.display());
        let (unknown, errors) = admit(&validators, new, old);
        assert!(
            unknown.is_empty(),
            "{}: unknown fields {unknown:?} (typo?)",
            file.display()
        );
        let reported: BTreeSet<String> = errors.iter().map(ToString::to_string).collect();
        let expected: BTreeSet<String> = expected.into_iter().collect();
        if reported != expected {
            failures.push(format!(
                "{}:\n  expected: {expected:#?}\n  reported: {reported:#?}",
                file.display()
            ));
        }
        // Every message names a field of the object and what is wrong with it.
        for e in &errors {
            assert!(
                e.field.starts_with("spec"),
                "{}: {e} does not name a spec field",
                file.display()
            );
            assert!(!e.body().is_empty());
        }
        if let Some(old) = old {
            let (_, errors) = admit(&validators, old, None);
            assert!(
                errors.is_empty(),
                "{}: the stored object itself is invalid: {errors:?}",
                file.display()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Yesterday's YAML keeps working: every example is also valid against every released CRD
/// set (`released-crds/v*/`), so a change that would refuse it fails here (and in
/// `tests/crd_compat.rs`), not in a user's Argo CD. Fields a release does not know are pruned,
/// as its API server would (an example may show a field added since).
#[test]
fn every_example_is_valid_against_every_released_crd_set() {
    for (release, validators) in releases() {
        assert_eq!(validators.len(), 5, "{}", release.display());
        let mut checked = 0;
        for file in yaml_files(&root().join("examples")) {
            for obj in documents(&file).into_iter().filter(is_dataguardian) {
                let name = format!(
                    "{} {}/{} against {}",
                    file.display(),
                    obj["kind"],
                    obj["metadata"]["name"],
                    release.display()
                );
                let (_pruned, errors) = admit(&validators, &obj, None);
                let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
                assert!(errors.is_empty(), "{name} is invalid: {rendered:#?}");
                checked += 1;
            }
        }
        assert!(checked >= 9, "only {checked} objects checked");
    }
}

/// The gate the e2e harness applies to every object it writes (`released_crds::refusals`)
/// names the release and the field when a release refuses what today's CRDs accept.
#[test]
fn an_object_a_release_refuses_is_reported_with_release_and_field() {
    let policy = objects_by_kind()
        .into_iter()
        .find(|((kind, _), v)| {
            kind == "BackupPolicy" && v["spec"]["compression"]["algorithm"] == "gzip"
        })
        .map(|(_, v)| v)
        .expect("an example BackupPolicy with gzip compression");
    let all = releases();
    assert!(released_crds::refusals(&all, &policy).is_empty());
    let (dir, mut validators) = all.into_iter().next().unwrap();
    // That release, had it known only zstd:
    let (schema, _) = validators.remove("BackupPolicy").unwrap();
    let mut narrowed = schema.clone();
    narrowed["properties"]["spec"]["properties"]["compression"]["properties"]["algorithm"]["enum"] =
        serde_json::json!(["zstd"]);
    let validator = SchemaValidator::new(&narrowed).unwrap();
    validators.insert("BackupPolicy".into(), (narrowed, validator));
    let all = [(dir, validators)];
    let refused = released_crds::refusals(&all, &policy);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    // An object that uses a field the release does not know is not yesterday's YAML: that
    // release does not judge it.
    let mut newer = policy.clone();
    newer["spec"]["fieldFromTheFuture"] = serde_json::json!(true);
    assert!(released_crds::refusals(&all, &newer).is_empty());
    assert!(
        refused[0].starts_with("v0.1.0: spec.compression.algorithm: Unsupported value: \"gzip\""),
        "{refused:#?}"
    );
}
