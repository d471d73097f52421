//! Wire types of the market channel and frame parsing.
//!
//! A frame is one JSON object or a JSON array of objects. Only `last_trade_price` events
//! become [`Trade`]s; every other event is recognised by the one scan of the frame
//! ([`super::scan`]) and skipped, so the ~50 book updates that arrive for every trade cost
//! that scan and nothing more here. A trade event is deserialised from its own range,
//! borrowing from the frame: a string field is copied only when it contains escapes.

use std::borrow::Cow;
use std::fmt;

use super::decimal::Decimal;
use super::scan::{Kind, Span};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

/// Milliseconds since the Unix epoch of 2000-01-01 and 2100-01-01: a trade timestamp outside
/// that range is not a millisecond timestamp (seconds and microseconds are the usual mix-ups)
/// and storing it would write a wrong row.
const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
const MAX_TIMESTAMP_MS: i64 = 4_102_444_800_000;

/// Longest identifier we accept (asset ids are ~77 digits, condition ids and transaction
/// hashes 66 characters).
const MAX_ID_LEN: usize = 128;

/// The taker's side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The taker bought.
    Buy,
    /// The taker sold.
    Sell,
}

impl Side {
    /// `"BUY"` or `"SELL"`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// One trade from the feed, validated: every field is safe to write to the database as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    /// The feed's asset (token) id.
    pub asset_id: String,
    /// The market's condition id.
    pub market: String,
    /// Price per share, exact.
    pub price: Decimal,
    /// Shares traded, exact.
    pub size: Decimal,
    /// The taker's side.
    pub side: Side,
    /// Fee rate in basis points, when the feed gives it.
    pub fee_rate_bps: Option<i32>,
    /// The event's own timestamp, in Unix epoch milliseconds.
    pub timestamp_ms: i64,
    /// The settlement transaction's hash, when the feed gives it.
    pub transaction_hash: Option<String>,
    /// When polytape read the frame, in Unix epoch microseconds.
    pub received_at_us: i64,
}

/// A window in which a connection's tokens had no socket: trades in it may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The listener's connection that lost its socket; `None` when every connection did
    /// (a crashed run, a full spool).
    pub connection: Option<usize>,
    /// The last data frame before the socket was lost (Unix epoch milliseconds).
    pub from_ms: i64,
    /// When the tokens were subscribed again.
    pub to_ms: i64,
    /// Why the socket was lost.
    pub reason: String,
    /// The tokens that had no socket.
    pub asset_ids: Vec<String>,
}

/// What connection threads hand the writer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Trade(Trade),
    Gap(Gap),
    /// A book snapshot (the order-book side).
    Book(crate::book::BookSnapshot),
    /// A minute price bar (the prices side).
    Bar(crate::prices::PriceBar),
}

/// Why a `last_trade_price` event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTrade {
    AssetId,
    Market,
    Price,
    Size,
    Side,
    Timestamp,
    FeeRate,
    TransactionHash,
    /// Not an object serde can read as an event (a field given twice).
    Event,
}

impl fmt::Display for InvalidTrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match self {
            InvalidTrade::AssetId => "asset_id",
            InvalidTrade::Market => "market",
            InvalidTrade::Price => "price",
            InvalidTrade::Size => "size",
            InvalidTrade::Side => "side",
            InvalidTrade::Timestamp => "timestamp",
            InvalidTrade::FeeRate => "fee_rate_bps",
            InvalidTrade::TransactionHash => "transaction_hash",
            InvalidTrade::Event => return f.write_str("malformed event (a field given twice)"),
        };
        write!(f, "missing or invalid {field}")
    }
}

/// What one frame held, beyond its trades.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    /// Events in the frame, of every type.
    pub events: u32,
    /// `last_trade_price` events that became trades.
    pub trades: u32,
    /// `last_trade_price` events refused by validation, and the reason of the last one.
    pub invalid_trades: u32,
    pub last_invalid: Option<InvalidTrade>,
    /// Events whose type we do not know (skipped, as the live feed adds types over time).
    pub unknown_events: u32,
    /// `new_market` and `market_resolved` events (read again by the follower, if any).
    pub announcements: u32,
}

