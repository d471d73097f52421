//! The one scan of a frame, against serde_json read independently: the scan accepts exactly
//! the frames serde_json reads as an object or an array of objects (nesting under 100), and
//! the events it finds are those objects, in order, with the type their `event_type` says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scanned = polytape::bench::scan_frame(text);
    // Nesting serde_json refuses (its limit, 128) or that the scan refuses first.
    let deepest = text
        .bytes()
        .scan(0i32, |d, b| {
            match b {
                b'[' | b'{' => *d += 1,
                b']' | b'}' => *d -= 1,
                _ => {}
            }
            Some(*d)
        })
        .max()
        .unwrap_or(0);
    if deepest >= 100 {
        return;
    }
    let objects = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) if items.iter().all(Value::is_object) => Some(items),
        Ok(v @ Value::Object(_)) => Some(vec![v]),
        _ => None,
    };
    match (&scanned, objects) {
        (Ok(events), Some(objects)) => {
            assert_eq!(events.len(), objects.len(), "{text:?}");
            for ((kind, event_text), object) in events.iter().zip(&objects) {
                // Each range is that object, whole.
                let again: Value = serde_json::from_str(event_text).expect("a range is JSON");
                assert_eq!(&again, object, "{text:?}");
                let want = match object.get("event_type").and_then(Value::as_str) {
                    Some("last_trade_price") => "Trade",
                    Some("book") => "Book",
                    Some("price_change") => "PriceChange",
                    Some("tick_size_change") => "TickSize",
                    Some("best_bid_ask") => "BestBidAsk",
                    Some("new_market") => "NewMarket",
                    Some("market_resolved") => "Resolved",
                    Some(_) => "Unknown",
                    None if object.get("bids").is_some() && !has_key_twice(event_text, "event_type") => "Book",
                    None => "Unknown",
                };
                // serde_json keeps the last of a key given twice; the scan the first.
                if !has_key_twice(event_text, "event_type") {
                    assert_eq!(kind, want, "{text:?}");
                }
            }
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("the scan accepts what serde_json refuses: {text:?}"),
        (Err(e), Some(_)) => panic!("the scan refuses what serde_json reads ({e}): {text:?}"),
    }
});

/// Whether `key` may be given twice in the object (a loose count of its quoted name).
fn has_key_twice(object: &str, key: &str) -> bool {
    object.matches(&format!("\"{key}\"")).count() > 1 || object.contains('\\')
}
