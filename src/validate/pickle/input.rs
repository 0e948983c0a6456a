//! The bytes of one pickle stream, read once and never held whole: fixed
//! arguments are copied, counted and newline-ended arguments are streamed
//! past keeping only their first bytes, so a declared length costs no memory
//! before its bytes are there.

use std::io::{BufRead, BufReader, Read};

/// Bytes of a string argument kept for the scan's decisions and messages.
pub const KEPT_BYTES: usize = 256;
/// The read buffer of a large stream.
const BUFFER_BYTES: usize = 64 * 1024;

/// A stream being read, with the offset reached, the bytes that remain
/// when known, and the end of the `FRAME` being read, if any.
pub struct Input<R> {
    reader: BufReader<R>,
    offset: u64,
    remaining: Option<u64>,
    frame_end: Option<u64>,
}

/// Why an argument could not be read.
#[derive(Debug)]
pub enum Short {
    /// The stream ended first (Python raises `EOFError` or a truncation error).
    End,
    /// An argument runs past the end of its `FRAME`: CPython's reader and
    /// a plain reading of the bytes part ways there.
    FrameEnd,
    /// The file could not be read.
    Io(std::io::Error),
}

/// A newline-ended or counted argument: its first bytes and facts about the rest.
#[derive(Debug)]
pub struct Argument {
    pub kept: Vec<u8>,
    pub len: u64,
    /// The argument's last byte, kept or not.
    pub last: Option<u8>,
}

impl Argument {
    /// The text as Python would decode it (strict UTF-8), when the kept
    /// part decodes; `…` marks an argument longer than what was kept.
    pub fn text(&self) -> Option<String> {
        let text = match std::str::from_utf8(&self.kept) {
            Ok(text) => text,
            // A cut through a multi-byte character is not an error.
            Err(e) if e.error_len().is_none() && self.len > self.kept.len() as u64 => {
                std::str::from_utf8(&self.kept[..e.valid_up_to()]).ok()?
            }
            Err(_) => return None,
        };
        Some(if self.len > self.kept.len() as u64 {
            format!("{text}…")
        } else {
            text.to_string()
        })
    }

    /// Whether the whole argument was kept.
    pub fn complete(&self) -> bool {
        self.len == self.kept.len() as u64
    }
}

impl<R: Read> Input<R> {
    pub fn new(reader: R, len: Option<u64>) -> Self {
        // A small file gets a small buffer; most stored files are small.
        let capacity = len.map_or(BUFFER_BYTES, |l| l.clamp(64, BUFFER_BYTES as u64) as usize);
        Input {
            reader: BufReader::with_capacity(capacity, reader),
            offset: 0,
            remaining: len,
            frame_end: None,
        }
    }

    /// A `FRAME` of `len` bytes starts here.
    pub fn begin_frame(&mut self, len: u64) {
        self.frame_end = Some(self.offset.saturating_add(len));
    }

    /// Whether a `FRAME` is being read (and not finished).
    pub fn in_frame(&self) -> bool {
        self.frame_end.is_some_and(|end| end > self.offset)
    }

    /// Called before each opcode: a frame read to its end is over.
    pub fn next_opcode(&mut self) {
        if self.frame_end == Some(self.offset) {
            self.frame_end = None;
        }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a declared length certainly runs past the end of the stream.
    pub fn exceeds_remaining(&self, n: u64) -> bool {
        self.remaining.is_some_and(|r| n > r)
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume(n);
        self.offset += n as u64;
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(n as u64);
        }
    }

    /// The bytes buffered, never past the end of the current frame.
    fn buffer(&mut self) -> Result<&[u8], Short> {
        let frame_left = match self.frame_end {
            Some(end) if end <= self.offset => return Err(Short::FrameEnd),
            Some(end) => usize::try_from(end - self.offset).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        match self.reader.fill_buf() {
            Ok([]) => Err(Short::End),
            Ok(buf) => Ok(&buf[..buf.len().min(frame_left)]),
            Err(e) => Err(Short::Io(e)),
        }
    }

    /// The next byte, or `None` at the end of the stream.
    pub fn next_byte(&mut self) -> Result<Option<u8>, Short> {
        match self.buffer() {
            Ok(buf) => {
                let b = buf[0];
                self.consume(1);
                Ok(Some(b))
            }
            Err(Short::End) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `N` bytes (N ≤ 8) as a little-endian unsigned number.
    pub fn uint(&mut self, n: usize) -> Result<u64, Short> {
        let mut value = 0u64;
        for i in 0..n {
            let b = self.next_byte()?.ok_or(Short::End)?;
            value |= u64::from(b) << (8 * i);
        }
        Ok(value)
    }

    /// Skips `n` bytes, keeping the first `KEPT_BYTES`.
    pub fn counted(&mut self, n: u64) -> Result<Argument, Short> {
        let mut arg = Argument {
            kept: Vec::new(),
            len: n,
            last: None,
        };
        let mut left = n;
        while left > 0 {
            let buf = self.buffer()?;
            let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let room = KEPT_BYTES.saturating_sub(arg.kept.len()).min(take);
            arg.kept.extend_from_slice(&buf[..room]);
            arg.last = buf[..take].last().copied().or(arg.last);
            self.consume(take);
            left -= take as u64;
        }
        Ok(arg)
    }

    /// Reads up to and including the next `\n`; the argument excludes it.
    pub fn line(&mut self) -> Result<Argument, Short> {
        let mut arg = Argument {
            kept: Vec::new(),
            len: 0,
            last: None,
        };
        loop {
            let buf = self.buffer()?;
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(end) => (end, true),
                None => (buf.len(), false),
            };
            let room = KEPT_BYTES.saturating_sub(arg.kept.len()).min(take);
            arg.kept.extend_from_slice(&buf[..room]);
            arg.last = buf[..take].last().copied().or(arg.last);
            arg.len += take as u64;
            self.consume(take + usize::from(done));
            if done {
                return Ok(arg);
            }
        }
    }
}
