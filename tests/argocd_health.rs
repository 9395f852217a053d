//! The Argo CD health checks of the five kinds (`deploy/argocd/resource_customizations/`, laid
//! out as in Argo CD's own `resource_customizations/`): every case of every `health_test.yaml`
//! runs under real Lua 5.1 (`lua5.1`, the dialect of Argo CD's gopher-lua) in Argo CD's sandbox
//! (`tests/argocd/health_runner.lua`) and must give the expected status and message. Also:
//! every kind of `crds/` has a check; every phase of a kind's CRD, and every status a check can
//! return, is exercised; every test object says where it comes from (captured from an e2e
//! scenario, or written from the CRD types); and the `argocd-cm` snippets in `docs/gitops.md`
//! and `deploy/argocd/argocd-cm.yaml` embed the `.lua` files byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const GROUP: &str = "dataguardian.io";
const CAPTURED: &str = "# Captured from e2e scenario ";
const WRITTEN: &str = "# Written from the CRD types";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn checks_dir() -> PathBuf {
    workspace()
        .join("deploy/argocd/resource_customizations")
        .join(GROUP)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
struct HealthStatus {
    status: String,
    #[serde(default)]
    message: String,
}

/// What the runner reports for one object: Argo CD's status and message, and the lines of the
/// script that ran.
#[derive(Debug)]
struct Outcome {
    health: HealthStatus,
    lines: BTreeSet<u32>,
}

/// The kinds of `crds/` (group `dataguardian.io`), with the CRD of each.
fn crds() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(workspace().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        let crd: Value = serde_yaml::from_str(&read(&path)).expect("CRD YAML");
        assert_eq!(crd["spec"]["group"], GROUP, "{}", path.display());
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        out.insert(kind, crd);
    }
    out
}

/// The phases a kind's CRD allows in `status.phase` (empty for kinds without phases).
fn phases(crd: &Value) -> BTreeSet<String> {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["phase"]["enum"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|p| p.as_str().expect("phase").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn lua() -> &'static str {
    let found = Command::new("lua5.1").arg("-v").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "lua5.1 is required (apt-get install lua5.1; scripts/install-deps.sh installs it)"
    );
    "lua5.1"
}

/// A Lua string literal of `s`: printable ASCII and UTF-8 as is, quotes, backslashes and control
/// bytes escaped (decimal escapes are three digits, so a digit after one is not read into it).
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a Lua table constructor, as Argo CD decodes an object for a script
/// (util/lua/lua.go `decodeValue`): maps are tables with string keys, lists are sequences from
/// 1, `null` is nil (so a key whose value is null is absent), numbers are Lua numbers.
fn lua_value(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(u)) => u.to_string(),
            _ => format!("{:?}", n.as_f64().expect("a JSON number")),
        },
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_value).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs `script` (a health.lua) on `object` under `lua5.1` in Argo CD's sandbox; `Err` is what
/// Argo CD would report as an error.
fn run(script: &Path, object: &Value) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let object_file = dir.path().join("object.lua");
    std::fs::write(&object_file, lua_value(object)).expect("object file");
    let out = Command::new(lua())
        .arg(workspace().join("tests/argocd/health_runner.lua"))
        .arg(script)
        .arg(&object_file)
        .output()
        .expect("running lua5.1");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    Ok(parse_outcome(&stdout).unwrap_or_else(|| panic!("unexpected runner output {stdout:?}")))
}

/// The runner's output: status, message length, message, covered lines (one per line).
fn parse_outcome(stdout: &str) -> Option<Outcome> {
    let (status, rest) = stdout.split_once('\n')?;
    let (length, rest) = rest.split_once('\n')?;
    let length: usize = length.parse().ok()?;
    let message = rest.get(..length)?;
    let lines = rest[length..]
        .trim()
        .split(',')
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    Some(Outcome {
        health: HealthStatus {
            status: status.to_string(),
            message: message.to_string(),
        },
        lines,
    })
}

/// Runs a script given as text.
fn run_text(script: &str, object: &Value) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("health.lua");
    std::fs::write(&path, script).expect("script");
    run(&path, object)
}

fn tests_of(kind: &str) -> Vec<HealthTest> {
    let path = checks_dir().join(kind).join("health_test.yaml");
    let tests: HealthTests =
        serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tests.tests
}

fn input(kind: &str, input_path: &str) -> (String, Value) {
    let text = read(&checks_dir().join(kind).join(input_path));
    let value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{kind}/{input_path}: {e}"));
    (text, value)
}

#[test]
fn every_kind_has_a_health_check_with_tests() {
    let kinds: BTreeSet<String> = crds().into_keys().collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    let dirs: BTreeSet<String> = std::fs::read_dir(checks_dir())
        .expect("deploy/argocd/resource_customizations/dataguardian.io")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, kinds, "one directory per kind, named after it");
    for kind in &kinds {
        let dir = checks_dir().join(kind);
        for file in ["health.lua", "health_test.yaml"] {
            assert!(dir.join(file).is_file(), "{kind}/{file} is missing");
        }
        assert!(!tests_of(kind).is_empty(), "{kind}: no tests");
    }
}

