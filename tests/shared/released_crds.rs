//! Validation of DataGuardian objects against the CRDs as released (`released-crds/v*/`), the
//! way the API server validates them (prune unknown fields, apply defaults, OpenAPI schema, CEL
//! rules) with `kube_sim::validation`: yesterday's YAML must keep working, so every object the
//! examples and the e2e suite write must also be valid for every release (tests/examples.rs,
//! tests/e2e/harness.rs; tests/crd_compat.rs compares the schemas themselves).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube_sim::validation::{self, FieldError, SchemaValidator};
use serde::Deserialize;
use serde_json::Value;

/// Validators by kind: the CRD version's schema and its compiled validator.
pub type Validators = BTreeMap<String, (Value, SchemaValidator)>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `*.yaml`/`*.yml` files of `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The non-empty YAML documents of `text`, as JSON.
pub fn parse_documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{what}: not valid YAML: {e}"));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The validators of the CRD files in `dir`.
pub fn validators_from(dir: &Path) -> Validators {
    yaml_files(dir)
        .into_iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            parse_documents(&text, &f.display().to_string())
        })
        .map(|crd| {
            let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
            let validator = SchemaValidator::new(&schema).unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
            (kind, (schema, validator))
        })
        .collect()
}

/// The released CRD sets, oldest first: (`released-crds/vX.Y.Z`, validators).
pub fn releases() -> Vec<(PathBuf, Validators)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("released-crds"))
        .expect("released-crds/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no released CRD set in released-crds/");
    dirs.into_iter()
        .map(|d| {
            let v = validators_from(&d);
            (d, v)
        })
        .collect()
}

/// Admits `obj` (and `old` on update) as the API server would: the unknown fields it prunes
/// and the validation errors.
pub fn admit(
    validators: &Validators,
    obj: &Value,
    old: Option<&Value>,
) -> (Vec<String>, Vec<FieldError>) {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (schema, validator) = validators
        .get(kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let prepare = |o: &Value| {
        let mut o = o.clone();
        let unknown = validation::prune(schema, &mut o);
        validation::apply_defaults(schema, &mut o);
        (o, unknown)
    };
    let (new, unknown) = prepare(obj);
    let old = old.map(|o| prepare(o).0);
    (unknown, validator.validate(&new, old.as_ref()))
}

/// Whether `obj` is one of DataGuardian's kinds.
pub fn is_dataguardian(obj: &Value) -> bool {
    obj["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("dataguardian.io/"))
}

/// What every released CRD set refuses in `obj` (none: yesterday's server takes it). An object
/// that uses fields a release does not know is not yesterday's YAML: that release is skipped
/// for it (its server would prune the new fields, and a rule about them, such as "exactly one
/// channel", could then fail for a reason no old object has).
pub fn refusals(releases: &[(PathBuf, Validators)], obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (dir, validators) in releases {
        let release = dir.file_name().unwrap().to_string_lossy();
        if !validators.contains_key(obj["kind"].as_str().unwrap_or_default()) {
            out.push(format!("{release}: no such kind {}", obj["kind"]));
            continue;
        }
        let (pruned, errors) = admit(validators, obj, None);
        if !pruned.is_empty() {
            continue;
        }
        out.extend(errors.iter().map(|e| format!("{release}: {e}")));
    }
    out
}
