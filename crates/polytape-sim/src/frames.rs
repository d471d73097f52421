//! The JSON the simulated feed sends, written by hand: the generator serialises hundreds of
//! thousands of events a second, and fixed templates with varied key order are both faster
//! than a generic serialiser and closer to the live feed's quirks.

use std::fmt::Write;

use super::book::{
    BookSide, BookState, LevelChange, PriceBp, SizeMicro, price_text, push_decimal, push_price,
    push_size, size_text,
};
use super::universe::SimMarket;

/// A trade the sim generated, kept compact because the ground-truth log holds every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeRecord {
    pub seq: u64,
    /// Index into the universe's markets.
    pub market: u32,
    /// Which of the market's two tokens.
    pub outcome: u8,
    pub timestamp_ms: i64,
    /// Price in ten-thousandths (1..=9,999): four decimals on a 0.0025 or 0.0001 tick.
    pub price_bp: u16,
    pub buy: bool,
    pub has_tx: bool,
    pub short_price: bool,
}

impl TradeRecord {
    /// A size that is unique per sequence number, so no two generated trades share a natural
    /// key. The fraction keeps a fixed width: `5.100000` and `5.1` would compare equal.
    pub fn size(&self) -> String {
        format!(
            "{}.{:06}",
            self.seq % 1000 + 1,
            (self.seq / 1000) % 1_000_000
        )
    }

    /// [`TradeRecord::size`] in millionths of a share.
    pub fn size_micro_of(seq: u64) -> u64 {
        (seq % 1000 + 1) * 1_000_000 + (seq / 1000) % 1_000_000
    }

    /// The price as decimal text with three decimals, or four where the tick needs them
    /// (`0.480`, `0.4825`): trailing zeros kept, as the live feed writes them.
    pub fn price(&self) -> String {
        if self.price_bp.is_multiple_of(10) {
            format!("0.{:03}", self.price_bp / 10)
        } else {
            format!("0.{:04}", self.price_bp)
        }
    }

    /// The price as the wire carries it: sometimes without the leading zero.
    pub fn wire_price(&self) -> String {
        let p = self.price();
        if self.short_price {
            p.trim_start_matches('0').to_owned()
        } else {
            p
        }
    }

    /// The settlement transaction's hash, as the Data API always shows it.
    pub fn settlement_hash(&self) -> String {
        format!(
            "0x{:016x}{:048x}",
            self.seq,
            self.seq.wrapping_mul(0x2545_F491_4F6C_DD1D)
        )
    }

    /// The hash as the feed carries it: the settlement hash, except on the trades whose feed
    /// event leaves it out.
    pub fn transaction_hash(&self) -> Option<String> {
        self.has_tx.then(|| self.settlement_hash())
    }

    pub fn side(&self) -> &'static str {
        if self.buy { "BUY" } else { "SELL" }
    }
}

/// Appends a `last_trade_price` event.
pub fn trade_event(out: &mut String, t: &TradeRecord, m: &SimMarket) {
    let asset = &m.token_ids[t.outcome as usize];
    let tx = t
        .transaction_hash()
        .map(|h| format!(",\"transaction_hash\":\"{h}\""))
        .unwrap_or_default();
    // Two key orders: clients must not depend on one.
    let _ = if t.seq.is_multiple_of(2) {
        write!(
            out,
            r#"{{"asset_id":"{asset}","event_type":"last_trade_price","fee_rate_bps":"0","market":"{}","price":"{}","side":"{}","size":"{}","timestamp":"{}"{tx}}}"#,
            m.condition_id,
            t.wire_price(),
            t.side(),
            t.size(),
            t.timestamp_ms
        )
    } else {
        write!(
            out,
            r#"{{"event_type":"last_trade_price","market":"{}","asset_id":"{asset}","timestamp":"{}","price":"{}","size":"{}","side":"{}","fee_rate_bps":"{}"{tx}}}"#,
            m.condition_id,
            t.timestamp_ms,
            t.wire_price(),
            t.size(),
            t.side(),
            t.seq % 3 * 100
        )
    };
}

/// A top-of-book price as `price_change` and `best_bid_ask` write it: an empty bid side
/// is `"0"`, an empty ask side `""`.
fn top_text(p: Option<PriceBp>, empty: &'static str) -> String {
    p.map(price_text).unwrap_or_else(|| empty.to_owned())
}

