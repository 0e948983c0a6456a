//! The pickle rule tried as an attacker would: the corpus of known bypasses
//! (`tests/corpus/pickle/`, written by its `make_corpus.py`), the safe
//! checkpoints that must still pass, files that are no pickle, and floods
//! built here because they are too large to keep.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn corpus(folder: &str) -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/pickle")
        .join(folder);
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "tsv"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

#[test]
fn every_known_bypass_is_refused_with_its_reason() {
    let expected_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/pickle/unsafe/EXPECTED.tsv"),
    )
    .unwrap();
    let expected: std::collections::HashMap<&str, (&str, &str)> = expected_text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[0], (fields[1], fields[2]))
        })
        .collect();
    let files = corpus("unsafe");
    assert_eq!(files.len(), expected.len(), "EXPECTED.tsv lists every file");
    for (name, path) in files {
        let (phrase, scope) = expected[name.as_str()];
        let mut checks = vec![("checkpoint", check_checkpoint(&path, &name))];
        if scope == "any" {
            checks.push(("stored file", check_stored_file(&path, &name)));
        }
        for (check, verdict) in checks {
            let reason = verdict
                .err()
                .unwrap_or_else(|| panic!("{name} passed as a {check}"))
                .0;
            assert!(reason.contains(phrase), "{name} as a {check}: {reason}");
            assert!(
                reason.contains(&name),
                "the reason names the file: {reason}"
            );
        }
    }
}

#[test]
fn safe_checkpoints_pass() {
    for (name, path) in corpus("safe") {
        check_checkpoint(&path, &name).unwrap_or_else(|e| panic!("{}", e.0));
        check_stored_file(&path, &name).unwrap_or_else(|e| panic!("{}", e.0));
    }
}

#[test]
fn files_that_are_no_pickle_pass_and_are_no_checkpoint() {
    for (name, path) in corpus("not_pickles") {
        check_stored_file(&path, &name).unwrap_or_else(|e| panic!("{}", e.0));
        assert!(check_checkpoint(&path, &name).is_err(), "{name}");
    }
}

fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file
}

fn stored(bytes: &[u8]) -> Result<(), String> {
    let file = file_of(bytes);
    check_stored_file(file.path(), "f").map_err(|e| e.0)
}

fn checkpoint(bytes: &[u8]) -> Result<(), String> {
    let file = file_of(bytes);
    check_checkpoint(file.path(), "f").map_err(|e| e.0)
}

/// One pickle: `None` stored under `n` distinct memo indices (LONG_BINPUT).
fn binput_flood(n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'N'];
    for i in 0..n {
        p.push(b'r');
        p.extend_from_slice(&i.to_le_bytes());
    }
    p.push(b'.');
    p
}

#[test]
fn a_memo_flood_stops_at_the_budget() {
    // No PROTO: read as sniffed bytes, so the memo grows until the budget,
    // and the reason is the first thing torch refuses.
    let mut flood = vec![b'N'];
    flood.resize(2_000_000, 0x94);
    flood.push(b'.');
    assert!(stored(&flood).unwrap_err().contains("MEMOIZE"));
    let mut flood = vec![0x80, 4, b'N'];
    flood.resize(2_000_000, 0x94);
    assert!(checkpoint(&flood).unwrap_err().contains("MEMOIZE"));
    // Opcodes torch reads fill the budget too: a million BINPUTs of distinct indices.
    let reason = checkpoint(&binput_flood(1_000_000)).unwrap_err();
    assert!(reason.contains("MiB of values"), "{reason}");
}

#[test]
fn many_small_pickles_after_a_large_memo_stay_linear() {
    // The review's case: one pickle with a large memo, then a million tiny
    // ones; clearing the large memo a million times took minutes.
    let mut stream = binput_flood(200_000);
    for _ in 0..1_000_000 {
        stream.extend_from_slice(b"Nq\x00.");
    }
    let started = std::time::Instant::now();
    checkpoint(&stream).unwrap();
    // Not a timing assertion: a regression takes minutes, this takes seconds.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn a_mark_flood_stops_at_the_budget() {
    let reason = stored(&vec![b'('; 2_000_000]).unwrap_err();
    assert!(reason.contains("MiB of values"), "{reason}");
}

#[test]
fn none_pop_pairs_are_no_checkpoint_and_hold_nothing() {
    let pairs = b"N0".repeat(1_000_000);
    assert!(checkpoint(&pairs).unwrap_err().contains("POP"));
    // As a plain file they are bytes Python reads to no effect.
    stored(&pairs).unwrap();
}

#[test]
fn strings_past_the_cap_are_refused_before_they_are_read() {
    let mut p = vec![0x80, 2, b'X'];
    p.extend_from_slice(&(65u32 << 20).to_le_bytes());
    p.resize(p.len() + (65 << 20), b'a');
    p.extend_from_slice(b"\x85.");
    let reason = checkpoint(&p).unwrap_err();
    assert!(reason.contains("declares a string"), "{reason}");
}

#[test]
fn a_long_safe_pickle_is_read_to_its_end() {
    // {1: 2} set 200,000 times: one pass, nothing kept.
    let mut p = vec![0x80, 2, b'}'];
    for _ in 0..200_000 {
        p.extend_from_slice(b"K\x01K\x02s");
    }
    p.push(b'.');
    checkpoint(&p).unwrap();
}

#[test]
fn text_memo_indices_are_read_as_python_reads_them() {
    // "os" and "system" stored at " 1" and "+2", fetched back for STACK_GLOBAL.
    let reason = stored(b"Vos\np 1\nVsystem\np+2\n00g1\ng2\n\x93.").unwrap_err();
    assert!(reason.contains("os.system"), "{reason}");
    // GET of an index never set raises: the bytes are no pickle.
    stored(b"g3\n.").unwrap();
}

#[test]
fn a_global_split_across_the_kept_prefix_is_refused() {
    let long = "a".repeat(300);
    let mut p = b"\x80\x02c".to_vec();
    p.extend_from_slice(format!("{long}\nsystem\n)R.").as_bytes());
    let reason = checkpoint(&p).unwrap_err();
    assert!(reason.contains("aaaa…"), "{reason}");
}

#[test]
fn the_pickles_after_a_legacy_magic_number_are_held_to_the_strict_rule() {
    let magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
    // torch.load reads four more pickles whatever they hold: a truncated one is refused…
    let mut legacy = magic.to_vec();
    legacy.extend_from_slice(b"\x80\x02N");
    assert!(checkpoint(&legacy).unwrap_err().contains("ends early"));
    // …while after an ordinary pickle, bytes no loader can read are only bytes.
    let mut plain = b"\x80\x02N.".to_vec();
    plain.extend_from_slice(b"\x80\x02N");
    checkpoint(&plain).unwrap();
}
