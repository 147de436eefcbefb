//! libFuzzer entry point: [`tokengate_fuzz::jwks_parse`] on every input (see `src/lib.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokengate_fuzz::jwks_parse(data));
