#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::protocol::fuzzing::fuzz_decode_split(data));
