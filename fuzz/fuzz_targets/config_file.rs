#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::config::file::fuzz_parse(data));
