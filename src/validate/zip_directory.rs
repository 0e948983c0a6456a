//! How many entries a ZIP archive declares, read from its last few
//! kilobytes before any ZIP reader parses it. The reader allocates per
//! declared entry while it parses the central directory, so an archive that
//! declares millions must be refused on this count first: uploaded
//! archives and `torch.save` checkpoints alike. Reads only; writes nothing.

use std::io::{self, Read, Seek, SeekFrom};

/// Size of an end-of-central-directory record without its comment.
const EOCD_LEN: usize = 22;
/// The comment that may follow it is at most this long.
const MAX_COMMENT_LEN: usize = u16::MAX as usize;
/// A ZIP64 end-of-central-directory locator, just before the EOCD.
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;

/// The largest entry count any end-of-central-directory record in the
/// archive's tail declares (ZIP64 records included), 0 when there is none.
/// The ZIP reader allocates per declared entry while it parses the central
/// directory, so an archive that declares millions is refused on this
/// count before it is parsed; the count of the parsed archive is checked too.
pub fn declared_entry_count(archive: &mut (impl Read + Seek)) -> io::Result<u64> {
    let len = archive.seek(SeekFrom::End(0))?;
    let tail_len = len.min((EOCD_LEN + MAX_COMMENT_LEN + ZIP64_LOCATOR_LEN) as u64);
    archive.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    archive.read_exact(&mut tail)?;
    let mut most = 0;
    for at in (0..tail.len().saturating_sub(EOCD_LEN - 1)).rev() {
        if tail[at..].starts_with(b"PK\x05\x06") {
            most = most.max(u64::from(le_u16(&tail[at + 10..])));
            if let Some(count) = zip64_entry_count(archive, &tail[..at])? {
                most = most.max(count);
            }
        }
    }
    Ok(most)
}

/// The entry count of the ZIP64 record that a locator just before an EOCD
/// (`before` ends where the EOCD starts) points to, if there is one.
fn zip64_entry_count(archive: &mut (impl Read + Seek), before: &[u8]) -> io::Result<Option<u64>> {
    let Some(locator) = before
        .len()
        .checked_sub(ZIP64_LOCATOR_LEN)
        .map(|at| &before[at..])
    else {
        return Ok(None);
    };
    if !locator.starts_with(b"PK\x06\x07") {
        return Ok(None);
    }
    let record_at = le_u64(&locator[8..]);
    if archive.seek(SeekFrom::Start(record_at)).is_err() {
        return Ok(None);
    }
    let mut record = [0u8; ZIP64_EOCD_LEN];
    if archive.read_exact(&mut record).is_err() || !record.starts_with(b"PK\x06\x06") {
        return Ok(None);
    }
    Ok(Some(le_u64(&record[32..])))
}

fn le_u16(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}
