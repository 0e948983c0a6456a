//! The on-disk layout of the model store under the data dir:
//!
//! ```text
//! models/huggingface/models--{ns}--{name}/blobs/{etag}       file bytes
//! models/huggingface/models--{ns}--{name}/snapshots/{commit}/{path} -> ../../blobs/{etag}
//! models/huggingface/models--{ns}--{name}/refs/{revision}    the commit
//! models/github/{owner}/{repo}/{commit}/                      a GitHub model's files
//! models/local/{model_tag}/                                   a local upload's files
//! tmp/nodes/{node}/tasks/{task_id}/                            a task's staging folder
//! tmp/nodes/{node}/uploads/                                    bodies and staging of local uploads
//! ```
//!
//! Files reach `models/` only by rename from `tmp/` (same file system), so
//! nothing half-written is ever visible there. Each node keeps its
//! temporary files under its own folder and sweeps only that one; a task's
//! staging folder moves to the node that claims the task (`adopt_staging`),
//! so a takeover resumes the partial files. This module knows paths and
//! renames; it knows nothing of HTTP or the database.

use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{ModelRecord, Source};

/// A downloaded file waiting in a staging folder to be installed.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// Path inside the repository, `/`-separated.
    pub repo_path: String,
    /// The blob name: sha256 for LFS files, git blob sha1 otherwise.
    pub blob_id: String,
    pub staged_at: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Paths of the model store, rooted at the data dir, as one node sees them.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    data_dir: PathBuf,
    node: String,
}

impl ModelFiles {
    /// The store at `data_dir` for the node named `node`.
    pub fn new(data_dir: impl Into<PathBuf>, node: &str) -> Self {
        Self {
            data_dir: data_dir.into(),
            node: node.to_string(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where this node's temporary files live; on the same file system as `models/`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.nodes_dir().join(&self.node)
    }

    /// The parent of every node's temporary folder.
    fn nodes_dir(&self) -> PathBuf {
        self.data_dir.join("tmp").join("nodes")
    }

    /// The staging folder of one task on this node; it survives retries and
    /// restarts so that partial downloads can resume.
    pub fn task_staging(&self, task_id: Uuid) -> PathBuf {
        self.tmp_dir().join("tasks").join(task_id.to_string())
    }

    /// Removes a task's staging folder, if any.
    pub fn remove_task_staging(&self, task_id: Uuid) {
        remove_dir_if_present(&self.task_staging(task_id));
    }

    /// Moves the staging folder of a task this node has just claimed from
    /// the node that ran it before (a dead or stopped one, or this service
    /// before it had nodes: `tmp/tasks/`), so its partial files resume here.
    /// The lease makes this node the folder's only owner now.
    pub fn adopt_staging(&self, task_id: Uuid) {
        let mine = self.task_staging(task_id);
        if mine.exists() {
            return;
        }
        let Some(previous) = self.staging_anywhere(task_id).into_iter().next() else {
            return;
        };
        let moved = mine
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&previous, &mine));
        if let Err(e) = moved {
            tracing::warn!(%task_id, error = %e, "could not take over a task's partial files; starting over");
        }
    }

    /// The staging folders of a task on any node (and in the layout before
    /// nodes).
    fn staging_anywhere(&self, task_id: Uuid) -> Vec<PathBuf> {
        let name = task_id.to_string();
        let legacy = self.data_dir.join("tmp").join("tasks").join(&name);
        let nodes = std::fs::read_dir(self.nodes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|node| node.path().join("tasks").join(&name));
        std::iter::once(legacy)
            .chain(nodes)
            .filter(|dir| dir.is_dir())
            .collect()
    }

    /// Whether any node still has a staging folder for the task.
    pub fn has_staging_anywhere(&self, task_id: Uuid) -> bool {
        !self.staging_anywhere(task_id).is_empty()
    }

    /// Removes a finished task's staging folders wherever they are: no node
    /// holds the task any more, so they are nobody's.
    pub fn remove_task_staging_anywhere(&self, task_id: Uuid) {
        for dir in self.staging_anywhere(task_id) {
            remove_dir_if_present(&dir);
        }
    }

