//! Gamma's `/markets/keyset` pages, every market through to its table row and winner
//! inference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = polytape::bench::decode_gamma_page(text);
    }
});
