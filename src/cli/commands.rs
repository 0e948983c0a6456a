//! Each client command from its arguments to its exit status: the requests
//! it makes, whether it waits, what it prints. Remote uploads that meet an
//! upload of the same model in flight (409 `UPLOAD_IN_PROGRESS`) follow that
//! task instead of failing, as `ollama pull` joins a pull under way.

use serde_json::json;
use uuid::Uuid;

use super::client::ApiClient;
use super::error::{CliError, Exit};
use super::follow::{Followed, follow};
use super::objects::{Model, Page, Task, TaskStatus};
use super::output;
use super::progress::{DisplayMode, SendProgress, TaskDisplay};
use super::{
    ClientCommand, Connection, ModelsAction, ModelsArgs, PageArgs, SourceFilter, StatusFilter,
    TasksArgs, UploadSource,
};

/// A connected client and how to print.
struct Session {
    client: ApiClient,
    json: bool,
}

impl Session {
    fn new(connection: Connection) -> Result<Session, CliError> {
        Ok(Session {
            client: ApiClient::new(&connection.url, connection.api_key)?,
            json: connection.json,
        })
    }

    fn display_mode(&self) -> DisplayMode {
        DisplayMode::for_stderr(self.json)
    }
}

pub async fn run(command: ClientCommand) -> Result<Exit, CliError> {
    match command {
        ClientCommand::Upload(args) => {
            let session = Session::new(args.connection)?;
            upload(&session, args.source).await
        }
        ClientCommand::Tasks(args) => {
            let session = Session::new(args.connection.clone())?;
            tasks(&session, args).await
        }
        ClientCommand::Watch(args) => {
            let session = Session::new(args.connection)?;
            let task = session.client.task(args.id).await?;
            wait(&session, task).await
        }
        ClientCommand::Cancel(args) => {
            let session = Session::new(args.connection)?;
            cancel(&session, args.id).await
        }
        ClientCommand::Models(args) => {
            let session = Session::new(args.connection.clone())?;
            models(&session, args).await
        }
    }
}

async fn upload(session: &Session, source: UploadSource) -> Result<Exit, CliError> {
    let client = &session.client;
    match source {
        UploadSource::Huggingface {
            repo_id,
            revision,
            allow,
            wait,
        } => {
            let mut body = json!({ "model_tag": repo_id });
            if let Some(revision) = revision {
                body["revision"] = json!(revision);
            }
            if !allow.is_empty() {
                body["allow_patterns"] = json!(allow);
            }
            let created = client.upload_huggingface(&body).await;
            remote_upload(session, created, wait.no_wait).await
        }
        UploadSource::Github {
            repository,
            revision,
            wait,
        } => {
            let (owner, repo_name) = split_repository(&repository)?;
            let mut body = json!({ "owner": owner, "repo_name": repo_name });
            if let Some(revision) = revision {
                body["revision"] = json!(revision);
            }
            let created = client.upload_github(&body).await;
            remote_upload(session, created, wait.no_wait).await
        }
        UploadSource::Local {
            archive,
            model_name,
        } => {
            let length = std::fs::metadata(&archive)
                .ok()
                .filter(|m| m.is_file())
                .ok_or_else(|| {
                    CliError::Usage(format!("{} is not a file here", archive.display()))
                })?
                .len();
            let name = archive.file_name().unwrap_or_default().to_string_lossy();
            let progress = SendProgress::new(session.display_mode(), &name, length);
            let counter = progress.clone();
            let report = client
                .upload_archive(&archive, model_name.as_deref(), move |n| counter.advance(n))
                .await;
            progress.finish();
            let report = report?;
            if session.json {
                output::print_json(&report);
            } else {
                output::print_local_upload(&report);
            }
            Ok(Exit::Success)
        }
    }
}

/// `owner/repo`, each part non-empty.
fn split_repository(repository: &str) -> Result<(&str, &str), CliError> {
    repository
        .split_once('/')
        .filter(|(owner, repo)| !owner.is_empty() && !repo.is_empty() && !repo.contains('/'))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "'{repository}' is not a GitHub repository; give it as OWNER/REPO, \
                 e.g. huggingface/transformers"
            ))
        })
}

/// After the service answered a remote upload: print the task, or wait.
async fn remote_upload(
    session: &Session,
    created: Result<Task, CliError>,
    no_wait: bool,
) -> Result<Exit, CliError> {
    let task = match created {
        Ok(task) => task,
        Err(CliError::Refused {
            code,
            message,
            location: Some(location),
            ..
        }) if code == "UPLOAD_IN_PROGRESS" => {
            eprintln!("{message}; following that upload");
            session.client.task_at(&location).await?
        }
        Err(err) => return Err(err),
    };
    if !no_wait {
        return wait(session, task).await;
    }
    if session.json {
        output::print_json(&task.json);
    } else {
        output::print_queued(&task);
    }
    Ok(Exit::Success)
}

