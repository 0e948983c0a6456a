//! The Hub's JSON objects as the mirror answers them — the model info with
//! its siblings, and the entries of a tree listing — built from a snapshot
//! and its described files. One type each, used both for the answer and
//! for the OpenAPI document, so the two cannot drift apart.

use chrono::{DateTime, Utc};
use poem_openapi::Object;

use super::files::HubFile;
use super::repo::Snapshot;

/// A model as `GET /api/models/{repo_id}[/revision/{revision}]` answers it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "HubModelInfo")]
pub struct ModelInfo {
    /// The repo id.
    pub id: String,
    /// The repo id again, as the Hub sends it.
    #[oai(rename = "modelId")]
    pub model_id: String,
    /// The namespace of the repo id, if it has one.
    #[oai(skip_serializing_if_is_none)]
    pub author: Option<String>,
    /// The commit the revision resolves to.
    pub sha: String,
    #[oai(rename = "createdAt")]
    pub created_at: String,
    #[oai(rename = "lastModified")]
    pub last_modified: String,
    pub private: bool,
    pub disabled: bool,
    pub gated: bool,
    pub downloads: u64,
    pub likes: u64,
    pub tags: Vec<String>,
    /// The bytes of every file.
    #[oai(rename = "usedStorage")]
    pub used_storage: u64,
    pub siblings: Vec<Sibling>,
}

/// One file in a model info.
#[derive(Debug, Clone, Object)]
#[oai(rename = "HubSibling")]
pub struct Sibling {
    /// The path inside the repo.
    pub rfilename: String,
    pub size: u64,
    /// The git blob id (of the LFS pointer, for an LFS file).
    #[oai(rename = "blobId")]
    pub blob_id: String,
    /// Set for weights and other LFS files.
    #[oai(skip_serializing_if_is_none)]
    pub lfs: Option<SiblingLfs>,
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "HubLfsFile")]
pub struct SiblingLfs {
    pub size: u64,
    pub sha256: String,
    #[oai(rename = "pointerSize")]
    pub pointer_size: u64,
}

/// One file in a tree listing (`GET /api/models/{repo_id}/tree/{revision}`).
#[derive(Debug, Clone, Object)]
#[oai(rename = "HubTreeEntry")]
pub struct TreeEntry {
    /// Always `file`: folders are not listed.
    #[oai(rename = "type")]
    pub kind: String,
    pub path: String,
    pub size: u64,
    /// The git blob id.
    pub oid: String,
    /// Set for weights and other LFS files.
    #[oai(skip_serializing_if_is_none)]
    pub lfs: Option<TreeLfs>,
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "HubTreeLfsFile")]
pub struct TreeLfs {
    /// The sha256 of the file.
    pub oid: String,
    pub size: u64,
    #[oai(rename = "pointerSize")]
    pub pointer_size: u64,
}

impl ModelInfo {
    pub fn new(snapshot: &Snapshot, files: &[HubFile]) -> ModelInfo {
        let model = &snapshot.model;
        ModelInfo {
            id: snapshot.repo_id.clone(),
            model_id: snapshot.repo_id.clone(),
            author: snapshot
                .repo_id
                .split_once('/')
                .map(|(namespace, _)| namespace.to_string()),
            sha: snapshot.commit.clone(),
            created_at: hub_time(model.created_at),
            last_modified: hub_time(model.updated_at),
            private: false,
            disabled: false,
            gated: false,
            downloads: 0,
            likes: 0,
            tags: vec![],
            used_storage: model.size_bytes,
            siblings: files
                .iter()
                .map(|file| Sibling {
                    rfilename: file.path.clone(),
                    size: file.size,
                    blob_id: file.blob_id.clone(),
                    lfs: file.lfs.then(|| SiblingLfs {
                        size: file.size,
                        sha256: file.sha256.clone(),
                        pointer_size: file.pointer_size() as u64,
                    }),
                })
                .collect(),
        }
    }
}

impl TreeEntry {
    pub fn new(file: &HubFile) -> TreeEntry {
        TreeEntry {
            kind: "file".into(),
            path: file.path.clone(),
            size: file.size,
            oid: file.blob_id.clone(),
            lfs: file.lfs.then(|| TreeLfs {
                oid: file.sha256.clone(),
                size: file.size,
                pointer_size: file.pointer_size() as u64,
            }),
        }
    }
}

/// The one time format the Hub's clients parse: `%Y-%m-%dT%H:%M:%S.%fZ`.
fn hub_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
