#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::transport::proxy::fuzz_parse(data));
