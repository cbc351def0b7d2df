//! Fuzzes the HTTP/2 header path: the input after its first byte is an HPACK block, sent on
//! stream 1 after a valid preface and SETTINGS as one HEADERS frame, or split into HEADERS and
//! CONTINUATION where the first byte says. The server must decode it within its bound on the
//! header list (or refuse it with 431), answer or reset the stream, and end cleanly.
#![no_main]
use headscale::http2::frame::{self, CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PREFACE};
use libfuzzer_sys::fuzz_target;

#[path = "common/echo.rs"]
mod echo;

fuzz_target!(|data: &[u8]| {
    let Some((&split, block)) = data.split_first() else { return };
    let mut input = PREFACE.to_vec();
    frame::settings(&mut input, &[]);
    let cut = split as usize % (block.len() + 1);
    if cut == 0 {
        frame::frame(&mut input, HEADERS, END_HEADERS | END_STREAM, 1, block);
    } else {
        frame::frame(&mut input, HEADERS, END_STREAM, 1, &block[..cut]);
        frame::frame(&mut input, CONTINUATION, END_HEADERS, 1, &block[cut..]);
    }
    echo::serve_bytes(&input);
});
