//! Extraction of guarded models into a staging folder, and their
//! validation. Bytes are counted as they are written — the sizes an archive
//! declares are not trusted — so extraction stops at the byte budget or at
//! an entry that expands past the accepted ratio. Weights are checked by
//! reading them (`validate`), never by loading them. Writes only below the
//! staging folder it is given.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{
    GuardedArchive, LocalZipError, MAX_COMPRESSION_RATIO, PlannedFile, PlannedModel,
    RATIO_CHECK_FLOOR, Rejection, extension,
};
use crate::store::ModelFile;
use crate::validate::check_safetensors;
use crate::validate::pickle::{check_checkpoint, check_stored_file};

/// Bytes moved per read while extracting.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// A valid model extracted into its staging folder, ready to install.
#[derive(Debug, Clone)]
pub struct StagedModel {
    pub name: String,
    pub tag: String,
    pub dir: PathBuf,
    pub files: Vec<ModelFile>,
}

/// What staging made of the models it was given.
#[derive(Debug, Default)]
pub struct StagingOutcome {
    pub staged: Vec<StagedModel>,
    pub rejected: Vec<Rejection>,
}

/// The bytes an upload may still write, shared by all its models.
struct ByteBudget {
    limit: u64,
    written: u64,
}

impl GuardedArchive {
    /// Extracts each model into `staging/{tag}/` and validates it; an
    /// invalid model's folder is removed and the model listed as rejected.
    /// At most `max_bytes` are written in all. A bomb-like entry or a
    /// damaged one refuses the whole archive.
    pub fn stage_models(
        &mut self,
        models: &[PlannedModel],
        staging: &Path,
        max_bytes: u64,
    ) -> Result<StagingOutcome, LocalZipError> {
        let mut budget = ByteBudget {
            limit: max_bytes,
            written: 0,
        };
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
        let mut outcome = StagingOutcome::default();
        for model in models {
            let dir = staging.join(&model.tag);
            let files = self.extract_model(model, &dir, &mut budget, &mut buffer)?;
            match validate_model(&dir, &files) {
                Ok(()) => outcome.staged.push(StagedModel {
                    name: model.name.clone(),
                    tag: model.tag.clone(),
                    dir,
                    files,
                }),
                Err(reason) => {
                    std::fs::remove_dir_all(&dir)?;
                    outcome.rejected.push(Rejection {
                        name: model.name.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(outcome)
    }

    fn extract_model(
        &mut self,
        model: &PlannedModel,
        dir: &Path,
        budget: &mut ByteBudget,
        buffer: &mut [u8],
    ) -> Result<Vec<ModelFile>, LocalZipError> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::with_capacity(model.files.len());
        for planned in &model.files {
            let mut target = create_target(dir, planned)?;
            let entry = self.archive.by_index(planned.index).map_err(|e| {
                LocalZipError::InvalidFile(format!(
                    "entry '{}' cannot be read ({e})",
                    planned.entry_name
                ))
            })?;
            let (size, sha256) = copy_counted(entry, &mut target, planned, budget, buffer)?;
            files.push(ModelFile {
                path: planned.components.join("/"),
                size,
                sha256,
            });
        }
        Ok(files)
    }
}

/// Creates the file an entry extracts to. Two entries that would land on
/// the same path (`a/b` and `a\b`), or a name the file system refuses (a
/// component past 255 bytes), refuse the archive.
fn create_target(dir: &Path, planned: &PlannedFile) -> Result<File, LocalZipError> {
    let path = planned
        .components
        .iter()
        .fold(dir.to_path_buf(), |path, c| path.join(c));
    let clash = |e: io::Error| {
        let why = match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                "extracts to the same path as another entry"
            }
            io::ErrorKind::InvalidFilename => "has a name the file system cannot hold",
            _ => return LocalZipError::Io(e),
        };
        LocalZipError::InvalidFile(format!("entry '{}' {why}", planned.entry_name))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(clash)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(clash)
}

/// Copies one entry, hashing it and counting the bytes written against the
/// budget and the entry's compressed size; returns its size and sha256.
fn copy_counted(
    mut from: impl Read,
    to: &mut File,
    planned: &PlannedFile,
    budget: &mut ByteBudget,
    buffer: &mut [u8],
) -> Result<(u64, String), LocalZipError> {
    let entry = &planned.entry_name;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(LocalZipError::InvalidFile(format!(
                    "entry '{entry}' is damaged and cannot be extracted ({e})"
                )));
            }
        };
        written += n as u64;
        budget.written += n as u64;
        check_expansion(entry, written, planned.compressed_size, budget)?;
        to.write_all(&buffer[..n])?;
        hasher.update(&buffer[..n]);
    }
    Ok((written, hex::encode(hasher.finalize())))
}

