//! The pickle rule (API.md): files are recognised by their content, and
//! every pickle found is held to what `torch.load(weights_only=True)`
//! accepts, without executing it.
//!
//! - [`check_checkpoint`]: a weights file (`.bin`, `.pt`, `.pth`) must be a
//!   `torch.save` checkpoint — a ZIP holding `data.pkl`, or a bare or legacy
//!   pickle stream — and pass the rule.
//! - [`check_stored_file`]: any other stored file, whatever its name, is
//!   refused when it holds a pickle that fails the rule: a pickle of any
//!   protocol (text pickles of protocols 0 and 1 have no `PROTO` byte and are
//!   found by reading them as Python would), a legacy `torch.save` stream
//!   (all of its pickles), or a ZIP holding `.pkl` entries. A ZIP the scan
//!   cannot open and a tar archive are refused: their pickles cannot be
//!   checked.
//!
//! `allow` lists the globals, `machine` reads one pickle within a fixed
//! memory budget, `input` streams its bytes, `stream` reads the pickles of
//! one stream in turn. Everything here is blocking
//! file I/O: callers run it on a blocking thread.

pub mod allow;
mod input;
mod machine;
mod stream;

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

pub use self::stream::{scan_checkpoint_stream, sniff_stream};
use super::InvalidWeights;

/// Most entries a checkpoint ZIP may declare: one per tensor storage and a
/// few more; the ZIP reader allocates per declared entry.
const MAX_CHECKPOINT_ENTRIES: u64 = 100_000;
/// Largest pickle entry of a ZIP read, once decompressed: more is refused
/// (the bytes a checkpoint's pickle holds are names, not data).
const MAX_ZIPPED_PICKLE_BYTES: u64 = 1 << 30;
/// Largest header a safetensors file may declare (the safetensors crate's limit).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Checks a weights file: a `torch.save` checkpoint whose every pickle
/// passes the rule.
pub fn check_checkpoint(path: &Path, name: &str) -> Result<(), InvalidWeights> {
    let invalid =
        |why: String| InvalidWeights(format!("{name} is not a safe PyTorch checkpoint: {why}"));
    let (file, len, head) = open(path).map_err(invalid)?;
    if head.starts_with(ZIP_MAGIC) {
        let archive = open_zip(file).map_err(invalid)?;
        return scan_zip(archive, true).map_err(invalid);
    }
    scan_checkpoint_stream(file, Some(len)).map_err(invalid)
}

/// Checks any stored file by its content: refused when it holds a pickle
/// that fails the rule; bytes that are no pickle pass.
pub fn check_stored_file(path: &Path, name: &str) -> Result<(), InvalidWeights> {
    let refused = |why: String| {
        InvalidWeights(format!(
            "{name} holds a pickle that is not safe to load: {why}"
        ))
    };
    let (file, len, head) = open(path).map_err(refused)?;
    if head.starts_with(ZIP_MAGIC) {
        // Fail closed: a ZIP this scan cannot open may open elsewhere.
        let archive = open_zip(file).map_err(refused)?;
        return scan_zip(archive, false).map_err(refused);
    }
    if is_tar_header(&head) {
        return Err(refused(
            "it is a tar archive, whose members are not checked (torch's legacy tar \
             checkpoints unpickle them; torch.load(weights_only=True) refuses them)"
                .into(),
        ));
    }
    if looks_like_safetensors(&head, len) || !starts_with_proto(&head) {
        return sniff_stream(file, Some(len)).map_err(refused);
    }
    scan_checkpoint_stream(file, Some(len)).map_err(refused)
}

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// Bytes read to recognise a file: a tar header's.
const HEAD_BYTES: usize = 512;

/// The file, its length and its first bytes (a tar header's worth; fewer
/// when it is shorter).
fn open(path: &Path) -> Result<(File, u64, Vec<u8>), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open it ({e})"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut head = Vec::with_capacity(HEAD_BYTES);
    (&mut file)
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    file.rewind().map_err(|e| e.to_string())?;
    Ok((file, len, head))
}

/// A tar header as Python's `tarfile` accepts one (old V7 headers without
/// the `ustar` magic included): not all zero, and its octal checksum the
/// sum of its bytes with the checksum field read as spaces.
fn is_tar_header(head: &[u8]) -> bool {
    let Ok(header) = <&[u8; 512]>::try_from(head) else {
        return false;
    };
    if header.iter().all(|&b| b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&header[148..156]);
    let Ok(checksum) = i64::from_str_radix(field.trim_matches([' ', '\0']), 8) else {
        return false;
    };
    let outside = header[..148].iter().chain(&header[156..]);
    let spaces = 8 * i64::from(b' ');
    let unsigned: i64 = outside.clone().map(|&b| i64::from(b)).sum::<i64>() + spaces;
    let signed: i64 = outside.map(|&b| i64::from(b as i8)).sum::<i64>() + spaces;
    checksum == unsigned || checksum == signed
}

fn starts_with_proto(head: &[u8]) -> bool {
    matches!(head, [0x80, 0..=5, ..])
}

/// A safetensors file starts with its header's length and then `{`; such
/// bytes are only sniffed, never held to the strict rule by their first byte.
fn looks_like_safetensors(head: &[u8], len: u64) -> bool {
    let Some(declared) = head.get(..8) else {
        return false;
    };
    let declared = u64::from_le_bytes(declared.try_into().expect("eight bytes"));
    head.get(8) == Some(&b'{')
        && declared <= MAX_SAFETENSORS_HEADER
        && declared.saturating_add(8) <= len
}

fn open_zip(mut file: File) -> Result<zip::ZipArchive<BufReader<File>>, String> {
    let declared =
        super::zip_directory::declared_entry_count(&mut file).map_err(|e| e.to_string())?;
    if declared > MAX_CHECKPOINT_ENTRIES {
        return Err(format!("its ZIP declares {declared} entries"));
    }
    file.rewind().map_err(|e| e.to_string())?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| format!("unreadable ZIP ({e})"))
}

/// Holds every `.pkl` entry of a ZIP (any case: torch finds `data.pkl`
/// so) to the rule; a checkpoint must also have the `data.pkl` that
/// `torch.load` reads. Names that repeat, in any case, are refused: readers
/// disagree on which entry such a name means.
fn scan_zip(mut archive: zip::ZipArchive<BufReader<File>>, checkpoint: bool) -> Result<(), String> {
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a ZIP entry name cannot be read ({e})"))?;
    let mut folded: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    folded.sort();
    folded.dedup();
    if archive.has_duplicate_names() || folded.len() != names.len() {
        return Err("its ZIP holds two entries of the same name (ignoring case)".into());
    }
    let pickles: Vec<String> = names
        .into_iter()
        .filter(|n| n.to_lowercase().ends_with(".pkl"))
        .collect();
    let is_data_pkl = |n: &String| {
        let n = n.to_lowercase();
        n == "data.pkl" || n.ends_with("/data.pkl")
    };
    if checkpoint && !pickles.iter().any(is_data_pkl) {
        return Err("the ZIP holds no data.pkl".into());
    }
    for entry_name in pickles {
        let entry = archive
            .by_name(&entry_name)
            .map_err(|e| format!("{entry_name}: {e}"))?;
        let len = entry.size();
        scan_checkpoint_stream(entry.take(MAX_ZIPPED_PICKLE_BYTES), Some(len))
            .map_err(|why| format!("{entry_name}: {why}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
