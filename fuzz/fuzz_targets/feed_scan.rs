//! The one scan of a frame, against serde_json read independently: the scan accepts exactly
//! the frames serde_json reads as an object or an array of objects (nesting under 100), and
//! the events it finds are those objects, in order, with the type their `event_type` says;
//! and the book side's hand reader reads each as serde does, or leaves it to serde; and a frame
//! passed over unscanned (the book side off) holds nothing another reader wants; and the
//! book side's one pass agrees with the scan followed by a read of each span.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scanned = polytape::bench::scan_frame(text);
    // The book side's one pass (reading book events as it goes) finds and refuses what the
    // scan does, and reads the book events reading each span afterwards reads.
    let (by_scan, by_pass) = polytape::bench::frame_read_both_ways(text);
    assert_eq!(by_scan, by_pass, "{text:?}");
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
    // The objects serde_json finds, as their exact texts (RawValue: JSON's grammar, no
    // number range, as the feed's reader skips what it does not read).
    let objects: Option<Vec<&str>> = match text.trim_start().as_bytes().first() {
        Some(b'{') => serde_json::from_str::<&RawValue>(text)
            .ok()
            .map(|v| vec![v.get()]),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
            .ok()
            .filter(|items| items.iter().all(|v| v.get().starts_with('{')))
            .map(|items| items.iter().map(|v| v.get()).collect()),
        _ => None,
    };
    // A frame a connection without a book side passes over holds only events the book side
    // reads, or events without any type.
    if let (true, Ok(events)) = (polytape::bench::book_events_only(text), &scanned) {
        for (kind, event_text) in events {
            // Its keys as serde_json reads them (raw values: a number out of f64's range is
            // no reason to count a key as absent).
            let untyped = || {
                serde_json::from_str::<std::collections::HashMap<String, &RawValue>>(event_text)
                    .is_ok_and(|members| !members.contains_key("event_type"))
            };
            assert!(
                matches!(kind.as_str(), "Book" | "PriceChange" | "TickSize" | "BestBidAsk")
                    || (kind == "Unknown" && untyped()),
                "{text:?} passed over, yet holds {kind}"
            );
        }
    }
    match (&scanned, objects) {
        (Ok(events), Some(objects)) => {
            assert_eq!(events.len(), objects.len(), "{text:?}");
            for ((kind, event_text), object) in events.iter().zip(&objects) {
                // Each range is that object, whole.
                assert_eq!(event_text, object, "{text:?}");
                // The book side's hand reader answers as serde does, or leaves it to serde.
                let (by_hand, by_serde) = polytape::bench::book_event_both_ways(event_text);
                if by_hand.is_some() {
                    assert_eq!(by_hand, by_serde, "{event_text:?}");
                }
                // The type, where serde_json reads the object as a value (numbers in range)
                // and the event does not give `event_type` twice (serde_json keeps the last,
                // the scan the first).
                let Ok(object) = serde_json::from_str::<Value>(event_text) else {
                    continue;
                };
                if has_key_twice(event_text, "event_type") {
                    continue;
                }
                let want = match object.get("event_type").and_then(Value::as_str) {
                    Some("last_trade_price") => "Trade",
                    Some("book") => "Book",
                    Some("price_change") => "PriceChange",
                    Some("tick_size_change") => "TickSize",
                    Some("best_bid_ask") => "BestBidAsk",
                    Some("new_market") => "NewMarket",
                    Some("market_resolved") => "Resolved",
                    Some(_) => "Unknown",
                    None if object.get("bids").is_some() => "Book",
                    None => "Unknown",
                };
                assert_eq!(kind, want, "{text:?}");
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
