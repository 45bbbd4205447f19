#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hermod_imapd::fuzzing::framer(data));
