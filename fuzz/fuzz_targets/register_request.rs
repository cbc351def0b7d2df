//! Fuzzes RegisterRequest decoding, and re-encoding of whatever decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<headscale::tailcfg::RegisterRequest>(data) {
        let _ = serde_json::to_vec(&r).expect("a decoded request re-encodes");
    }
});
