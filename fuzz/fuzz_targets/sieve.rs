#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hermod_mda::fuzzing::sieve(data));
