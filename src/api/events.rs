//! `GET /v1/upload/events`: one `text/event-stream` of every task's
//! changes, for dashboards and tools that watch many tasks on one
//! connection. It opens with the tasks in flight as they are now, then
//! sends each change of any task: this node's changes as its registry
//! broadcasts them, every node's as the database shows them
//! (`Store::tasks_changed_since`, every half second), so a task that
//! another node runs is followed too. One task's progress is sent at most
//! four times a second; a comment line every 15 s keeps idle connections
//! open through proxies.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem_openapi::payload::EventStream;
use poem_openapi::{ApiResponse, OpenApi};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use uuid::Uuid;

use super::auth::ApiKeyAuth;
use super::errors::Refusal;
use super::objects::Task;
use super::{ApiTags, AppState};
use crate::actors::Actors;
use crate::store::changes::TasksAt;
use crate::store::{Store, UploadTask};

#[derive(ApiResponse)]
pub enum AllTaskEvents {
    /// Server-sent events: an event `task` carrying the task for each task
    /// PENDING or RUNNING when the stream opens, then one at each change of
    /// any task, for as long as the client stays; a comment line every 15 s.
    #[oai(status = 200)]
    Ok(EventStream<BoxStream<'static, Task>>),
}

pub struct EventsApi {
    pub state: Arc<AppState>,
}

#[OpenApi(tag = "ApiTags::Tasks")]
impl EventsApi {
    /// Follow every upload task
    ///
    /// A `text/event-stream` of `task` events on one connection: first the
    /// tasks in flight as they are now, then every change of every task, on
    /// whichever node it runs — progress at most a few times a second per
    /// task. It does not end by itself; a comment line every 15 s keeps an
    /// idle connection open.
    #[oai(
        path = "/v1/upload/events",
        method = "get",
        operation_id = "all_task_events"
    )]
    async fn all_task_events(&self, _auth: ApiKeyAuth) -> Result<AllTaskEvents, Refusal<0>> {
        let actors = self.state.actors.clone();
        let store = self.state.store.clone();
        // Subscribe before reading, so no change falls in between.
        let changes = actors.subscribe();
        let in_flight = store
            .tasks_in_flight()
            .await
            .map_err(|e| e.to_app_error())?;
        let watch = TaskWatch::new(actors, store, changes, in_flight);
        let stream = futures_util::stream::unfold(watch, |mut watch| async move {
            let task = watch.next().await?;
            Some((Task::from(task), watch))
        })
        .boxed();
        Ok(AllTaskEvents::Ok(task_event_stream(stream)))
    }
}

/// How often an idle stream sends a comment line.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Tasks as server-sent events, as both event routes send them: an event
/// `task` whose data is the task's JSON, and a comment line every
/// `KEEP_ALIVE` while nothing changes.
pub(super) fn task_event_stream(
    tasks: BoxStream<'static, Task>,
) -> EventStream<BoxStream<'static, Task>> {
    EventStream::new(tasks)
        .to_event(|task| {
            let data = serde_json::to_string(&poem_openapi::types::ToJSON::to_json(&task))
                .unwrap_or_default();
            poem::web::sse::Event::message(data).event_type("task")
        })
        .keep_alive(KEEP_ALIVE)
}
/// How often the database is read for changes, on any node.
const POLL: Duration = Duration::from_millis(500);
/// The shortest gap between two progress events of one task; a change that
/// comes sooner waits, and only the newest waiting one is sent.
const PROGRESS_GAP: Duration = Duration::from_millis(250);
/// How far behind the database's clock each read starts again: a write's
/// `updated_at` is taken before its transaction commits, so a change can
/// become visible a little after the time it carries.
const LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// One client's watch over every task: where its changes come from, and
/// what it was sent.
struct TaskWatch {
    actors: Actors,
    store: Store,
    changes: Receiver<UploadTask>,
    /// Changes after this time (the database's clock) are read next.
    since: DateTime<Utc>,
    poll: Interval,
    pace: Interval,
    outbox: Outbox,
}

