//! The API's objects as the client reads them: only the fields it acts on
//! or prints, each kept beside the JSON it came from so that `--json`
//! prints exactly what the service said. Unknown fields are ignored, so a
//! newer service does not break an older client. No I/O here.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// The service's own types, where the client reads the same thing.
pub use vectorize::actors::supervisor::MAX_ATTEMPTS;
pub use vectorize::store::{ModelFile, TaskStatus};

/// Bytes and files moved by a task's running attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// An upload task.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: Uuid,
    pub model_tag: String,
    pub source: String,
    pub status: TaskStatus,
    pub error_msg: Option<String>,
    pub attempts: u32,
    pub progress: Progress,
    pub model_id: Option<Uuid>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The task as the service sent it.
    pub json: Value,
}

#[derive(Deserialize)]
struct TaskFields {
    id: Uuid,
    model_tag: String,
    source: String,
    task_status: TaskStatus,
    error_msg: Option<String>,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    progress: Progress,
    model_id: Option<Uuid>,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    updated_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
}

impl Task {
    /// Reads a task object; the error says what is missing or malformed.
    pub fn from_json(json: Value) -> Result<Task, String> {
        let fields: TaskFields =
            serde_json::from_value(json.clone()).map_err(|e| format!("not a task: {e}"))?;
        Ok(Task {
            id: fields.id,
            model_tag: fields.model_tag,
            source: fields.source,
            status: fields.task_status,
            error_msg: fields.error_msg,
            attempts: fields.attempts,
            progress: fields.progress,
            model_id: fields.model_id,
            created_at: fields.created_at,
            updated_at: fields.updated_at,
            started_at: fields.started_at,
            finished_at: fields.finished_at,
            json,
        })
    }
}

/// A model in the store.
#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub id: Uuid,
    pub model_tag: String,
    pub source: String,
    pub path: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub files: Vec<ModelFile>,
    #[serde(default)]
    pub created_at: String,
}

impl Model {
    pub fn from_json(json: &Value) -> Result<Model, String> {
        Model::deserialize(json).map_err(|e| format!("not a model: {e}"))
    }
}

/// A page of a list answer: `{"items": [...], "total": n}`.
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

impl<T> Page<T> {
    /// Reads a page, each item with `item`.
    pub fn from_json(
        json: &Value,
        item: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Page<T>, String> {
        let items = json["items"]
            .as_array()
            .ok_or("a list answer without 'items'")?
            .iter()
            .map(item)
            .collect::<Result<_, _>>()?;
        let total = json["total"]
            .as_u64()
            .ok_or("a list answer without 'total'")?;
        Ok(Page { items, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_keeps_its_json_and_ignores_unknown_fields() {
        let json = json!({
            "id": "0193c0de-0000-7000-8000-000000000001",
            "model_tag": "acme/tiny@main", "source": "HUGGINGFACE",
            "task_status": "RUNNING", "error_msg": null, "attempts": 2,
            "progress": {"bytes_done": 5, "bytes_total": 10, "files_done": 1, "files_total": 3},
            "model_id": null, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:01Z", "started_at": null, "finished_at": null,
            "a_field_from_the_future": true
        });
        let task = Task::from_json(json.clone()).unwrap();
        assert_eq!(task.status, TaskStatus::Running);
        assert_eq!(task.progress.bytes_total, 10);
        assert_eq!(task.json, json);
        assert!(Task::from_json(json!({"code": "NOT_FOUND"})).is_err());
    }
}
