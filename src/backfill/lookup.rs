//! What the backfill reads from the database: the markets that hold a set of tokens, and the
//! tape rows a comparison with the Data API needs (by time window for trades without a hash,
//! by hash whenever they matched).

use postgres::Client;

use super::matching::TapeRow;
use crate::data_api::ApiTrade;
use crate::error::Result;
use crate::feed::{Decimal, Side};
use crate::store::trades::hash_bytes;

/// The markets that hold any of `tokens` (condition id, token ids), in order.
pub(crate) fn markets_with_tokens(
    db: &mut Client,
    tokens: &[String],
) -> Result<Vec<(String, Vec<String>)>> {
    db.query(
        "SELECT condition_id, token_ids FROM markets WHERE token_ids && $1 ORDER BY condition_id",
        &[&tokens],
    )?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

/// The condition ids of the markets that hold any of `tokens`, in order.
pub(crate) fn markets_holding(db: &mut Client, tokens: &[String]) -> Result<Vec<String>> {
    Ok(markets_with_tokens(db, tokens)?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// The tape's trades of `assets` with a time in `from_ms..=to_ms`.
pub(crate) fn tape_rows(
    db: &mut Client,
    assets: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<TapeRow>> {
    let rows = db.query(
        "SELECT asset_id, side, price::text, size::text,
                (extract(epoch FROM traded_at) * 1000)::bigint, transaction_hash
         FROM trades
         WHERE asset_id = ANY($1)
           AND traded_at BETWEEN 'epoch'::timestamptz + $2::float8 * interval '1 millisecond'
                             AND 'epoch'::timestamptz + $3::float8 * interval '1 millisecond'",
        &[&assets, &(from_ms as f64), &(to_ms as f64)],
    )?;
    rows.iter().map(tape_row).collect()
}

/// A tape row from (asset, side, price, size, match ms, hash).
fn tape_row(r: &postgres::Row) -> Result<TapeRow> {
    let side: String = r.try_get(1)?;
    let price: String = r.try_get(2)?;
    let size: String = r.try_get(3)?;
    Ok(TapeRow {
        asset: r.try_get(0)?,
        side: if side == "BUY" { Side::Buy } else { Side::Sell },
        price: Decimal::canonical(&price),
        size: Decimal::canonical(&size),
        timestamp_ms: r.try_get(4)?,
        transaction_hash: r.try_get(5)?,
    })
}

/// How long before its block a trade holding the same hash is looked for. A block trails its
/// match by seconds, tens of seconds on a congested chain; an hour is far past any seen, and
/// the natural key (token, then match time) finds a token's hour of rows in a few pages.
pub(crate) const HASH_LOOKBACK_MS: i64 = 3_600_000;

/// The tape rows holding one of `listed`'s transaction hashes on its token, matched up to
/// [`HASH_LOOKBACK_MS`] before its block (and [`super::matching::AFTER_BLOCK_MS`] after its
/// block second): one index range scan of the natural key each.
pub(crate) fn rows_with_hashes(db: &mut Client, listed: &[ApiTrade]) -> Result<Vec<TapeRow>> {
    let mut keys: Vec<(&str, Vec<u8>, i64)> = listed
        .iter()
        .filter_map(|t| {
            hash_bytes(&t.transaction_hash).map(|h| (t.asset.as_str(), h, t.timestamp_s * 1000))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let assets: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let hashes: Vec<&[u8]> = keys.iter().map(|k| k.1.as_slice()).collect();
    let blocks: Vec<f64> = keys.iter().map(|k| k.2 as f64).collect();
    let after_ms = (999 + super::matching::AFTER_BLOCK_MS) as f64;
    // LATERAL: one bounded scan per trade (a join could be planned as a scan of the tape).
    let rows = db.query(
        "SELECT w.asset, CASE WHEN t.is_buy THEN 'BUY' ELSE 'SELL' END, t.price::text,
                t.size::text, (extract(epoch FROM t.traded_at) * 1000)::bigint,
                '0x' || encode(t.tx, 'hex')
         FROM unnest($1::text[], $2::bytea[], $3::float8[]) AS w(asset, tx, block_ms)
         JOIN tokens k ON k.asset_id = w.asset
         CROSS JOIN LATERAL (
             SELECT * FROM trade_tape t
             WHERE t.token = k.id
               AND t.traded_at >= 'epoch'::timestamptz
                                  + (w.block_ms - $4::float8) * interval '1 millisecond'
               AND t.traded_at <= 'epoch'::timestamptz
                                  + (w.block_ms + $5::float8) * interval '1 millisecond'
               AND t.tx = w.tx) t",
        &[
            &assets,
            &hashes,
            &blocks,
            &(HASH_LOOKBACK_MS as f64),
            &after_ms,
        ],
    )?;
    rows.iter().map(tape_row).collect()
}