    /// Removes everything in this node's temporary folder except the
    /// staging folders of unfinished tasks (`keep`): leftovers of uploads
    /// and tasks that ended while this node was down. Other nodes' folders
    /// are theirs — unless this node is the only one there can be (an
    /// embedded database opens in one process): then the folders of its
    /// earlier processes, and of the layout before nodes, are swept too,
    /// their unfinished staging kept for the claims to adopt.
    pub fn sweep_staging(&self, keep: &[Uuid], sole_node: bool) {
        let keep: Vec<String> = keep.iter().map(Uuid::to_string).collect();
        let legacy = self.data_dir.join("tmp");
        let mut folders = vec![self.tmp_dir()];
        if sole_node {
            folders.push(legacy.clone());
            folders.extend(
                std::fs::read_dir(self.nodes_dir())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| *p != self.tmp_dir()),
            );
        }
        for folder in folders {
            sweep_node_folder(&folder, &keep);
            if folder != self.tmp_dir() && folder != legacy {
                // Gone once empty; `remove_dir` keeps one with staging left.
                std::fs::remove_dir(folder.join("tasks")).ok();
                std::fs::remove_dir(&folder).ok();
            }
        }
    }

    /// The Hugging Face cache root, usable as `HF_HUB_CACHE`.
    pub fn hf_cache(&self) -> PathBuf {
        self.data_dir.join("models").join("huggingface")
    }

    /// `models--{ns}--{name}` for a repo id.
    pub fn hf_repo_dir(&self, repo_id: &str) -> PathBuf {
        self.hf_cache()
            .join(format!("models--{}", repo_id.replace('/', "--")))
    }

    /// A path relative to the data dir, as stored in model records.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.data_dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// Moves staged files into the Hugging Face cache layout and returns the
    /// snapshot folder. Blobs already present are kept (they are content
    /// addressed); a new snapshot folder appears with one rename; an existing
    /// one (another revision of the same commit) gains the missing links.
    pub fn install_hf_snapshot(
        &self,
        repo_id: &str,
        revision: &str,
        commit: &str,
        files: &[StagedFile],
    ) -> io::Result<PathBuf> {
        let repo_dir = self.hf_repo_dir(repo_id);
        let blobs = repo_dir.join("blobs");
        let snapshots = repo_dir.join("snapshots");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&snapshots)?;
        for file in files {
            let blob = blobs.join(&file.blob_id);
            if blob.exists() {
                std::fs::remove_file(&file.staged_at).ok();
            } else {
                std::fs::rename(&file.staged_at, &blob)?;
            }
        }
        let snapshot = snapshots.join(commit);
        if snapshot.exists() {
            link_snapshot_files(&snapshot, files)?;
        } else {
            let building = snapshots.join(format!(".{commit}.{}", Uuid::new_v4()));
            let built = link_snapshot_files(&building, files)
                .and_then(|()| std::fs::rename(&building, &snapshot));
            if built.is_err() {
                remove_dir_if_present(&building);
            }
            if built.is_err() && !snapshot.exists() {
                built?;
            }
        }
        if revision != commit {
            write_atomically(&repo_dir.join("refs").join(revision), commit.as_bytes())?;
        }
        Ok(snapshot)
    }

    /// Moves a staged GitHub model folder to
    /// `models/github/{owner}/{repo}/{commit}/` with one rename. Another
    /// revision name for the same commit has installed the same files
    /// already: that folder is kept and the staged one dropped.
    pub fn install_github_folder(
        &self,
        full_name: &str,
        commit: &str,
        staged: &Path,
    ) -> io::Result<PathBuf> {
        let target = self
            .data_dir
            .join("models")
            .join("github")
            .join(full_name)
            .join(commit);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !target.exists() {
            std::fs::rename(staged, &target)?;
        }
        Ok(target)
    }

    /// Removes one Hugging Face model: its ref, its snapshot unless
    /// `snapshot_shared`, and every blob no remaining snapshot links to.
    pub fn remove_hf_model(
        &self,
        repo_id: &str,
        revision: &str,
        commit: &str,
        snapshot_shared: bool,
    ) -> io::Result<()> {
        let repo_dir = self.hf_repo_dir(repo_id);
        let reference = repo_dir.join("refs").join(revision);
        if std::fs::read_to_string(&reference).is_ok_and(|c| c.trim() == commit) {
            std::fs::remove_file(&reference)?;
        }
        if snapshot_shared {
            return Ok(());
        }
        remove_dir_if_present(&repo_dir.join("snapshots").join(commit));
        let mut linked = std::collections::HashSet::new();
        collect_link_targets(&repo_dir.join("snapshots"), &mut linked)?;
        for entry in std::fs::read_dir(repo_dir.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !linked.contains(&entry.file_name().to_string_lossy().into_owned()) {
                std::fs::remove_file(entry.path())?;
            }
        }
        let snapshots_left = std::fs::read_dir(repo_dir.join("snapshots"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !snapshots_left {
            remove_dir_if_present(&repo_dir);
        }
        Ok(())
    }

    /// Removes a model's files; its folder only when not `snapshot_shared`
    /// with another model (two revision names of one commit), and Hugging
    /// Face blobs only when no snapshot links to them any more.
    pub fn remove_model(&self, model: &ModelRecord, snapshot_shared: bool) {
        let removed = match (model.source, &model.revision, &model.commit_sha) {
            (Source::Huggingface, Some(revision), Some(commit)) => {
                self.remove_hf_model(&model.name, revision, commit, snapshot_shared)
            }
            _ if snapshot_shared => Ok(()),
            _ => {
                remove_dir_if_present(&self.absolute(&model.path));
                Ok(())
            }
        };
        if let Err(e) = removed {
            tracing::warn!(model_id = %model.model_id, error = %e, "could not remove all of a model's files");
        }
    }
}

/// The layout of local ZIP uploads: `models/local/{model_tag}/` for
/// installed models and this node's `tmp/nodes/{node}/uploads/` for request
/// bodies and their staging folders while a request runs (swept at start
/// like the rest of the node's temporary folder).
impl ModelFiles {
    /// Where local models are installed, one folder per model tag.
    pub fn local_models_dir(&self) -> PathBuf {
        self.data_dir.join("models").join("local")
    }

    /// Where uploaded archives and their staging folders live while a
    /// request runs; on the same file system as `models/`, so installing is
    /// a rename.
    pub fn upload_tmp_dir(&self) -> PathBuf {
        self.tmp_dir().join("uploads")
    }

    /// Moves a staged local model folder to `models/local/{model_tag}/` with
    /// one rename. The caller has made sure no registered model holds the
    /// tag, so a folder already there is the leftover of an install that was
    /// never registered (a crash in between): it is moved aside and removed.
    pub fn install_local_model(&self, staged: &Path, model_tag: &str) -> io::Result<PathBuf> {
        let tag_is_one_component = !model_tag.is_empty()
            && model_tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !tag_is_one_component {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{model_tag}' is not a local model tag"),
            ));
        }
        let target = self.local_models_dir().join(model_tag);
        std::fs::create_dir_all(self.local_models_dir())?;
        if target.symlink_metadata().is_ok() {
            let aside = self
                .upload_tmp_dir()
                .join(format!("orphan-{model_tag}-{}", Uuid::new_v4()));
            std::fs::create_dir_all(self.upload_tmp_dir())?;
            std::fs::rename(&target, &aside)?;
            remove_dir_if_present(&aside);
        }
        std::fs::rename(staged, &target)?;
        Ok(target)
    }
}