/// Follows a task to its end and reports how it ended.
async fn wait(session: &Session, task: Task) -> Result<Exit, CliError> {
    let mut display = TaskDisplay::new(session.display_mode());
    let task = match follow(&session.client, task, &mut display).await? {
        Followed::Ended(task) => task,
        Followed::LeftRunning(task) => {
            if session.json {
                output::print_json(&task.json);
            }
            return Ok(Exit::Interrupted);
        }
    };
    display.finish(&task);
    if task.status != TaskStatus::Done {
        output::print_unsuccessful(&task);
        if session.json {
            output::print_json(&task.json);
        }
        return Ok(Exit::Failed);
    }
    if session.json {
        output::print_json(&task.json);
    } else {
        let model = match task.model_id {
            Some(id) => session.client.model(id).await.ok(),
            None => None,
        };
        let model = model.and_then(|json| Model::from_json(&json).ok());
        output::print_done(&task, model.as_ref());
    }
    Ok(Exit::Success)
}

async fn tasks(session: &Session, args: TasksArgs) -> Result<Exit, CliError> {
    let client = &session.client;
    if let Some(id) = args.id {
        let task = client.task(id).await?;
        if session.json {
            output::print_json(&task.json);
        } else {
            output::print_task(&task);
        }
        return Ok(Exit::Success);
    }
    let mut query = page_query(args.page);
    if let Some(status) = args.status {
        query.push(("status", status_name(status).into()));
    }
    if let Some(source) = args.source {
        query.push(("source", source_name(source).into()));
    }
    let page = client.tasks(&borrowed(&query)).await?;
    if session.json {
        output::print_json(&page);
    } else {
        let page = Page::from_json(&page, |t| Task::from_json(t.clone()));
        output::print_tasks(&page.map_err(|e| unexpected(client, e))?);
    }
    Ok(Exit::Success)
}

async fn cancel(session: &Session, id: Uuid) -> Result<Exit, CliError> {
    let task = session.client.cancel(id).await?;
    if session.json {
        output::print_json(&task.json);
    } else {
        println!("cancelled: {} (task {})", task.model_tag, task.id);
    }
    Ok(Exit::Success)
}

async fn models(session: &Session, args: ModelsArgs) -> Result<Exit, CliError> {
    let client = &session.client;
    if let Some(ModelsAction::Delete { id }) = args.action {
        let listing =
            args.source.is_some() || args.page.limit.is_some() || args.page.offset.is_some();
        if args.id.is_some() || listing {
            return Err(CliError::Usage(
                "`models delete ID` takes only the model's id (and the connection flags)".into(),
            ));
        }
        client.delete_model(id).await?;
        if session.json {
            output::print_json(&json!({ "id": id, "deleted": true }));
        } else {
            println!("deleted: model {id} and its files");
        }
        return Ok(Exit::Success);
    }
    if let Some(id) = args.id {
        let model = client.model(id).await?;
        if session.json {
            output::print_json(&model);
        } else {
            let model = Model::from_json(&model).map_err(|e| unexpected(client, e))?;
            output::print_model(&model);
        }
        return Ok(Exit::Success);
    }
    let mut query = page_query(args.page);
    if let Some(source) = args.source {
        query.push(("source", source_name(source).into()));
    }
    let page = client.models(&borrowed(&query)).await?;
    if session.json {
        output::print_json(&page);
    } else {
        let page = Page::from_json(&page, Model::from_json);
        output::print_models(&page.map_err(|e| unexpected(client, e))?);
    }
    Ok(Exit::Success)
}

fn page_query(page: PageArgs) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(limit) = page.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(offset) = page.offset {
        query.push(("offset", offset.to_string()));
    }
    query
}

fn borrowed<'a>(query: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    query.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn status_name(status: StatusFilter) -> &'static str {
    match status {
        StatusFilter::Pending => "PENDING",
        StatusFilter::Running => "RUNNING",
        StatusFilter::Done => "DONE",
        StatusFilter::Failed => "FAILED",
        StatusFilter::Cancelled => "CANCELLED",
    }
}

fn source_name(source: SourceFilter) -> &'static str {
    match source {
        SourceFilter::Huggingface => "HUGGINGFACE",
        SourceFilter::Github => "GITHUB",
        SourceFilter::Local => "LOCAL",
    }
}

/// An answer in a shape this client does not know.
fn unexpected(client: &ApiClient, why: String) -> CliError {
    CliError::Connection(format!(
        "{} answered {why}; is it a vectorize service?",
        client.base()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_github_repository_is_owner_slash_repo() {
        assert_eq!(split_repository("acme/tiny").unwrap(), ("acme", "tiny"));
        for bad in ["acme", "/tiny", "acme/", "acme/tiny/extra"] {
            assert!(split_repository(bad).is_err(), "{bad}");
        }
    }
}
