//! The CRDs are the product's public API: the generated `crds/` must accept everything the
//! released CRDs (`released-crds/v*/`) accepted. Additions pass; anything that would refuse a
//! stored object or a manifest in git fails, naming the CRD, version, field and rule broken.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The CRDs (file name → object) of a directory.
fn load(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
    }
    out
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bounds where a larger new value is stricter (`min*`) or a smaller one is (`max*`).
const LOWER_BOUNDS: [&str; 5] = [
    "minimum",
    "minLength",
    "minItems",
    "minProperties",
    "exclusiveMinimum",
];
const UPPER_BOUNDS: [&str; 5] = [
    "maximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "exclusiveMaximum",
];

/// Compares one schema node; pushes every break found under `path`.
fn schema(old: &Value, new: &Value, path: &str, breaks: &mut Vec<String>) {
    let (ty_old, ty_new) = (old.get("type"), new.get("type"));
    if let Some(ty) = ty_old
        && ty_old != ty_new
    {
        breaks.push(format!(
            "{path}: type changed from {ty} to {}",
            ty_new
                .map(Value::to_string)
                .unwrap_or_else(|| "none".into())
        ));
        return;
    }
    match (old.get("enum"), new.get("enum")) {
        (Some(o), Some(n)) => {
            let missing: Vec<_> = strings(o).difference(&strings(n)).cloned().collect();
            if !missing.is_empty() {
                breaks.push(format!(
                    "{path}: enum narrowed, {missing:?} no longer allowed"
                ));
            }
        }
        (None, Some(_)) => breaks.push(format!("{path}: enum added (narrows accepted values)")),
        _ => {}
    }
    if let Some(p) = new.get("pattern")
        && old.get("pattern") != Some(p)
    {
        breaks.push(format!("{path}: pattern changed or added ({p})"));
    }
    if new.get("format").is_some() && old.get("format") != new.get("format") {
        breaks.push(format!("{path}: format changed or added"));
    }
    for key in LOWER_BOUNDS {
        if let Some(n) = new.get(key).and_then(Value::as_f64) {
            match old.get(key).and_then(Value::as_f64) {
                Some(o) if n <= o => {}
                o => breaks.push(format!("{path}: {key} raised from {o:?} to {n}")),
            }
        }
    }
    for key in UPPER_BOUNDS {
        if let Some(n) = new.get(key).and_then(Value::as_f64) {
            match old.get(key).and_then(Value::as_f64) {
                Some(o) if n >= o => {}
                o => breaks.push(format!("{path}: {key} lowered from {o:?} to {n}")),
            }
        }
    }
    if old.get("nullable") == Some(&Value::Bool(true)) && new.get("nullable") != old.get("nullable")
    {
        breaks.push(format!("{path}: no longer nullable"));
    }
    if old.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && new.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
    {
        breaks.push(format!("{path}: unknown fields are no longer preserved"));
    }
    let rules = |v: &Value| -> BTreeSet<String> {
        v.get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("rule").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_rules = rules(old);
    for rule in rules(new).difference(&old_rules) {
        if !old_rules
            .iter()
            .any(|o| counts_new_fields_only(o, rule, old))
            && !guarded_by_a_new_field(rule, old)
            && !implied_by_a_required_field(rule, old)
        {
            breaks.push(format!("{path}: new or changed CEL rule `{rule}`"));
        }
    }
    let required = |v: &Value| strings(v.get("required").unwrap_or(&Value::Null));
    for field in required(new).difference(&required(old)) {
        breaks.push(format!("{path}.{field}: newly required"));
    }
    if let Some(props) = old.get("properties").and_then(Value::as_object) {
        for (name, old_prop) in props {
            match new.get("properties").and_then(|p| p.get(name)) {
                Some(new_prop) => schema(old_prop, new_prop, &format!("{path}.{name}"), breaks),
                None => breaks.push(format!("{path}.{name}: removed or renamed")),
            }
        }
    }
    if let (Some(o), Some(n)) = (old.get("items"), new.get("items")) {
        schema(o, n, &format!("{path}[]"), breaks);
    }
    if let (Some(o), Some(n)) = (
        old.get("additionalProperties").filter(|v| v.is_object()),
        new.get("additionalProperties"),
    ) {
        schema(o, n, &format!("{path}{{*}}"), breaks);
    }
}

/// Whether `new` is the "exactly N of these fields" rule `old` extended with terms
/// `(has(self.f) ? 1 : 0)` for fields `f` that `old_schema` does not have: every object the old
/// schema accepted lacks them (unknown fields are pruned), so each new term is 0 there and the
/// new rule accepts it too (e.g. a new notification channel beside `webhook` and `slack`).
fn counts_new_fields_only(old: &str, new: &str, old_schema: &Value) -> bool {
    let Some((old_sum, old_rhs)) = old.rsplit_once(" == ") else {
        return false;
    };
    let Some((new_sum, new_rhs)) = new.rsplit_once(" == ") else {
        return false;
    };
    let Some(extra) = new_sum.strip_prefix(old_sum) else {
        return false;
    };
    if old_rhs != new_rhs || extra.is_empty() {
        return false;
    }
    extra.split(" + ").skip(1).all(|term| {
        term.strip_prefix("(has(self.")
            .and_then(|t| t.strip_suffix(") ? 1 : 0)"))
            .is_some_and(|field| {
                field.chars().all(|c| c.is_ascii_alphanumeric())
                    && old_schema["properties"].get(field).is_none()
            })
    }) && extra.starts_with(" + ")
}

/// Whether `rule` is `!has(self.f) || …` for a field `f` that `old_schema` does not have, the
/// guard being a top-level disjunct: every object the old schema accepted lacks `f` (unknown
/// fields are pruned), so the rule holds for it (e.g. rules tying a new `masking` block to
/// its siblings). A rest with a conditional (`?:` binds looser than `||`) or that closes the
/// guard's disjunction early is not exempt.
fn guarded_by_a_new_field(rule: &str, old_schema: &Value) -> bool {
    let Some(rest) = rule.strip_prefix("!has(self.") else {
        return false;
    };
    let Some((field, rest)) = rest.split_once(") || ") else {
        return false;
    };
    let mut depth = 0i32;
    let balanced = rest.chars().all(|c| {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        depth >= 0
    }) && depth == 0;
    !field.is_empty()
        && field.chars().all(|c| c.is_ascii_alphanumeric())
        && old_schema["properties"].get(field).is_none()
        && !rest.contains('?')
        && balanced
}

/// Whether `rule` is `has(self.f) || …` for a field `f` that `old_schema` requires, the test
/// being a top-level disjunct: every object the old schema accepted has `f`, so the rule holds
/// for it (e.g. `has(self.recipientsSecretRef) || has(self.kms)` when `recipientsSecretRef`, once
/// required, becomes optional beside a new alternative).
fn implied_by_a_required_field(rule: &str, old_schema: &Value) -> bool {
    let Some(rest) = rule.strip_prefix("has(self.") else {
        return false;
    };
    let Some((field, rest)) = rest.split_once(") || ") else {
        return false;
    };
    let mut depth = 0i32;
    let balanced = rest.chars().all(|c| {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        depth >= 0
    }) && depth == 0;
    !field.is_empty()
        && field.chars().all(|c| c.is_ascii_alphanumeric())
        && strings(old_schema.get("required").unwrap_or(&Value::Null)).contains(field)
        && !rest.contains('?')
        && balanced
}

/// Every break of `new` against the released `old` CRD.
fn compare(old: &Value, new: &Value) -> Vec<String> {
    let name = old["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let mut breaks = Vec::new();
    for key in ["group", "scope"] {
        if old["spec"][key] != new["spec"][key] {
            breaks.push(format!("{name}: spec.{key} changed"));
        }
    }
    for key in ["kind", "plural", "singular", "listKind"] {
        if old["spec"]["names"][key] != new["spec"]["names"][key] {
            breaks.push(format!("{name}: names.{key} changed"));
        }
    }
    for key in ["shortNames", "categories"] {
        for gone in
            strings(&old["spec"]["names"][key]).difference(&strings(&new["spec"]["names"][key]))
        {
            breaks.push(format!("{name}: names.{key} lost {gone:?}"));
        }
    }
    let empty = Vec::new();
    let versions = |v: &Value| {
        v["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let new_versions = versions(new);
    for ov in versions(old) {
        let vname = ov["name"].as_str().unwrap_or("?");
        let at = format!("{name} {vname}");
        let Some(nv) = new_versions.iter().find(|v| v["name"] == ov["name"]) else {
            breaks.push(format!("{at}: version removed"));
            continue;
        };
        if ov["served"] == Value::Bool(true) && nv["served"] != Value::Bool(true) {
            breaks.push(format!("{at}: no longer served"));
        }
        for col in ov["additionalPrinterColumns"].as_array().unwrap_or(&empty) {
            let same = nv["additionalPrinterColumns"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .any(|c| c["name"] == col["name"] && c["jsonPath"] == col["jsonPath"]);
            if !same {
                breaks.push(format!(
                    "{at}: printer column {} ({}) removed or changed",
                    col["name"], col["jsonPath"]
                ));
            }
        }
        for sub in ["status", "scale"] {
            if ov["subresources"].get(sub).is_some() && nv["subresources"].get(sub).is_none() {
                breaks.push(format!("{at}: subresource {sub} removed"));
            }
        }
        schema(
            &ov["schema"]["openAPIV3Schema"],
            &nv["schema"]["openAPIV3Schema"],
            &at,
            &mut breaks,
        );
    }
    breaks
}

fn releases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo("released-crds"))
        .expect("released-crds/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn the_generated_crds_accept_everything_every_release_accepted() {
    let generated = load(&repo("crds"));
    let releases = releases();
    assert!(!releases.is_empty(), "no release under released-crds/");
    let mut breaks = Vec::new();
    for dir in &releases {
        for (file, old) in load(dir) {
            let at = format!("{}/{file}", dir.file_name().unwrap().to_string_lossy());
            match generated.iter().find(|(f, _)| *f == file) {
                None => breaks.push(format!("{at}: CRD removed")),
                Some((_, new)) => {
                    breaks.extend(compare(&old, new).into_iter().map(|b| format!("{at}: {b}")))
                }
            }
        }
    }
    assert!(
        breaks.is_empty(),
        "the CRDs break their released API (add a new API version instead; docs in released-crds/README.md):\n{}",
        breaks.join("\n")
    );
}

/// The gate catches each kind of break, naming the field, and lets additions through.
#[test]
fn each_kind_of_break_is_caught_and_additions_pass() {
    let (_, old) = load(&repo("crds"))
        .into_iter()
        .find(|(f, _)| f == "backuppolicies.dataguardian.io.yaml")
        .expect("the BackupPolicy CRD");
    let spec = "/spec/versions/0/schema/openAPIV3Schema/properties/spec";
    let check = |what: &str, expect: &str, edit: &dyn Fn(&mut Value)| {
        let mut new = old.clone();
        edit(&mut new);
        let breaks = compare(&old, &new);
        assert!(
            breaks.iter().any(|b| b.contains(expect)),
            "{what}: expected a break containing {expect:?}, got {breaks:#?}"
        );
    };
    check("removed field", ".spec.schedule: removed", &|v| {
        v.pointer_mut(&format!("{spec}/properties"))
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove("schedule");
    });
    check("changed type", ".spec.schedule: type changed", &|v| {
        v.pointer_mut(&format!("{spec}/properties/schedule/type"))
            .map(|t| *t = Value::from("integer"))
            .unwrap();
    });
    check("new required", ".spec.retention: newly required", &|v| {
        let s = v.pointer_mut(spec).unwrap();
        let req = s
            .as_object_mut()
            .unwrap()
            .entry("required")
            .or_insert(Value::Array(Vec::new()));
        req.as_array_mut().unwrap().push("retention".into());
    });
    check(
        "new CEL rule",
        "new or changed CEL rule `self.size() < 3`",
        &|v| {
            let s = v
                .pointer_mut(&format!("{spec}/properties/schedule"))
                .unwrap();
            s.as_object_mut().unwrap().insert(
                "x-kubernetes-validations".into(),
                serde_json::json!([{"rule": "self.size() < 3", "message": "short"}]),
            );
        },
    );
    check("new bound", "maxLength lowered", &|v| {
        let s = v
            .pointer_mut(&format!("{spec}/properties/schedule"))
            .unwrap();
        s.as_object_mut()
            .unwrap()
            .insert("maxLength".into(), Value::from(2));
    });
    check("lost short name", "names.shortNames lost", &|v| {
        v["spec"]["names"]["shortNames"] = Value::Array(Vec::new());
    });
    check("removed column", "printer column", &|v| {
        v["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array_mut()
            .unwrap()
            .remove(0);
    });
    check("removed version", "version removed", &|v| {
        v["spec"]["versions"][0]["name"] = Value::from("v1beta1");
    });
    // Narrowing an enum: find the first enum in the schema and drop one value.
    fn first_enum(v: &mut Value) -> Option<&mut Vec<Value>> {
        match v {
            Value::Object(m) => {
                if m.get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.len() > 1)
                {
                    return m.get_mut("enum").and_then(Value::as_array_mut);
                }
                m.values_mut().find_map(first_enum)
            }
            Value::Array(a) => a.iter_mut().find_map(first_enum),
            _ => None,
        }
    }
    check("narrowed enum", "enum narrowed", &|v| {
        first_enum(v.pointer_mut(spec).unwrap())
            .expect("an enum in the policy spec")
            .pop();
    });
    // An added optional field is fine.
    let mut added = old.clone();
    added
        .pointer_mut(&format!("{spec}/properties"))
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert("newOptional".into(), serde_json::json!({"type": "string"}));
    assert_eq!(compare(&old, &added), Vec::<String>::new());
}

#[test]
fn a_count_rule_may_only_grow_by_fields_the_old_schema_lacked() {
    let old = "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) == 1";
    let schema = serde_json::json!({"properties": {"webhook": {}, "slack": {}, "name": {}}});
    let grown = "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (has(self.teams) ? 1 : 0) + (has(self.email) ? 1 : 0) == 1";
    assert!(counts_new_fields_only(old, grown, &schema));
    for narrowed in [
        // A term for a field old objects may have: they could now count 2.
        "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (has(self.name) ? 1 : 0) == 1",
        // Another bound or comparison.
        "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (has(self.teams) ? 1 : 0) == 2",
        "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (has(self.teams) ? 1 : 0) < 1",
        // A term that is not a plain presence count.
        "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (self.size() > 2 ? 1 : 0) == 1",
        "(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (has(self.teams) ? 2 : 0) == 1",
        // The old terms changed.
        "(has(self.webhook) ? 1 : 0) + (has(self.teams) ? 1 : 0) == 1",
        old,
    ] {
        assert!(
            !counts_new_fields_only(old, narrowed, &schema),
            "{narrowed} accepted"
        );
    }
}

#[test]
fn a_new_rule_passes_only_when_guarded_by_a_field_the_old_schema_lacked() {
    let schema = serde_json::json!({"properties": {"target": {}, "clean": {}}});
    assert!(guarded_by_a_new_field(
        "!has(self.masking) || !has(self.swap) || self.swap.mode == 'Staged'",
        &schema
    ));
    assert!(guarded_by_a_new_field(
        "!has(self.masking) || !((has(self.target.postgres) && self.target.postgres.allDatabases))",
        &schema
    ));
    for breaking in [
        // Old objects may have the field.
        "!has(self.clean) || self.clean == false",
        // Not a guard of the whole rule.
        "!has(self.masking) || self.clean ? true : false",
        "!has(self.masking) || true) && (self.clean",
        "has(self.masking) || self.clean",
        "!has(self.target.x) || self.clean",
        "self.size() < 3",
    ] {
        assert!(
            !guarded_by_a_new_field(breaking, &schema),
            "{breaking} accepted"
        );
    }
}

#[test]
fn a_new_rule_passes_when_implied_by_a_field_the_old_schema_required() {
    let schema = serde_json::json!({"properties": {"ref": {}, "other": {}}, "required": ["ref"]});
    assert!(implied_by_a_required_field(
        "has(self.ref) || has(self.kms)",
        &schema
    ));
    for breaking in [
        // Old objects need not have it.
        "has(self.other) || has(self.kms)",
        // Not a disjunct of the whole rule.
        "has(self.ref) || self.x ? true : false",
        "has(self.ref) || true) && (self.other",
        "!has(self.ref) || has(self.kms)",
        "has(self.ref) && has(self.kms)",
    ] {
        assert!(
            !implied_by_a_required_field(breaking, &schema),
            "{breaking} accepted"
        );
    }
}