#[test]
fn every_test_object_gets_the_expected_health() {
    let mut failures = Vec::new();
    let mut count = 0;
    for kind in crds().keys() {
        let script = checks_dir().join(kind).join("health.lua");
        for test in tests_of(kind) {
            count += 1;
            let (_, object) = input(kind, &test.input_path);
            match run(&script, &object) {
                Ok(got) if got.health == test.health_status => {}
                Ok(got) => failures.push(format!(
                    "{kind}/{}: expected {:?}, got {:?}",
                    test.input_path, test.health_status, got.health
                )),
                Err(e) => failures.push(format!("{kind}/{}: error: {e}", test.input_path)),
            }
        }
    }
    assert!(count >= 20, "only {count} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_phase_and_every_status_a_check_returns_is_tested() {
    for (kind, crd) in crds() {
        let script_path = checks_dir().join(&kind).join("health.lua");
        let script = read(&script_path);
        let tests = tests_of(&kind);
        let mut seen_phases = BTreeSet::new();
        let mut ran = BTreeSet::new();
        let mut without_status = false;
        for test in &tests {
            let (_, object) = input(&kind, &test.input_path);
            match object["status"]["phase"].as_str() {
                Some(p) => {
                    seen_phases.insert(p.to_string());
                }
                None => without_status |= object.get("status").is_none(),
            }
            ran.extend(run(&script_path, &object).expect("the check runs").lines);
        }
        let missing: Vec<_> = phases(&crd).difference(&seen_phases).cloned().collect();
        assert!(
            missing.is_empty(),
            "{kind}: no test object in phase {missing:?}"
        );
        assert!(without_status, "{kind}: no test object without a status");
        // Every place the script decides a status ran for at least one test object.
        let untested: Vec<String> = script
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with("hs.status = "))
            .filter(|(i, _)| !ran.contains(&(*i as u32 + 1)))
            .map(|(i, l)| format!("line {}: {}", i + 1, l.trim()))
            .collect();
        assert!(
            untested.is_empty(),
            "{kind}: no test object reaches {untested:?}"
        );
    }
}

#[test]
fn test_objects_are_of_their_kind_say_where_they_come_from_and_are_all_used() {
    for kind in crds().keys() {
        let tests = tests_of(kind);
        let used: BTreeSet<String> = tests.iter().map(|t| t.input_path.clone()).collect();
        assert_eq!(used.len(), tests.len(), "{kind}: an input is tested twice");
        for test in &tests {
            assert!(
                ["Healthy", "Progressing", "Degraded", "Suspended"]
                    .contains(&test.health_status.status.as_str()),
                "{kind}/{}: {:?}",
                test.input_path,
                test.health_status
            );
            assert!(
                !test.health_status.message.is_empty(),
                "{kind}/{}: every status comes with a message",
                test.input_path
            );
            let (text, object) = input(kind, &test.input_path);
            assert_eq!(object["kind"], kind.as_str(), "{kind}/{}", test.input_path);
            assert_eq!(
                object["apiVersion"],
                format!("{GROUP}/v1alpha1"),
                "{kind}/{}",
                test.input_path
            );
            assert!(
                object["metadata"].get("managedFields").is_none(),
                "{kind}/{}: managedFields are stripped",
                test.input_path
            );
            let first = text.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(CAPTURED) || first.starts_with(WRITTEN),
                "{kind}/{}: the first line must say where the object comes from \
                 ({CAPTURED:?}… or {WRITTEN:?}…), not {first:?}",
                test.input_path
            );
        }
        let files: BTreeSet<String> = std::fs::read_dir(checks_dir().join(kind).join("testdata"))
            .expect("testdata")
            .map(|e| {
                format!(
                    "testdata/{}",
                    e.expect("entry").file_name().to_string_lossy()
                )
            })
            .collect();
        let unused: Vec<_> = files.difference(&used).collect();
        assert!(
            unused.is_empty(),
            "{kind}: testdata not in health_test.yaml: {unused:?}"
        );
    }
}

/// The `data` of the `argocd-cm` ConfigMap in a YAML text.
fn argocd_cm_data(yaml: &str) -> BTreeMap<String, String> {
    let cm: Value = serde_yaml::from_str(yaml).expect("the argocd-cm snippet is YAML");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    serde_json::from_value(cm["data"].clone()).expect("data of strings")
}

fn assert_embeds_the_checks(what: &str, data: &BTreeMap<String, String>) {
    let kinds = crds();
    let expected: BTreeSet<String> = kinds
        .keys()
        .map(|k| format!("resource.customizations.health.{GROUP}_{k}"))
        .collect();
    let keys: BTreeSet<String> = data.keys().cloned().collect();
    assert_eq!(keys, expected, "{what}: one health key per kind");
    for kind in kinds.keys() {
        let script = read(&checks_dir().join(kind).join("health.lua"));
        assert_eq!(
            data[&format!("resource.customizations.health.{GROUP}_{kind}")],
            script,
            "{what}: the {kind} check differs from {kind}/health.lua"
        );
    }
}

