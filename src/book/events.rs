//! The market channel's book events, read out of a frame: `book` (a snapshot, sometimes
//! without `event_type`), `price_change` (level totals with the top of book after each, or
//! the legacy form without it), `tick_size_change`. Every number is exact ([`Price`],
//! [`Size`]); an entry with a bad one is counted and left out, never guessed at, and never
//! fails the other events of the frame.

use std::borrow::Cow;

use serde::Deserialize;

use super::number::{Price, Side, Size};
use crate::feed::event::MalformedFrame;
use crate::feed::event::{Field, is_identifier, text};
use crate::feed::scan::{Kind, Span, scan, scan_reading};

/// One book event for one token, borrowing its ids from the frame where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookEvent<'a> {
    /// `book`: the token's whole book (levels in any order, as the wire has them).
    Snapshot {
        /// The token.
        asset_id: Cow<'a, str>,
        /// Its market (condition id).
        market: Cow<'a, str>,
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
        asset_id: Cow<'a, str>,
        /// Its market (condition id).
        market: Cow<'a, str>,
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
        asset_id: Cow<'a, str>,
        /// The new tick.
        tick_size: Price,
    },
}

/// What [`book_events`] found in a frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BookEvents<'a> {
    /// The usable events, in frame order (one per `price_change` entry).
    pub events: Vec<BookEvent<'a>>,
    /// Events or entries left out for a bad field (a number that is not exact, a side that
    /// is not BUY or SELL, an id that is not one): counted, never guessed at.
    pub invalid: u32,
}

impl<'a> BookEvents<'a> {
    /// Keeps a usable event, counts one left out.
    fn push(&mut self, event: Option<BookEvent<'a>>) {
        match event {
            Some(e) => self.events.push(e),
            None => self.invalid += 1,
        }
    }
}

/// One level or `price_change` entry as the wire has it: every field lenient ([`Field`]), so
/// a bad value fails that entry only.
#[derive(Deserialize, Default, Debug, PartialEq)]
struct RawEntry<'a> {
    #[serde(borrow, default)]
    asset_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    price: Option<Field<'a>>,
    #[serde(borrow, default)]
    size: Option<Field<'a>>,
    #[serde(borrow, default)]
    side: Option<Field<'a>>,
    #[serde(borrow, default)]
    best_bid: Option<Field<'a>>,
    #[serde(borrow, default)]
    best_ask: Option<Field<'a>>,
}

/// The fields of an event the book side reads; everything else is skipped without
/// allocating (no DOM: this runs on some fifty events for every trade).
#[derive(Deserialize, Default, Debug, PartialEq)]
struct RawBookEvent<'a> {
    #[serde(borrow, default)]
    asset_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    market: Option<Field<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Field<'a>>,
    #[serde(borrow, default)]
    bids: Option<Vec<RawEntry<'a>>>,
    #[serde(borrow, default)]
    asks: Option<Vec<RawEntry<'a>>>,
    #[serde(borrow, default)]
    price_changes: Option<Vec<RawEntry<'a>>>,
    /// The legacy `price_change` form's entries.
    #[serde(borrow, default)]
    changes: Option<Vec<RawEntry<'a>>>,
    #[serde(borrow, default)]
    tick_size: Option<Field<'a>>,
    #[serde(borrow, default)]
    new_tick_size: Option<Field<'a>>,
}

/// The book events of one frame (an object or an array of them; anything that is not JSON of
/// that shape holds none). Other event types are skipped.
pub fn book_events(frame: &str) -> BookEvents<'_> {
    let mut events = Vec::new();
    match scan(frame, &mut events) {
        Ok(()) => book_events_in(frame, &events),
        Err(_) => BookEvents::default(),
    }
}

/// The book events of a scanned frame (`events` from [`scan`] of `frame`): each book event is
/// deserialised from its own range, so one of the wrong shape (a field given twice, levels
/// that are not a list of objects) is counted and left out alone.
pub(crate) fn book_events_in<'a>(frame: &'a str, events: &[Span]) -> BookEvents<'a> {
    book_events_read(frame, events, ReadAlready::default())
}

/// The book events a [`scan_reading_books`] pass read as it went, by where each starts.
#[derive(Default)]
pub(crate) struct ReadAlready<'a> {
    events: Vec<(usize, RawBookEvent<'a>)>,
    /// The pass offered every event to the hand reader: one it left is serde's.
    tried: bool,
}

impl ReadAlready<'_> {
    fn clear(&mut self) {
        self.events.clear();
        self.tried = false;
    }
}

