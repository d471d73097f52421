//! The request heads the health endpoint (and the simulator) parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server hands over what precedes the first blank line.
    let head_len = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |p| p + 4);
    if let Ok(req) = polytape_http::parse_request(data, head_len) {
        assert_eq!(req.rest.len(), data.len() - head_len);
    }
});
