#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hopgate::fuzz::h1_round_trip(data));
