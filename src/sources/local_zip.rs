//! Local ZIP uploads, as plain synchronous code: the archive guard (every
//! entry is checked before a byte is extracted), the grouping of entries
//! into models, and — in `extract` — extraction into a staging folder with
//! the bytes actually written counted, and the validation of each model's
//! weights without executing them. It writes only inside the staging
//! folder it is handed; it must not touch HTTP, actors, the database or
//! `models/` (installing a staged model is `store::files`' job).

mod extract;
pub mod guard;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;

use zip::ZipArchive;

use crate::error::ErrorCode;
pub use extract::{StagedModel, StagingOutcome, validate_model};
pub use guard::model_tag;

/// Most entries an archive may hold, folders included.
pub const MAX_ENTRIES: u64 = 10_000;
/// Largest expansion accepted for an entry that extracts to more than
/// `RATIO_CHECK_FLOOR` bytes; ordinary weights deflate far less than this.
pub const MAX_COMPRESSION_RATIO: u64 = 200;
pub const RATIO_CHECK_FLOOR: u64 = 1 << 20;
/// The entries extracted; every other entry is skipped.
pub const MODEL_FILE_EXTENSIONS: [&str; 6] = ["pt", "pth", "bin", "model", "safetensors", "json"];
/// A top-level folder that macOS adds to archives it writes (resource
/// forks named like the files beside them); it never holds a model.
const MACOS_METADATA_FOLDER: &str = "__MACOSX";

/// Why an upload cannot be used as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LocalZipError {
    /// Not a `.zip`, not a readable ZIP, or an unsafe entry; the message
    /// names the entry.
    #[error("{0}")]
    InvalidFile(String),
    /// A ZIP without entries.
    #[error("the archive holds no entries")]
    EmptyFile,
    /// The server could not read or write its own files (disk full, …).
    #[error("a local file could not be read or written: {0}")]
    Io(#[from] std::io::Error),
}

impl LocalZipError {
    pub fn code(&self) -> ErrorCode {
        match self {
            LocalZipError::InvalidFile(_) => ErrorCode::InvalidFile,
            LocalZipError::EmptyFile => ErrorCode::EmptyFile,
            LocalZipError::Io(_) => ErrorCode::ServerError,
        }
    }
}

/// The name of an upload without its `.zip` (any case), or why it is not
/// a ZIP upload. Checked before the body is read, so a wrong file costs
/// nothing.
pub fn archive_stem(file_name: &str) -> Result<&str, LocalZipError> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    match base
        .len()
        .checked_sub(4)
        .filter(|&at| base.is_char_boundary(at))
    {
        Some(at) if base[at..].eq_ignore_ascii_case(".zip") => Ok(&base[..at]),
        _ => Err(LocalZipError::InvalidFile(format!(
            "'{file_name}' is not a ZIP archive: the file name must end in .zip"
        ))),
    }
}

/// A model that did not make it, and why, as the answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub reason: String,
}

/// A model the archive holds: a top-level folder, or the files at the root.
#[derive(Debug, Clone)]
pub struct PlannedModel {
    pub name: String,
    pub tag: String,
    files: Vec<PlannedFile>,
}

/// One entry to extract, and where it goes inside its model's folder.
#[derive(Debug, Clone)]
struct PlannedFile {
    index: usize,
    entry_name: String,
    components: Vec<String>,
    compressed_size: u64,
}

/// An archive that passed the guard, the models to extract from it, and
/// the candidates that cannot be models (no model files, a tag taken twice).
pub struct GuardedArchive {
    archive: ZipArchive<BufReader<File>>,
    pub models: Vec<PlannedModel>,
    pub rejected: Vec<Rejection>,
}

/// An entry that passed the guard.
struct CheckedEntry {
    index: usize,
    name: String,
    components: Vec<String>,
    is_dir: bool,
    compressed_size: u64,
}

/// Opens an uploaded archive and checks every entry before anything is
/// extracted: readable, not empty, at most `MAX_ENTRIES`, no duplicate
/// names, and no absolute, climbing, symlinked, encrypted or bomb-like
/// entry. Files at the root form the model `root_model_name`.
pub fn open_archive(path: &Path, root_model_name: &str) -> Result<GuardedArchive, LocalZipError> {
    let mut file = File::open(path)?;
    let declared = crate::validate::zip_directory::declared_entry_count(&mut file)?;
    if declared > MAX_ENTRIES {
        return Err(too_many_entries(declared));
    }
    file.rewind()?;
    let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| {
        LocalZipError::InvalidFile(format!("the upload is not a readable ZIP archive ({e})"))
    })?;
    if archive.is_empty() {
        return Err(LocalZipError::EmptyFile);
    }
    if archive.len() as u64 > MAX_ENTRIES {
        return Err(too_many_entries(archive.len() as u64));
    }
    if archive.has_duplicate_names() {
        return Err(LocalZipError::InvalidFile(
            "the archive names the same entry twice; other tools would extract different files"
                .into(),
        ));
    }
    let entries = (0..archive.len())
        .map(|index| check_entry(&archive, index))
        .collect::<Result<Vec<_>, _>>()?;
    let (models, rejected) = group_into_models(entries, root_model_name);
    Ok(GuardedArchive {
        archive,
        models,
        rejected,
    })
}

