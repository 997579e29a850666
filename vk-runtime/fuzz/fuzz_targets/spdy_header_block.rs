//! libFuzzer target: the SPDY header-block decoder (zlib with the SPDY/3 dictionary + layout).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vk_runtime_fuzz::spdy_header_block(data));
