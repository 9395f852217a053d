//! Supply chain and threat model checks that need no service:
//! - `scripts/sbom.sh --binaries-only` writes CycloneDX SBOMs of both binaries that list the
//!   crates they ship and none that only tests use (the image SBOMs need images: `make sbom`,
//!   a CI step after `make test`);
//! - every advisory `deny.toml` ignores says why;
//! - every test `docs/threat-model.md` names as proof of a mitigation exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn component_names(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bom: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bom["bomFormat"], "CycloneDX", "{}", path.display());
    assert_eq!(bom["specVersion"], "1.5", "{}", path.display());
    bom["components"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no components", path.display()))
        .iter()
        .map(|c| {
            let purl = c["purl"].as_str().unwrap_or_default();
            assert!(purl.starts_with("pkg:cargo/"), "{}: {c}", path.display());
            assert!(c["version"].is_string(), "{}: {c}", path.display());
            c["name"].as_str().expect("a named component").to_owned()
        })
        .collect()
}

#[test]
fn the_binary_sboms_list_the_shipped_crates_and_no_test_only_ones() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(workspace().join("scripts/sbom.sh"))
        .arg("--binaries-only")
        .env("DG_SBOM_DIR", out.path())
        .output()
        .expect("run scripts/sbom.sh");
    assert!(
        run.status.success(),
        "scripts/sbom.sh --binaries-only failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let operator = component_names(&out.path().join("dataguardian.cdx.json"));
    for shipped in [
        "tokio",
        "kube-client",
        "aws-sdk-s3",
        "age",
        "rustls",
        "tokio-postgres",
    ] {
        assert!(operator.contains(shipped), "{shipped} is missing");
    }
    let plugin = component_names(&out.path().join("kubectl-dataguardian.cdx.json"));
    assert!(plugin.contains("clap"));
    for sbom in [&operator, &plugin] {
        for test_only in ["proptest", "jsonschema", "kube-sim", "testkit"] {
            assert!(!sbom.contains(test_only), "{test_only} is not shipped");
        }
    }
    // The script leaves nothing in the work tree.
    for stray in [
        "dataguardian_bin.cdx.json",
        "kubectl-dataguardian_bin.cdx.json",
        "sim/kube-sim_bin.cdx.json",
        "testkit/sync-chart_bin.cdx.json",
    ] {
        assert!(!workspace().join(stray).exists(), "{stray} was left behind");
    }
}

/// The entries of `[advisories] ignore = [...]` in deny.toml.
fn ignored_advisories(deny_toml: &str) -> Vec<String> {
    let section = format!("\n{deny_toml}");
    let section = section
        .split("\n[")
        .find(|s| s.starts_with("advisories]"))
        .expect("an [advisories] section");
    let Some(start) = section.find("\nignore = [") else {
        return Vec::new();
    };
    let list = &section[start + "\nignore = [".len()..];
    let list = &list[..list
        .find("\n]")
        .or_else(|| list.find(']'))
        .expect("a closed list")];
    list.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn entry_has_reason(entry: &str) -> bool {
    entry.starts_with('{')
        && entry
            .split("reason = \"")
            .nth(1)
            .is_some_and(|rest| !rest.starts_with('"'))
}

#[test]
fn every_ignored_advisory_says_why() {
    let deny = std::fs::read_to_string(workspace().join("deny.toml")).unwrap();
    for entry in ignored_advisories(&deny) {
        assert!(
            entry_has_reason(&entry),
            "deny.toml ignores {entry} without a reason: write {{ id = \"RUSTSEC-…\", reason = \"…\" }}"
        );
    }
    // The check itself tells a bare id from a reasoned one.
    let sample = "[advisories]\nignore = [\n    \"RUSTSEC-2020-0001\",\n    { id = \"RUSTSEC-2020-0002\", reason = \"not reachable: we never call it\" },\n]\n";
    let entries = ignored_advisories(sample);
    assert_eq!(entries.len(), 2);
    assert!(!entry_has_reason(&entries[0]));
    assert!(entry_has_reason(&entries[1]));
}

/// Every `fn` name defined in the Rust files under `dir`.
fn functions_in(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            functions_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            functions_of(&path, out);
        }
    }
}

fn functions_of(file: &Path, out: &mut BTreeSet<String>) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for (i, _) in text.match_indices("fn ") {
        let preceded_ok = i == 0 || !text.as_bytes()[i - 1].is_ascii_alphanumeric();
        let name: String = text[i + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if preceded_ok && !name.is_empty() {
            out.insert(name);
        }
    }
}

/// The functions a test reference can mean, and the name it refers to: `tests/x.rs::name` →
/// that file; `a::b::tests::name` → the source of the longest module prefix of `a::b::tests`
/// under `src/` (its file and its directory); anything else (`agent_pinning::name` for
/// `tests/agent_pinning.rs`, `runner_docker::name` for the stand-in's tests, a bare name after a
/// file reference) → every function of the workspace.
fn candidates(reference: &str) -> (BTreeSet<String>, String) {
    let root = workspace();
    let mut functions = BTreeSet::new();
    if let Some((file, name)) = reference.split_once(".rs::") {
        functions_of(&root.join(format!("{file}.rs")), &mut functions);
        return (functions, name.to_owned());
    }
    let segments: Vec<&str> = reference.split("::").collect();
    let (name, modules) = segments.split_last().expect("a non-empty reference");
    for len in (1..=modules.len()).rev() {
        let path = modules[..len].join("/");
        let dir = root.join("src").join(&path);
        let file = root.join("src").join(format!("{path}.rs"));
        if file.exists() || dir.is_dir() {
            functions_of(&file, &mut functions);
            functions_in(&dir, &mut functions);
            return (functions, (*name).to_owned());
        }
    }
    for dir in ["src", "tests", "sim", "testkit"] {
        functions_in(&root.join(dir), &mut functions);
    }
    (functions, (*name).to_owned())
}

/// Backticked test references in the last cell of each table row whose header's last cell is
/// "Test" or "test name".
fn test_references(doc: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut in_test_table = false;
    for line in doc.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_test_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let last = cells.last().copied().unwrap_or_default();
        if matches!(last.to_ascii_lowercase().as_str(), "test" | "test name") {
            in_test_table = true;
            continue;
        }
        if !in_test_table || last.starts_with("---") {
            continue;
        }
        for (i, part) in last.split('`').enumerate() {
            let looks_like_test = part.contains('_')
                && !part.ends_with('*')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '/' | '.'));
            if i % 2 == 1 && looks_like_test && !part.ends_with(".yaml") && !part.ends_with(".rs") {
                refs.push(part.to_owned());
            }
        }
    }
    refs
}

#[test]
fn the_threat_model_names_only_tests_that_exist() {
    let doc = std::fs::read_to_string(workspace().join("docs/threat-model.md")).unwrap();
    let refs = test_references(&doc);
    assert!(refs.len() > 50, "only {} test references found", refs.len());
    let missing: Vec<&String> = refs
        .iter()
        .filter(|r| {
            let (functions, name) = candidates(r);
            !functions.contains(&name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/threat-model.md names tests that do not exist: {missing:?}"
    );
    // A misspelt name is caught.
    for misspelt in [
        "tests/crds.rs::references_never_name_another_namespaces",
        "agent::crypto::tests::encrypt_then_decrypt_with_identity_files",
        "agent_pinning::a_manifest_swapped_with_its_artifact_is_refused",
    ] {
        let (functions, name) = candidates(misspelt);
        assert!(!functions.contains(&name), "{misspelt}");
    }
}
