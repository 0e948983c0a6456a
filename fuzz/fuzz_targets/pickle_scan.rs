//! The pickle scan must never panic, hang or allocate without bound,
//! whatever bytes it is given, read as a checkpoint's stream (strict) or as
//! any stored file (sniffed). Seeds: `tests/corpus/pickle/` (README.md, "Fuzzing the parsers").
#![no_main]

#[path = "../../src/validate/pickle/allow.rs"]
mod allow;
#[path = "../../src/validate/pickle/input.rs"]
mod input;
#[path = "../../src/validate/pickle/machine.rs"]
mod machine;
#[path = "../../src/validate/pickle/stream.rs"]
mod stream;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let len = Some(data.len() as u64);
    let _ = stream::scan_checkpoint_stream(data, len);
    let _ = stream::sniff_stream(data, len);
    // A wrong length hint must not change safety, only how early a read ends.
    let _ = stream::sniff_stream(data, None);
});
