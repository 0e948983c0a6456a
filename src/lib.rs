//! vectorize: brings AI models into a local model store from the Hugging
//! Face Hub, GitHub and ZIP archives, and tracks each remote upload as a
//! supervised background task whose state survives crashes and restarts.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment, flags and a TOML file.
//! - [`error`]: the one table of error codes and their HTTP statuses.
//! - [`app`]: assembles and stops the service; `main` and the tests use it.
//! - [`api`]: the poem-openapi front end; turns HTTP into registry messages,
//!   serves the store back to Hugging Face clients (`api::mirror`) and the
//!   dashboard page (`api::dashboard`), and streams every task's events.
//! - [`actors`]: `TaskRegistry` (task state), `UploadSupervisor` (queue,
//!   concurrency, retries), `UploadWorker` (one attempt of one task),
//!   `TaskPruner` (finished tasks past their retention).
//! - [`sources`]: the work of one attempt or upload: Hugging Face, GitHub
//!   (clone and Git LFS), local ZIP archives, and the download engine they
//!   share (ranged parts, resume, bandwidth cap, disk admission); knows
//!   nothing of actors or routes.
//! - [`validate`]: reads weights and archives without trusting or executing
//!   them: safetensors headers, pickle opcodes, ZIP directories.
//! - [`store`]: SurrealDB records (`tasks`, `models`, the webhook outbox)
//!   and the on-disk layout of the model store (`files`).
//! - [`metrics`]: the Prometheus registry each running service owns.
//! - [`webhooks`]: signed notices of finished tasks, sent from the outbox
//!   the store writes with each terminal state.
//! - [`secret`]: the one type every credential is held in; prints `***`.
//!
//! The command-line client (`vectorize upload …`, `tasks`, `models`) lives
//! in the binary, under `src/cli/`.

pub mod actors;
pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod metrics;
pub mod secret;
pub mod sources;
pub mod store;
pub mod validate;
pub mod webhooks;

pub use app::App;
pub use config::{Config, ConfigArgs};
