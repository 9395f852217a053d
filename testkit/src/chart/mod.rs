//! The Helm chart (`charts/dataguardian`) in tests: rendering it like `helm template` with the
//! in-repo renderer `tools/helm-template` (Go's text/template + sprig + Helm's built-ins; no helm
//! binary is reachable here), and the copies [`sync`] generates (`make chart`).
//!
//! ```no_run
//! // What `helm template dataguardian charts/dataguardian -n dataguardian-system --set replicaCount=3` prints:
//! let yaml = testkit::chart::render_chart(&[], &[("replicaCount", "3")]);
//! # let _ = yaml;
//! ```
//!
//! The renderer is built once per test process with the Go toolchain and the Debian packages
//! of its libraries (`scripts/install-deps.sh` installs them), under a lock shared by parallel
//! test processes.

pub mod sync;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The release name [`render_chart`] uses.
pub const RELEASE: &str = "dataguardian";
/// The namespace [`render_chart`] renders into (the kustomize base's namespace).
pub const NAMESPACE: &str = "dataguardian-system";

/// The apt packages the renderer is built from.
pub const GO_PACKAGES: &str = "golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev golang-github-xeipuuv-gojsonschema-dev golang-github-gobwas-glob-dev";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
        .to_path_buf()
}

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/dataguardian")
}

/// How to render the chart: the arguments of `helm template`.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The release name (`helm template NAME`).
    pub release: String,
    /// `--namespace`.
    pub namespace: String,
    /// `-f` files, in order.
    pub values_files: Vec<PathBuf>,
    /// `--set` pairs, in order (typed like Helm: numbers, booleans, null, `{a,b}` lists).
    pub set: Vec<(String, String)>,
    /// `--set-string` pairs.
    pub set_string: Vec<(String, String)>,
    /// `--kube-version` (default v1.32.0).
    pub kube_version: Option<String>,
    /// `--api-versions`.
    pub api_versions: Vec<String>,
    /// `--is-upgrade`.
    pub is_upgrade: bool,
    /// Print the rendered NOTES.txt instead of the manifests.
    pub notes: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            release: RELEASE.into(),
            namespace: NAMESPACE.into(),
            values_files: Vec::new(),
            set: Vec::new(),
            set_string: Vec::new(),
            kube_version: None,
            api_versions: Vec::new(),
            is_upgrade: false,
            notes: false,
        }
    }
}

impl RenderOptions {
    /// Options with these `-f` files and `--set` pairs.
    pub fn new(values_files: &[&Path], set: &[(&str, &str)]) -> Self {
        RenderOptions {
            values_files: values_files.iter().map(|p| p.to_path_buf()).collect(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..RenderOptions::default()
        }
    }
}

/// What `helm template dataguardian charts/dataguardian -n dataguardian-system -f FILE… --set
/// K=V…` prints: every object as `---\n# Source: dataguardian/templates/…\n<yaml>\n`, in
/// Helm's install order. Panics with the renderer's error (e.g. a value the schema refuses).
pub fn render_chart(values_files: &[&Path], set: &[(&str, &str)]) -> String {
    try_render(&RenderOptions::new(values_files, set))
        .unwrap_or_else(|e| panic!("rendering the chart failed:\n{e}"))
}

/// Renders the chart; `Err` holds what `helm template` would print on stderr (e.g.
/// `Error: values don't meet the specifications of the schema(s) …`).
pub fn try_render(options: &RenderOptions) -> Result<String, String> {
    let mut cmd = Command::new(renderer());
    cmd.arg(&options.release)
        .arg(chart_dir())
        .arg("--namespace")
        .arg(&options.namespace);
    for file in &options.values_files {
        cmd.arg("--values").arg(file);
    }
    for (k, v) in &options.set {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    for (k, v) in &options.set_string {
        cmd.arg("--set-string").arg(format!("{k}={v}"));
    }
    if let Some(v) = &options.kube_version {
        cmd.arg("--kube-version").arg(v);
    }
    for a in &options.api_versions {
        cmd.arg("--api-versions").arg(a);
    }
    if options.is_upgrade {
        cmd.arg("--is-upgrade");
    }
    if options.notes {
        cmd.arg("--notes");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the chart renderer: {e}"));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("the renderer prints UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The renderer binary (`tools/helm-template`), built once per test process into
/// `<target>/helm-template/`. Panics with an install hint when Go or its libraries are missing.
pub fn renderer() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_renderer)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `go` with the environment the renderer builds in: GOPATH mode over Debian's Go libraries
/// (no module proxy is reachable).
pub fn go_command() -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .current_dir(repo_root());
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        cmd.env(
            "GOCACHE",
            std::env::temp_dir().join("dataguardian-go-cache"),
        );
    }
    cmd
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

fn build_renderer() -> Result<PathBuf, String> {
    let dir = target_dir().join("helm-template");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.join("build.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; released when `lock` is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let binary = dir.join("helm-template");
    let partial = dir.join(format!("helm-template.{}", std::process::id()));
    let out = go_command()
        .args(["build", "-o"])
        .arg(&partial)
        .arg("./tools/helm-template")
        .output()
        .map_err(|e| {
            format!(
                "go not found ({e}): apt-get install -y {GO_PACKAGES} (scripts/install-deps.sh)"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "building tools/helm-template failed (apt-get install -y {GO_PACKAGES}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&partial, &binary)
        .map_err(|e| format!("cannot move the renderer into place: {e}"))?;
    drop(lock);
    Ok(binary)
}

/// One object of a rendered chart or kustomize output.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The `# Source:` template path, when the renderer printed one.
    pub source: Option<String>,
    /// The document's text.
    pub text: String,
}

/// Splits multi-document YAML (renderer or `kubectl kustomize` output) into documents,
/// keeping each one's `# Source:` comment. Empty documents are left out.
pub fn split_documents(yaml: &str) -> Vec<Rendered> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let text = std::mem::take(current);
        let source = text
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .map(str::to_string);
        let meaningful = text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if meaningful {
            docs.push(Rendered { source, text });
        }
    };
    for line in yaml.lines() {
        if line == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}
