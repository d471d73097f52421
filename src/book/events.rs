//! The market channel's book events, read out of a frame: `book` (a snapshot, sometimes
//! without `event_type`), `price_change` (level totals with the top of book after each, or
//! the legacy form without it), `tick_size_change`. Every number is exact ([`Price`],
//! [`Size`]); an entry with a bad one is counted and left out, never guessed at, and never
//! fails the other events of the frame.

use serde_json::Value;

use super::number::{Price, Side, Size};
use crate::feed::event::{is_identifier, json_events};

/// One book event for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookEvent {
    /// `book`: the token's whole book (levels in any order, as the wire has them).
    Snapshot {
        /// The token.
        asset_id: String,
        /// Its market (condition id).
        market: String,
        /// The event's own time (Unix ms; 0 when the event has none).
        timestamp_ms: i64,
        /// Bid levels.
        bids: Vec<(Price, Size)>,
        /// Ask levels.
        asks: Vec<(Price, Size)>,
        /// The tick, when the snapshot gives it.
        tick_size: Option<Price>,
    },
    /// One `price_change` entry: the level's new total (zero removes it) and, in the
    /// current form, the exchange's best bid and ask after it (`None`: the side is empty,
    /// or the legacy form, which has no top of book to check against).
    Change {
        /// The token.
        asset_id: String,
        /// Its market (condition id).
        market: String,
        /// The event's own time (Unix ms; 0 when the event has none).
        timestamp_ms: i64,
        /// The side of the level.
        side: Side,
        /// The level's price.
        price: Price,
        /// The level's new total.
        size: Size,
        /// The top of book after the change, when the entry gives it.
        top: Option<(Option<Price>, Option<Price>)>,
    },
    /// `tick_size_change`.
    TickSize {
        /// The token.
        asset_id: String,
        /// The new tick.
        tick_size: Price,
    },
}

/// What [`book_events`] found in a frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BookEvents {
    /// The usable events, in frame order (one per `price_change` entry).
    pub events: Vec<BookEvent>,
    /// Events or entries left out for a bad field (a number that is not exact, a side that
    /// is not BUY or SELL, an id that is not one): counted, never guessed at.
    pub invalid: u32,
}

impl BookEvents {
    /// Keeps a usable event, counts one left out.
    fn push(&mut self, event: Option<BookEvent>) {
        match event {
            Some(e) => self.events.push(e),
            None => self.invalid += 1,
        }
    }
}

/// The book events of one frame (an object or an array of them; anything that is not JSON
/// holds none). Other event types are not book events and are skipped.
pub fn book_events(frame: &str) -> BookEvents {
    let mut out = BookEvents::default();
    for v in json_events(frame) {
        let kind = v.get("event_type").and_then(Value::as_str);
        match kind {
            Some("book") => snapshot(&v, &mut out),
            None if v.get("bids").is_some() => snapshot(&v, &mut out),
            Some("price_change") => changes(&v, &mut out),
            Some("tick_size_change") => tick(&v, &mut out),
            _ => {}
        }
    }
    out
}

fn id(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| is_identifier(s))
        .map(str::to_owned)
}

fn timestamp_ms(v: &Value) -> Option<i64> {
    match v.get("timestamp") {
        None => Some(0),
        Some(t) => t
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 13 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok()),
    }
}

/// A top-of-book price: `""`, `"0"` or absent is an empty side.
fn top_price(v: &Value, key: &str) -> Option<Option<Price>> {
    match v.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.is_empty() => Some(None),
        Some(Value::String(s)) => Price::parse(s).map(|p| (p.units() > 0).then_some(p)),
        Some(_) => None,
    }
}

fn levels(v: &Value, key: &str) -> Option<Vec<(Price, Size)>> {
    let Some(list) = v.get(key) else {
        return Some(Vec::new());
    };
    list.as_array()?
        .iter()
        .map(|l| {
            let price = Price::parse(l.get("price")?.as_str()?)?;
            let size = Size::parse(l.get("size")?.as_str()?)?;
            Some((price, size))
        })
        .collect()
}

fn snapshot(v: &Value, out: &mut BookEvents) {
    let event = (|| {
        let tick_size = match v.get("tick_size").and_then(Value::as_str) {
            None | Some("") => None,
            Some(t) => Some(Price::parse(t)?),
        };
        Some(BookEvent::Snapshot {
            asset_id: id(v, "asset_id")?,
            market: id(v, "market")?,
            timestamp_ms: timestamp_ms(v)?,
            bids: levels(v, "bids")?,
            asks: levels(v, "asks")?,
            tick_size,
        })
    })();
    out.push(event);
}

/// One `price_change` entry `e` of `asset_id`: `top` is read from the entry (the current
/// form) or absent (the legacy form).
fn change(e: &Value, asset_id: String, market: &str, ts: i64, with_top: bool) -> Option<BookEvent> {
    let top = if with_top {
        Some((top_price(e, "best_bid")?, top_price(e, "best_ask")?))
    } else {
        None
    };
    Some(BookEvent::Change {
        asset_id,
        market: market.to_owned(),
        timestamp_ms: ts,
        side: Side::from_feed(e.get("side")?.as_str()?)?,
        price: Price::parse(e.get("price")?.as_str()?)?,
        size: Size::parse(e.get("size")?.as_str()?)?,
        top,
    })
}

