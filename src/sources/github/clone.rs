//! A libgit2 clone of one commit, on a blocking thread: shallow for a
//! branch or tag, reporting transfer progress, stopping when the task is
//! cancelled, and offering a token once (libgit2 asks again after every
//! rejection) and only to the git server's own origin (a redirect to
//! another host gets no token).

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::names_commit;
use crate::error::ErrorCode;
use crate::secret::Secret;
use crate::sources::{ProgressSink, SourceError};

/// A clone of one commit into a fresh folder; runs on a blocking thread.
pub(super) struct CloneJob {
    pub(super) url: String,
    pub(super) revision: String,
    pub(super) commit: String,
    pub(super) dir: PathBuf,
    pub(super) token: Option<Secret>,
    pub(super) progress: ProgressSink,
    pub(super) cancel: CancellationToken,
}

impl CloneJob {
    pub(super) fn run(self) -> Result<(), SourceError> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .map_err(|e| SourceError::Transient(e.to_string()))?;
        }
        let repo = git2::Repository::init(&self.dir).map_err(|e| {
            SourceError::Transient(format!("cannot create the clone: {}", e.message()))
        })?;
        let mut fetch = git2::FetchOptions::new();
        fetch.remote_callbacks(self.callbacks());
        let refspecs: Vec<String> = if names_commit(&self.revision, &self.commit) {
            vec![
                "+refs/heads/*:refs/remotes/origin/*".into(),
                "+refs/tags/*:refs/tags/*".into(),
            ]
        } else {
            fetch.depth(1);
            vec![
                format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.revision),
                format!("+refs/tags/{0}:refs/tags/{0}", self.revision),
            ]
        };
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.git_error(e))?;
        remote
            .fetch(&refspecs, Some(&mut fetch), None)
            .map_err(|e| self.git_error(e))?;
        let oid = git2::Oid::from_str(&self.commit).map_err(|e| self.git_error(e))?;
        let commit = repo.find_commit(oid).map_err(|_| {
            SourceError::Transient(format!(
                "the clone does not hold commit {}; '{}' may have moved meanwhile",
                self.commit, self.revision
            ))
        })?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force();
        // libgit2 asks before each file it writes; a cancelled task stops there.
        let cancel = self.cancel.clone();
        checkout.notify_on(git2::CheckoutNotificationType::all());
        checkout.notify(move |_, _, _, _, _| !cancel.is_cancelled());
        repo.checkout_tree(commit.as_object(), Some(&mut checkout))
            .map_err(|e| self.git_error(e))?;
        Ok(())
    }

    fn callbacks(&self) -> git2::RemoteCallbacks<'static> {
        let mut callbacks = git2::RemoteCallbacks::new();
        let (progress, cancel) = (self.progress.clone(), self.cancel.clone());
        callbacks.transfer_progress(move |stats| {
            progress.set_transfer(
                stats.received_bytes() as u64,
                stats.received_objects() as u64,
                stats.total_objects() as u64,
            );
            !cancel.is_cancelled()
        });
        let token = self.token.clone();
        let origin = origin_of(&self.url);
        let mut asked = false;
        callbacks.credentials(move |url, _user, _allowed| {
            if origin.is_none() || origin_of(url) != origin {
                return Err(git2::Error::from_str(&format!(
                    "{} asks for credentials; the token goes only to the git server itself",
                    origin_of(url).unwrap_or_else(|| "another host".into())
                )));
            }
            match (&token, asked) {
                (Some(token), false) => {
                    asked = true;
                    git2::Cred::userpass_plaintext("x-access-token", token.expose())
                }
                // libgit2 asks again after every rejection: give up at once.
                _ => Err(git2::Error::from_str(
                    "the git server refused the credentials (set a valid GITHUB_TOKEN)",
                )),
            }
        });
        callbacks
    }

    fn git_error(&self, err: git2::Error) -> SourceError {
        if self.cancel.is_cancelled() {
            return SourceError::Cancelled;
        }
        let message = err.message().to_string();
        let refused = message.contains("401")
            || message.contains("403")
            || message.contains("credentials")
            || err.code() == git2::ErrorCode::Auth;
        let text = format!("cloning {} failed: {message}", self.url);
        if refused {
            SourceError::refused(ErrorCode::Unauthorized, text)
        } else if message.contains("404") {
            SourceError::refused(ErrorCode::NotFound, text)
        } else {
            SourceError::Transient(text)
        }
    }
}

/// `scheme://host:port` of a URL, the unit a token is scoped to.
fn origin_of(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}