/// A frame that is not JSON of the expected shape.
#[derive(Debug)]
pub struct MalformedFrame(String);

impl MalformedFrame {
    pub(crate) fn new(why: String) -> MalformedFrame {
        MalformedFrame(why)
    }
}

impl fmt::Display for MalformedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl std::error::Error for MalformedFrame {}

/// Parses one text frame, appending its valid trades to `trades`.
///
/// `received_at_us` is stamped on every trade. A malformed frame appends nothing. (The
/// connections scan once and read each part from the scan's ranges; this whole-frame form
/// is for the benchmarks, the fuzzer and tests.)
#[cfg(any(test, feature = "bench"))]
pub fn parse_frame(
    text: &str,
    received_at_us: i64,
    trades: &mut Vec<Trade>,
) -> Result<FrameSummary, MalformedFrame> {
    let mut events = Vec::new();
    super::scan::scan(text, &mut events)?;
    Ok(read_trades(text, &events, received_at_us, trades))
}

/// Reads the trades of a scanned frame (`events` from [`scan`] of `frame`), appending the
/// valid ones to `trades`; counts every event by kind. Only `last_trade_price` events are
/// deserialised, each from its own range.
pub(crate) fn read_trades(
    frame: &str,
    events: &[Span],
    received_at_us: i64,
    trades: &mut Vec<Trade>,
) -> FrameSummary {
    let mut summary = FrameSummary::default();
    for span in events {
        summary.events += 1;
        match span.kind {
            Kind::Trade => {
                let trade = serde_json::from_str::<RawTrade<'_>>(span.text(frame))
                    .map_err(|_| InvalidTrade::Event)
                    .and_then(|raw| raw.to_trade(received_at_us));
                match trade {
                    Ok(trade) => {
                        summary.trades += 1;
                        trades.push(trade);
                    }
                    Err(reason) => {
                        summary.invalid_trades += 1;
                        summary.last_invalid = Some(reason);
                    }
                }
            }
            Kind::NewMarket | Kind::Resolved => summary.announcements += 1,
            Kind::Unknown => summary.unknown_events += 1,
            Kind::Book | Kind::PriceChange | Kind::TickSize | Kind::BestBidAsk => {}
        }
    }
    summary
}

/// The first few characters of a frame, for log lines.
pub fn preview(text: &str) -> &str {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A field value as the wire has it: a string (borrowed where it has no escapes) or anything
/// else, which for this feed is always wrong but must not fail the other events of a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'a> Field<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            Field::Other => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

/// The fields of a `last_trade_price` event that we read. Everything else is skipped by serde
/// without allocating.
#[derive(Deserialize)]
struct RawTrade<'a> {
    #[serde(borrow, default)]
    asset_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    market: Option<Field<'a>>,
    #[serde(borrow, default)]
    price: Option<Field<'a>>,
    #[serde(borrow, default)]
    size: Option<Field<'a>>,
    #[serde(borrow, default)]
    side: Option<Field<'a>>,
    #[serde(borrow, default)]
    fee_rate_bps: Option<Field<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Field<'a>>,
    #[serde(borrow, default)]
    transaction_hash: Option<Field<'a>>,
}

/// A lenient field's text, if it is a string.
pub(crate) fn text<'f>(field: &'f Option<Field<'_>>) -> Option<&'f str> {
    field.as_ref().and_then(Field::as_str)
}

