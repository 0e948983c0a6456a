//! Which bytes of a partial file are on disk. `Coverage` is the set of
//! byte ranges written so far; the journal beside the partial file
//! (`{file}.journal`) records it as the writer goes, so that a retry, a
//! restart or a `kill -9` fetches only what is missing.
//!
//! A line is appended after the bytes it names were written (no fsync:
//! the page cache outlives a killed process; the sha256 of an LFS file
//! catches what a power cut could spoil). The journal is ours but is read
//! as untrusted: a line that does not parse, a range past the file's size,
//! a header for another size or a data file of another length means
//! starting over. Reading is bounded.

use std::io::{BufRead, BufReader, Read, Write};

use std::path::{Path, PathBuf};

/// Largest journal read back; past it the file starts over. At one line
/// a MiB written, that is a file of several TiB.
const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// Disjoint, sorted, coalesced half-open byte ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    ranges: Vec<(u64, u64)>,
}

impl Coverage {
    /// Adds `[start, end)`; answers how many of its bytes were not covered yet.
    pub fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let before = self.covered();
        // Ranges that touch or overlap the new one merge with it.
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        let (mut lo, mut hi) = (start, end);
        if first < last {
            lo = lo.min(self.ranges[first].0);
            hi = hi.max(self.ranges[last - 1].1);
        }
        self.ranges.splice(first..last, [(lo, hi)]);
        self.covered() - before
    }

    /// Bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// The length of the contiguous prefix `[0, n)` that is covered.
    pub fn prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// The ranges of `[0, size)` not covered, in order.
    pub fn missing(&self, size: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.ranges {
            if s > at {
                gaps.push((at, s.min(size)));
            }
            at = at.max(e);
        }
        if at < size {
            gaps.push((at, size));
        }
        gaps.retain(|(s, e)| s < e);
        gaps
    }

    fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// The append-only record of what a partial file holds.
pub struct Journal {
    file: std::fs::File,
}

impl Journal {
    /// Where the journal of `partial` lives.
    pub fn path_of(partial: &Path) -> PathBuf {
        let mut name = partial.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }

    /// What the journal says the partial file of `size` bytes holds;
    /// nothing, unless the journal and the file agree with each other.
    pub fn load(partial: &Path, size: u64) -> Coverage {
        let data_len = std::fs::metadata(partial).map(|m| m.len()).ok();
        if data_len != Some(size) {
            return Coverage::default();
        }
        let Ok(file) = std::fs::File::open(Self::path_of(partial)) else {
            return Coverage::default();
        };
        parse(BufReader::new(file.take(MAX_JOURNAL_BYTES)), size).unwrap_or_default()
    }

    /// Starts a fresh journal for a file of `size` bytes holding `coverage`
    /// (rewritten compactly, replacing the old one in one rename).
    pub fn create(partial: &Path, size: u64, coverage: &Coverage) -> std::io::Result<Journal> {
        let path = Self::path_of(partial);
        let mut text = format!("{HEADER} {size}\n");
        for (s, e) in coverage.ranges() {
            text.push_str(&format!("{s} {e}\n"));
        }
        let mut fresh = path.clone().into_os_string();
        fresh.push(".new");
        std::fs::write(&fresh, text)?;
        std::fs::rename(&fresh, &path)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Journal { file })
    }

    /// Records that `[start, end)` is written.
    pub fn record(&mut self, start: u64, end: u64) -> std::io::Result<()> {
        self.file.write_all(format!("{start} {end}\n").as_bytes())
    }

    /// Removes the journal of `partial`, if any.
    pub fn remove(partial: &Path) {
        let _ = std::fs::remove_file(Self::path_of(partial));
    }
}

const HEADER: &str = "vectorize-journal 1";

/// The coverage a journal records, or `None` when it is not one for `size`.
/// A last line without its newline was being written when the process
/// died: it is left out (its bytes are fetched again).
fn parse(mut input: impl BufRead, size: u64) -> Option<Coverage> {
    let mut line = Vec::new();
    let mut next_line = |line: &mut Vec<u8>| {
        line.clear();
        input.read_until(b'\n', line).ok()?;
        line.pop_if(|b| *b == b'\n').map(|_| ())
    };
    next_line(&mut line)?;
    if line != format!("{HEADER} {size}").as_bytes() {
        return None;
    }
    let mut coverage = Coverage::default();
    while next_line(&mut line).is_some() {
        let text = std::str::from_utf8(&line).ok()?;
        let (start, end) = text.split_once(' ')?;
        let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
        if start > end || end > size {
            return None;
        }
        coverage.insert(start, end);
    }
    Some(coverage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_merges_and_counts_only_new_bytes() {
        let mut c = Coverage::default();
        assert_eq!(c.insert(10, 20), 10);
        assert_eq!(c.insert(30, 40), 10);
        assert_eq!(c.prefix(), 0);
        assert_eq!(c.missing(50), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(c.insert(15, 35), 10);
        assert_eq!(c.ranges(), &[(10, 40)]);
        assert_eq!(c.insert(0, 10), 10);
        assert_eq!(c.prefix(), 40);
        assert_eq!(c.insert(0, 40), 0);
        assert_eq!(c.missing(40), vec![]);
        assert_eq!(c.insert(40, 41), 1);
        assert_eq!(c.ranges(), &[(0, 41)]);
    }

    #[test]
    fn a_journal_round_trips_and_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("blob");
        std::fs::File::create(&partial)
            .unwrap()
            .set_len(100)
            .unwrap();
        let mut journal = Journal::create(&partial, 100, &Coverage::default()).unwrap();
        journal.record(0, 10).unwrap();
        journal.record(50, 60).unwrap();
        let loaded = Journal::load(&partial, 100);
        assert_eq!(loaded.ranges(), &[(0, 10), (50, 60)]);
        // Compacted on the next start.
        Journal::create(&partial, 100, &loaded).unwrap();
        assert_eq!(Journal::load(&partial, 100), loaded);
        // Another size, a range past the end, garbage: nothing is trusted.
        assert_eq!(Journal::load(&partial, 99), Coverage::default());
        let path = Journal::path_of(&partial);
        std::fs::write(&path, format!("{HEADER} 100\n0 10\n90 101\n")).unwrap();
        assert_eq!(Journal::load(&partial, 100), Coverage::default());
        std::fs::write(&path, format!("{HEADER} 100\n0 x\n")).unwrap();
        assert_eq!(Journal::load(&partial, 100), Coverage::default());
        // A line cut short by a crash is left out, the rest kept.
        std::fs::write(&path, format!("{HEADER} 100\n0 10\n20 3")).unwrap();
        assert_eq!(Journal::load(&partial, 100).ranges(), &[(0, 10)]);
        std::fs::write(&path, format!("{HEADER} 100\n0 x\n")).unwrap();
        assert_eq!(Journal::load(&partial, 100), Coverage::default());
        // A data file of another length is another file.
        std::fs::write(&path, format!("{HEADER} 100\n0 10\n")).unwrap();
        std::fs::File::create(&partial)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert_eq!(Journal::load(&partial, 100), Coverage::default());
    }
}
