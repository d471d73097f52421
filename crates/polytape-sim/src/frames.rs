//! The JSON the simulated feed sends, written by hand: the generator serialises hundreds of
//! thousands of events a second, and fixed templates with varied key order are both faster
//! than a generic serialiser and closer to the live feed's quirks.

use std::fmt::Write;

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
    /// Price in thousandths (1..=999).
    pub price_milli: u16,
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

    /// The price in canonical form (`0.480`), as PostgreSQL prints it back.
    pub fn price(&self) -> String {
        format!("0.{:03}", self.price_milli)
    }

    /// The price as the wire carries it: sometimes without the leading zero.
    pub fn wire_price(&self) -> String {
        if self.short_price {
            format!(".{:03}", self.price_milli)
        } else {
            self.price()
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

/// Appends a `price_change` event for both tokens of a market (the current format).
pub fn price_change_event(out: &mut String, m: &SimMarket, n: u64, timestamp_ms: i64) {
    let p = m.mid_milli as u64;
    let level = (p + n % 7).min(999);
    let _ = write!(
        out,
        r#"{{"market":"{}","price_changes":[{{"asset_id":"{}","price":"0.{level:03}","size":"{}","side":"BUY","hash":"0x{n:040x}","best_bid":"0.{:03}","best_ask":"0.{:03}"}},{{"asset_id":"{}","price":"0.{:03}","size":"{}","side":"SELL","hash":"0x{:040x}","best_bid":"0.{:03}","best_ask":"0.{:03}"}}],"timestamp":"{timestamp_ms}","event_type":"price_change"}}"#,
        m.condition_id,
        m.token_ids[0],
        if n.is_multiple_of(5) {
            0
        } else {
            100 + n % 900
        },
        p.saturating_sub(1).max(1),
        (p + 1).min(999),
        m.token_ids[1],
        1000 - level,
        if n.is_multiple_of(5) {
            0
        } else {
            100 + n % 900
        },
        n + 1,
        (999 - p).max(1),
        (1001 - p).min(999),
    );
}

/// Appends a `tick_size_change` event.
pub fn tick_size_event(out: &mut String, m: &SimMarket, timestamp_ms: i64) {
    let _ = write!(
        out,
        r#"{{"event_type":"tick_size_change","asset_id":"{}","market":"{}","old_tick_size":"0.01","new_tick_size":"0.001","timestamp":"{timestamp_ms}"}}"#,
        m.token_ids[0], m.condition_id
    );
}

/// Appends a `best_bid_ask` event (custom feature).
pub fn best_bid_ask_event(out: &mut String, m: &SimMarket, outcome: u8, timestamp_ms: i64) {
    let p = m.mid_milli.clamp(2, 998);
    let _ = write!(
        out,
        r#"{{"event_type":"best_bid_ask","market":"{}","asset_id":"{}","best_bid":"0.{:03}","best_ask":"0.{:03}","spread":"0.002","timestamp":"{timestamp_ms}"}}"#,
        m.condition_id,
        m.token_ids[outcome as usize],
        p - 1,
        p + 1
    );
}

/// Appends a `book` snapshot. Every third one comes without `event_type`, as some initial
/// dumps do on the live feed.
pub fn book_event(out: &mut String, m: &SimMarket, outcome: u8, n: u64, timestamp_ms: i64) {
    let p = m.mid_milli.clamp(10, 990) as u64;
    let event_type = if n.is_multiple_of(3) {
        ""
    } else {
        "\"event_type\":\"book\","
    };
    let _ = write!(
        out,
        r#"{{{event_type}"asset_id":"{}","market":"{}","bids":[{{"price":".{:03}","size":"120.5"}},{{"price":"0.{:03}","size":"33"}}],"asks":[{{"price":"0.{:03}","size":"80"}},{{"price":"0.{:03}","size":"12.25"}}],"timestamp":"{timestamp_ms}","hash":"0x{n:040x}","tick_size":"0.001","last_trade_price":"0.{p:03}"}}"#,
        m.token_ids[outcome as usize],
        m.condition_id,
        p - 9,
        p - 1,
        p + 9,
        p + 1,
    );
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