/// Stops extraction past the byte budget, or when an entry over
/// `RATIO_CHECK_FLOOR` bytes has expanded past the accepted ratio.
fn check_expansion(
    entry: &str,
    written: u64,
    compressed: u64,
    budget: &ByteBudget,
) -> Result<(), LocalZipError> {
    if budget.written > budget.limit {
        return Err(LocalZipError::InvalidFile(format!(
            "extracting the archive would write more than {} bytes (stopped in entry '{entry}')",
            budget.limit
        )));
    }
    if written > RATIO_CHECK_FLOOR && written / compressed.max(1) > MAX_COMPRESSION_RATIO {
        return Err(LocalZipError::InvalidFile(format!(
            "entry '{entry}' expands past {MAX_COMPRESSION_RATIO}:1 ({compressed} bytes became more \
             than {written}); the archive looks like a zip bomb"
        )));
    }
    Ok(())
}

/// Whether a staged model is valid, or why not. Valid: at least one
/// weights file passes its check. A `.bin`/`.pt`/`.pth` checkpoint that
/// fails the pickle scan, or any other file that holds an unsafe pickle
/// (files are read by content, whatever their name), rejects the model
/// whatever else it holds: such a pickle may run code when it is loaded.
pub fn validate_model(dir: &Path, files: &[ModelFile]) -> Result<(), String> {
    let mut passed = 0;
    let mut failures = Vec::new();
    for file in files {
        let path = dir.join(&file.path);
        match extension(&file.path).as_deref() {
            Some("safetensors") => match check_safetensors(&path, &file.path) {
                Ok(_) => passed += 1,
                Err(e) => failures.push(e.0),
            },
            Some("bin" | "pt" | "pth") => {
                check_checkpoint(&path, &file.path).map_err(|e| e.0)?;
                passed += 1;
                continue;
            }
            _ => {}
        }
        check_stored_file(&path, &file.path).map_err(|e| e.0)?;
    }
    match (passed, failures.is_empty()) {
        (0, true) => Err("it holds no weights file (.safetensors, .bin, .pt or .pth)".into()),
        (0, false) => Err(failures.join("; ")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(compressed_size: u64) -> PlannedFile {
        PlannedFile {
            index: 0,
            entry_name: "m/weights.bin".into(),
            components: vec!["weights.bin".into()],
            compressed_size,
        }
    }

    fn copy(input: impl Read, compressed: u64, limit: u64) -> Result<u64, LocalZipError> {
        let mut out = tempfile::tempfile().unwrap();
        let mut budget = ByteBudget { limit, written: 0 };
        let mut buffer = vec![0u8; 4096];
        copy_counted(
            input,
            &mut out,
            &planned(compressed),
            &mut budget,
            &mut buffer,
        )
        .map(|(n, _)| n)
    }

    #[test]
    fn bytes_written_are_counted_not_the_declared_size() {
        // An entry whose header claims 1 KiB compressed but expands to 8 MiB.
        let err = copy(io::repeat(0).take(8 << 20), 1024, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("m/weights.bin"), "{err}");
        assert!(err.to_string().contains("200:1"), "{err}");
    }

    #[test]
    fn small_entries_may_compress_well() {
        assert_eq!(
            copy(io::repeat(0).take(1 << 20), 10, u64::MAX).unwrap(),
            1 << 20
        );
    }

    #[test]
    fn the_byte_budget_stops_extraction() {
        let err = copy(io::repeat(7).take(100_000), 100_000, 50_000).unwrap_err();
        assert!(err.to_string().contains("more than 50000 bytes"), "{err}");
        assert_eq!(
            copy(io::repeat(7).take(50_000), 50_000, 50_000).unwrap(),
            50_000
        );
    }

    #[test]
    fn a_model_needs_one_passing_weights_file_and_no_failing_pickle() {
        let dir = tempfile::tempdir().unwrap();
        let file = |path: &str, bytes: &[u8]| {
            std::fs::write(dir.path().join(path), bytes).unwrap();
            ModelFile {
                path: path.into(),
                size: bytes.len() as u64,
                sha256: String::new(),
            }
        };
        let config = file("config.json", b"{}");
        let broken = file("broken.safetensors", b"nope");
        assert!(validate_model(dir.path(), std::slice::from_ref(&config)).is_err());
        assert!(validate_model(dir.path(), &[config.clone(), broken.clone()]).is_err());
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut good = (header.len() as u64).to_le_bytes().to_vec();
        good.extend_from_slice(header);
        good.extend_from_slice(&[0; 4]);
        let good = file("model.safetensors", &good);
        assert!(validate_model(dir.path(), &[config, broken, good.clone()]).is_ok());
        let evil = file("evil.bin", b"\x80\x02cposix\nsystem\n)R.");
        let reason = validate_model(dir.path(), &[good, evil]).unwrap_err();
        assert!(reason.contains("posix.system"), "{reason}");
    }
}
