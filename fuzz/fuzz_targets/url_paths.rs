#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hopgate::fuzz::url_paths(data));
