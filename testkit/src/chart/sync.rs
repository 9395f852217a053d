//! The chart's and the kustomize base's copies of the project's single sources of truth, as
//! `make chart` writes them and `tests/chart.rs` checks them:
//!
//! | source | copy |
//! |---|---|
//! | `crds/*.yaml` | `charts/dataguardian/templates/crds/*.yaml` (metadata templated, behind `crds.install`) and `config/crd/*.yaml` (byte copies, with a generated `kustomization.yaml`) |
//! | `config/rbac/*.yaml` | `charts/dataguardian/templates/serviceaccount.yaml`, `templates/rbac/*.yaml` (names, namespace and labels templated, behind `serviceAccount.create` / `rbac.create`) |
//! | `config/prometheus/dataguardian-alerts.yaml` | `charts/dataguardian/files/prometheus/` (byte copy, read with `.Files.Get`) |
//! | `config/grafana/*.json` | `charts/dataguardian/files/grafana/` (byte copies, read with `.Files.Glob`) |
//! | `Cargo.toml` version | `Chart.yaml` `version`/`appVersion`, the version label and image tags of `config/default` and `config/manager` |
//!
//! Templating in the copies is kept to names, the namespace and labels: everything else is the
//! source's text, comments included. A source that already contains `{{` is refused (it would
//! be executed as a template).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The command that regenerates the copies (named in every drift message).
pub const REGENERATE: &str = "make chart";

const CHART: &str = "charts/dataguardian";

/// Directories whose whole content is generated: a file there that the generator does not
/// produce is stale.
const OWNED_DIRS: &[&str] = &[
    "charts/dataguardian/templates/crds",
    "charts/dataguardian/templates/rbac",
    "charts/dataguardian/files",
    "config/crd",
];

/// How each manifest of `config/rbac/` becomes a chart template: source file, template path
/// (under the chart), the condition that renders it, metadata added to every object.
const RBAC_FILES: &[(&str, &str, &str, &str)] = &[
    (
        "service_account.yaml",
        "templates/serviceaccount.yaml",
        ".Values.serviceAccount.create",
        "  {{- with .Values.serviceAccount.annotations }}\n  annotations:\n    {{- toYaml . | nindent 4 }}\n  {{- end }}\n",
    ),
    (
        "controller_cluster_role.yaml",
        "templates/rbac/controller-clusterrole.yaml",
        ".Values.rbac.create",
        "",
    ),
    (
        "controller_cluster_role_binding.yaml",
        "templates/rbac/controller-clusterrolebinding.yaml",
        ".Values.rbac.create",
        "",
    ),
    (
        "leader_election_role.yaml",
        "templates/rbac/leader-election-role.yaml",
        ".Values.rbac.create",
        "",
    ),
    (
        "user_roles.yaml",
        "templates/rbac/user-roles.yaml",
        ".Values.rbac.create",
        "",
    ),
];

/// The namespace the sources are written for (the chart uses the release namespace).
const SOURCE_NAMESPACE: &str = "dataguardian-system";

/// Labels every chart object gets from the `dataguardian.labels` helper: in a source they must
/// have these values and are replaced by the helper.
const HELPER_LABELS: &[(&str, &str)] = &[
    ("app.kubernetes.io/name", "dataguardian"),
    ("app.kubernetes.io/part-of", "dataguardian"),
];

/// Labels the chart sets itself: a source must not set them.
const CHART_OWNED_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

/// Labels that aggregate a user role into a built-in role (behind `rbac.aggregateUserRoles`).
const AGGREGATE_LABEL_PREFIX: &str = "rbac.authorization.k8s.io/aggregate-to-";

/// Every generated file, by path relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub files: BTreeMap<PathBuf, String>,
}

/// One difference between the repository and what the generator produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A generated file is missing.
    Missing(PathBuf),
    /// A file differs from what the generator produces.
    Differs(PathBuf),
    /// A file in a generated directory that the generator does not produce.
    Stale(PathBuf),
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing(p) => write!(f, "{} is missing", p.display()),
            Drift::Differs(p) => write!(f, "{} differs from its source", p.display()),
            Drift::Stale(p) => write!(f, "{} has no source any more", p.display()),
        }
    }
}

