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

/// The tape rows holding any of `listed`'s transaction hashes, whenever they matched
/// (`trade_tape_tx`, a hash index).
pub(crate) fn rows_with_hashes(db: &mut Client, listed: &[ApiTrade]) -> Result<Vec<TapeRow>> {
    let mut hashes: Vec<Vec<u8>> = listed
        .iter()
        .filter_map(|t| hash_bytes(&t.transaction_hash))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db.query(
        "SELECT k.asset_id, CASE WHEN t.is_buy THEN 'BUY' ELSE 'SELL' END, t.price::text,
                t.size::text, (extract(epoch FROM t.traded_at) * 1000)::bigint,
                '0x' || encode(t.tx, 'hex')
         FROM trade_tape t JOIN tokens k ON k.id = t.token
         WHERE t.tx = ANY($1)",
        &[&hashes],
    )?;
    rows.iter().map(tape_row).collect()
}
