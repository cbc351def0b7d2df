//! Fuzzes the HTTP/2 server inside the Noise channel: the client preface followed by any byte
//! string must end the connection cleanly (served, refused or closed), never panic or hang.
#![no_main]
use headscale::http2::frame::PREFACE;
use libfuzzer_sys::fuzz_target;

#[path = "common/echo.rs"]
mod echo;

fuzz_target!(|data: &[u8]| {
    echo::serve_bytes(&[PREFACE, data].concat());
});
