//! `polytape verify --chain`: reads the chain up to `finalized` now (the live reader's own
//! steps and cursor), then prints each market-hour of `chain_checks` that is not verified and
//! one totals line.

use crate::Result;
use crate::cli::{Common, VerifyArgs};

/// One market-hour of `chain_checks`.
pub(crate) struct CheckRow {
    pub(crate) market: String,
    pub(crate) hour: String,
    pub(crate) chain: i64,
    pub(crate) tape: i64,
    pub(crate) added: i64,
    pub(crate) unsettled: i64,
    pub(crate) mismatched: i64,
    pub(crate) verified: bool,
}

/// The checked market-hours since `since` (Unix ms), one market or all.
pub(crate) fn rows(
    db: &mut postgres::Client,
    since: i64,
    market: Option<&str>,
) -> Result<Vec<CheckRow>> {
    let market = market.map(str::to_owned);
    let rows = db.query(
        "SELECT coalesce(m.slug, c.market), to_char(c.hour, 'YYYY-MM-DD HH24:00'),
                c.chain_fills::bigint, c.tape_fills::bigint, c.added::bigint,
                c.unsettled::bigint, c.mismatched::bigint, c.verified
         FROM chain_checks c LEFT JOIN markets m ON m.condition_id = c.market
         WHERE c.hour >= date_trunc('hour', 'epoch'::timestamptz
                                            + $1::float8 * interval '1 millisecond')
           AND ($2::text IS NULL OR c.market = $2 OR m.slug = $2)
         ORDER BY c.hour, 1",
        &[&(since as f64), &market],
    )?;
    rows.iter()
        .map(|r| {
            Ok(CheckRow {
                market: r.try_get(0)?,
                hour: r.try_get(1)?,
                chain: r.try_get(2)?,
                tape: r.try_get(3)?,
                added: r.try_get(4)?,
                unsettled: r.try_get(5)?,
                mismatched: r.try_get(6)?,
                verified: r.try_get(7)?,
            })
        })
        .collect()
}

/// `chain: <fills> fills, tape: <fills>, added <n>, unsettled <n>, verified <h>/<h> market-hours`.
pub(crate) fn totals_line(rows: &[CheckRow]) -> String {
    let sum = |f: fn(&CheckRow) -> i64| rows.iter().map(f).sum::<i64>();
    format!(
        "chain: {} fills, tape: {}, added {}, unsettled {}, verified {}/{} market-hours",
        sum(|r| r.chain),
        sum(|r| r.tape),
        sum(|r| r.added),
        sum(|r| r.unsettled),
        rows.iter().filter(|r| r.verified).count(),
        rows.len()
    )
}

pub(crate) fn verify(common: &Common, args: &VerifyArgs) -> Result {
    let config = common.config()?;
    polytape::store::migrate(&config)?;
    let block = polytape::chain::catch_up(&config, args.since)?;
    let mut db = polytape::store::connect(&config)?;
    let rows = rows(&mut db, args.since, args.market.as_deref())?;
    println!("read up to block {block}");
    for r in rows.iter().filter(|r| !r.verified) {
        println!(
            "{:<16} {:<40} chain {:>6}  tape {:>6}  added {:>5}  unsettled {:>4}  mismatched {:>4}  NOT VERIFIED",
            r.hour,
            crate::audit::fit(r.market.clone(), 40),
            r.chain,
            r.tape,
            r.added,
            r.unsettled,
            r.mismatched
        );
    }
    println!("{}", totals_line(&rows));
    Ok(())
}