impl TaskWatch {
    fn new(actors: Actors, store: Store, changes: Receiver<UploadTask>, now: TasksAt) -> Self {
        let mut poll = tokio::time::interval_at(Instant::now() + POLL, POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pace = tokio::time::interval(PROGRESS_GAP);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut outbox = Outbox::default();
        for task in now.tasks {
            outbox.offer(task, Instant::now());
        }
        TaskWatch {
            actors,
            store,
            changes,
            since: now.clock - LOOKBACK,
            poll,
            pace,
            outbox,
        }
    }

    /// The next state to send; `None` once the node's registry is gone.
    async fn next(&mut self) -> Option<UploadTask> {
        loop {
            if let Some(task) = self.outbox.ready.pop_front() {
                return Some(task);
            }
            tokio::select! {
                change = self.changes.recv() => match change {
                    Ok(task) => self.outbox.offer(task, Instant::now()),
                    // Fell behind a burst: the next read of the database catches up.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                },
                _ = self.poll.tick() => self.read_changes().await,
                _ = self.pace.tick(), if !self.outbox.held.is_empty() => {
                    self.outbox.release(Instant::now());
                }
            }
        }
    }

    /// Reads what changed on any node since the last read.
    async fn read_changes(&mut self) {
        let read = match self.store.tasks_changed_since(self.since).await {
            Ok(read) => read,
            Err(e) => {
                // The database is away for now; the next tick asks again.
                tracing::warn!(error = %e, "the task event stream could not read changes");
                return;
            }
        };
        for task in read.tasks {
            // A task this node runs has fresher progress in its cache.
            let task = match self.actors.cache.get(task.task_id) {
                Some(live) if live.updated_at >= task.updated_at => live,
                _ => task,
            };
            self.outbox.offer(task, Instant::now());
        }
        self.since = read.clock - LOOKBACK;
        self.outbox.forget_before(self.since);
    }
}

/// What one client was sent of each task, what waits for its turn, and
/// what is ready to go. Decides which states are news, and paces progress.
#[derive(Default)]
struct Outbox {
    /// The last state sent of each task seen lately, and when it went.
    sent: HashMap<Uuid, (UploadTask, Instant)>,
    /// Progress that came too soon after its task's last event.
    held: HashMap<Uuid, UploadTask>,
    ready: VecDeque<UploadTask>,
}

impl Outbox {
    /// Queues `task` unless it says nothing new; progress that follows its
    /// task's last event too closely is held until `release`.
    fn offer(&mut self, task: UploadTask, now: Instant) {
        let id = task.task_id;
        let latest = self.held.get(&id).or(self.sent.get(&id).map(|(t, _)| t));
        if latest.is_some_and(|latest| *latest == task || task.is_older_than(latest)) {
            return;
        }
        if let Some((last, at)) = self.sent.get(&id)
            && same_phase(last, &task)
            && now.saturating_duration_since(*at) < PROGRESS_GAP
        {
            self.held.insert(id, task);
            return;
        }
        self.send(task, now);
    }

    /// Queues the held progress whose gap has passed.
    fn release(&mut self, now: Instant) {
        let due: Vec<Uuid> = self
            .held
            .keys()
            .filter(|id| {
                self.sent
                    .get(id)
                    .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= PROGRESS_GAP)
            })
            .copied()
            .collect();
        for id in due {
            if let Some(task) = self.held.remove(&id) {
                self.send(task, now);
            }
        }
    }

    /// Forgets what was sent of tasks unchanged since before `since`: no
    /// read of the database returns those states again.
    fn forget_before(&mut self, since: DateTime<Utc>) {
        self.sent.retain(|_, (task, _)| task.updated_at >= since);
    }

    fn send(&mut self, task: UploadTask, now: Instant) {
        self.held.remove(&task.task_id);
        self.sent.insert(task.task_id, (task.clone(), now));
        self.ready.push_back(task);
    }
}

/// Whether only the progress differs: same status, attempt and node.
fn same_phase(a: &UploadTask, b: &UploadTask) -> bool {
    a.task_status == b.task_status && a.attempts == b.attempts && a.lease_owner == b.lease_owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Progress, Source, TaskStatus, UploadRequest};

