#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hermod_pop3d::fuzzing::session(data));
