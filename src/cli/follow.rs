//! Waiting for a task to end: the task's event stream first, polling when
//! the stream cannot be opened or breaks, each change handed to the
//! display. Ctrl-C while waiting asks, on a terminal, whether to cancel the
//! task or leave it running; without one (a script, a pipe) the task is
//! left running, since a signal meant for a client must not destroy
//! server-side work nobody confirmed. This module decides when waiting
//! ends; it prints only the question and the note that follows it.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use uuid::Uuid;

use super::client::ApiClient;
use super::error::CliError;
use super::events::TaskEvents;
use super::objects::Task;
use super::progress::TaskDisplay;

/// Polling pace when the event stream is not available.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long polling tolerates an unreachable service (a restart, a blip)
/// before giving up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// How waiting ended.
pub enum Followed {
    /// The task reached DONE, FAILED or CANCELLED.
    Ended(Task),
    /// Ctrl-C, and the task was left running; this is its last known state.
    LeftRunning(Task),
}

/// Follows `task` until it ends or the user interrupts.
pub async fn follow(
    client: &ApiClient,
    task: Task,
    display: &mut TaskDisplay,
) -> Result<Followed, CliError> {
    // Polled once now, so that the handler is installed before anything is
    // shown: from the first line on, Ctrl-C asks instead of killing.
    let mut interrupt = Box::pin(tokio::signal::ctrl_c().fuse());
    let _ = (&mut interrupt).now_or_never();
    display.show(&task);
    if task.status.is_terminal() {
        return Ok(Followed::Ended(task));
    }
    let mut updates = TaskUpdates::new(client, task.id);
    let mut last = task;
    loop {
        tokio::select! {
            update = updates.next() => {
                let task = update?;
                display.show(&task);
                if task.status.is_terminal() {
                    return Ok(Followed::Ended(task));
                }
                last = task;
            }
            _ = &mut interrupt => {
                if display.freeze() {
                    eprintln!();
                }
                return on_interrupt(client, last).await;
            }
        }
    }
}

/// The task's changes: from the event stream while it lasts, then by
/// polling.
struct TaskUpdates<'a> {
    client: &'a ApiClient,
    id: Uuid,
    events: Option<TaskEvents>,
    events_tried: bool,
    poll: tokio::time::Interval,
    unreachable_since: Option<Instant>,
}

impl<'a> TaskUpdates<'a> {
    fn new(client: &'a ApiClient, id: Uuid) -> Self {
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        TaskUpdates {
            client,
            id,
            events: None,
            events_tried: false,
            poll,
            unreachable_since: None,
        }
    }

    async fn next(&mut self) -> Result<Task, CliError> {
        if !self.events_tried {
            self.events_tried = true;
            self.events = self
                .client
                .task_events(self.id)
                .await
                .ok()
                .map(TaskEvents::new);
        }
        if let Some(events) = &mut self.events {
            match events.next().await {
                Ok(task) => return Ok(task),
                // Broken, stalled or ended early: polling takes over.
                Err(_) => self.events = None,
            }
        }
        loop {
            self.poll.tick().await;
            match self.client.task(self.id).await {
                Ok(task) => {
                    self.unreachable_since = None;
                    return Ok(task);
                }
                Err(CliError::Connection(why)) => {
                    let since = *self.unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= UNREACHABLE_FOR {
                        return Err(CliError::Connection(why));
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }
}

/// Ctrl-C: ask on a terminal, else leave the task running.
async fn on_interrupt(client: &ApiClient, last: Task) -> Result<Followed, CliError> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if interactive && ask_to_cancel(&last).await {
        return match client.cancel(last.id).await {
            Ok(task) => Ok(Followed::Ended(task)),
            // It ended while we asked: report how.
            Err(e) if e.code() == Some("TASK_FINISHED") => {
                Ok(Followed::Ended(client.task(last.id).await?))
            }
            Err(e) => Err(e),
        };
    }
    eprintln!(
        "left running: task {id} ({tag}); follow it with `vectorize watch {id}`, \
         stop it with `vectorize cancel {id}`",
        id = last.id,
        tag = last.model_tag
    );
    Ok(Followed::LeftRunning(last))
}

/// Asks whether to cancel; a second Ctrl-C or end of input means no.
async fn ask_to_cancel(task: &Task) -> bool {
    eprint!(
        "Cancel the upload of {} (task {})? [y/N] ",
        task.model_tag, task.id
    );
    let _ = std::io::stderr().flush();
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
    // A plain thread, not the blocking pool: if a second Ctrl-C wins, the
    // read stays pending, and the runtime must not wait for it at exit.
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        let _ = answer_tx.send(read.map(|_| line));
    });
    tokio::select! {
        answer = answer_rx => {
            let line = answer.ok().and_then(Result::ok).unwrap_or_default();
            matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            false
        }
    }
}
