//! Fuzzes the HuJSON reader the policy file goes through (comments, trailing commas): any
//! text gives a value or an error, and a value it gives encodes as plain JSON that reads back
//! (numbers may come back rounded: serde_json reads floats to the nearest it can).
#![no_main]
use headscale::policy::parse_hujson;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(value) = parse_hujson(text) {
        let json = serde_json::to_string(&value).expect("a value encodes");
        let _: serde_json::Value = serde_json::from_str(&json).expect("plain JSON reads back");
    }
});
