//! libFuzzer target: Kubernetes WebSocket channel messages and resize JSON.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vk_runtime_fuzz::ws_frames(data));
