//! Which stored model a mirror request means: the repo id under its root
//! and a revision, either a name the model was uploaded with or its commit.
//! Hugging Face models are served under their repo ids, GitHub models as
//! `{owner}/{repo}`, local models as `local/{model_tag}` at `main`. A local
//! model has no commit of its own, so it is given a stable one derived
//! from its id: the Hub's clients need a 40-hex commit for their caches.

use sha2::{Digest, Sha256};

use super::answers::MirrorError;
use super::route::DEFAULT_REVISION;
use crate::store::{ModelRecord, Source, Store};

/// The namespace of local models on the `local` root.
const LOCAL_NAMESPACE: &str = "local";

/// A stored model at one revision, as the Hub would name it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub repo_id: String,
    pub model: ModelRecord,
    /// The 40-hex commit the revision resolves to.
    pub commit: String,
}

/// The model `repo_id` names at `revision` under the root serving `source`.
pub async fn find(
    store: &Store,
    source: Source,
    repo_id: &str,
    revision: &str,
) -> Result<Snapshot, MirrorError> {
    let candidates = match source {
        Source::Local => {
            let tag = repo_id
                .strip_prefix(LOCAL_NAMESPACE)
                .and_then(|rest| rest.strip_prefix('/'));
            match tag {
                Some(tag) => store.find_model(Source::Local, tag).await,
                None => Ok(None),
            }
            .map(|found| found.into_iter().collect())
        }
        Source::Huggingface | Source::Github => store.models_named(source, repo_id).await,
    }
    .map_err(MirrorError::internal)?;
    if candidates.is_empty() {
        return Err(MirrorError::repo_not_found(repo_id));
    }
    // A name the model was uploaded with wins over a commit that several share.
    let by_name = candidates
        .iter()
        .find(|m| revision_name(m) == Some(revision));
    let by_commit = || candidates.iter().find(|m| commit_of(m) == revision);
    match by_name.or_else(by_commit) {
        Some(model) => Ok(Snapshot {
            repo_id: repo_id.to_string(),
            commit: commit_of(model),
            model: model.clone(),
        }),
        None => Err(MirrorError::revision_not_found(repo_id, revision)),
    }
}

/// The revision name a model answers to: the one it was uploaded with, or
/// `main` for a local model.
fn revision_name(model: &ModelRecord) -> Option<&str> {
    match model.source {
        Source::Local => Some(DEFAULT_REVISION),
        _ => model.revision.as_deref(),
    }
}

/// The commit a model is served at.
pub fn commit_of(model: &ModelRecord) -> String {
    match &model.commit_sha {
        Some(commit) => commit.clone(),
        None => {
            let digest = Sha256::digest(format!("vectorize local model {}", model.model_id));
            hex::encode(digest)[..40].to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_model() -> ModelRecord {
        ModelRecord::new(
            Source::Local,
            "bert_base".into(),
            "bert-base".into(),
            None,
            "models/local/bert_base".into(),
            vec![],
        )
    }

    #[test]
    fn a_local_model_has_a_stable_commit_of_its_own() {
        let model = local_model();
        let commit = commit_of(&model);
        assert_eq!(commit.len(), 40);
        assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(commit, commit_of(&model.clone()));
        assert_ne!(commit, commit_of(&local_model()), "each model its own");
        assert_eq!(revision_name(&model), Some("main"));
    }
}
