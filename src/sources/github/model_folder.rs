//! The model's folder in a clone: exactly one `config.json`, one
//! `tokenizer.json` and the weights are required; the weights are
//! validated, and the folder's regular files staged for installation.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::error::FailureCode;
use crate::sources::{SourceError, download};
use crate::store::ModelFile;
use crate::validate;

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn regular_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SourceError::Transient(format!("cannot read the clone: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Finds the required files and returns the folder holding the weights.
/// Exactly one `config.json`, one `tokenizer.json`, and exactly one
/// `model.safetensors` or, when there is none, exactly one `pytorch_model.bin`.
pub(super) fn find_model_folder(root: &Path) -> Result<PathBuf, SourceError> {
    let mut found: std::collections::BTreeMap<&str, Vec<PathBuf>> = Default::default();
    let wanted = [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "pytorch_model.bin",
    ];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let kind = entry
                .file_type()
                .map_err(|e| SourceError::Transient(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() && name != ".git" {
                stack.push(entry.path());
            } else if kind.is_file()
                && let Some(known) = wanted.iter().find(|w| **w == name)
            {
                found.entry(known).or_default().push(entry.path());
            }
        }
    }
    let count = |name: &str| found.get(name).map_or(0, Vec::len);
    for required in ["config.json", "tokenizer.json"] {
        if count(required) != 1 {
            return Err(SourceError::Permanent(
                FailureCode::MissingFiles,
                format!(
                    "the repository must hold exactly one {required}; it holds {}",
                    count(required)
                ),
            ));
        }
    }
    let weights = match (count("model.safetensors"), count("pytorch_model.bin")) {
        (1, _) => &found["model.safetensors"][0],
        (0, 1) => &found["pytorch_model.bin"][0],
        (0, 0) => {
            return Err(SourceError::Permanent(
                FailureCode::MissingFiles,
                "the repository holds no model.safetensors and no pytorch_model.bin".into(),
            ));
        }
        (0, n) => {
            return Err(SourceError::Permanent(
                FailureCode::MissingFiles,
                format!("the repository must hold exactly one pytorch_model.bin; it holds {n}"),
            ));
        }
        (n, _) => {
            return Err(SourceError::Permanent(
                FailureCode::MissingFiles,
                format!("the repository must hold exactly one model.safetensors; it holds {n}"),
            ));
        }
    };
    Ok(weights.parent().unwrap_or(root).to_path_buf())
}

/// Validates the weights and every other file of `source` (no file may
/// hold an unsafe pickle), then moves its regular files into `dest`. Runs on
/// a blocking thread and stops between files once `cancel` fires.
pub(super) async fn stage_folder(
    source: &Path,
    dest: &Path,
    cancel: &CancellationToken,
) -> Result<Vec<ModelFile>, SourceError> {
    let (source, dest, stop) = (source.to_path_buf(), dest.to_path_buf(), cancel.clone());
    tokio::task::spawn_blocking(move || {
        let cancelled = || {
            if stop.is_cancelled() {
                Err(SourceError::Cancelled)
            } else {
                Ok(())
            }
        };
        for (name, check, code) in [
            (
                "model.safetensors",
                check_safetensors as fn(&Path, &str) -> Result<(), validate::InvalidWeights>,
                FailureCode::InvalidWeights,
            ),
            (
                "pytorch_model.bin",
                validate::pickle::check_checkpoint,
                FailureCode::UnsafePickle,
            ),
        ] {
            let path = source.join(name);
            if path.exists() {
                check(&path, name).map_err(|e| SourceError::Permanent(code, e.0))?;
            }
        }
        // Every other file is read by content: a pickle under any name is held to the rule.
        let paths = regular_files(&source)?;
        for path in &paths {
            cancelled()?;
            let name = file_name(path);
            if name != "pytorch_model.bin" {
                validate::pickle::check_stored_file(path, &name)
                    .map_err(|e| SourceError::Permanent(FailureCode::UnsafePickle, e.0))?;
            }
        }
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| SourceError::Transient(e.to_string()))?;
        }
        std::fs::create_dir_all(&dest).map_err(|e| SourceError::Transient(e.to_string()))?;
        let mut files = Vec::new();
        for path in paths {
            cancelled()?;
            let name = file_name(&path);
            let target = dest.join(&name);
            std::fs::rename(&path, &target).map_err(|e| SourceError::Transient(e.to_string()))?;
            let hashed = download::sha256_file(&target, &stop);
            cancelled()?;
            let hashed = hashed.map_err(|e| SourceError::Transient(e.to_string()))?;
            files.push(ModelFile {
                path: name,
                size: hashed.size,
                sha256: hashed.sha256,
            });
        }
        Ok(files)
    })
    .await
    .map_err(|e| SourceError::Transient(format!("staging stopped: {e}")))?
}

fn check_safetensors(path: &Path, name: &str) -> Result<(), validate::InvalidWeights> {
    validate::check_safetensors(path, name).map(|_| ())
}
