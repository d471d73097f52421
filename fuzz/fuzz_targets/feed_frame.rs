//! Every frame of the market channel: the trade parser (its trades must be valid by
//! construction) and the announcement reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut trades = Vec::new();
    match polytape::bench::parse_frame(text, 1_700_000_000_000_000, &mut trades) {
        Ok(summary) => {
            assert_eq!(summary.trades as usize, trades.len());
            for t in &trades {
                // What validation promises the writer.
                assert!(!t.asset_id.is_empty() && !t.market.is_empty());
                assert!(t.price.at_most_one() && !t.size.is_zero());
            }
        }
        Err(_) => assert!(trades.is_empty(), "a malformed frame appends nothing"),
    }
    let _ = polytape::bench::announcements(text);
});