/// One pass over a frame for a connection with the book side on: the events' spans and
/// types, as [`scan`] finds them, with each book event of a common shape read by the hand
/// reader as the pass reaches it (kept in `read`), instead of the scan walking it and the
/// reader walking it again. An event the hand reader leaves is scanned as before, and read
/// from its span later. `read` holds nothing when the frame is refused.
pub(crate) fn scan_reading_books<'a>(
    frame: &'a str,
    events: &mut Vec<Span>,
    read: &mut ReadAlready<'a>,
) -> Result<(), MalformedFrame> {
    read.clear();
    let result = scan_reading(frame, events, &mut |at| {
        let (v, end, event_type, has_bids) = fast::event_at(frame, at)?;
        let kind = Kind::of(event_type, has_bids);
        if kind.is_book() {
            read.events.push((at, v));
        }
        Some((end, kind))
    });
    match result {
        Ok(()) => read.tried = true,
        Err(_) => read.clear(),
    }
    result
}

/// [`book_events_in`], with the events a pass has read already.
pub(crate) fn book_events_read<'a>(
    frame: &'a str,
    events: &[Span],
    read: ReadAlready<'a>,
) -> BookEvents<'a> {
    let mut out = BookEvents::default();
    let tried = read.tried;
    let mut already = read.events.into_iter().peekable();
    for span in events.iter().filter(|s| s.kind.is_book()) {
        let text = span.text(frame);
        let done = already
            .next_if(|(at, _)| *at == span.start())
            .map(|(_, v)| v);
        // The common shapes are read by hand (by the pass, or here); anything else (an
        // escape, a field given twice, levels that are not a list of objects) by serde,
        // which decides.
        let read = done
            .or_else(|| if tried { None } else { fast::event(text) })
            .map_or_else(|| serde_json::from_str(text).ok(), Some);
        let Some(v) = read else {
            out.invalid += 1;
            continue;
        };
        match span.kind {
            Kind::Book => snapshot(v, &mut out),
            Kind::PriceChange => changes(v, &mut out),
            _ => tick(v, &mut out),
        }
    }
    out
}

/// A field's text as an owned-or-borrowed id, if it is one.
fn id<'a>(field: Option<Field<'a>>) -> Option<Cow<'a, str>> {
    match field? {
        Field::Str(s) if is_identifier(&s) => Some(s),
        _ => None,
    }
}

fn timestamp_ms(field: &Option<Field<'_>>) -> Option<i64> {
    match field {
        None => Some(0),
        Some(t) => t
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 13 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok()),
    }
}

/// A top-of-book price: `""` or `"0"` is an empty side (an absent one is no top of book at
/// all: see [`change`]).
fn top_price(field: &Option<Field<'_>>) -> Option<Option<Price>> {
    match field {
        None => Some(None),
        Some(Field::Str(s)) if s.is_empty() => Some(None),
        Some(Field::Str(s)) => Price::parse(s).map(|p| (p.units() > 0).then_some(p)),
        Some(Field::Other) => None,
    }
}

fn levels(list: &Option<Vec<RawEntry<'_>>>) -> Option<Vec<(Price, Size)>> {
    let Some(list) = list else {
        return Some(Vec::new());
    };
    list.iter()
        .map(|l| Some((Price::parse(text(&l.price)?)?, Size::parse(text(&l.size)?)?)))
        .collect()
}

fn snapshot<'a>(v: RawBookEvent<'a>, out: &mut BookEvents<'a>) {
    let event = (|| {
        let tick_size = match text(&v.tick_size) {
            None | Some("") => None,
            Some(t) => Some(Price::parse(t)?),
        };
        Some(BookEvent::Snapshot {
            timestamp_ms: timestamp_ms(&v.timestamp)?,
            bids: levels(&v.bids)?,
            asks: levels(&v.asks)?,
            tick_size,
            asset_id: id(v.asset_id)?,
            market: id(v.market)?,
        })
    })();
    out.push(event);
}

/// One `price_change` entry `e` of `asset_id`: `top` is read from the entry (the current
/// form) or absent (the legacy form).
fn change<'a>(
    e: &RawEntry<'_>,
    asset_id: Cow<'a, str>,
    market: &Cow<'a, str>,
    ts: i64,
    with_top: bool,
) -> Option<BookEvent<'a>> {
    // An entry without `best_bid` or `best_ask` (some live ones: other clients treat them as
    // optional) gives no top of book to check against; it is applied unchecked.
    let top = if with_top && e.best_bid.is_some() && e.best_ask.is_some() {
        Some((top_price(&e.best_bid)?, top_price(&e.best_ask)?))
    } else {
        None
    };
    Some(BookEvent::Change {
        asset_id,
        market: market.clone(),
        timestamp_ms: ts,
        side: Side::from_feed(text(&e.side)?)?,
        price: Price::parse(text(&e.price)?)?,
        size: Size::parse(text(&e.size)?)?,
        top,
    })
}

