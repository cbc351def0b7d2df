//! Fuzzes the responder side of the Noise handshake with arbitrary initiations.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(init) = headscale::noise::Initiation::parse(data) {
        let key = headscale::tailcfg::PrivateKey([9u8; 32]);
        let _ = headscale::noise::accept(&key, &init);
    }
});
