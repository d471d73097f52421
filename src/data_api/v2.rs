//! The Data API's `GET /v2/trades` (feed notes §6), where the service is going: cursor
//! paging only, anchored on (block time, sequence id), newest first; an envelope
//! `{data, pagination: {next_cursor, has_more, …}}` of snake_case rows; `start`/`end`
//! honoured only with `user`, so a `condition` query serves its whole window newest first
//! and a hole is read by walking back from the newest row until the rows are older than it.
//!
//! Prices are the fill's raw USDC-to-shares ratio (`0.709999959`, up to ten decimals),
//! read exactly as decimal text and stored as the price the exchange matched at: the ratio
//! rounded half-up to 0.0001, the finest tick the exchange has, when it lies within 10⁻⁶ of
//! that rounding (the fill's USDC is rounded to six decimals, so for a fill of half a share
//! or more the ratio is that close to the matched price, and the rounding gives it back
//! exactly). Any other ratio (a dust fill, a fee-bearing price) is kept exactly as sent,
//! never guessed.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ApiTrade;
use crate::error::{Error, Result};
use crate::feed::Decimal;

/// One v2 page: the usable trades, rows it could not use, and the cursor of the next page.
pub(crate) struct Page {
    pub(crate) trades: Vec<ApiTrade>,
    pub(crate) bad: u64,
    pub(crate) next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Vec<Row<'a>>,
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Row<'a> {
    token_id: Option<String>,
    condition_id: Option<String>,
    side: Option<String>,
    #[serde(borrow)]
    price: Option<&'a RawValue>,
    #[serde(borrow)]
    size: Option<&'a RawValue>,
    timestamp: Option<i64>,
    transaction_hash: Option<String>,
}

impl Row<'_> {
    fn to_trade(&self) -> std::result::Result<ApiTrade, String> {
        super::trade_from(
            super::RowFields {
                asset: self.token_id.as_deref(),
                condition_id: self.condition_id.as_deref(),
                side: self.side.as_deref(),
                price: self.price,
                size: self.size,
                timestamp: self.timestamp,
                transaction_hash: self.transaction_hash.as_deref(),
            },
            match_price,
        )
    }
}

/// The matched price of a raw ratio (module docs): a ratio of at most four decimals is the
/// price itself; a longer one within 10⁻⁶ of its rounding to 0.0001 (half-up) is that
/// rounding; any other is kept as it is. `None` for text that is no plain decimal.
pub(crate) fn match_price(raw: &str) -> Option<Decimal> {
    let exact = Decimal::parse(raw)?;
    let (int, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if frac.len() <= 4 {
        return Some(exact);
    }
    // In units of 10⁻¹⁸ (at most 18 decimals, as Decimal allows).
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut digits = frac.to_owned();
    digits.truncate(18);
    let scale = 10u128.pow(18 - digits.len() as u32);
    let value = int * 10u128.pow(18) + digits.parse::<u128>().ok()? * scale;
    const TICK: u128 = 100_000_000_000_000; // 10⁻⁴ in units of 10⁻¹⁸
    let rounded = (value + TICK / 2) / TICK;
    let off = value.abs_diff(rounded * TICK);
    if off > 1_000_000_000_000 {
        return Some(exact); // more than 10⁻⁶ away: not a rounded fill; kept as sent
    }
    Decimal::parse(&format!("{}.{:04}", rounded / 10_000, rounded % 10_000))
}

/// One `/v2/trades` answer. Every byte the service sends goes through here.
pub(crate) fn decode_page(body: &str) -> Result<Page> {
    let env: Envelope<'_> = serde_json::from_str(body)
        .map_err(|e| Error::http(format!("data api v2: not a page of trades: {e}")))?;
    let mut trades = Vec::with_capacity(env.data.len());
    let mut bad = 0;
    for row in &env.data {
        match row.to_trade() {
            Ok(t) => trades.push(t),
            Err(why) => {
                bad += 1;
                log::warn!("data api v2: an unusable row ({why}), skipped");
            }
        }
    }
    Ok(Page {
        trades,
        bad,
        next_cursor: env
            .pagination
            .and_then(|p| p.next_cursor)
            .filter(|c| !c.is_empty()),
    })
}

/// Percent-encodes a query value (the cursor is opaque: it may hold any character).
pub(crate) fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ratios_give_the_matched_price_back_exactly() {
        for (raw, price) in [
            ("0.709999959", "0.7100"),
            ("0.2972581967", "0.2972581967"), // 0.0000418 from 0.2973: not a rounding
            ("0.48", "0.48"),
            ("0.4825000001", "0.4825"),
            ("0.0001", "0.0001"),
            ("1", "1"),
        ] {
            assert_eq!(
                match_price(raw).map(|d| d.as_str().to_owned()),
                Some(price.to_owned()),
                "{raw}"
            );
        }
        assert!(match_price("0.5e-1").is_none());
        assert_eq!(query_value("a+b/c=.~"), "a%2Bb%2Fc%3D.~");
        assert!(match_price("abc").is_none());
    }

    #[test]
    fn a_page_is_read_with_its_cursor_and_bad_rows_counted() {
        let body = r#"{"data":[
            {"proxy_wallet":"0x1","side":"BUY","token_id":"11","condition_id":"0xc","size":92.59,
             "price":0.709999959,"timestamp":1750000000,"outcome":"Yes","outcome_index":0,
             "transaction_hash":"0xAB"},
            {"side":"HOLD","token_id":"11","size":1,"price":0.5,"timestamp":1,"transaction_hash":"0x1"}],
            "pagination":{"limit":2,"offset":0,"has_more":true,"next_cursor":"abc"}}"#;
        let page = decode_page(body).expect("a page");
        assert_eq!((page.trades.len(), page.bad), (1, 1));
        let t = &page.trades[0];
        assert_eq!((t.price.as_str(), t.size.as_str()), ("0.7100", "92.59"));
        assert_eq!(t.transaction_hash, "0xab");
        assert_eq!(page.next_cursor.as_deref(), Some("abc"));
        let last = decode_page(r#"{"data":[],"pagination":{"has_more":false,"next_cursor":null}}"#)
            .expect("an empty page");
        assert!(last.next_cursor.is_none());
        assert!(decode_page("[]").is_err(), "v1's shape is not a v2 page");
    }
}
