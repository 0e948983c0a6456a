//! The safetensors header check must never panic or allocate without bound,
//! whatever the file holds.
#![no_main]

use std::io::Write;

#[path = "../../src/validate/safetensors.rs"]
mod safetensors_check;

/// What `src/validate/mod.rs` declares for its parsers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidWeights(pub String);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(data).unwrap();
    let _ = safetensors_check::check_safetensors(file.path(), "fuzz.safetensors");
});
