//! What a waiting command shows on stderr while a task runs or an archive
//! is sent: a live bar (bytes, rate, ETA, attempt, files) when stderr is a
//! terminal, a plain line at each change of status and every few seconds
//! of progress otherwise, nothing with `--json` off a terminal. Results go
//! to stdout through `output`; this module never writes there.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::objects::{MAX_ATTEMPTS, Progress, Task, TaskStatus};

/// How often a plain line repeats progress that keeps changing.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// The spinner's pace: alive, not busy.
const TICK: Duration = Duration::from_millis(120);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayMode {
    Bars,
    Lines,
    Quiet,
}

impl DisplayMode {
    /// Bars on a terminal; plain lines elsewhere, unless the output is for
    /// a script (`--json`), which wants none.
    pub fn for_stderr(json: bool) -> DisplayMode {
        if std::io::stderr().is_terminal() {
            DisplayMode::Bars
        } else if json {
            DisplayMode::Quiet
        } else {
            DisplayMode::Lines
        }
    }
}

/// Shows one task as it changes.
pub struct TaskDisplay {
    mode: DisplayMode,
    bar: Option<ProgressBar>,
    last: Option<(TaskStatus, u32, Progress)>,
    last_line: Option<Instant>,
}

impl TaskDisplay {
    pub fn new(mode: DisplayMode) -> TaskDisplay {
        TaskDisplay {
            mode,
            bar: None,
            last: None,
            last_line: None,
        }
    }

    /// Draws the task as it is now; an unchanged task draws nothing new.
    pub fn show(&mut self, task: &Task) {
        let now = (task.status, task.attempts, task.progress);
        let previous = self.last.replace(now);
        if previous == Some(now) || task.status.is_terminal() {
            return;
        }
        match self.mode {
            DisplayMode::Bars => self.draw_bar(task, previous),
            DisplayMode::Lines => self.print_line(task, previous),
            DisplayMode::Quiet => {}
        }
    }

    fn draw_bar(&mut self, task: &Task, previous: Option<(TaskStatus, u32, Progress)>) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_prefix(task.model_tag.clone());
            bar.enable_steady_tick(TICK);
            bar
        });
        let progress = task.progress;
        let sized = progress.bytes_total > 0;
        let was_sized = previous.is_some_and(|(_, _, p)| p.bytes_total > 0);
        if previous.is_none() || sized != was_sized {
            bar.set_style(if sized {
                bytes_style()
            } else {
                spinner_style()
            });
        }
        if sized {
            bar.set_length(progress.bytes_total);
        }
        // A retry starts its bytes again: the rate and ETA of the last
        // attempt say nothing about this one.
        let retried = previous.is_some_and(|(_, attempts, _)| attempts != task.attempts);
        let went_back = previous.is_some_and(|(_, _, p)| p.bytes_done > progress.bytes_done);
        if retried || went_back {
            bar.reset_eta();
        }
        bar.set_position(progress.bytes_done);
        bar.set_message(status_note(task));
    }

    fn print_line(&mut self, task: &Task, previous: Option<(TaskStatus, u32, Progress)>) {
        let status_changed = previous
            .is_none_or(|(status, attempts, _)| status != task.status || attempts != task.attempts);
        let due = self.last_line.is_none_or(|at| at.elapsed() >= LINE_EVERY);
        if status_changed || due {
            eprintln!("{}: {}", task.model_tag, describe(task));
            self.last_line = Some(Instant::now());
        }
    }

    /// Ends the drawing: a finished bar stays on screen as a record, an
    /// unfinished one is left where it stopped.
    pub fn finish(&mut self, task: &Task) {
        let Some(bar) = self.bar.take() else { return };
        if task.status == TaskStatus::Done {
            if task.progress.bytes_total > 0 {
                bar.set_style(done_style());
                bar.set_length(task.progress.bytes_total);
                bar.set_position(task.progress.bytes_done);
            }
            bar.finish_with_message(format!("done, {}", files(&task.progress)));
        } else {
            bar.abandon_with_message(task.status.as_str().to_lowercase());
        }
    }

    /// Stops drawing and leaves the last frame on screen, the terminal's
    /// `^C` echo beside it (clearing would misjudge a line that echo
    /// wrapped); answers whether a bar was there, so the caller can move to
    /// a fresh line.
    pub fn freeze(&mut self) -> bool {
        let Some(bar) = self.bar.take() else {
            return false;
        };
        bar.set_draw_target(ProgressDrawTarget::hidden());
        true
    }
}