    fn running() -> UploadTask {
        let request = UploadRequest {
            repo: "a/b".into(),
            revision: "main".into(),
            allow_patterns: vec![],
        };
        let mut task = UploadTask::new(Source::Huggingface, "a/b@main".into(), request);
        task.task_status = TaskStatus::Running;
        task.attempts = 1;
        task
    }

    /// The task `by` later, with `bytes` done.
    fn moved(task: &UploadTask, by: chrono::TimeDelta, bytes: u64) -> UploadTask {
        let mut next = task.clone();
        next.updated_at += by;
        next.progress = Progress {
            bytes_done: bytes,
            ..task.progress
        };
        next
    }

    fn drain(outbox: &mut Outbox) -> Vec<UploadTask> {
        outbox.ready.drain(..).collect()
    }

    #[test]
    fn repeats_and_stale_reads_are_not_news() {
        let (mut outbox, now) = (Outbox::default(), Instant::now());
        let first = running();
        outbox.offer(first.clone(), now);
        outbox.offer(first.clone(), now + PROGRESS_GAP);
        let later = moved(&first, chrono::TimeDelta::seconds(1), 10);
        outbox.offer(later.clone(), now + PROGRESS_GAP * 2);
        // A read of the database that trails the broadcast.
        outbox.offer(first.clone(), now + PROGRESS_GAP * 3);
        let mut done = moved(&later, chrono::TimeDelta::seconds(1), 10);
        done.task_status = TaskStatus::Done;
        outbox.offer(done.clone(), now + PROGRESS_GAP * 4);
        // A running state that claims to be newer cannot follow DONE.
        outbox.offer(
            moved(&later, chrono::TimeDelta::seconds(5), 20),
            now + PROGRESS_GAP * 5,
        );
        assert_eq!(drain(&mut outbox), [first, later, done]);
    }

    #[test]
    fn progress_is_paced_and_the_newest_waiting_state_goes() {
        let (mut outbox, now) = (Outbox::default(), Instant::now());
        let first = running();
        outbox.offer(first.clone(), now);
        let ms = chrono::TimeDelta::milliseconds;
        let a = moved(&first, ms(50), 1);
        let b = moved(&first, ms(100), 2);
        outbox.offer(a, now + Duration::from_millis(50));
        outbox.offer(b.clone(), now + Duration::from_millis(100));
        assert_eq!(
            drain(&mut outbox),
            std::slice::from_ref(&first),
            "held back"
        );
        outbox.release(now + Duration::from_millis(200));
        assert!(outbox.ready.is_empty(), "not yet due");
        outbox.release(now + PROGRESS_GAP);
        assert_eq!(
            drain(&mut outbox),
            std::slice::from_ref(&b),
            "only the newest"
        );
        // A change of status goes at once, and takes the held progress' place.
        let c = moved(&b, ms(10), 3);
        outbox.offer(c, now + PROGRESS_GAP + Duration::from_millis(10));
        let mut failed = moved(&b, ms(20), 3);
        failed.task_status = TaskStatus::Failed;
        outbox.offer(
            failed.clone(),
            now + PROGRESS_GAP + Duration::from_millis(20),
        );
        assert_eq!(drain(&mut outbox), [failed]);
        outbox.release(now + PROGRESS_GAP * 4);
        assert!(outbox.ready.is_empty());
    }

    #[test]
    fn what_no_read_returns_again_is_forgotten() {
        let (mut outbox, now) = (Outbox::default(), Instant::now());
        let old = running();
        let fresh = moved(&running(), chrono::TimeDelta::seconds(10), 0);
        outbox.offer(old.clone(), now);
        outbox.offer(fresh.clone(), now);
        outbox.forget_before(old.updated_at + chrono::TimeDelta::seconds(1));
        assert!(!outbox.sent.contains_key(&old.task_id));
        assert!(outbox.sent.contains_key(&fresh.task_id));
    }
}
