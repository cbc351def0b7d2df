//! Fuzzes the configuration file: any YAML text is read and checked into a configuration or
//! refused with an error, and a configuration that passes is written out and read back to one
//! that passes too.
#![no_main]
use headscale::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::from_yaml(text) {
        let yaml = serde_yaml::to_string(&config).expect("a configuration encodes");
        Config::from_yaml(&yaml).expect("a configuration that passed reads back");
    }
});
