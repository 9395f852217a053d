//! The image → local program table (`sim/images.yaml`).
//!
//! Containers run as host processes, so every image a pod names must map to something that can
//! run here. An entry mirrors what a real image carries: an `entrypoint` and a `cmd` (Docker's
//! ENTRYPOINT/CMD, combined with the container's `command`/`args` exactly as the runtime does), a
//! `binaries` map from in-image program paths to host programs, and a `stopSignal`. With
//! `hostCommands: true` a program that is not in the map runs from the host (distribution images
//! such as `debian` or `busybox`, whose `sh`, `echo`, `sleep` exist on the host too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why `sim/images.yaml` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageTableError {
    /// The file could not be read.
    #[error("cannot read image table {path}: {source}")]
    Read {
        /// The table's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not have the expected shape.
    #[error("invalid image table: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A `${VAR}` reference has no value and no default.
    #[error("image table refers to ${{{0}}}, which is not set and has no default")]
    UnsetVariable(String),
    /// An unknown stop signal name.
    #[error("unknown stop signal {0:?}")]
    Signal(String),
}

/// Why a container's image/command could not be turned into a host program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No entry matches the image: the kubelet reports `ErrImagePull`.
    #[error(
        "failed to pull image \"{image}\": image is not in the kube-sim image table (sim/images.yaml)"
    )]
    UnknownImage {
        /// The image name.
        image: String,
    },
    /// Neither the container nor the image names a program.
    #[error("no command specified for image \"{image}\"")]
    NoCommand {
        /// The image name.
        image: String,
    },
    /// The program is neither mapped nor present on the host (`StartError`, exit code 128).
    #[error("exec: \"{command}\": executable file not found in $PATH (image \"{image}\")")]
    CommandNotFound {
        /// The image name.
        image: String,
        /// The program that was asked for.
        command: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    pass_env: Vec<String>,
    images: Vec<EntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EntryFile {
    #[serde(rename = "match")]
    patterns: OneOrMany,
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    binaries: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    host_commands: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    stop_signal: Option<String>,
}

/// One image entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Image name patterns (`*` matches any run of characters, `?` one character).
    pub patterns: Vec<String>,
    /// The image's ENTRYPOINT (in-image program paths).
    pub entrypoint: Vec<String>,
    /// The image's CMD.
    pub cmd: Vec<String>,
    /// In-image program → host argv prefix.
    pub binaries: BTreeMap<String, Vec<String>>,
    /// Programs not in `binaries` run from the host.
    pub host_commands: bool,
    /// Environment the image sets (like Docker's ENV), below the container's own env.
    pub env: BTreeMap<String, String>,
    /// Signal sent to stop the container (the image's STOPSIGNAL).
    pub stop_signal: i32,
}

/// The loaded image table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTable {
    /// Host environment variables passed through to every container (e.g. `RUST_LOG`).
    pub pass_env: Vec<String>,
    /// Entries, first match wins.
    pub entries: Vec<ImageEntry>,
}

/// What to execute for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Host argv (argv\[0\] is the host program).
    pub argv: Vec<String>,
    /// Image-level environment (below the container's env).
    pub image_env: Vec<(String, String)>,
    /// Signal that asks the program to stop.
    pub stop_signal: i32,
}

