//! The Data API's `/trades` answers, row by row.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = polytape::bench::decode_data_api_trades(text);
    }
});