/// Removes what a node folder holds but the staging folders in `keep`
/// (`nodes/` itself is never removed from the folder of the old layout).
fn sweep_node_folder(folder: &Path, keep: &[String]) {
    for entry in std::fs::read_dir(folder.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            remove_dir_if_present(&entry.path());
        }
    }
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        if entry.file_name() != "tasks" && entry.file_name() != "nodes" {
            remove_dir_if_present(&entry.path());
            std::fs::remove_file(entry.path()).ok();
        }
    }
}

/// Creates `{snapshot}/{path}` → `../../blobs/{blob}` links for files that lack one.
fn link_snapshot_files(snapshot: &Path, files: &[StagedFile]) -> io::Result<()> {
    for file in files {
        let link = snapshot.join(&file.repo_path);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let depth = file.repo_path.matches('/').count();
        let target = format!("{}blobs/{}", "../".repeat(2 + depth), file.blob_id);
        std::os::unix::fs::symlink(target, &link)?;
    }
    Ok(())
}

/// The blob names every symlink under `dir` points to.
fn collect_link_targets(
    dir: &Path,
    into: &mut std::collections::HashSet<String>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_link_targets(&entry.path(), into)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            if let Some(name) = target.file_name() {
                into.insert(name.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{}.tmp", Uuid::new_v4()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        std::fs::remove_file(&tmp).ok();
    })
}

