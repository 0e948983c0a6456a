//! A stored file as the Hub describes it: its git blob id, and whether it
//! is a Git LFS file (weights), which decides its ETag — the blob id for a
//! regular file, the sha256 for an LFS file, as on the Hub, so the clients'
//! caches name blobs the same whether they came from the Hub or from here.
//!
//! A Hugging Face model keeps the Hub's answer in its blob names (a 64-hex
//! blob is an LFS file). GitHub and local models count as LFS what the
//! Hub's default `.gitattributes` sends to LFS, and any file of 10 MiB or
//! more. Blob ids are computed with libgit2: of the LFS pointer for an LFS
//! file, of the file itself otherwise (only regular files, under 10 MiB).

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};

use crate::store::{ModelFile, Source};

/// Files at least this large are LFS files on every root, as on the Hub.
const LFS_FROM_BYTES: u64 = 10 << 20;

/// Extensions the Hub's default `.gitattributes` stores in LFS.
const LFS_EXTENSIONS: &[&str] = &[
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "ftz",
    "gguf",
    "gz",
    "h5",
    "joblib",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "wasm",
    "xz",
    "zip",
    "zst",
];

/// One file of a snapshot, described as the Hub does.
#[derive(Debug, Clone)]
pub struct HubFile {
    /// Path inside the repo, `/`-separated.
    pub path: String,
    /// Where the bytes are.
    pub on_disk: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// The git blob id: of the LFS pointer for an LFS file.
    pub blob_id: String,
    pub lfs: bool,
}

impl HubFile {
    /// Describes `file` of a model of `source` whose files are in `folder`
    /// (blocking: it may read the file to hash it).
    pub fn describe(source: Source, folder: &Path, file: &ModelFile) -> std::io::Result<HubFile> {
        let on_disk = folder.join(&file.path);
        let hub_blob = match source {
            Source::Huggingface => std::fs::read_link(&on_disk)
                .ok()
                .and_then(|target| Some(target.file_name()?.to_str()?.to_string())),
            _ => None,
        };
        let lfs = match &hub_blob {
            Some(blob) => blob.len() == 64,
            None => file.size >= LFS_FROM_BYTES || has_lfs_extension(&file.path),
        };
        let blob_id = match hub_blob {
            Some(blob) if !lfs => blob,
            _ if lfs => git_blob_id(lfs_pointer(&file.sha256, file.size).as_bytes()),
            _ => Oid::hash_file(ObjectType::Blob, &on_disk)
                .map_err(std::io::Error::other)?
                .to_string(),
        };
        Ok(HubFile {
            path: file.path.clone(),
            on_disk,
            size: file.size,
            sha256: file.sha256.clone(),
            blob_id,
            lfs,
        })
    }

    /// The ETag the Hub gives the file (unquoted).
    pub fn etag(&self) -> &str {
        if self.lfs {
            &self.sha256
        } else {
            &self.blob_id
        }
    }

    /// The size of the LFS pointer that stands for the file in git.
    pub fn pointer_size(&self) -> usize {
        lfs_pointer(&self.sha256, self.size).len()
    }
}

fn has_lfs_extension(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| LFS_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The Git LFS pointer file of a blob (the spec's exact three lines).
fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

fn git_blob_id(bytes: &[u8]) -> String {
    Oid::hash_object(ObjectType::Blob, bytes)
        .expect("hashing bytes in memory does not fail")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_file(path: &str, bytes: &[u8]) -> ModelFile {
        use sha2::{Digest, Sha256};
        ModelFile {
            path: path.into(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }

    #[test]
    fn a_regular_file_is_named_by_its_git_blob_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}\n").unwrap();
        let file = model_file("config.json", b"{}\n");
        let described = HubFile::describe(Source::Local, dir.path(), &file).unwrap();
        assert!(!described.lfs);
        // `printf '{}\n' | git hash-object --stdin`
        assert_eq!(
            described.blob_id,
            "0967ef424bce6791893e9a57bb952f80fd536e93"
        );
        assert_eq!(described.etag(), described.blob_id);
    }

    #[test]
    fn weights_are_lfs_files_named_by_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        let file = model_file("model.safetensors", b"weights");
        let described = HubFile::describe(Source::Github, dir.path(), &file).unwrap();
        assert!(described.lfs);
        assert_eq!(described.etag(), file.sha256);
        let pointer = lfs_pointer(&file.sha256, 7);
        assert_eq!(described.pointer_size(), pointer.len());
        assert_eq!(described.blob_id, git_blob_id(pointer.as_bytes()));
    }

    #[test]
    fn a_hugging_face_blob_name_says_which_kind_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let regular = "a".repeat(40);
        std::fs::write(dir.path().join(&regular), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join(&regular), dir.path().join("big.bin")).unwrap();
        let file = model_file("big.bin", b"x");
        let described = HubFile::describe(Source::Huggingface, dir.path(), &file).unwrap();
        assert!(
            !described.lfs,
            "the Hub kept it in git despite its extension"
        );
        assert_eq!(described.blob_id, regular);
    }
}
