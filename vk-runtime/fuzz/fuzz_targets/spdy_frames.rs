//! libFuzzer target: SPDY frame parsing and the header blocks the frames carry.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vk_runtime_fuzz::spdy_frames(data));
