//! `polytape audit`: is the tape complete? Per market and hour, the trades from the feed,
//! the trades filled in from the Data API, and the gaps still open; then one verdict:
//! `complete` (no hole was ever recorded), `filled` (every recorded hole was filled), or
//! `holes` (some are still open: the Data API could not fill them yet). Beside it, the
//! minutes of the hour the market's order book was not trusted (a desync or a socket loss,
//! until a fresh book came: the `blind_from` of the snapshot that ended it), the most of its
//! tokens'. And whether the hour is proven against the chain (`chain_checks`).

use crate::Result;
use crate::cli::{AuditArgs, Common};

/// One market-hour of the audit.
pub(crate) struct AuditRow {
    pub(crate) market: String,
    pub(crate) hour: String,
    pub(crate) feed: i64,
    pub(crate) filled: i64,
    pub(crate) holes_open: i64,
    pub(crate) holes_filled: i64,
    pub(crate) blind_minutes: f64,
    /// Proven against the chain (`chain_checks`): `None` when the hour was not checked.
    pub(crate) chain_verified: Option<bool>,
}

impl AuditRow {
    pub(crate) fn verdict(&self) -> &'static str {
        verdict(self.filled, self.holes_open, self.holes_filled)
    }

    /// `chain-verified`, `chain-unverified` (checked, and the tape and the chain differ),
    /// or `-` (not checked against the chain).
    pub(crate) fn chain(&self) -> &'static str {
        match self.chain_verified {
            Some(true) => "chain-verified",
            Some(false) => "chain-unverified",
            None => "-",
        }
    }
}

/// The audit's rows since `since` (Unix ms), one market or all, by hour then market: what
/// `polytape audit` prints and `polytape report` draws.
pub(crate) fn rows(
    db: &mut postgres::Client,
    since: i64,
    market: Option<&str>,
) -> Result<Vec<AuditRow>> {
    let since = since as f64;
    let market = market.map(str::to_owned);
    let rows = db.query(
        "WITH held AS (
             SELECT condition_id, coalesce(slug, condition_id) AS name, token_ids FROM markets
             WHERE $2::text IS NULL OR slug = $2 OR condition_id = $2),
         t AS (
             SELECT m.name, date_trunc('hour', t.traded_at) AS hour,
                    count(*) FILTER (WHERE t.source = 'feed') AS feed,
                    count(*) FILTER (WHERE t.source IN ('data_api', 'chain')) AS filled
             FROM trades t JOIN held m ON t.market = m.condition_id
             WHERE t.traded_at >= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
             GROUP BY 1, 2),
         g AS (
             SELECT m.name, date_trunc('hour', g.from_ts) AS hour,
                    count(*) FILTER (WHERE g.filled_at IS NULL) AS open,
                    count(*) FILTER (WHERE g.filled_at IS NOT NULL) AS closed
             FROM gaps g JOIN held m ON g.asset_ids && m.token_ids
             WHERE g.to_ts >= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
             GROUP BY 1, 2),
         blind_token AS (
             SELECT m.name, h.hour, s.token,
                    sum(extract(epoch FROM least(s.taken_at, h.hour + interval '1 hour')
                                         - greatest(s.blind_from, h.hour))) / 60 AS minutes
             FROM book_snapshot s
             JOIN tokens k ON k.id = s.token
             JOIN held m ON m.condition_id = k.market
             CROSS JOIN LATERAL generate_series(date_trunc('hour', s.blind_from), s.taken_at,
                                                interval '1 hour') AS h(hour)
             WHERE s.blind_from IS NOT NULL
               AND s.taken_at >= 'epoch'::timestamptz + $1::float8 * interval '1 millisecond'
             GROUP BY 1, 2, 3),
         b AS (SELECT name, hour, max(minutes) AS minutes FROM blind_token GROUP BY 1, 2),
         tg AS (
             SELECT coalesce(t.name, g.name) AS name, coalesce(t.hour, g.hour) AS hour,
                    t.feed, t.filled, g.open, g.closed
             FROM t FULL JOIN g ON t.name = g.name AND t.hour = g.hour)
         SELECT coalesce(tg.name, b.name), to_char(coalesce(tg.hour, b.hour), 'YYYY-MM-DD HH24:00'),
                coalesce(tg.feed, 0), coalesce(tg.filled, 0), coalesce(tg.open, 0),
                coalesce(tg.closed, 0), coalesce(b.minutes, 0)::float8,
                (SELECT CASE WHEN count(*) = 0 THEN NULL ELSE bool_and(c.verified) END
                 FROM chain_checks c JOIN held h ON h.condition_id = c.market
                 WHERE h.name = coalesce(tg.name, b.name) AND c.hour = coalesce(tg.hour, b.hour))
         FROM tg FULL JOIN b ON tg.name = b.name AND tg.hour = b.hour
         ORDER BY 2, 1",
        &[&since, &market],
    )?;
    rows.iter()
        .map(|r| {
            Ok(AuditRow {
                market: r.try_get(0)?,
                hour: r.try_get(1)?,
                feed: r.try_get(2)?,
                filled: r.try_get(3)?,
                holes_open: r.try_get(4)?,
                holes_filled: r.try_get(5)?,
                blind_minutes: r.try_get(6)?,
                chain_verified: r.try_get(7)?,
            })
        })
        .collect()
}