impl ImageTable {
    /// Path of the table committed in the repository (`sim/images.yaml`).
    pub fn default_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("images.yaml")
    }

    /// Loads the committed table, resolving `${VAR}` references from the process environment.
    pub fn load_default() -> Result<Self, ImageTableError> {
        Self::load(&Self::default_path())
    }

    /// Loads a table file. `${SIM_DIR}` is the file's directory, `${WORKSPACE}` its parent;
    /// other `${VAR}` / `${VAR:-default}` references come from the process environment.
    pub fn load(path: &Path) -> Result<Self, ImageTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImageTableError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let workspace = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.clone());
        Self::parse(&text, &|name| match name {
            "SIM_DIR" => Some(dir.display().to_string()),
            "WORKSPACE" => Some(workspace.display().to_string()),
            other => std::env::var(other).ok().filter(|v| !v.is_empty()),
        })
    }

    /// Parses table text; `vars` answers `${VAR}` references.
    pub fn parse(
        text: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ImageTableError> {
        let file: TableFile = serde_yaml::from_str(text)?;
        let sub = |s: &str| substitute(s, vars);
        let subs = |v: Vec<String>| v.iter().map(|s| sub(s)).collect::<Result<Vec<_>, _>>();
        let mut entries = Vec::with_capacity(file.images.len());
        for e in file.images {
            let mut binaries = BTreeMap::new();
            for (k, v) in e.binaries {
                binaries.insert(k, subs(v.into_vec())?);
            }
            let mut env = BTreeMap::new();
            for (k, v) in e.env {
                env.insert(k, sub(&v)?);
            }
            let stop_signal = match e.stop_signal.as_deref() {
                None => libc::SIGTERM,
                Some(name) => {
                    signal_number(name).ok_or_else(|| ImageTableError::Signal(name.into()))?
                }
            };
            entries.push(ImageEntry {
                patterns: e.patterns.into_vec(),
                entrypoint: subs(e.entrypoint)?,
                cmd: subs(e.cmd)?,
                binaries,
                host_commands: e.host_commands,
                env,
                stop_signal,
            });
        }
        Ok(ImageTable {
            pass_env: file.pass_env,
            entries,
        })
    }

    /// The entry for an image, if any.
    pub fn entry(&self, image: &str) -> Option<&ImageEntry> {
        let image = normalize_image(image);
        self.entries
            .iter()
            .find(|e| e.patterns.iter().any(|p| glob_match(p, image)))
    }

    /// Combines the image with a container's `command`/`args` (already `$(VAR)`-expanded) the
    /// way a container runtime does, then maps the program to a host program.
    pub fn resolve(
        &self,
        image: &str,
        command: &[String],
        args: &[String],
    ) -> Result<Launch, ResolveError> {
        let entry = self
            .entry(image)
            .ok_or_else(|| ResolveError::UnknownImage {
                image: image.to_string(),
            })?;
        let mut argv: Vec<String> = if !command.is_empty() {
            command.iter().chain(args).cloned().collect()
        } else if !args.is_empty() {
            entry.entrypoint.iter().chain(args).cloned().collect()
        } else {
            entry.entrypoint.iter().chain(&entry.cmd).cloned().collect()
        };
        if argv.is_empty() {
            return Err(ResolveError::NoCommand {
                image: image.to_string(),
            });
        }
        let program = argv[0].clone();
        let basename = program.rsplit('/').next().unwrap_or(&program);
        let mapped = entry
            .binaries
            .get(&program)
            .or_else(|| entry.binaries.get(basename));
        if let Some(prefix) = mapped {
            argv.splice(0..1, prefix.iter().cloned());
        } else if !(entry.host_commands && host_program_exists(&program)) {
            return Err(ResolveError::CommandNotFound {
                image: image.to_string(),
                command: program,
            });
        }
        Ok(Launch {
            argv,
            image_env: entry
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            stop_signal: entry.stop_signal,
        })
    }
}

/// Strips the implicit Docker Hub registry so `docker.io/library/postgres:15` matches `postgres:*`.
pub fn normalize_image(image: &str) -> &str {
    image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("index.docker.io/library/"))
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image)
}

/// Glob match with `*` (any run, also empty) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Replaces `${VAR}` and `${VAR:-default}` (the default may itself contain references).
pub fn substitute(
    input: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ImageTableError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // Find the matching close brace, allowing nested ${...} in defaults.
        let mut depth = 1;
        let mut end = None;
        let bytes = after.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
                depth += 1;
                i += 2;
                continue;
            }
            if bytes[i] == b'}' {
                depth -= 1;
                if depth == 0 {
                    end = Some(i);
                    break;
                }
            }
            i += 1;
        }
        let Some(end) = end else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (vars(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(&substitute(d, vars)?),
            (None, None) => return Err(ImageTableError::UnsetVariable(name.to_string())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim_start_matches("SIG");
    Some(match n {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

/// Whether a program name would be found on this host (absolute path, or on `$PATH`).
pub fn host_program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
        .unwrap_or(false)
}