fn changes<'a>(mut v: RawBookEvent<'a>, out: &mut BookEvents<'a>) {
    let (Some(market), Some(ts)) = (id(v.market.take()), timestamp_ms(&v.timestamp)) else {
        out.invalid += 1;
        return;
    };
    // The current form: entries that each name their asset and carry the top of book.
    if let Some(entries) = v.price_changes.take() {
        for mut e in entries {
            let asset = id(e.asset_id.take());
            out.push(asset.and_then(|a| change(&e, a, &market, ts, true)));
        }
        return;
    }
    // The legacy form: one asset at the top level, entries without a top of book.
    let (Some(asset_id), Some(entries)) = (id(v.asset_id.take()), v.changes.take()) else {
        out.invalid += 1;
        return;
    };
    for e in entries {
        out.push(change(&e, asset_id.clone(), &market, ts, false));
    }
}

fn tick<'a>(v: RawBookEvent<'a>, out: &mut BookEvents<'a>) {
    let event = (|| {
        Some(BookEvent::TickSize {
            tick_size: Price::parse(text(&v.new_tick_size)?)?,
            asset_id: id(v.asset_id)?,
        })
    })();
    out.push(event);
}

/// The book events' common shapes read without serde, by the scan's [`Cursor`]: the same
/// [`RawBookEvent`] serde would make, or `None` where serde must decide.
mod fast {
    use std::borrow::Cow;

    use super::{RawBookEvent, RawEntry};
    use crate::feed::event::Field;
    use crate::feed::scan::Cursor;

    /// Fills `slot` once: a field given twice is serde's to refuse.
    fn once<T>(seen: &mut u16, bit: u16, slot: &mut T, value: T) -> Option<()> {
        (*seen & bit == 0).then_some(())?;
        *seen |= bit;
        *slot = value;
        Some(())
    }

    /// A lenient field, as `Option<Field>` reads it: `null` is absent. Anything but a
    /// string or `null` is serde's to judge (it refuses a number out of f64's range, say).
    fn field<'a>(c: &mut Cursor<'a>) -> Option<Option<Field<'a>>> {
        match c.peek()? {
            b'"' => Some(Some(Field::Str(Cow::Borrowed(c.string()?)))),
            b'n' => c.skip().map(|()| None),
            _ => None,
        }
    }

    fn entries<'a>(c: &mut Cursor<'a>) -> Option<Option<Vec<RawEntry<'a>>>> {
        if c.peek()? == b'n' {
            return c.skip().map(|()| None);
        }
        c.begin_array()?;
        let mut out = Vec::new();
        while c.next_element()? {
            c.begin_object()?;
            let mut e = RawEntry::default();
            let mut seen = 0u16;
            while let Some(key) = c.next_key()? {
                let (bit, slot) = match key {
                    b"asset_id" => (1, &mut e.asset_id),
                    b"price" => (2, &mut e.price),
                    b"size" => (4, &mut e.size),
                    b"side" => (8, &mut e.side),
                    b"best_bid" => (16, &mut e.best_bid),
                    b"best_ask" => (32, &mut e.best_ask),
                    _ => {
                        c.skip()?;
                        continue;
                    }
                };
                once(&mut seen, bit, slot, field(c)?)?;
            }
            out.push(e);
        }
        Some(Some(out))
    }

    pub(super) fn event(text: &str) -> Option<RawBookEvent<'_>> {
        event_at(text, 0).map(|(v, ..)| v)
    }

    /// The event object at byte `at` of `frame`: what the book side reads of it, where it
    /// ends, its `event_type` (the first one given as a string, as the scan takes it) and
    /// whether it has `bids`.
    #[allow(clippy::type_complexity)]
    pub(super) fn event_at(
        frame: &str,
        at: usize,
    ) -> Option<(RawBookEvent<'_>, usize, Option<&str>, bool)> {
        let mut c = Cursor::at(frame, at);
        c.begin_object()?;
        let mut v = RawBookEvent::default();
        let mut seen = 0u16;
        let mut event_type = None;
        let mut has_bids = false;
        while let Some(key) = c.next_key()? {
            match key {
                b"event_type" if event_type.is_none() && c.peek()? == b'"' => {
                    event_type = Some(c.string()?);
                }
                b"bids" => {
                    has_bids = true;
                    once(&mut seen, 32, &mut v.bids, entries(&mut c)?)?;
                }
                b"asset_id" => once(&mut seen, 1, &mut v.asset_id, field(&mut c)?)?,
                b"market" => once(&mut seen, 2, &mut v.market, field(&mut c)?)?,
                b"timestamp" => once(&mut seen, 4, &mut v.timestamp, field(&mut c)?)?,
                b"tick_size" => once(&mut seen, 8, &mut v.tick_size, field(&mut c)?)?,
                b"new_tick_size" => once(&mut seen, 16, &mut v.new_tick_size, field(&mut c)?)?,
                b"asks" => once(&mut seen, 64, &mut v.asks, entries(&mut c)?)?,
                b"price_changes" => once(&mut seen, 128, &mut v.price_changes, entries(&mut c)?)?,
                b"changes" => once(&mut seen, 256, &mut v.changes, entries(&mut c)?)?,
                _ => c.skip()?,
            }
        }
        Some((v, c.position(), event_type, has_bids))
    }
}

