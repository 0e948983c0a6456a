//! The command-line client of a running vectorize service, in the same
//! binary as the service: `upload` (Hugging Face, GitHub, a local ZIP
//! archive), `tasks`, `watch`, `cancel` and `models`. This file holds the
//! clap types and the entry point; `commands` runs each command through
//! `client` (HTTP), `follow` and `events` (waiting for a task), `progress`
//! (bars and lines on stderr) and `output` (results on stdout). The client
//! speaks only HTTP to the service: it must not reach into the service's
//! modules, its store or its files.

mod client;
mod commands;
mod error;
mod events;
mod follow;
mod objects;
mod output;
mod progress;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use uuid::Uuid;

pub use error::Exit;

/// Where the service is and how to talk to it; every client command takes
/// these, before or after its own arguments.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The vectorize service to talk to.
    #[arg(
        long,
        env = "VECTORIZE_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,
    /// The bearer key, when the service requires one.
    #[arg(long, env = "VECTORIZE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<vectorize::secret::Secret>,
    /// Print the service's JSON on stdout, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client's commands, beside `serve`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Upload a model from the Hugging Face Hub, GitHub or a ZIP archive.
    ///
    /// Remote uploads wait for their task with a progress bar; exit status
    /// 0 when it is DONE, 1 when it FAILED or was cancelled, 2 for usage or
    /// connection errors, 130 when Ctrl-C left it running.
    Upload(UploadArgs),
    /// List upload tasks, or show one.
    Tasks(TasksArgs),
    /// Follow a task until it ends, with a progress bar.
    Watch(TaskIdArgs),
    /// Cancel a PENDING or RUNNING task and remove its partial files.
    Cancel(TaskIdArgs),
    /// List the models in the store, show one, or delete one.
    Models(ModelsArgs),
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    source: UploadSource,
}

/// Where a model comes from.
#[derive(Debug, Subcommand)]
pub enum UploadSource {
    /// A Hugging Face repository, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    #[command(visible_alias = "hf")]
    Huggingface {
        /// The repo id: `name` or `namespace/name`.
        repo_id: String,
        /// Branch, tag or commit; default `main`.
        #[arg(long)]
        revision: Option<String>,
        /// A glob of the files to fetch; repeat for several. Default:
        /// *.safetensors, *.json, *.txt, *.model.
        #[arg(long = "allow", value_name = "PATTERN")]
        allow: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// A GitHub repository, as `owner/repo`.
    #[command(visible_alias = "gh")]
    Github {
        /// `owner/repo`, e.g. `acme/tiny-bert`.
        repository: String,
        /// Branch, tag or commit; default `main`.
        #[arg(long)]
        revision: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// A ZIP archive on this machine, streamed to the service from disk.
    ///
    /// Each top-level folder of the archive is one model; files at its root
    /// form one more, named `--model-name` (default: the archive's name).
    Local {
        /// The archive; its name must end in `.zip`.
        archive: PathBuf,
        /// The name of the model formed by the files at the archive's root.
        #[arg(long)]
        model_name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Print the new task and return without waiting for it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    connection: Connection,
    /// Show this task only.
    #[arg(conflicts_with_all = ["status", "source", "limit", "offset"])]
    id: Option<Uuid>,
    /// Only tasks in this state.
    #[arg(long, ignore_case = true)]
    status: Option<StatusFilter>,
    /// Only tasks from this source.
    #[arg(long, ignore_case = true)]
    source: Option<SourceFilter>,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args)]
pub struct TaskIdArgs {
    #[command(flatten)]
    connection: Connection,
    /// The task's id.
    id: Uuid,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    action: Option<ModelsAction>,
    /// Show this model only.
    #[arg(conflicts_with_all = ["source", "limit", "offset"])]
    id: Option<Uuid>,
    /// Only models from this source.
    #[arg(long, ignore_case = true)]
    source: Option<SourceFilter>,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Delete a model and its files.
    Delete {
        /// The model's id.
        id: Uuid,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct PageArgs {
    /// How many to list (1–1000; the service's default is 100).
    #[arg(long)]
    limit: Option<u32>,
    /// How many to skip.
    #[arg(long)]
    offset: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceFilter {
    Huggingface,
    Github,
    Local,
}

/// Runs a client command; answers its exit status, having printed its
/// result or its error.
pub async fn run(command: ClientCommand) -> Exit {
    let exit = match commands::run(command).await {
        Ok(exit) => exit,
        Err(err) => {
            output::print_error(&err);
            err.exit()
        }
    };
    // The caller exits at once, without the flush a return from main does.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    exit
}
