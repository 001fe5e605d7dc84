#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nightowl_fuzz::rules(data));
