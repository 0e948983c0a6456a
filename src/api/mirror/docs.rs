//! The mirror's routes in the OpenAPI document, under their own tag.
//!
//! poem-openapi cannot route them (a repo id and a file path hold `/`; a
//! revision arrives percent-encoded), so `super::routes` answers them and
//! `MirrorApi` only lends the document their description: it hands over the
//! metadata of the operations below and adds no route. Their bodies never
//! run. In Swagger UI a `/` typed into a parameter is sent as `%2F`, which
//! the mirror decodes, so "Try it out" works with `acme/bert` as a repo id.

use std::collections::HashMap;

use poem::endpoint::BoxEndpoint;
use poem::http::Method;
use poem_openapi::param::{Path, Query};
use poem_openapi::registry::{MetaApi, Registry};
use poem_openapi::{Enum, OpenApi, Tags};

use super::answers::{FileAnswer, InfoAnswer, MirrorRefusal, TreeAnswer};
use crate::api::auth::ApiKeyAuth;

#[derive(Tags)]
enum MirrorTags {
    /// Pull stored models with the Hugging Face tools: set
    /// `HF_ENDPOINT={service}/mirror/{root}` and use `hf download`,
    /// `snapshot_download` or `from_pretrained` as usual.
    Mirror,
}

/// The endpoint roots: which models each serves, and under which repo ids.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
enum MirrorRoot {
    /// Hugging Face models, under their own repo ids.
    Huggingface,
    /// GitHub models, as `{owner}/{repo}`.
    Github,
    /// Local models, as `local/{model_tag}` at `main`.
    Local,
}

/// Lends the document the operations of `MirrorOperations`; routes nothing.
pub struct MirrorApi;

impl OpenApi for MirrorApi {
    fn meta() -> Vec<MetaApi> {
        MirrorOperations::meta()
    }

    fn register(registry: &mut Registry) {
        MirrorOperations::register(registry)
    }

    fn add_routes(self, _: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {}
}

/// Described here, answered by `super::routes`.
struct MirrorOperations;

const ANSWERED_ELSEWHERE: &str = "the mirror's router answers this route";

#[OpenApi(tag = "MirrorTags::Mirror")]
impl MirrorOperations {
    /// Model info at `main`
    ///
    /// The model as the Hub describes it, at the revision `main`.
    #[oai(
        path = "/mirror/:root/api/models/:repo_id",
        method = "get",
        operation_id = "mirror_model_info"
    )]
    async fn model_info(
        &self,
        _auth: ApiKeyAuth,
        root: Path<MirrorRoot>,
        /// `name` or `namespace/name`.
        repo_id: Path<String>,
    ) -> Result<InfoAnswer, MirrorRefusal> {
        let _ = (root, repo_id);
        unreachable!("{ANSWERED_ELSEWHERE}")
    }

    /// Model info at a revision
    ///
    /// The model at a revision it was uploaded with (branch or tag), or at
    /// its commit sha.
    #[oai(
        path = "/mirror/:root/api/models/:repo_id/revision/:revision",
        method = "get",
        operation_id = "mirror_model_revision"
    )]
    async fn model_revision(
        &self,
        _auth: ApiKeyAuth,
        root: Path<MirrorRoot>,
        /// `name` or `namespace/name`.
        repo_id: Path<String>,
        /// A branch, tag or commit sha; `refs/pr/1` is sent as `refs%2Fpr%2F1`.
        revision: Path<String>,
    ) -> Result<InfoAnswer, MirrorRefusal> {
        let _ = (root, repo_id, revision);
        unreachable!("{ANSWERED_ELSEWHERE}")
    }

    /// List a model's files
    ///
    /// Every file of the model at a revision, with sizes, blob ids and LFS
    /// sha256. The listing is always recursive and in one page; folders
    /// are not listed.
    #[oai(
        path = "/mirror/:root/api/models/:repo_id/tree/:revision",
        method = "get",
        operation_id = "mirror_tree"
    )]
    async fn tree(
        &self,
        _auth: ApiKeyAuth,
        root: Path<MirrorRoot>,
        /// `name` or `namespace/name`.
        repo_id: Path<String>,
        /// A branch, tag or commit sha.
        revision: Path<String>,
        /// Accepted for the Hub's clients; the listing is always recursive.
        recursive: Query<Option<bool>>,
        /// Accepted for the Hub's clients; ignored.
        expand: Query<Option<bool>>,
    ) -> Result<TreeAnswer, MirrorRefusal> {
        let _ = (root, repo_id, revision, recursive, expand);
        unreachable!("{ANSWERED_ELSEWHERE}")
    }

    /// A file's headers
    ///
    /// What the Hub's clients ask before a download: size, ETag and commit.
    #[oai(
        path = "/mirror/:root/:repo_id/resolve/:revision/:path",
        method = "head",
        operation_id = "mirror_file_head"
    )]
    async fn file_head(
        &self,
        _auth: ApiKeyAuth,
        root: Path<MirrorRoot>,
        /// `name` or `namespace/name`.
        repo_id: Path<String>,
        /// A branch, tag or commit sha.
        revision: Path<String>,
        /// The file's path in the repo; may hold `/`.
        path: Path<String>,
    ) -> Result<FileAnswer, MirrorRefusal> {
        let _ = (root, repo_id, revision, path);
        unreachable!("{ANSWERED_ELSEWHERE}")
    }

    /// Download a file
    ///
    /// The file's bytes, streamed from the store; one `Range` is answered
    /// with 206, so interrupted downloads resume.
    #[oai(
        path = "/mirror/:root/:repo_id/resolve/:revision/:path",
        method = "get",
        operation_id = "mirror_file"
    )]
    async fn file(
        &self,
        _auth: ApiKeyAuth,
        root: Path<MirrorRoot>,
        /// `name` or `namespace/name`.
        repo_id: Path<String>,
        /// A branch, tag or commit sha.
        revision: Path<String>,
        /// The file's path in the repo; may hold `/`.
        path: Path<String>,
    ) -> Result<FileAnswer, MirrorRefusal> {
        let _ = (root, repo_id, revision, path);
        unreachable!("{ANSWERED_ELSEWHERE}")
    }
}
