//! Sends one stored file as the Hub's `resolve` route does: the Hub's
//! headers on `HEAD` and `GET`, `206` for one satisfiable `Range`, `416`
//! for one that is not. The bytes stream from disk in 1 MiB reads, so
//! memory stays flat whatever the file size; poem gives no `sendfile`, so
//! each read passes through user space once.

use std::sync::Arc;

use poem::Body;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::answers::{FileAnswer, MirrorError};
use super::files::HubFile;
use crate::metrics::Metrics;

/// Bytes read from disk at a time.
const READ_BYTES: usize = 1 << 20;

/// The answer to `HEAD` (`with_body` false) or `GET` of `file` at `commit`.
pub async fn send(
    file: &HubFile,
    commit: &str,
    range: Option<&str>,
    with_body: bool,
    served: Arc<Metrics>,
) -> Result<FileAnswer, MirrorError> {
    let part = match range.and_then(|r| parse_range(r, file.size).map(|p| (r, p))) {
        Some((range, Err(Unsatisfiable))) => {
            return Err(MirrorError::range_not_satisfiable(file, range));
        }
        Some((_, Ok(part))) => Some(part),
        // No Range, or one a server may ignore (RFC 9110 §14.2).
        None => None,
    };
    if !with_body {
        return Ok(FileAnswer::new(file, commit, part, Body::empty()));
    }
    let (start, end) = part.unwrap_or((0, file.size));
    let mut opened = tokio::fs::File::open(&file.on_disk)
        .await
        .map_err(|e| MirrorError::internal(format!("opening {}: {e}", file.on_disk.display())))?;
    opened
        .seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(MirrorError::internal)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(opened.take(end - start), READ_BYTES);
    let counted = futures_util::StreamExt::inspect(stream, move |chunk| {
        if let Ok(bytes) = chunk {
            served.bytes_served.add(bytes.len() as u64);
        }
    });
    let body = Body::from_bytes_stream(counted);
    Ok(FileAnswer::new(file, commit, part, body))
}

/// A `Range` that no byte of the file satisfies.
#[derive(Debug, PartialEq, Eq)]
struct Unsatisfiable;

/// One byte range `bytes=a-b`, `bytes=a-` or `bytes=-n` of a file of `size`
/// bytes, as `[start, end)`; `None` for what a server may ignore (another
/// unit, several ranges, bad syntax).
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), Unsatisfiable>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last n bytes.
        (true, false) => {
            let n = number(last)?;
            if n == 0 || size == 0 {
                return Some(Err(Unsatisfiable));
            }
            (size - n.min(size), size)
        }
        (false, true) => (number(first)?, size),
        (false, false) => {
            let (start, last) = (number(first)?, number(last)?);
            if last < start {
                return None;
            }
            (start, last.saturating_add(1).min(size))
        }
        (true, true) => return None,
    };
    if range.0 >= size {
        return Some(Err(Unsatisfiable));
    }
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_of_one_byte_range() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Ok((0, 100))));
        assert_eq!(parse_range("bytes=500-", 1000), Some(Ok((500, 1000))));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Ok((900, 1000))));
        assert_eq!(parse_range("bytes=-5000", 1000), Some(Ok((0, 1000))));
        assert_eq!(parse_range("bytes=900-5000", 1000), Some(Ok((900, 1000))));
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 10),
            Some(Ok((0, 10)))
        );
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(parse_range("bytes=1000-", 1000), Some(Err(Unsatisfiable)));
        assert_eq!(
            parse_range("bytes=1000-2000", 1000),
            Some(Err(Unsatisfiable))
        );
        assert_eq!(parse_range("bytes=-0", 1000), Some(Err(Unsatisfiable)));
        assert_eq!(parse_range("bytes=0-", 0), Some(Err(Unsatisfiable)));
    }

    #[test]
    fn what_a_server_may_ignore_is_ignored() {
        for value in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "bytes 0-1",
        ] {
            assert_eq!(parse_range(value, 1000), None, "{value}");
        }
    }
}
