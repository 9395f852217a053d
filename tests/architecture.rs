//! The module map as a test (docs/architecture.md): no import cycles between the files of `src/`,
//! and the layering rules — `api` imports nothing of ours, `jobs` never imports the controllers,
//! `agent` never imports `cli`, the controllers, the Job builders or the operator, and controller
//! kinds share only through `controller/common`.
//!
//! Imports are read from the source text: every `use` tree (braces expanded) and every
//! `crate::…`/`super::…` path outside `#[cfg(test)]` modules and `tests.rs` files, resolved to
//! the file of the longest module prefix that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

struct Crate {
    /// Module path → file (relative to `src/`).
    files: BTreeMap<Module, String>,
    /// File → the files it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file, `None` for binary roots.
fn module_of(rel: &str) -> Option<Module> {
    let stem = rel.strip_suffix(".rs")?;
    let mut parts: Module = stem.split('/').map(str::to_owned).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    Some(parts)
}

/// The source without test modules and plain (non-doc) comment lines.
fn production_code(text: &str) -> String {
    let cut = text
        .find("#[cfg(test)]\nmod tests")
        .or_else(|| text.find("#[cfg(test)]\nmod "))
        .unwrap_or(text.len());
    text[..cut]
        .lines()
        // Doc comments stay: an intra-doc link is a dependency too.
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("//") || l.starts_with("///") || l.starts_with("//!")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands a use tree (`a::{b, c::{d, e as f}}`) into paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default();
        return vec![
            path.split("::")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && s != "self" && s != "*")
                .collect(),
        ];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut out = Vec::new();
    for part in parts.into_iter().filter(|p| !p.trim().is_empty()) {
        for rest in expand(part) {
            let mut path = prefix.clone();
            path.extend(rest);
            out.push(path);
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `crate::a::b` / `super::super::a` path in `code` (outside use statements too).
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(root) {
            let at = from + pos;
            from = at + root.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let tail = &code[at..];
            let end = tail
                .char_indices()
                .find(|&(_, c)| !(is_ident(c) || c == ':'))
                .map_or(tail.len(), |(i, _)| i);
            out.push(
                tail[..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

fn use_statements(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(tree) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
        else {
            continue;
        };
        let mut stmt = tree.to_owned();
        while !stmt.contains(';') {
            match lines.next() {
                Some(next) => stmt.push_str(next),
                None => break,
            }
        }
        out.push(stmt.split(';').next().unwrap_or_default().to_owned());
    }
    out
}

impl Crate {
    fn load() -> Crate {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut paths = Vec::new();
        rust_files(&src, &mut paths);
        let mut texts = BTreeMap::new();
        let mut files = BTreeMap::new();
        for path in paths {
            let rel = path
                .strip_prefix(&src)
                .expect("below src")
                .to_string_lossy()
                .replace('\\', "/");
            if let Some(module) = module_of(&rel) {
                files.insert(module, rel.clone());
            }
            texts.insert(rel, std::fs::read_to_string(&path).expect("read source"));
        }
        let mut krate = Crate {
            files,
            edges: BTreeMap::new(),
        };
        for (rel, text) in &texts {
            let Some(me) = module_of(rel) else { continue };
            if rel.ends_with("/tests.rs") {
                continue;
            }
            let code = production_code(text);
            let mut targets = BTreeSet::new();
            let mut paths: Vec<Vec<String>> = use_statements(&code)
                .iter()
                .flat_map(|u| expand(u))
                .collect();
            paths.extend(inline_paths(&code));
            for path in paths {
                if let Some(module) = krate.absolute(&me, &path)
                    && let Some(file) = krate.resolve(&module)
                    && file != *rel
                {
                    targets.insert(file);
                }
            }
            krate.edges.insert(rel.clone(), targets);
        }
        krate
    }

    /// `crate::…`, `super::…` or `self::…` relative to module `me`, made absolute.
    fn absolute(&self, me: &Module, path: &[String]) -> Option<Module> {
        let first = path.first()?;
        match first.as_str() {
            "crate" => Some(path[1..].to_vec()),
            "self" => Some(me.iter().chain(&path[1..]).cloned().collect()),
            "super" => {
                let ups = path.iter().take_while(|s| *s == "super").count();
                let base = me.get(..me.len().checked_sub(ups)?)?;
                Some(base.iter().chain(&path[ups..]).cloned().collect())
            }
            _ => None,
        }
    }

    /// The file of the longest module prefix of `module`.
    fn resolve(&self, module: &[String]) -> Option<String> {
        (1..=module.len())
            .rev()
            .find_map(|n| self.files.get(&module[..n]).cloned())
    }

    /// Strongly connected components of more than one file (Tarjan).
    fn cycles(&self) -> Vec<Vec<String>> {
        struct State<'a> {
            edges: &'a BTreeMap<String, BTreeSet<String>>,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(s: &mut State<'a>, v: &'a str) {
            let i = s.index.len();
            s.index.insert(v, i);
            s.low.insert(v, i);
            s.stack.push(v);
            s.on_stack.insert(v);
            if let Some(ws) = s.edges.get(v) {
                for w in ws {
                    let w = w.as_str();
                    if !s.index.contains_key(w) {
                        visit(s, w);
                        let lw = s.low[w];
                        let lv = s.low[v];
                        s.low.insert(v, lv.min(lw));
                    } else if s.on_stack.contains(w) {
                        let iw = s.index[w];
                        let lv = s.low[v];
                        s.low.insert(v, lv.min(iw));
                    }
                }
            }
            if s.low[v] == s.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    s.out.push(comp);
                }
            }
        }
        let mut s = State {
            edges: &self.edges,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: Vec::new(),
        };
        for v in self.edges.keys() {
            if !s.index.contains_key(v.as_str()) {
                visit(&mut s, v);
            }
        }
        s.out
    }

    fn edges_between(&self, from: &str, to: &str) -> Vec<String> {
        self.edges
            .iter()
            .filter(|(a, _)| a.starts_with(from))
            .flat_map(|(a, bs)| {
                bs.iter()
                    .filter(|b| b.starts_with(to))
                    .map(move |b| format!("{a} -> {b}"))
            })
            .collect()
    }
}

#[test]
fn the_parser_reads_use_trees_and_paths() {
    assert_eq!(
        expand("crate::a::{b::C, d::{e, f as g}, self}"),
        vec![
            vec!["crate", "a", "b", "C"],
            vec!["crate", "a", "d", "e"],
            vec!["crate", "a", "d", "f"],
            vec!["crate", "a"],
        ]
    );
    assert_eq!(
        inline_paths("let x = crate::jobs::shell::job(); super::super::y::Z;"),
        vec![
            vec!["crate", "jobs", "shell", "job"],
            vec!["super", "super", "y", "Z"],
        ]
    );
    let krate = Crate::load();
    let me: Module = vec!["controller".into(), "backup_run".into(), "plan".into()];
    let path: Vec<String> = ["super", "super", "common", "error", "Error"]
        .map(String::from)
        .to_vec();
    let module = krate.absolute(&me, &path).unwrap();
    assert_eq!(
        krate.resolve(&module).as_deref(),
        Some("controller/common/error.rs")
    );
    // The scan finds the imports it is meant to police.
    assert!(
        krate.edges["operator/run.rs"].contains("controller/common/reconcile.rs"),
        "{:?}",
        krate.edges["operator/run.rs"]
    );
}

#[test]
fn no_import_cycles_between_files() {
    let cycles = Crate::load().cycles();
    assert!(
        cycles.is_empty(),
        "import cycles between files: {cycles:#?}"
    );
}

#[test]
fn layers_import_only_downwards() {
    let krate = Crate::load();
    let rules: &[(&str, &[&str])] = &[
        (
            "api/",
            &[
                "agent/",
                "cli/",
                "contract/",
                "controller/",
                "jobs/",
                "notify/",
                "operator/",
                "plugin/",
                "telemetry/",
            ],
        ),
        (
            "jobs/",
            &["controller/", "operator/", "cli/", "plugin/", "agent/"],
        ),
        (
            "agent/",
            &[
                "cli/",
                "controller/",
                "jobs/",
                "operator/",
                "plugin/",
                "notify/",
            ],
        ),
        (
            "telemetry/",
            &[
                "controller/",
                "jobs/",
                "operator/",
                "cli/",
                "plugin/",
                "agent/",
            ],
        ),
        (
            // The egress policy is a leaf every layer may use: it imports nothing of ours.
            "egress/",
            &[
                "agent/",
                "api/",
                "cli/",
                "contract/",
                "controller/",
                "jobs/",
                "notify/",
                "operator/",
                "plugin/",
                "telemetry/",
            ],
        ),
        (
            "contract/",
            &[
                "agent/",
                "cli/",
                "controller/",
                "jobs/",
                "operator/",
                "plugin/",
            ],
        ),
    ];
    let mut broken = Vec::new();
    for (from, forbidden) in rules {
        for to in *forbidden {
            broken.extend(krate.edges_between(from, to));
        }
    }
    assert!(broken.is_empty(), "layering broken: {broken:#?}");
}

#[test]
fn controller_kinds_share_only_through_common() {
    let krate = Crate::load();
    let kinds = [
        "backup_policy",
        "backup_run",
        "backup_storage",
        "restore_run",
        "restore_validation",
    ];
    let mut broken = Vec::new();
    for a in kinds {
        for b in kinds.iter().filter(|b| **b != a) {
            broken.extend(
                krate.edges_between(&format!("controller/{a}/"), &format!("controller/{b}/")),
            );
        }
    }
    assert!(
        broken.is_empty(),
        "a controller kind imports another: {broken:#?}"
    );
}