/// Appends a `price_change` event: one entry per level change, each with the level's new
/// total and the true top of book after it (after the whole match, for a match's entries).
/// `changes` may name both tokens of the market. One message in ten leaves `best_bid` and
/// `best_ask` out, as some live messages do (clients treat them as optional).
pub fn price_change_event(
    out: &mut String,
    m: &SimMarket,
    changes: &[(u8, LevelChange)],
    n: u64,
    timestamp_ms: i64,
) {
    let with_top = n % 10 != 7;
    let _ = write!(out, r#"{{"market":"{}","price_changes":["#, m.condition_id);
    for (i, (outcome, c)) in changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"asset_id":""#);
        out.push_str(&m.token_ids[*outcome as usize]);
        out.push_str(r#"","price":""#);
        push_price(out, c.price);
        out.push_str(r#"","size":""#);
        push_size(out, c.size);
        let _ = write!(
            out,
            r#"","side":"{}","hash":"0x{:040x}""#,
            match c.side {
                BookSide::Bid => "BUY",
                BookSide::Ask => "SELL",
            },
            n.wrapping_mul(31).wrapping_add(i as u64),
        );
        if with_top {
            out.push_str(r#","best_bid":""#);
            match c.best_bid {
                Some(p) => push_price(out, p),
                None => out.push('0'),
            }
            out.push_str(r#"","best_ask":""#);
            if let Some(p) = c.best_ask {
                push_price(out, p);
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = write!(
        out,
        r#"],"timestamp":"{timestamp_ms}","event_type":"price_change"}}"#
    );
}

/// Appends a `tick_size_change` event.
pub fn tick_size_event(
    out: &mut String,
    m: &SimMarket,
    outcome: u8,
    old: PriceBp,
    new: PriceBp,
    timestamp_ms: i64,
) {
    let _ = write!(
        out,
        r#"{{"event_type":"tick_size_change","asset_id":"{}","market":"{}","old_tick_size":"{}","new_tick_size":"{}","timestamp":"{timestamp_ms}"}}"#,
        m.token_ids[outcome as usize],
        m.condition_id,
        price_text(old),
        price_text(new),
    );
}

/// Appends a `best_bid_ask` event (custom feature).
pub fn best_bid_ask_event(
    out: &mut String,
    m: &SimMarket,
    outcome: u8,
    (bid, ask): (Option<PriceBp>, Option<PriceBp>),
    timestamp_ms: i64,
) {
    let spread = match (bid, ask) {
        (Some(b), Some(a)) => price_text(a.saturating_sub(b)),
        _ => String::new(),
    };
    let _ = write!(
        out,
        r#"{{"event_type":"best_bid_ask","market":"{}","asset_id":"{}","best_bid":"{}","best_ask":"{}","spread":"{spread}","timestamp":"{timestamp_ms}"}}"#,
        m.condition_id,
        m.token_ids[outcome as usize],
        top_text(bid, "0"),
        top_text(ask, ""),
    );
}

/// Appends a `book` snapshot: bids from the lowest, asks from the highest (the best last,
/// as the live feed lists them). Every third one comes without `event_type`, as some
/// initial dumps do on the live feed.
pub fn book_event(
    out: &mut String,
    m: &SimMarket,
    outcome: u8,
    book: &BookState,
    last_trade: Option<PriceBp>,
    n: u64,
    timestamp_ms: i64,
) {
    let event_type = if n.is_multiple_of(3) {
        ""
    } else {
        "\"event_type\":\"book\","
    };
    let _ = write!(
        out,
        r#"{{{event_type}"asset_id":"{}","market":"{}","bids":"#,
        m.token_ids[outcome as usize], m.condition_id
    );
    write_levels(out, book.bids.iter().rev());
    out.push_str(r#","asks":"#);
    write_levels(out, book.asks.iter().rev());
    let _ = write!(
        out,
        r#","timestamp":"{timestamp_ms}","hash":"0x{n:040x}","tick_size":"{}""#,
        wire_price(book.tick)
    );
    if let Some(p) = last_trade {
        let _ = write!(out, r#","last_trade_price":"{}""#, wire_price(p));
    }
    out.push('}');
}

/// A price as live `book` messages write it: three decimals, or four on a finer grid,
/// trailing zeros kept (`"0.920"`, `"0.4825"`, `"0.010"`): compare as numbers, never as text.
pub fn wire_price(p: PriceBp) -> String {
    let mut s = String::new();
    push_wire_price(&mut s, p);
    s
}

/// Appends [`wire_price`]'s text.
fn push_wire_price(out: &mut String, p: PriceBp) {
    let (int, frac) = (u64::from(p / 10_000), u64::from(p % 10_000));
    if p.is_multiple_of(10) {
        push_decimal(out, int, frac / 10, 3, false);
    } else {
        push_decimal(out, int, frac, 4, false);
    }
}

fn write_levels<'a>(out: &mut String, levels: impl Iterator<Item = &'a (PriceBp, SizeMicro)>) {
    out.push('[');
    for (i, (p, s)) in levels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"price":""#);
        push_wire_price(out, *p);
        out.push_str(r#"","size":""#);
        push_size(out, *s);
        out.push_str(r#""}"#);
    }
    out.push(']');
}

/// A book as CLOB REST's `GET /book` answers it.
pub fn book_json(
    m: &SimMarket,
    outcome: u8,
    book: &BookState,
    last_trade: Option<PriceBp>,
    timestamp_ms: i64,
) -> serde_json::Value {
    let levels = |l: &[(PriceBp, SizeMicro)]| {
        l.iter()
            .rev()
            .map(|(p, s)| serde_json::json!({"price": price_text(*p), "size": size_text(*s)}))
            .collect::<Vec<_>>()
    };
    serde_json::json!({
        "market": m.condition_id,
        "asset_id": m.token_ids[outcome as usize],
        "timestamp": timestamp_ms.to_string(),
        "hash": format!("0x{:040x}", timestamp_ms as u64 ^ ((outcome as u64) << 60)),
        "bids": levels(&book.bids),
        "asks": levels(&book.asks),
        "tick_size": price_text(book.tick),
        "min_order_size": "5",
        "neg_risk": m.neg_risk,
        "last_trade_price": last_trade.map(price_text).unwrap_or_default(),
    })
}

/// Appends a `new_market` event (custom feature).
pub fn new_market_event(out: &mut String, m: &SimMarket, timestamp_ms: i64) {
    let _ = write!(
        out,
        r#"{{"event_type":"new_market","id":"{}","question":{},"market":"{}","slug":"{}","assets_ids":["{}","{}"],"outcomes":["{}","{}"],"timestamp":"{timestamp_ms}"}}"#,
        m.gamma_id,
        serde_json::Value::from(m.question.as_str()),
        m.condition_id,
        m.slug,
        m.token_ids[0],
        m.token_ids[1],
        m.outcomes[0],
        m.outcomes[1],
    );
}

/// Appends a `market_resolved` event (custom feature).
pub fn market_resolved_event(out: &mut String, m: &SimMarket, winner: usize, timestamp_ms: i64) {
    let _ = write!(
        out,
        r#"{{"event_type":"market_resolved","id":"{}","market":"{}","assets_ids":["{}","{}"],"winning_asset_id":"{}","winning_outcome":"{}","timestamp":"{timestamp_ms}"}}"#,
        m.gamma_id,
        m.condition_id,
        m.token_ids[0],
        m.token_ids[1],
        m.token_ids[winner],
        m.outcomes[winner],
    );
}

/// Frames that a client must survive: not JSON, cut short, wrong types, bad numbers, an
/// unknown event type. None of them carries a valid trade.
pub fn malformed_frames(m: &SimMarket, timestamp_ms: i64) -> Vec<String> {
    let asset = &m.token_ids[0];
    let cid = &m.condition_id;
    let trade = |price: &str, size: &str, side: &str, ts: &str| {
        format!(
            r#"{{"event_type":"last_trade_price","asset_id":"{asset}","market":"{cid}","price":{price},"size":{size},"side":"{side}","timestamp":{ts}}}"#
        )
    };
    let ts = format!("\"{timestamp_ms}\"");
    vec![
        "this is not json {".to_owned(),
        format!(r#"{{"event_type":"last_trade_price","asset_id":"{asset}","price":"0.5""#),
        trade("\"abc\"", "\"10\"", "BUY", &ts),
        trade("\"1.5\"", "\"10\"", "BUY", &ts),
        trade("0.5", "\"10\"", "BUY", &ts),
        trade("\"0.5\"", "\"-3\"", "BUY", &ts),
        trade("\"0.5\"", "\"10\"", "HOLD", &ts),
        trade(
            "\"0.5\"",
            "\"10\"",
            "SELL",
            &format!("\"{}\"", timestamp_ms / 1000),
        ),
        format!("[{}, 42]", trade("\"0.5\"", "\"10\"", "BUY", &ts)),
        r#"{"event_type":"something_new","payload":{"a":[1,2,3]}}"#.to_owned(),
        r#"[{"event_type":"last_trade_price"}]"#.to_owned(),
    ]
}
