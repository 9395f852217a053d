//! `dataguardian crd`: print the CustomResourceDefinitions, or write one file per kind.
//!
//! `dataguardian crd` prints a multi-document YAML stream (each document starts with `---`);
//! `dataguardian crd --out-dir crds` writes `<plural>.dataguardian.io.yaml` files whose
//! concatenation in name order is byte-for-byte the printed stream.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Arguments of `dataguardian crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write one `<plural>.dataguardian.io.yaml` file per kind into this directory instead of
    /// printing to stdout (files of other kinds in it are left alone).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Errors of `dataguardian crd`.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be rendered as YAML.
    #[error("rendering CRD {name} as YAML: {source}")]
    Render {
        /// Name of the CRD.
        name: String,
        /// The serializer's error.
        source: serde_yaml::Error,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One rendered CRD: its file name and its YAML document (starting with `---`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedCrd {
    /// `<plural>.dataguardian.io.yaml`.
    pub file_name: String,
    /// The YAML document, starting with `---\n`.
    pub yaml: String,
}

/// Renders every CRD, in file-name order.
pub fn render_all() -> Result<Vec<RenderedCrd>, CrdError> {
    crate::api::crds().iter().map(render).collect()
}

/// Renders one CRD as a YAML document starting with `---`.
pub fn render(crd: &CustomResourceDefinition) -> Result<RenderedCrd, CrdError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let body = serde_yaml::to_string(crd).map_err(|source| CrdError::Render {
        name: name.clone(),
        source,
    })?;
    Ok(RenderedCrd {
        file_name: format!("{name}.yaml"),
        yaml: format!("---\n{body}"),
    })
}

/// The whole stream `dataguardian crd` prints.
pub fn render_stream() -> Result<String, CrdError> {
    Ok(render_all()?.into_iter().map(|c| c.yaml).collect())
}

/// Writes one file per CRD into `dir` (created if missing).
pub fn write_dir(dir: &Path) -> Result<Vec<PathBuf>, CrdError> {
    std::fs::create_dir_all(dir).map_err(|source| CrdError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for crd in render_all()? {
        let path = dir.join(&crd.file_name);
        std::fs::write(&path, crd.yaml.as_bytes()).map_err(|source| CrdError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `dataguardian crd`.
pub fn run(args: CrdArgs) -> ExitCode {
    let result = match &args.out_dir {
        Some(dir) => write_dir(dir).map(|paths| {
            for p in paths {
                eprintln!("wrote {}", p.display());
            }
        }),
        None => render_stream().and_then(|stream| {
            std::io::stdout()
                .lock()
                .write_all(stream.as_bytes())
                .map_err(|source| CrdError::Write {
                    path: PathBuf::from("<stdout>"),
                    source,
                })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dataguardian crd: {e}");
            ExitCode::FAILURE
        }
    }
}
