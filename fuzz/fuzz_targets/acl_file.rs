#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::auth::acl::fuzz_parse(data));
