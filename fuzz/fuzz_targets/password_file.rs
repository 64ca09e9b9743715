#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::auth::passwd::fuzz_parse(data));
