//! The task's event stream (`GET /v1/upload/tasks/{id}/events`) as the
//! client reads it: a parser of server-sent events (`event:`/`data:`
//! fields, comments and keep-alives skipped, an event dispatched at each
//! blank line) and `TaskEvents`, which yields the task carried by each
//! `task` event. A stream that stalls longer than the service's keep-alive
//! allows, breaks or ends early is reported as broken, and `follow` falls
//! back to polling. Drawing and waiting policy live elsewhere.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::objects::Task;

/// The service sends a keep-alive every 15 s; three missed ones mean the
/// connection is gone even if no error says so.
const STALL: Duration = Duration::from_secs(45);

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Turns the bytes of a `text/event-stream` into events, whatever the
/// chunking of the body.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds a chunk of the body; answers the events it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.field(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    /// Takes one line; a blank line dispatches the event built so far.
    fn field(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

/// The tasks an open event stream carries.
pub struct TaskEvents {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
}

impl TaskEvents {
    pub fn new(response: reqwest::Response) -> TaskEvents {
        TaskEvents {
            body: response.bytes_stream().boxed(),
            parser: SseParser::default(),
            ready: VecDeque::new(),
        }
    }

    /// The next task, or why the stream cannot give one: it broke, stalled,
    /// ended, or carried something that is not a task.
    pub async fn next(&mut self) -> Result<Task, String> {
        loop {
            while let Some(event) = self.ready.pop_front() {
                if event.event != "task" {
                    continue;
                }
                let json = serde_json::from_str(&event.data)
                    .map_err(|e| format!("a task event that is not JSON: {e}"))?;
                return Task::from_json(json);
            }
            match tokio::time::timeout(STALL, self.body.next()).await {
                Err(_) => return Err(format!("no event or keep-alive for {STALL:?}")),
                Ok(None) => return Err("the event stream ended".into()),
                Ok(Some(Err(e))) => return Err(format!("the event stream broke: {e}")),
                Ok(Some(Ok(chunk))) => self.ready.extend(self.parser.push(&chunk)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_found_across_any_chunking() {
        let body = b": keep-alive\n\nevent: task\ndata: {\"a\":1}\n\r\ndata: x\ndata: y\n\n";
        let expected = vec![event("task", "{\"a\":1}"), event("message", "x\ny")];
        for size in 1..body.len() {
            let mut parser = SseParser::default();
            let events: Vec<_> = body.chunks(size).flat_map(|c| parser.push(c)).collect();
            assert_eq!(events, expected, "chunks of {size}");
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: task\n\n").is_empty());
        assert_eq!(
            parser.push(b"data:tight\n\n"),
            vec![event("message", "tight")]
        );
    }
}