impl RawTrade<'_> {
    fn to_trade(&self, received_at_us: i64) -> Result<Trade, InvalidTrade> {
        let asset_id = text(&self.asset_id)
            .filter(|s| is_identifier(s))
            .ok_or(InvalidTrade::AssetId)?;
        let market = text(&self.market)
            .filter(|s| is_identifier(s))
            .ok_or(InvalidTrade::Market)?;
        let price = text(&self.price)
            .and_then(Decimal::parse)
            .filter(Decimal::at_most_one)
            .ok_or(InvalidTrade::Price)?;
        let size = text(&self.size)
            .and_then(Decimal::parse)
            .filter(|d| !d.is_zero())
            .ok_or(InvalidTrade::Size)?;
        let side = match text(&self.side) {
            Some("BUY") => Side::Buy,
            Some("SELL") => Side::Sell,
            _ => return Err(InvalidTrade::Side),
        };
        let timestamp_ms = text(&self.timestamp)
            .filter(|s| !s.is_empty() && s.len() <= 13 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|ms| (MIN_TIMESTAMP_MS..MAX_TIMESTAMP_MS).contains(ms))
            .ok_or(InvalidTrade::Timestamp)?;
        let fee_rate_bps = match &self.fee_rate_bps {
            None => None,
            Some(Field::Str(s)) if s.is_empty() => None,
            Some(Field::Str(s)) => Some(
                s.parse::<i32>()
                    .ok()
                    .filter(|bps| (0..=10_000).contains(bps))
                    .ok_or(InvalidTrade::FeeRate)?,
            ),
            Some(Field::Other) => return Err(InvalidTrade::FeeRate),
        };
        let transaction_hash = match &self.transaction_hash {
            None => None,
            Some(Field::Str(s)) if s.is_empty() => None,
            Some(Field::Str(s)) if is_hex_hash(s) => Some(s.to_string()),
            Some(_) => return Err(InvalidTrade::TransactionHash),
        };
        Ok(Trade {
            asset_id: asset_id.to_owned(),
            market: market.to_owned(),
            price,
            size,
            side,
            fee_rate_bps,
            timestamp_ms,
            transaction_hash,
            received_at_us,
        })
    }
}

/// Asset and condition ids: decimal digits or `0x` hex, nothing a COPY row would need to
/// escape.
pub(crate) fn is_identifier(s: &str) -> bool {
    // Every byte checked without an early exit, which the compiler vectorises: ids are
    // 66 to 78 bytes, and every book event entry names one.
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().fold(true, |ok, b| ok & b.is_ascii_alphanumeric())
}

