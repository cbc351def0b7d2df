//! Fuzzes the ts2021 record decoder: any byte string must decode or fail cleanly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = headscale::noise::decode_frames(&[7u8; 32], data);
});
