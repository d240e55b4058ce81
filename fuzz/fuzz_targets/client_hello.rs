#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hopgate::fuzz::client_hello(data));
