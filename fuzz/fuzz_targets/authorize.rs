//! libFuzzer entry point: [`tokengate_fuzz::authorize`] on every input (see `src/lib.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokengate_fuzz::authorize(data));
