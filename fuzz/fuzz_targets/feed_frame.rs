//! Every frame of the market channel: the trade parser (its trades must be valid by
//! construction), the announcement reader and the book side's reader.
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
    // The book side reads the same scan; what it returns is exact by construction.
    let books = polytape::book::book_events(text);
    if trades.is_empty() && polytape::bench::scan_frame(text).is_err() {
        assert!(books.events.is_empty(), "a malformed frame holds no book event");
    }
    for e in &books.events {
        if let polytape::book::BookEvent::Change { asset_id, market, .. } = e {
            assert!(!asset_id.is_empty() && !market.is_empty());
        }
    }
});
