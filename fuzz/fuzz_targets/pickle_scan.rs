//! The pickle scanner must never panic, hang or allocate without bound,
//! whatever bytes it is given.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vectorize::validate::pickle::scan_pickles(data);
});