#[test]
fn the_argocd_cm_snippets_embed_the_health_checks() {
    assert_embeds_the_checks(
        "deploy/argocd/argocd-cm.yaml",
        &argocd_cm_data(&read(&workspace().join("deploy/argocd/argocd-cm.yaml"))),
    );
    let doc = read(&workspace().join("docs/gitops.md"));
    let blocks: Vec<String> = yaml_blocks(&doc)
        .into_iter()
        .filter(|b| b.contains("name: argocd-cm") && b.contains("resource.customizations.health."))
        .collect();
    assert_eq!(
        blocks.len(),
        1,
        "docs/gitops.md: one argocd-cm block with the health checks"
    );
    assert_embeds_the_checks("docs/gitops.md", &argocd_cm_data(&blocks[0]));
}

/// The top-level (unindented) ```` ```yaml ```` blocks of a Markdown text.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line == "```yaml" => current = Some(Vec::new()),
            None => {}
            Some(lines) if line == "```" => {
                blocks.push(lines.join("\n") + "\n");
                current = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    blocks
}

// ---- The runner is Argo CD's sandbox, not a friendlier one ----

fn sample() -> Value {
    serde_json::json!({
        "apiVersion": "dataguardian.io/v1alpha1",
        "kind": "BackupRun",
        "metadata": {"name": "r", "generation": 3, "labels": {"a": "b\"c\\d\ne"}},
        "spec": {"list": [1, 2.5, "x", true], "gone": null},
        "status": {"phase": "Running"}
    })
}

#[test]
fn the_runner_passes_the_object_as_argo_cd_does() {
    let got = run_text(
        r#"return {status = "Healthy", message = obj.kind .. " " .. obj.metadata.name
  .. " g" .. (obj.metadata.generation + 1) .. " " .. obj.metadata.labels.a
  .. " " .. #obj.spec.list .. " " .. obj.spec.list[2] .. " " .. tostring(obj.spec.list[4])
  .. " " .. tostring(obj.spec.gone)}"#,
        &sample(),
    )
    .expect("runs");
    assert_eq!(
        got.health,
        HealthStatus {
            status: "Healthy".into(),
            message: "BackupRun r g4 b\"c\\d\ne 4 2.5 true nil".into(),
        }
    );
}

#[test]
fn the_runner_offers_only_what_argo_cd_opens() {
    for (script, why) in [
        (
            "return {status = string.format('%s', 'Healthy')}",
            "no string library",
        ),
        ("return {status = ('x'):upper()}", "strings have no methods"),
        (
            "return {status = 'Healthy', message = tostring(math.floor(1.5))}",
            "no math",
        ),
        (
            "return {status = os.getenv('HOME')}",
            "os has only time and date",
        ),
        ("io.write('x') return {status = 'Healthy'}", "no io"),
        ("debug.traceback() return {status = 'Healthy'}", "no debug"),
        ("while true do end", "a budget like Argo CD's one second"),
        ("return 'Healthy'", "the result must be a table"),
        (
            "return {status = 'Healthy', message = 1}",
            "the message must be a string",
        ),
        ("error('boom')", "a runtime error is an error"),
    ] {
        assert!(run_text(script, &sample()).is_err(), "{why}: {script}");
    }
    let ok = run_text(
        "local t = {'b', 'a'} table.sort(t) return {status = 'Healthy', message = table.concat(t) .. (os.time() > 0 and '!' or '?')}",
        &sample(),
    )
    .expect("table and os.time are there");
    assert_eq!(ok.health.message, "ab!");
}

#[test]
fn the_runner_maps_results_as_argo_cd_does() {
    let status = |script: &str| run_text(script, &sample()).expect("runs").health;
    assert_eq!(
        status("return {status = 'Fine', message = 'x'}"),
        HealthStatus {
            status: "Unknown".into(),
            message: "Lua returned an invalid health status".into()
        }
    );
    let empty = HealthStatus {
        status: String::new(),
        message: String::new(),
    };
    assert_eq!(status("return {}"), empty);
    assert_eq!(status("return nil"), empty);
    // Globals are allowed (Argo CD's own examples assign `hs = {}`).
    assert_eq!(
        status("hs = {} hs.status = 'Suspended' return hs"),
        HealthStatus {
            status: "Suspended".into(),
            message: String::new()
        }
    );
}

#[test]
fn lua_literals_round_trip_awkward_strings() {
    let awkward = "tab\there, NUL\u{0}1, bell\u{7}, quote \" backslash \\ é ✓ \u{7f}";
    let got = run_text(
        "return {status = 'Healthy', message = obj.metadata.name}",
        &serde_json::json!({"metadata": {"name": awkward}}),
    )
    .expect("runs");
    assert_eq!(got.health.message, awkward);
}
