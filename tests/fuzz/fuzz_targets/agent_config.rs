#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nightowl_fuzz::agent_config(data));