/// Removes a folder and everything in it; a missing folder is fine.
pub fn remove_dir_if_present(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove folder");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, repo_path: &str, blob: &str, bytes: &[u8]) -> StagedFile {
        let staged_at = dir.join(blob);
        std::fs::write(&staged_at, bytes).unwrap();
        StagedFile {
            repo_path: repo_path.into(),
            blob_id: blob.into(),
            staged_at,
            size: bytes.len() as u64,
            sha256: String::new(),
        }
    }

    #[test]
    fn snapshot_links_resolve_to_blobs_and_removal_collects_them() {
        let root = tempfile::tempdir().unwrap();
        let files = ModelFiles::new(root.path(), "n1");
        let stage = root.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        let commit = "a".repeat(40);
        let snapshot = files
            .install_hf_snapshot(
                "org/name",
                "main",
                &commit,
                &[
                    staged(&stage, "config.json", "b1", b"{}"),
                    staged(&stage, "sub/w.bin", "b2", b"xy"),
                ],
            )
            .unwrap();
        assert_eq!(std::fs::read(snapshot.join("config.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read(snapshot.join("sub/w.bin")).unwrap(), b"xy");
        assert_eq!(
            std::fs::read_link(snapshot.join("sub/w.bin")).unwrap(),
            PathBuf::from("../../../blobs/b2")
        );
        let repo = files.hf_repo_dir("org/name");
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            commit
        );
        files
            .remove_hf_model("org/name", "main", &commit, false)
            .unwrap();
        assert!(!repo.exists());
    }

    #[test]
    fn a_node_sweeps_its_own_folder_and_a_sole_node_every_folder() {
        let root = tempfile::tempdir().unwrap();
        let (kept, gone) = (Uuid::now_v7(), Uuid::now_v7());
        let mine = ModelFiles::new(root.path(), "me");
        let theirs = ModelFiles::new(root.path(), "other");
        for files in [&mine, &theirs] {
            for id in [kept, gone] {
                std::fs::create_dir_all(files.task_staging(id)).unwrap();
            }
            std::fs::create_dir_all(files.upload_tmp_dir().join("body")).unwrap();
        }
        mine.sweep_staging(&[kept], false);
        assert!(mine.task_staging(kept).exists());
        assert!(!mine.task_staging(gone).exists());
        assert!(!mine.upload_tmp_dir().exists());
        assert!(theirs.task_staging(gone).exists() && theirs.upload_tmp_dir().exists());

        mine.sweep_staging(&[kept], true);
        assert!(theirs.task_staging(kept).exists());
        assert!(!theirs.task_staging(gone).exists());
        assert!(!theirs.upload_tmp_dir().exists());
        mine.adopt_staging(kept);
        assert!(mine.task_staging(kept).exists());
        assert!(!mine.has_staging_anywhere(gone));
    }
}
