//! The safetensors header check must never panic or allocate without bound,
//! whatever the file holds.
#![no_main]

use std::io::Write;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(data).unwrap();
    let _ = vectorize::validate::check_safetensors(file.path(), "fuzz.safetensors");
});