/// What `make chart` writes, computed from the sources in `repo`.
pub fn generate(repo: &Path) -> Result<Generated, String> {
    let mut files = BTreeMap::new();
    let version = crate_version(repo)?;

    // CRDs: chart templates and the kustomize copies.
    let crd_names = sorted_files(&repo.join("crds"), "yaml")?;
    if crd_names.is_empty() {
        return Err("crds/ holds no CRDs: run `make crds`".into());
    }
    for name in &crd_names {
        let text = read(repo, &format!("crds/{name}"))?;
        let template = template_file(
            &format!("crds/{name}"),
            &text,
            ".Values.crds.install",
            &Renames::default(),
            CRD_ANNOTATIONS,
        )?;
        files.insert(
            PathBuf::from(format!("{CHART}/templates/crds/{name}")),
            template,
        );
        files.insert(PathBuf::from(format!("config/crd/{name}")), text);
    }
    files.insert(
        PathBuf::from("config/crd/kustomization.yaml"),
        crd_kustomization(&crd_names),
    );

    // RBAC.
    let rbac_names = sorted_files(&repo.join("config/rbac"), "yaml")?;
    for name in &rbac_names {
        if name != "kustomization.yaml" && !RBAC_FILES.iter().any(|(src, ..)| src == name) {
            return Err(format!(
                "config/rbac/{name} has no place in the chart: add it to RBAC_FILES in testkit/src/chart/sync.rs"
            ));
        }
    }
    let mut sources = Vec::new();
    for (src, _, _, _) in RBAC_FILES {
        let path = format!("config/rbac/{src}");
        sources.push((path.clone(), read(repo, &path)?));
    }
    let renames = Renames::for_rbac(&sources)?;
    for ((path, text), (_, target, condition, extra)) in sources.iter().zip(RBAC_FILES) {
        let template = template_file(path, text, condition, &renames, extra)?;
        files.insert(PathBuf::from(format!("{CHART}/{target}")), template);
    }

    // Alert rules and dashboards: byte copies read with .Files.
    files.insert(
        PathBuf::from(format!("{CHART}/files/prometheus/dataguardian-alerts.yaml")),
        read(repo, "config/prometheus/dataguardian-alerts.yaml")?,
    );
    let dashboards = sorted_files(&repo.join("config/grafana"), "json")?;
    if dashboards.is_empty() {
        return Err("config/grafana/ holds no dashboard".into());
    }
    for name in dashboards {
        files.insert(
            PathBuf::from(format!("{CHART}/files/grafana/{name}")),
            read(repo, &format!("config/grafana/{name}"))?,
        );
    }

    // The crate version wherever the chart and the kustomize base name it.
    for path in [
        format!("{CHART}/Chart.yaml"),
        "config/default/kustomization.yaml".to_string(),
        "config/manager/manager.yaml".to_string(),
    ] {
        let text = read(repo, &path)?;
        files.insert(PathBuf::from(&path), set_versions(&path, &text, &version)?);
    }
    Ok(Generated { files })
}

/// The differences between `repo` and `generated`.
pub fn drift(repo: &Path, generated: &Generated) -> Vec<Drift> {
    let mut out = Vec::new();
    for (path, text) in &generated.files {
        match std::fs::read_to_string(repo.join(path)) {
            Ok(current) if &current == text => {}
            Ok(_) => out.push(Drift::Differs(path.clone())),
            Err(_) => out.push(Drift::Missing(path.clone())),
        }
    }
    for dir in OWNED_DIRS {
        for file in walk(&repo.join(dir)) {
            let rel = file.strip_prefix(repo).unwrap_or(&file).to_path_buf();
            if !generated.files.contains_key(&rel) {
                out.push(Drift::Stale(rel));
            }
        }
    }
    out
}

/// Writes the generated files and removes stale ones; returns what changed.
pub fn write(repo: &Path, generated: &Generated) -> std::io::Result<Vec<Drift>> {
    let changes = drift(repo, generated);
    for change in &changes {
        match change {
            Drift::Missing(p) | Drift::Differs(p) => {
                let full = repo.join(p);
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(full, &generated.files[p])?;
            }
            Drift::Stale(p) => std::fs::remove_file(repo.join(p))?,
        }
    }
    Ok(changes)
}