/// The audit's last line: the totals and one verdict.
pub(crate) fn totals_line(rows: &[AuditRow]) -> String {
    let feed: i64 = rows.iter().map(|r| r.feed).sum();
    let filled: i64 = rows.iter().map(|r| r.filled).sum();
    let open: i64 = rows.iter().map(|r| r.holes_open).sum();
    let closed: i64 = rows.iter().map(|r| r.holes_filled).sum();
    let blind: f64 = rows.iter().map(|r| r.blind_minutes).sum();
    format!(
        "total: {feed} trades from the feed, {filled} filled in, {closed} holes filled, {open} open, \
         {blind:.1} market-minutes without a trusted book: {}",
        verdict(filled, open, closed)
    )
}

/// Prints the audit of the tape since `args.since`.
pub(crate) fn audit(common: &Common, args: &AuditArgs) -> Result {
    let config = common.config()?;
    let mut db = polytape::store::connect(&config)?;
    let rows = rows(&mut db, args.since, args.market.as_deref())?;
    println!(
        "{:<14} {:<40} {:>8} {:>8} {:>6} {:>7} {:>9}  verdict   chain",
        "hour (UTC)", "market", "feed", "filled", "holes", "filled", "no book"
    );
    for r in &rows {
        println!(
            "{:<14} {:<40} {:>8} {:>8} {:>6} {:>7} {:>7.1} m  {:<9} {}",
            r.hour,
            fit(r.market.clone(), 40),
            r.feed,
            r.filled,
            r.holes_open,
            r.holes_filled,
            r.blind_minutes,
            r.verdict(),
            r.chain()
        );
    }
    println!("{}", totals_line(&rows));
    Ok(())
}

fn verdict(filled: i64, open: i64, closed: i64) -> &'static str {
    if open > 0 {
        "holes"
    } else if filled > 0 || closed > 0 {
        "filled"
    } else {
        "complete"
    }
}

/// `name` in at most `width` characters (not bytes: slugs and questions come from the
/// network, and a byte index can fall inside a character): cut with an ellipsis.
pub(crate) fn fit(name: String, width: usize) -> String {
    if name.chars().count() <= width {
        return name;
    }
    let mut cut: String = name.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn names_are_cut_by_characters_never_inside_one() {
        assert_eq!(fit("short".into(), 40), "short");
        // 45 characters, every one two bytes: byte 39 falls inside a character.
        let slug = "é".repeat(45);
        let cut = fit(slug, 40);
        assert_eq!(cut.chars().count(), 40);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("a".repeat(41), 40).chars().count(), 40);
    }
}