/// Shows an archive being sent, then the wait for the service's answer.
#[derive(Clone)]
pub struct SendProgress {
    inner: Arc<SendInner>,
}

struct SendInner {
    bar: Option<ProgressBar>,
    mode: DisplayMode,
    name: String,
    total: u64,
    sent: Mutex<(u64, Instant)>,
}

impl SendProgress {
    pub fn new(mode: DisplayMode, name: &str, total: u64) -> SendProgress {
        let bar = (mode == DisplayMode::Bars).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(bytes_style());
            bar.set_prefix(format!("sending {name}"));
            bar.enable_steady_tick(TICK);
            bar
        });
        if mode == DisplayMode::Lines {
            eprintln!("sending {name} ({})", HumanBytes(total));
        }
        let inner = SendInner {
            bar,
            mode,
            name: name.to_string(),
            total,
            sent: Mutex::new((0, Instant::now())),
        };
        SendProgress {
            inner: Arc::new(inner),
        }
    }

    /// Counts `n` more bytes handed to the connection.
    pub fn advance(&self, n: u64) {
        let inner = &self.inner;
        if let Some(bar) = &inner.bar {
            bar.inc(n);
        }
        let mut sent = inner.sent.lock().expect("the counter is never poisoned");
        sent.0 += n;
        if inner.mode == DisplayMode::Lines && sent.1.elapsed() >= LINE_EVERY {
            sent.1 = Instant::now();
            let percent = percent(sent.0, inner.total);
            eprintln!(
                "sending {}: {} ({percent}%)",
                inner.name,
                HumanBytes(sent.0)
            );
        }
        if sent.0 == inner.total {
            self.wait_for_answer();
        }
    }

    /// Everything is sent; the service now checks the archive.
    fn wait_for_answer(&self) {
        let inner = &self.inner;
        match &inner.bar {
            Some(bar) => {
                bar.set_style(spinner_style());
                bar.set_prefix(inner.name.clone());
                bar.set_message(format!(
                    "sent {}; the service is checking the archive",
                    HumanBytes(inner.total)
                ));
            }
            None if inner.mode == DisplayMode::Lines => {
                eprintln!("sent {}; the service is checking the archive", inner.name);
            }
            None => {}
        }
    }

    /// The answer came: the bar goes, the report follows on stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg}").expect("a valid template")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.cyan} {prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} \
         {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30.green}] {total_bytes} in {elapsed}, {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

/// What the bar's message says beside the bytes.
fn status_note(task: &Task) -> String {
    match task.status {
        TaskStatus::Pending if task.attempts == 0 => "pending: waiting for a free worker".into(),
        TaskStatus::Pending => {
            format!("pending: attempt {}/{MAX_ATTEMPTS} next", task.attempts + 1)
        }
        _ if task.progress.files_total == 0 => attempt(task) + ", listing files",
        _ => format!("{}, {}", attempt(task), files(&task.progress)),
    }
}

/// One line of a task's state, as plain output shows it.
pub fn describe(task: &Task) -> String {
    let p = &task.progress;
    match task.status {
        TaskStatus::Running if p.bytes_total > 0 => format!(
            "RUNNING {} / {} ({}%), {}, {}",
            HumanBytes(p.bytes_done),
            HumanBytes(p.bytes_total),
            percent(p.bytes_done, p.bytes_total),
            files(p),
            attempt(task)
        ),
        TaskStatus::Running => format!("RUNNING, {}", attempt(task)),
        status => status.as_str().to_string(),
    }
}

fn attempt(task: &Task) -> String {
    format!("attempt {}/{MAX_ATTEMPTS}", task.attempts.max(1))
}

fn files(p: &Progress) -> String {
    format!("{}/{} files", p.files_done, p.files_total)
}

fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).unwrap_or(0)
}
