#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::sim::fuzz_schedule(data));
