//! libFuzzer entry point: [`tokengate_fuzz::jwe_decrypt`] on every input (see `src/lib.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokengate_fuzz::jwe_decrypt(data));