fn is_hex_hash(s: &str) -> bool {
    s.len() > 2
        && s.len() <= MAX_ID_LEN
        && s.starts_with("0x")
        && s.bytes()
            .skip(2)
            .fold(true, |ok, b| ok & b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSET: &str =
        "114122071509644379678018727908709560226618148003371446110114509806601493071694";
    const MARKET: &str = "0x6a67b9d828d53862160e470329ffea5246f338ecfffdf2cab45211ec578b0347";

    fn trade_json(price: &str, extra: &str) -> String {
        format!(
            r#"{{"asset_id":"{ASSET}","event_type":"last_trade_price","fee_rate_bps":"0","market":"{MARKET}","price":"{price}","side":"BUY","size":"219.217767","timestamp":"1750428146322"{extra}}}"#
        )
    }

    fn parse(text: &str) -> (Vec<Trade>, FrameSummary) {
        let mut trades = Vec::new();
        let summary = parse_frame(text, 7, &mut trades).expect("frame parses");
        (trades, summary)
    }

    #[test]
    fn decimal_canonical_forms() {
        let d = |s| Decimal::parse(s).map(|d| d.to_string());
        assert_eq!(d(".48").as_deref(), Some("0.48"));
        assert_eq!(d("0.456").as_deref(), Some("0.456"));
        assert_eq!(d("007.50").as_deref(), Some("7.50"));
        assert_eq!(d("12.").as_deref(), Some("12"));
        assert_eq!(d("0").as_deref(), Some("0"));
        for bad in ["", ".", "-1", "1e3", "1.2.3", " 1", "NaN", "0x10", "1,5"] {
            assert_eq!(d(bad), None, "{bad:?} must be refused");
        }
        assert!(Decimal::parse("1.000").is_some_and(|d| d.at_most_one()));
        assert!(!Decimal::parse("1.001").is_some_and(|d| d.at_most_one()));
        assert!(Decimal::parse("0.00").is_some_and(|d| d.is_zero()));
    }

    #[test]
    fn trade_object_becomes_a_trade() {
        let (trades, summary) = parse(&trade_json(".456", r#","transaction_hash":"0x9e0bc1""#));
        assert_eq!(summary.trades, 1);
        let t = &trades[0];
        assert_eq!(t.asset_id, ASSET);
        assert_eq!(t.market, MARKET);
        assert_eq!(t.price.as_str(), "0.456");
        assert_eq!(t.size.as_str(), "219.217767");
        assert_eq!(t.side, Side::Buy);
        assert_eq!(t.fee_rate_bps, Some(0));
        assert_eq!(t.timestamp_ms, 1_750_428_146_322);
        assert_eq!(t.transaction_hash.as_deref(), Some("0x9e0bc1"));
        assert_eq!(t.received_at_us, 7);
    }

    #[test]
    fn arrays_mix_events_and_skip_unknown_ones() {
        let frame = format!(
            r#"[{{"market":"{MARKET}","asset_id":"{ASSET}","bids":[{{"price":".48","size":"10"}}],"asks":[]}},
               {{"event_type":"price_change","market":"{MARKET}","price_changes":[{{"asset_id":"1","price":"0.5","size":"0","side":"BUY"}}]}},
               {},
               {{"event_type":"brand_new_thing","x":{{"y":[1,2,3]}}}}]"#,
            trade_json("0.5", "")
        );
        let (trades, summary) = parse(&frame);
        assert_eq!(trades.len(), 1);
        assert_eq!(trades[0].transaction_hash, None);
        assert_eq!(summary.events, 4);
        assert_eq!(summary.unknown_events, 1);
        assert_eq!(parse("[]").1.events, 0);
    }

    #[test]
    fn invalid_trades_are_refused_with_a_reason() {
        let cases = [
            (trade_json("1.5", ""), InvalidTrade::Price),
            (trade_json("abc", ""), InvalidTrade::Price),
            (trade_json("", ""), InvalidTrade::Price),
            (
                trade_json("0.5", "").replace("\"BUY\"", "\"HOLD\""),
                InvalidTrade::Side,
            ),
            (
                trade_json("0.5", "").replace("1750428146322", "1750428146"),
                InvalidTrade::Timestamp,
            ),
            (
                trade_json("0.5", "").replace("\"219.217767\"", "\"0\""),
                InvalidTrade::Size,
            ),
            (
                trade_json("0.5", "").replace("\"219.217767\"", "219.2"),
                InvalidTrade::Size,
            ),
            (
                trade_json("0.5", "").replace("\"fee_rate_bps\":\"0\"", "\"fee_rate_bps\":\"x\""),
                InvalidTrade::FeeRate,
            ),
            (
                trade_json("0.5", r#","transaction_hash":"0xZZ""#),
                InvalidTrade::TransactionHash,
            ),
            (
                trade_json("0.5", "").replace(ASSET, "12\\t3"),
                InvalidTrade::AssetId,
            ),
        ];
        for (frame, reason) in cases {
            let (trades, summary) = parse(&frame);
            assert!(trades.is_empty(), "{frame}");
            assert_eq!(summary.invalid_trades, 1, "{frame}");
            assert_eq!(summary.last_invalid, Some(reason), "{frame}");
        }
    }

    #[test]
    fn a_trade_event_serde_cannot_read_fails_alone() {
        let twice = trade_json("0.5", r#","price":"0.6""#);
        let frame = format!("[{twice},{}]", trade_json("0.4", ""));
        let (trades, summary) = parse(&frame);
        assert_eq!(summary.events, 2);
        assert_eq!(summary.invalid_trades, 1);
        assert_eq!(summary.last_invalid, Some(InvalidTrade::Event));
        assert_eq!(trades.len(), 1);
        assert_eq!(trades[0].price.as_str(), "0.4");
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut trades = Vec::new();
        for bad in [
            "PONG",
            "",
            "{",
            "[1,2]",
            "{\"event_type\":",
            "nul\u{0}l",
            "[{}]x",
        ] {
            assert!(parse_frame(bad, 0, &mut trades).is_err(), "{bad:?}");
        }
        assert!(trades.is_empty());
    }
}
