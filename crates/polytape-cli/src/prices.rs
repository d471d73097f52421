//! `polytape prices`: a market's price bars, per minute or rolled up in SQL (5m, 1h, 1d) so
//! that open, high, low and close stay right: the first bar's open, the highest high, the
//! lowest low, the last bar's close; trades, volume and notional summed.

use crate::Result;
use crate::cli::{Common, PricesArgs};

/// Prints the bars of every token of `args.market` since `args.since`.
pub(crate) fn prices(common: &Common, args: &PricesArgs) -> Result {
    let config = common.config()?;
    let mut db = polytape::store::connect(&config)?;
    let bucket = match args.interval.as_str() {
        "5m" => "5 minutes",
        "1h" => "1 hour",
        "1d" => "1 day",
        _ => "1 minute",
    };
    let rows = db.query(
        "WITH m AS (
             SELECT condition_id, outcomes, token_ids FROM markets
             WHERE slug = $1 OR condition_id = $1 LIMIT 1),
         b AS (
             SELECT coalesce(m.outcomes[array_position(m.token_ids, p.asset_id)], p.asset_id)
                        AS outcome,
                    date_bin($3::text::interval, p.minute, 'epoch'::timestamptz) AS bucket, p.*
             FROM price_bars p JOIN m ON p.asset_id = ANY (m.token_ids)
             WHERE p.minute >= 'epoch'::timestamptz + $2::float8 * interval '1 millisecond')
         SELECT outcome, to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                ((array_agg(open ORDER BY minute) FILTER (WHERE open IS NOT NULL))[1])::text,
                max(high)::text, min(low)::text,
                ((array_agg(close ORDER BY minute DESC) FILTER (WHERE close IS NOT NULL))[1])::text,
                ((array_agg(best_bid ORDER BY minute DESC))[1])::text,
                ((array_agg(best_ask ORDER BY minute DESC))[1])::text,
                sum(trades)::bigint, sum(volume)::text, sum(notional)::text,
                string_agg(DISTINCT source, '+')
         FROM b GROUP BY 1, 2 ORDER BY 2, 1",
        &[&args.market, &(args.since as f64), &bucket],
    )?;
    println!(
        "{:<16} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>14} {:>14}  source",
        "bar (UTC)",
        "outcome",
        "open",
        "high",
        "low",
        "close",
        "bid",
        "ask",
        "trades",
        "volume",
        "notional"
    );
    let text = |r: &postgres::Row, i: usize| -> Result<String> {
        Ok(r.try_get::<_, Option<String>>(i)?
            .unwrap_or_else(|| "-".into()))
    };
    for r in &rows {
        let outcome: String = r.try_get(0)?;
        println!(
            "{:<16} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>14} {:>14}  {}",
            r.try_get::<_, String>(1)?,
            outcome.chars().take(12).collect::<String>(),
            text(r, 2)?,
            text(r, 3)?,
            text(r, 4)?,
            text(r, 5)?,
            text(r, 6)?,
            text(r, 7)?,
            r.try_get::<_, i64>(8)?,
            text(r, 9)?,
            text(r, 10)?,
            r.try_get::<_, String>(11)?,
        );
    }
    if rows.is_empty() {
        println!(
            "no bars for {} since then (no row: nothing changed)",
            args.market
        );
    }
    Ok(())
}