fn too_many_entries(count: u64) -> LocalZipError {
    LocalZipError::InvalidFile(format!(
        "the archive holds {count} entries; at most {MAX_ENTRIES} are accepted (folders count)"
    ))
}

/// The guard for one entry, from the central directory alone.
fn check_entry(
    archive: &ZipArchive<BufReader<File>>,
    index: usize,
) -> Result<CheckedEntry, LocalZipError> {
    let invalid = LocalZipError::InvalidFile;
    let entry = archive
        .by_index_data(index)
        .map_err(|e| invalid(format!("entry {index} of the archive cannot be read ({e})")))?;
    let name = entry
        .name()
        .map_err(|e| {
            invalid(format!(
                "entry {index} has a name that cannot be read ({e})"
            ))
        })?
        .into_owned();
    let components = guard::safe_entry_path(&name).map_err(invalid)?;
    if guard::is_symlink(entry.unix_mode(), entry.external_attributes()) {
        return Err(invalid(format!("entry '{name}' is a symbolic link")));
    }
    if entry.encrypted() {
        return Err(invalid(format!("entry '{name}' is encrypted")));
    }
    let (declared, compressed) = (entry.size(), entry.compressed_size());
    if declared > RATIO_CHECK_FLOOR && declared / compressed.max(1) > MAX_COMPRESSION_RATIO {
        return Err(invalid(format!(
            "entry '{name}' would expand from {compressed} to {declared} bytes, past the \
             {MAX_COMPRESSION_RATIO}:1 accepted; the archive looks like a zip bomb"
        )));
    }
    Ok(CheckedEntry {
        index,
        components: components.into_iter().map(str::to_string).collect(),
        is_dir: entry.is_dir(),
        compressed_size: compressed,
        name,
    })
}

/// Whether an entry is one of the model files that are extracted.
pub fn is_model_file(path: &str) -> bool {
    extension(path).is_some_and(|ext| MODEL_FILE_EXTENSIONS.contains(&ext.as_str()))
}

/// The lower-case extension of a path, if it has one.
pub(crate) fn extension(path: &str) -> Option<String> {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
}

/// A model candidate while entries are grouped: its name and model files.
struct Candidate {
    name: String,
    files: Vec<PlannedFile>,
}

/// Each top-level folder holding a file is one model named after it; files
/// at the root form one more, `root_model_name`. Candidates without model
/// files, and a second candidate with a tag already taken, are rejected.
fn group_into_models(
    entries: Vec<CheckedEntry>,
    root_model_name: &str,
) -> (Vec<PlannedModel>, Vec<Rejection>) {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut by_name: HashMap<Option<String>, usize> = HashMap::new();
    for entry in entries {
        if entry.is_dir || entry.components.is_empty() {
            continue;
        }
        let (folder, inside) = match entry.components.split_first() {
            Some((_, [])) => (None, entry.components.clone()),
            Some((folder, rest)) => (Some(folder.clone()), rest.to_vec()),
            None => continue,
        };
        if folder.as_deref() == Some(MACOS_METADATA_FOLDER) {
            continue;
        }
        let slot = *by_name.entry(folder.clone()).or_insert_with(|| {
            candidates.push(Candidate {
                name: folder.unwrap_or_else(|| root_model_name.to_string()),
                files: Vec::new(),
            });
            candidates.len() - 1
        });
        if is_model_file(&entry.name) {
            candidates[slot].files.push(PlannedFile {
                index: entry.index,
                entry_name: entry.name,
                components: inside,
                compressed_size: entry.compressed_size,
            });
        }
    }
    plan_candidates(candidates)
}

/// Turns candidates into models, rejecting the empty and the clashing.
fn plan_candidates(candidates: Vec<Candidate>) -> (Vec<PlannedModel>, Vec<Rejection>) {
    let mut models: Vec<PlannedModel> = Vec::new();
    let mut rejected = Vec::new();
    for candidate in candidates {
        let tag = model_tag(&candidate.name);
        let reason = if candidate.files.is_empty() {
            Some(format!(
                "it holds no model files ({})",
                MODEL_FILE_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
            ))
        } else {
            models.iter().find(|m| m.tag == tag).map(|other| {
                format!(
                    "its tag '{tag}' is also the tag of '{}' in this archive",
                    other.name
                )
            })
        };
        match reason {
            Some(reason) => rejected.push(Rejection {
                name: candidate.name,
                reason,
            }),
            None => models.push(PlannedModel {
                name: candidate.name,
                tag,
                files: candidate.files,
            }),
        }
    }
    (models, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stem_drops_zip_in_any_case_and_refuses_other_names() {
        assert_eq!(archive_stem("models.ZIP").unwrap(), "models");
        assert_eq!(archive_stem("dir/my.model.zip").unwrap(), "my.model");
        assert!(archive_stem("notes.txt").is_err());
        assert!(archive_stem("zip").is_err());
        assert!(archive_stem("é.zi").is_err());
    }

    #[test]
    fn only_model_files_are_extracted() {
        for kept in [
            "a/model.bin",
            "config.json",
            "x.PT",
            "w.safetensors",
            "t.model",
        ] {
            assert!(is_model_file(kept), "{kept}");
        }
        for skipped in ["invalid_file.txt", "script.py", "bin", "a.bin/readme"] {
            assert!(!is_model_file(skipped), "{skipped}");
        }
    }
}
