//! What a command prints when it is done: with `--json` the service's JSON,
//! pretty-printed, on stdout (a script's input); otherwise tables and short
//! reports for people on stdout, and errors on stderr. Progress while
//! waiting is `progress`'s business, not this module's.

use indicatif::HumanBytes;
use serde_json::Value;

use super::error::CliError;
use super::objects::{Model, Page, Task, TaskStatus};
use super::progress::describe;

/// Prints JSON as the service sent it, indented.
pub fn print_json(json: &Value) {
    let text = serde_json::to_string_pretty(json).expect("JSON values serialize");
    println!("{text}");
}

/// An error that ended the command, on stderr.
pub fn print_error(err: &CliError) {
    eprintln!("error: {err}");
}

/// A task that was queued and not waited for.
pub fn print_queued(task: &Task) {
    println!(
        "task {id} ({tag}) is {status}; follow it with `vectorize watch {id}`",
        id = task.id,
        tag = task.model_tag,
        status = task.status.as_str()
    );
}

/// A task that ended DONE, with the model it stored when it could be read.
pub fn print_done(task: &Task, model: Option<&Model>) {
    match (task.model_id, model) {
        (_, Some(model)) => {
            println!("done: {} is model {}", task.model_tag, model.id);
            println!("  path  {}", model.path);
            println!(
                "  size  {} in {} files",
                HumanBytes(model.size_bytes),
                model.files.len()
            );
        }
        (Some(id), None) => println!("done: {} is model {id}", task.model_tag),
        (None, None) => println!("done: {}", task.model_tag),
    }
}

/// A task that ended FAILED or CANCELLED, on stderr, with the service's
/// reason.
pub fn print_unsuccessful(task: &Task) {
    let attempts = match task.attempts {
        1 => "1 attempt".to_string(),
        n => format!("{n} attempts"),
    };
    match (task.status, &task.error_msg) {
        (TaskStatus::Failed, Some(reason)) => eprintln!(
            "failed: {} (task {}) after {attempts}: {reason}",
            task.model_tag, task.id
        ),
        (TaskStatus::Failed, None) => {
            eprintln!(
                "failed: {} (task {}) after {attempts}",
                task.model_tag, task.id
            )
        }
        _ => eprintln!("cancelled: {} (task {})", task.model_tag, task.id),
    }
}

/// One task, field by field.
pub fn print_task(task: &Task) {
    let mut rows = vec![
        ("task", task.id.to_string()),
        ("model", format!("{} ({})", task.model_tag, task.source)),
        ("status", describe(task)),
        ("attempts", task.attempts.to_string()),
    ];
    if task.progress.bytes_total > 0 {
        let p = &task.progress;
        rows.push((
            "progress",
            format!(
                "{} / {}, {}/{} files",
                HumanBytes(p.bytes_done),
                HumanBytes(p.bytes_total),
                p.files_done,
                p.files_total
            ),
        ));
    }
    if let Some(id) = task.model_id {
        rows.push(("model id", id.to_string()));
    }
    if let Some(reason) = &task.error_msg {
        rows.push(("error", reason.clone()));
    }
    rows.push(("created", seconds(&task.created_at)));
    if let Some(at) = &task.started_at {
        rows.push(("started", seconds(at)));
    }
    if let Some(at) = &task.finished_at {
        rows.push(("finished", seconds(at)));
    }
    print_fields(&rows);
}

/// A page of tasks as a table.
pub fn print_tasks(page: &Page<Task>) {
    let mut rows = vec![header(&[
        "ID", "STATUS", "SOURCE", "MODEL", "PROGRESS", "ATTEMPTS", "UPDATED",
    ])];
    for task in &page.items {
        let p = &task.progress;
        let progress = match p.bytes_total {
            0 => "-".to_string(),
            total => format!("{} / {}", HumanBytes(p.bytes_done), HumanBytes(total)),
        };
        rows.push(vec![
            task.id.to_string(),
            task.status.as_str().to_string(),
            task.source.clone(),
            task.model_tag.clone(),
            progress,
            task.attempts.to_string(),
            seconds(&task.updated_at),
        ]);
    }
    print_table(&rows);
    println!("{}", shown("task", page.items.len(), page.total));
}

/// One model, with its files.
pub fn print_model(model: &Model) {
    print_fields(&[
        ("model", model.id.to_string()),
        ("tag", format!("{} ({})", model.model_tag, model.source)),
        ("path", model.path.clone()),
        ("size", HumanBytes(model.size_bytes).to_string()),
        ("created", seconds(&model.created_at)),
    ]);
    println!("files:");
    for file in &model.files {
        println!("  {:>12}  {}", HumanBytes(file.size).to_string(), file.path);
    }
}

/// A page of models as a table.
pub fn print_models(page: &Page<Model>) {
    let mut rows = vec![header(&[
        "ID", "SOURCE", "MODEL", "SIZE", "FILES", "CREATED",
    ])];
    for model in &page.items {
        rows.push(vec![
            model.id.to_string(),
            model.source.clone(),
            model.model_tag.clone(),
            HumanBytes(model.size_bytes).to_string(),
            model.files.len().to_string(),
            seconds(&model.created_at),
        ]);
    }
    print_table(&rows);
    println!("{}", shown("model", page.items.len(), page.total));
}

/// The report of a local upload: stored, already stored, rejected.
pub fn print_local_upload(report: &Value) {
    let empty = Vec::new();
    let list = |key: &str| report[key].as_array().unwrap_or(&empty);
    for model in list("models") {
        if let Ok(model) = Model::from_json(model) {
            println!(
                "stored: {} is model {} ({} in {} files, at {})",
                model.model_tag,
                model.id,
                HumanBytes(model.size_bytes),
                model.files.len(),
                model.path
            );
        }
    }
    for tag in list("existing_models") {
        println!("already stored: {}", tag.as_str().unwrap_or_default());
    }
    for rejected in list("rejected") {
        println!(
            "rejected: {}: {}",
            rejected["name"].as_str().unwrap_or_default(),
            rejected["reason"].as_str().unwrap_or_default()
        );
    }
}

/// An RFC 3339 time to the second, in UTC, for people; as given when it
/// does not parse.
fn seconds(time: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|_| time.to_string())
}

/// The closing line of a list: how many were shown, of how many.
fn shown(what: &str, shown: usize, total: u64) -> String {
    let what = if total == 1 {
        what
    } else {
        &format!("{what}s")
    };
    if shown as u64 == total {
        format!("{total} {what}")
    } else {
        format!("{shown} of {total} {what} (use --limit and --offset for more)")
    }
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Columns padded to their widest cell; the last one is not padded.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

fn print_fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
}