fn changes(v: &Value, out: &mut BookEvents) {
    let (Some(market), Some(ts)) = (id(v, "market"), timestamp_ms(v)) else {
        out.invalid += 1;
        return;
    };
    // The current form: entries that each name their asset and carry the top of book.
    if let Some(entries) = v.get("price_changes").and_then(Value::as_array) {
        for e in entries {
            out.push(id(e, "asset_id").and_then(|a| change(e, a, &market, ts, true)));
        }
        return;
    }
    // The legacy form: one asset at the top level, entries without a top of book.
    let (Some(asset_id), Some(entries)) = (
        id(v, "asset_id"),
        v.get("changes").and_then(Value::as_array),
    ) else {
        out.invalid += 1;
        return;
    };
    for e in entries {
        out.push(change(e, asset_id.clone(), &market, ts, false));
    }
}

fn tick(v: &Value, out: &mut BookEvents) {
    let event = (|| {
        Some(BookEvent::TickSize {
            asset_id: id(v, "asset_id")?,
            tick_size: Price::parse(v.get("new_tick_size")?.as_str()?)?,
        })
    })();
    out.push(event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::tests::{p, q};

    #[test]
    fn snapshots_changes_and_ticks_are_read_exactly() {
        let frame = r#"[
          {"event_type":"book","asset_id":"111","market":"0xab","timestamp":"1750428146322",
           "bids":[{"price":".48","size":"120.5"},{"price":"0.47","size":"33"}],
           "asks":[{"price":"0.52","size":"80"}],"hash":"0x1","tick_size":"0.01"},
          {"asset_id":"222","market":"0xab","bids":[],"asks":[{"price":"0.6","size":"1"}]},
          {"event_type":"price_change","market":"0xab","timestamp":"1750428146400",
           "price_changes":[
             {"asset_id":"111","price":"0.49","size":"10","side":"BUY","hash":"0x2","best_bid":"0.49","best_ask":"0.52"},
             {"asset_id":"222","price":"0.6","size":"0","side":"SELL","hash":"0x3","best_bid":"","best_ask":"0"}]},
          {"event_type":"tick_size_change","asset_id":"111","market":"0xab","old_tick_size":"0.01","new_tick_size":"0.001"},
          {"event_type":"last_trade_price","asset_id":"111","market":"0xab","price":"0.5","size":"1","side":"BUY"}
        ]"#;
        let got = book_events(frame);
        assert_eq!(got.invalid, 0);
        assert_eq!(got.events.len(), 5, "{got:?}");
        assert_eq!(
            got.events[0],
            BookEvent::Snapshot {
                asset_id: "111".into(),
                market: "0xab".into(),
                timestamp_ms: 1_750_428_146_322,
                bids: vec![(p("0.48"), q("120.5")), (p("0.47"), q("33"))],
                asks: vec![(p("0.52"), q("80"))],
                tick_size: Some(p("0.01")),
            }
        );
        assert!(
            matches!(&got.events[1], BookEvent::Snapshot { asset_id, bids, .. } if asset_id == "222" && bids.is_empty())
        );
        assert_eq!(
            got.events[2],
            BookEvent::Change {
                asset_id: "111".into(),
                market: "0xab".into(),
                timestamp_ms: 1_750_428_146_400,
                side: Side::Bid,
                price: p("0.49"),
                size: q("10"),
                top: Some((Some(p("0.49")), Some(p("0.52")))),
            }
        );
        assert!(
            matches!(&got.events[3], BookEvent::Change { top: Some((None, None)), size, .. } if size.is_zero())
        );
        assert_eq!(
            got.events[4],
            BookEvent::TickSize {
                asset_id: "111".into(),
                tick_size: p("0.001")
            }
        );
    }

    #[test]
    fn the_legacy_form_has_no_top_of_book() {
        let frame = r#"{"event_type":"price_change","market":"0xab","asset_id":"111","timestamp":"1",
                        "changes":[{"price":"0.4","side":"SELL","size":"5"}]}"#;
        let got = book_events(frame);
        assert!(matches!(
            &got.events[..],
            [BookEvent::Change {
                top: None,
                side: Side::Ask,
                ..
            }]
        ));
    }

    #[test]
    fn bad_numbers_are_counted_and_left_out_never_guessed() {
        let frame = r#"[
          {"event_type":"price_change","market":"0xab","timestamp":"1","price_changes":[
             {"asset_id":"111","price":"0.4999999","size":"1","side":"BUY","best_bid":"0.4","best_ask":"0.5"},
             {"asset_id":"111","price":"0.4","size":"-1","side":"BUY","best_bid":"0.4","best_ask":"0.5"},
             {"asset_id":"111","price":"0.4","size":"1","side":"HOLD","best_bid":"0.4","best_ask":"0.5"},
             {"asset_id":"111","price":"0.4","size":"1","side":"BUY","best_bid":7,"best_ask":"0.5"},
             {"asset_id":"111","price":"0.4","size":"1","side":"BUY","best_bid":"0.4","best_ask":"0.5"}]},
          {"event_type":"book","asset_id":"111","market":"0xab","bids":[{"price":"1e-1","size":"1"}]},
          {"event_type":"tick_size_change","asset_id":"111","new_tick_size":"-0.01"},
          {"event_type":"book","asset_id":"","market":"0xab","bids":[]}
        ]"#;
        let got = book_events(frame);
        assert_eq!(got.events.len(), 1, "only the good entry: {got:?}");
        assert_eq!(got.invalid, 7);
        assert_eq!(book_events("not json").events.len(), 0);
        assert_eq!(book_events("[]"), BookEvents::default());
    }
}