/// The hand reader and serde on one event, each as its `Debug` text (for the fuzzer: where
/// the hand reader answers, it must answer as serde).
#[cfg(any(test, feature = "bench"))]
pub(crate) fn read_both_ways(event: &str) -> (Option<String>, Option<String>) {
    (
        fast::event(event).map(|v| format!("{v:?}")),
        serde_json::from_str::<RawBookEvent<'_>>(event)
            .ok()
            .map(|v| format!("{v:?}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::tests::{p, q};
    use crate::feed::scan::tests::random_frame;

    /// The pass that reads book events as it goes finds what the scan finds, refuses what
    /// it refuses, and yields the book events reading each span afterwards yields: over
    /// frames of every kind of event, shapes the hand reader leaves to serde, and frames cut
    /// or doubled at a random byte.
    #[test]
    fn reading_as_the_pass_goes_is_scanning_then_reading() {
        let entry = r#"{"asset_id":"111","price":"0.49","size":"10","side":"BUY","best_bid":"0.49","best_ask":"0.52"}"#;
        let parts = [
            format!(r#"{{"market":"0xab","price_changes":[{entry},{entry}],"timestamp":"1","event_type":"price_change"}}"#),
            r#"{"event_type":"book","asset_id":"111","market":"0xab","timestamp":"1750428146322","bids":[{"price":".48","size":"120.5"}],"asks":[],"hash":"0x1"}"#.into(),
            r#"{"asset_id":"222","market":"0xab","bids":[],"asks":[{"price":"0.6","size":"1"}]}"#.into(),
            r#"{"event_type":"tick_size_change","asset_id":"111","market":"0xab","new_tick_size":"0.001"}"#.into(),
            r#"{"event_type":"last_trade_price","asset_id":"111","market":"0xab","price":"0.5","size":"3","side":"BUY","timestamp":"1750428146322"}"#.into(),
            r#"{"event_type":7,"event_type":"book","asset_id":"3","bids":[]}"#.into(),
            r#"{"event_type":"book","event_type":"price_change","asset_id":"3"}"#.into(),
            r#"{"event_type":"pri\u0063e_change","market":"0x1","price_changes":[]}"#.into(),
            r#"{"asset_id":"1","asset_id":"2","event_type":"book"}"#.into(),
            r#"{"bids":5,"event_type":"book"}"#.into(),
            r#"{"x":[[[{"y":null}]]],"event_type":"best_bid_ask"}"#.into(),
            r#"{"event_type":"new_market","slug":"x"}"#.into(),
            r#" { "event_type" : "price_change" , "market" : "0x2" , "price_changes" : [ ] } "#.into(),
            "{}".into(),
        ];
        fastrand::seed(17);
        let mut compared = 0;
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        for _ in 0..50_000 {
            let frame = random_frame(&parts, 4);
            let mut scanned = Vec::new();
            let by_scan = scan(&frame, &mut scanned);
            let mut passed = Vec::new();
            let mut read = ReadAlready::default();
            let by_pass = scan_reading_books(&frame, &mut passed, &mut read);
            assert_eq!(by_scan.is_ok(), by_pass.is_ok(), "{frame}");
            assert_eq!(scanned, passed, "{frame}");
            if by_pass.is_err() {
                assert!(read.events.is_empty(), "{frame}");
                continue;
            }
            compared += 1;
            assert_eq!(
                book_events_in(&frame, &scanned),
                book_events_read(&frame, &passed, read),
                "{frame}"
            );
        }
        assert!(compared > 20_000, "{compared} frames compared");
    }

    #[test]
    fn the_hand_reader_reads_as_serde_or_leaves_it_to_serde() {
        let entry = r#"{"asset_id":"111","price":"0.49","size":"10","side":"BUY","hash":"0x2","best_bid":"0.49","best_ask":"0.52"}"#;
        let read_by_hand = [
            format!(r#"{{"market":"0xab","price_changes":[{entry},{entry}],"timestamp":"1","event_type":"price_change"}}"#),
            r#"{"event_type":"book","asset_id":"111","market":"0xab","timestamp":"1750428146322",
                "bids":[{"price":".48","size":"120.5"},{"price":"0.47","size":"33"}],
                "asks":[],"hash":"0x1","tick_size":"0.01"}"#.into(),
            r#"{"asset_id":"222","market":"0xab","bids":[],"asks":[{"price":"0.6","size":"1"}]}"#.into(),
            r#"{"event_type":"tick_size_change","asset_id":"111","market":"0xab","old_tick_size":"0.01","new_tick_size":"0.001"}"#.into(),
            r#" { "asset_id" : null , "other" : {"x":[1,{"y":"\u0041"}]} , "bids" : null,
                "price_changes" : [ { "price" : null , "other" : [5e434, true] } , { } ] } "#.into(),
            r#"{"changes":[{"price":"0.5","size":"1","side":"SELL"}],"asset_id":"9","market":"0x1","timestamp":"5"}"#.into(),
            "{}".into(),
        ];
        for text in &read_by_hand {
            let (fast, serde) = read_both_ways(text);
            assert!(fast.is_some(), "read by hand: {text}");
            assert_eq!(fast, serde, "{text}");
        }
        // Left to serde: escapes, a field given twice, levels of the wrong shape.
        for text in [
            r#"{"asset_id":"1\u0031"}"#,
            r#"{"asset_id":"1","asset_id":"2"}"#,
            r#"{"bids":[{"price":"1","price":"2"}]}"#,
            r#"{"bids":5}"#,
            r#"{"bids":[1]}"#,
            r#"{"market":7}"#,
            r#"{"market":5e434}"#,
            r#"{"price_changes":[{"side":[]}]}"#,
            r#"{"\u0062ids":[]}"#,
        ] {
            assert_eq!(read_both_ways(text).0, None, "{text}");
        }
        assert_eq!(
            read_both_ways(r#"{"asset_id":"1\u0031"}"#)
                .1
                .map(|s| s.contains("11")),
            Some(true)
        );
    }

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
    fn an_entry_without_best_bid_and_ask_is_unchecked_and_live_text_is_exact() {
        // Live shapes (feed notes §6): one entry without a top of book, one with empty sides,
        // four-decimal prices on a 0.0025 tick, trailing zeros kept.
        let frame = r#"{"market":"0xab","price_changes":[
            {"asset_id":"111","price":"0.4825","size":"12.50","side":"BUY","hash":"0x1"},
            {"asset_id":"111","price":"0.4850","size":"0","side":"SELL","best_bid":"0","best_ask":""}],
            "timestamp":"5","event_type":"price_change"}"#;
        let got = book_events(frame);
        assert_eq!(got.invalid, 0);
        assert!(
            matches!(&got.events[0], BookEvent::Change { top: None, price, size, .. }
            if *price == p("0.4825") && *size == q("12.5"))
        );
        assert!(matches!(
            &got.events[1],
            BookEvent::Change {
                top: Some((None, None)),
                ..
            }
        ));
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
        // An event of the wrong shape fails alone; the frame's other events are read.
        let mixed = r#"[{"event_type":"book","asset_id":"1","market":"0xab","bids":5},
          {"event_type":"tick_size_change","asset_id":"111","new_tick_size":"0.001","new_tick_size":"0.01"},
          {"event_type":"tick_size_change","asset_id":"111","new_tick_size":"0.001"}]"#;
        let got = book_events(mixed);
        assert_eq!(got.invalid, 2, "{got:?}");
        assert_eq!(
            got.events,
            vec![BookEvent::TickSize {
                asset_id: "111".into(),
                tick_size: p("0.001")
            }]
        );
    }
}