const CRD_ANNOTATIONS: &str = "  {{- if .Values.crds.keep }}\n  annotations:\n    # helm uninstall leaves the CRDs, and so every BackupRun, in place.\n    helm.sh/resource-policy: keep\n  {{- end }}\n";

fn crd_kustomization(names: &[String]) -> String {
    let mut out = String::from(
        "# Generated by `make chart` from crds/ (kustomize reads no files outside its directory).\n\
         # Edit the Rust API types and run `make crds`; never edit these copies.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    for name in names {
        out.push_str(&format!("  - {name}\n"));
    }
    out
}

/// The `[package]` version of the root `Cargo.toml`.
pub fn crate_version(repo: &Path) -> Result<String, String> {
    let text = read(repo, "Cargo.toml")?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(v) = line.strip_prefix("version = \"") {
            return Ok(v.trim_end_matches('"').to_string());
        }
    }
    Err("Cargo.toml has no [package] version".into())
}

/// `text` with every version-bearing line of `path` set to `version`.
fn set_versions(path: &str, text: &str, version: &str) -> Result<String, String> {
    let mut found = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = &body[..body.len() - body.trim_start().len()];
        let trimmed = body.trim_start();
        let replaced = if path.ends_with("Chart.yaml") && indent.is_empty() {
            if trimmed.starts_with("version: ") {
                Some(format!("version: {version}"))
            } else if trimmed.starts_with("appVersion: ") {
                Some(format!("appVersion: \"{version}\""))
            } else {
                None
            }
        } else if trimmed.starts_with("app.kubernetes.io/version: ") {
            Some(format!("{indent}app.kubernetes.io/version: \"{version}\""))
        } else if trimmed.starts_with("newTag: ") {
            Some(format!("{indent}newTag: \"{version}\""))
        } else if let Some(pos) = body.find("ghcr.io/dataguardian/dataguardian:") {
            // The agent image (DG_AGENT_IMAGE) of config/manager.
            let start = pos + "ghcr.io/dataguardian/dataguardian:".len();
            let end = body[start..]
                .find(|c: char| c == '"' || c.is_whitespace())
                .map_or(body.len(), |e| start + e);
            Some(format!("{}{version}{}", &body[..start], &body[end..]))
        } else {
            None
        };
        match replaced {
            Some(new) => {
                found += 1;
                out.push_str(&new);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    let expected = if path.ends_with("Chart.yaml") || path.ends_with("kustomization.yaml") {
        2
    } else {
        1
    };
    if found != expected {
        return Err(format!(
            "{path}: found {found} version-bearing lines, expected {expected} (see set_versions in testkit/src/chart/sync.rs)"
        ));
    }
    Ok(out)
}

/// Names in the sources and the template expressions that replace them.
#[derive(Debug, Default)]
struct Renames {
    names: BTreeMap<String, String>,
}

impl Renames {
    /// The ServiceAccount takes the chart's ServiceAccount name; the operator's roles and
    /// bindings (`dataguardian-<suffix>`) become `<fullname>-<suffix>`; the user roles (those
    /// aggregated into the built-in ones) keep their documented names.
    fn for_rbac(sources: &[(String, String)]) -> Result<Renames, String> {
        let mut names = BTreeMap::new();
        for (path, text) in sources {
            for doc in split_documents(text) {
                let kind = top_level_value(&doc, "kind").unwrap_or_default();
                let meta = Metadata::parse(path, &doc)?;
                let Some(name) = meta.name else {
                    return Err(format!("{path}: a {kind} without metadata.name"));
                };
                let is_user_role = meta
                    .labels
                    .iter()
                    .any(|(k, _)| k.starts_with(AGGREGATE_LABEL_PREFIX));
                let replacement = match kind.as_str() {
                    "ServiceAccount" => {
                        "{{ include \"dataguardian.serviceAccountName\" . }}".to_string()
                    }
                    _ if is_user_role => continue,
                    _ => match name.strip_prefix("dataguardian-") {
                        Some(suffix) => {
                            format!("{{{{ include \"dataguardian.fullname\" . }}}}-{suffix}")
                        }
                        None => {
                            return Err(format!(
                                "{path}: {kind} {name} does not start with dataguardian-"
                            ));
                        }
                    },
                };
                if let Some(previous) = names.insert(name.clone(), replacement.clone())
                    && previous != replacement
                {
                    return Err(format!(
                        "{path}: the name {name} is used by a ServiceAccount and a role"
                    ));
                }
            }
        }
        Ok(Renames { names })
    }

    /// The line with a renamed `name:` value or the source namespace replaced, if any.
    fn apply(&self, line: &str) -> String {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let (dash, rest) = match body.strip_prefix("- ") {
            Some(rest) => ("- ", rest),
            None => ("", body),
        };
        if let Some(value) = rest.strip_prefix("name: ")
            && let Some(replacement) = self.names.get(value.trim())
        {
            return format!("{indent}{dash}name: {replacement}");
        }
        // `resourceNames: ["dataguardian-x", …]` name the chart's own objects: `<fullname>-x`.
        if let Some(value) = rest.strip_prefix("resourceNames: ") {
            let renamed = value.replace(
                "\"dataguardian-",
                "\"{{ include \"dataguardian.fullname\" . }}-",
            );
            return format!("{indent}{dash}resourceNames: {renamed}");
        }
        if let Some(value) = rest.strip_prefix("namespace: ")
            && value.trim() == SOURCE_NAMESPACE
        {
            return format!("{indent}{dash}namespace: {{{{ .Release.Namespace }}}}");
        }
        line.to_string()
    }
}

/// The top-level `metadata:` of one document, as the sources write it.
#[derive(Debug, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
}

impl Metadata {
    /// Reads the `metadata:` block of `doc` (two-space indentation; name, namespace, labels and
    /// annotations only).
    fn parse(path: &str, doc: &[&str]) -> Result<Metadata, String> {
        let mut meta = Metadata::default();
        let Some(start) = doc.iter().position(|l| *l == "metadata:") else {
            return Ok(meta);
        };
        let mut section: Option<&str> = None;
        for line in &doc[start + 1..] {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if !line.starts_with(' ') {
                break;
            }
            if let Some(entry) = line.strip_prefix("    ") {
                let (key, value) = split_entry(path, entry)?;
                match section {
                    Some("labels") => meta.labels.push((key, value)),
                    Some("annotations") => meta.annotations.push((key, value)),
                    _ => return Err(format!("{path}: unexpected metadata line {line:?}")),
                }
                continue;
            }
            let entry = line.strip_prefix("  ").unwrap_or(line);
            let (key, value) = split_entry(path, entry)?;
            section = None;
            match key.as_str() {
                "name" => meta.name = Some(value),
                "namespace" => meta.namespace = Some(value),
                "labels" | "annotations" if value.is_empty() => {
                    section = Some(if key == "labels" {
                        "labels"
                    } else {
                        "annotations"
                    })
                }
                _ => {
                    return Err(format!(
                        "{path}: metadata.{key} is not supported by the chart generator"
                    ));
                }
            }
        }
        Ok(meta)
    }
}

fn split_entry(path: &str, entry: &str) -> Result<(String, String), String> {
    let (key, value) = entry
        .split_once(':')
        .ok_or_else(|| format!("{path}: cannot read metadata line {entry:?}"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

/// The documents of a multi-document YAML text (separated by `---` lines), as lines.
fn split_documents(text: &str) -> Vec<Vec<&str>> {
    let mut docs = vec![Vec::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(Vec::new());
        } else {
            docs.last_mut().expect("one document").push(line);
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.iter()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .collect()
}

fn top_level_value(doc: &[&str], key: &str) -> Option<String> {
    doc.iter()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|v| v.trim().to_string())
}

/// A chart template from one source file: a header naming the source, the whole file behind
/// `condition`, each document's metadata templated (name, namespace, labels, `extra_metadata`)
/// and names/namespaces elsewhere (roleRef, subjects) replaced.
fn template_file(
    path: &str,
    text: &str,
    condition: &str,
    renames: &Renames,
    extra_metadata: &str,
) -> Result<String, String> {
    if text.contains("{{") {
        return Err(format!(
            "{path} contains \"{{{{\", which the chart would execute as a template"
        ));
    }
    let mut out = format!(
        "{{{{- /* Generated by `{REGENERATE}` from {path}: edit the source, not this file. */}}}}\n\
         {{{{- if {condition} }}}}\n"
    );
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut doc_start = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "---" {
            out.push_str("---\n");
            doc_start = i + 1;
            i += 1;
            continue;
        }
        if line == "metadata:" {
            // This document's lines, for the metadata parser.
            let doc_end = lines[i..]
                .iter()
                .position(|l| *l == "---")
                .map_or(lines.len(), |p| i + p);
            let meta = Metadata::parse(path, &lines[doc_start..doc_end])?;
            out.push_str(&render_metadata(path, &meta, renames, extra_metadata)?);
            // Skip the source's metadata block.
            i += 1;
            while i < lines.len()
                && (lines[i].starts_with(' ')
                    || lines[i].trim().is_empty()
                    || lines[i].starts_with('#')
                        && lines.get(i + 1).is_some_and(|n| n.starts_with(' ')))
            {
                i += 1;
            }
            continue;
        }
        out.push_str(&renames.apply(line));
        out.push('\n');
        i += 1;
    }
    out.push_str("{{- end }}\n");
    Ok(out)
}

fn render_metadata(
    path: &str,
    meta: &Metadata,
    renames: &Renames,
    extra_metadata: &str,
) -> Result<String, String> {
    let mut out = String::from("metadata:\n");
    let name = meta
        .name
        .as_ref()
        .ok_or_else(|| format!("{path}: metadata without a name"))?;
    out.push_str(&renames.apply(&format!("  name: {name}")));
    out.push('\n');
    if let Some(ns) = &meta.namespace {
        if ns != SOURCE_NAMESPACE {
            return Err(format!(
                "{path}: namespace {ns} (the sources are written for {SOURCE_NAMESPACE})"
            ));
        }
        out.push_str("  namespace: {{ .Release.Namespace }}\n");
    }
    out.push_str("  labels:\n    {{- include \"dataguardian.labels\" . | nindent 4 }}\n");
    for (key, value) in &meta.labels {
        if let Some((_, expected)) = HELPER_LABELS.iter().find(|(k, _)| k == key) {
            if value != expected {
                return Err(format!(
                    "{path}: label {key}: {value} (the chart sets {expected})"
                ));
            }
            continue;
        }
        if CHART_OWNED_LABELS.contains(&key.as_str()) {
            return Err(format!("{path}: label {key} is set by the chart"));
        }
        if key.starts_with(AGGREGATE_LABEL_PREFIX) {
            out.push_str(&format!(
                "    {{{{- if .Values.rbac.aggregateUserRoles }}}}\n    {key}: {value}\n    {{{{- end }}}}\n"
            ));
        } else {
            out.push_str(&format!("    {key}: {value}\n"));
        }
    }
    if !meta.annotations.is_empty() {
        if !extra_metadata.is_empty() {
            return Err(format!(
                "{path}: source annotations and chart annotations cannot be combined"
            ));
        }
        out.push_str("  annotations:\n");
        for (key, value) in &meta.annotations {
            out.push_str(&format!("    {key}: {value}\n"));
        }
    }
    out.push_str(extra_metadata);
    Ok(out)
}

/// The names of the files in `dir` ending in `.ext`, sorted.
fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect();
    names.sort();
    Ok(names)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(repo: &Path, path: &str) -> Result<String, String> {
    std::fs::read_to_string(repo.join(path)).map_err(|e| format!("cannot read {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_names_namespaces_and_labels_are_templated_and_the_rest_kept() {
        let sa = "# The identity.\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: dataguardian\n  namespace: dataguardian-system\n  labels:\n    app.kubernetes.io/name: dataguardian\n    app.kubernetes.io/component: operator\n";
        let binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: dataguardian-controller\nroleRef:\n  kind: ClusterRole\n  name: dataguardian-controller\nsubjects:\n  - kind: ServiceAccount\n    name: dataguardian\n    namespace: dataguardian-system\n";
        let role = "# readonly\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: dataguardian-readonly\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules: []\n";
        let sources = vec![
            ("sa.yaml".to_string(), sa.to_string()),
            ("b.yaml".to_string(), binding.to_string()),
            ("r.yaml".to_string(), role.to_string()),
        ];
        let renames = Renames::for_rbac(&sources).unwrap();

        let t = template_file("b.yaml", binding, ".Values.rbac.create", &renames, "").unwrap();
        assert!(
            t.starts_with("{{- /* Generated by `make chart` from b.yaml"),
            "{t}"
        );
        assert!(t.contains("{{- if .Values.rbac.create }}\n"), "{t}");
        assert!(t.ends_with("{{- end }}\n"), "{t}");
        assert!(
            t.contains("metadata:\n  name: {{ include \"dataguardian.fullname\" . }}-controller\n  labels:\n    {{- include \"dataguardian.labels\" . | nindent 4 }}\nroleRef:"),
            "{t}"
        );
        assert!(
            t.contains("  name: {{ include \"dataguardian.fullname\" . }}-controller\nsubjects:"),
            "roleRef renamed: {t}"
        );
        assert!(
            t.contains("    name: {{ include \"dataguardian.serviceAccountName\" . }}\n    namespace: {{ .Release.Namespace }}\n"),
            "subject renamed: {t}"
        );

        let t =
            template_file("sa.yaml", sa, ".Values.serviceAccount.create", &renames, "").unwrap();
        assert!(
            t.contains("# The identity.\napiVersion: v1\n"),
            "comments kept: {t}"
        );
        assert!(
            t.contains("    app.kubernetes.io/component: operator\n"),
            "{t}"
        );
        assert!(
            !t.contains("app.kubernetes.io/name: dataguardian"),
            "helper label: {t}"
        );

        let t = template_file("r.yaml", role, ".Values.rbac.create", &renames, "").unwrap();
        assert!(
            t.contains("  name: dataguardian-readonly\n"),
            "user roles keep their names: {t}"
        );
        assert!(
            t.contains("    {{- if .Values.rbac.aggregateUserRoles }}\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\n    {{- end }}\n"),
            "{t}"
        );
    }

    #[test]
    fn sources_the_chart_cannot_carry_are_refused() {
        let r = Renames::default();
        let e = template_file("x.yaml", "metadata:\n  name: a\n  uid: b\n", "true", &r, "")
            .unwrap_err();
        assert!(e.contains("metadata.uid is not supported"), "{e}");
        let e = template_file(
            "x.yaml",
            "metadata:\n  name: a\n  labels:\n    app.kubernetes.io/instance: x\n",
            "true",
            &r,
            "",
        )
        .unwrap_err();
        assert!(
            e.contains("app.kubernetes.io/instance is set by the chart"),
            "{e}"
        );
        let e = template_file("x.yaml", "description: \"{{ x }}\"\n", "true", &r, "").unwrap_err();
        assert!(e.contains("execute as a template"), "{e}");
        let e = template_file(
            "x.yaml",
            "metadata:\n  name: a\n  namespace: other\n",
            "true",
            &r,
            "",
        )
        .unwrap_err();
        assert!(e.contains("namespace other"), "{e}");
    }

    #[test]
    fn versions_follow_the_crate() {
        let chart =
            "apiVersion: v2\nversion: 0.0.1\nappVersion: \"0.0.1\"\nkeywords:\n  - version: x\n";
        assert_eq!(
            set_versions("Chart.yaml", chart, "1.2.3").unwrap(),
            "apiVersion: v2\nversion: 1.2.3\nappVersion: \"1.2.3\"\nkeywords:\n  - version: x\n"
        );
        let manager = "        - name: DG_AGENT_IMAGE\n          value: \"ghcr.io/dataguardian/dataguardian:0.0.1\"\n";
        assert_eq!(
            set_versions("config/manager/manager.yaml", manager, "1.2.3").unwrap(),
            "        - name: DG_AGENT_IMAGE\n          value: \"ghcr.io/dataguardian/dataguardian:1.2.3\"\n"
        );
        let e =
            set_versions("config/manager/manager.yaml", "kind: Deployment\n", "1.2.3").unwrap_err();
        assert!(e.contains("found 0 version-bearing lines"), "{e}");
    }
}
