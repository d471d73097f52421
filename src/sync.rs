//! The market sync: Gamma's open listing into the `markets` table, and the set of token
//! groups the listener should hold (what a re-sync subscribes and drops).

use std::collections::HashSet;

use postgres::Client;

use crate::error::Result;
use crate::gamma::{GammaClient, GammaMarket, Skip};
pub use crate::store::markets::Shard;

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Listing pages read.
    pub pages: usize,
    /// Markets listed.
    pub listed: usize,
    /// Rows written to `markets`.
    pub upserted: u64,
    /// Open markets now held in the table.
    pub open_markets: usize,
    /// Markets skipped: a `version` polytape does not know.
    pub skipped_unknown_version: usize,
    /// Markets skipped: unusable fields, or not a market object.
    pub skipped_malformed: usize,
    /// Markets we held as open that the open listing no longer shows and Gamma lists as
    /// closed, refreshed by id.
    pub refreshed: usize,
}

/// Pages through the open listing, upserts every usable market, then refreshes markets we
/// hold as open that have left the listing (usually: closed since).
pub fn sync_markets(db: &mut Client, gamma: &GammaClient) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let mut open_ids = HashSet::new();
    report.pages = gamma.for_each_page("closed=false", |page| {
        report.listed += page.markets.len();
        report.skipped_malformed += page.unreadable;
        store_markets(db, &page.markets, &mut report, Some(&mut open_ids))
    })?;
    report.open_markets = open_ids.len();
    let held: Vec<String> = crate::store::markets::open_condition_ids(db)?
        .into_iter()
        .filter(|id| !open_ids.contains(id))
        .collect();
    if !held.is_empty() {
        let refreshed = gamma.markets_by_condition_ids(&held, true)?;
        report.refreshed = refreshed.len();
        store_markets(db, &refreshed, &mut report, None)?;
    }
    if report.skipped_unknown_version + report.skipped_malformed > 0 {
        log::warn!(
            "gamma: skipped {} markets of unknown version and {} malformed ones",
            report.skipped_unknown_version,
            report.skipped_malformed
        );
    }
    Ok(report)
}

/// Upserts the usable markets of one page, counting the others; records open ids.
fn store_markets(
    db: &mut Client,
    markets: &[GammaMarket],
    report: &mut SyncReport,
    open: Option<&mut HashSet<String>>,
) -> Result<()> {
    let mut rows = Vec::with_capacity(markets.len());
    for m in markets {
        match m.to_row() {
            Ok(row) => rows.push(row),
            Err(Skip::UnknownVersion) => report.skipped_unknown_version += 1,
            Err(Skip::Malformed) => report.skipped_malformed += 1,
        }
    }
    if let Some(open) = open {
        open.extend(
            rows.iter()
                .filter(|r| !r.closed)
                .map(|r| r.condition_id.clone()),
        );
    }
    report.upserted += crate::store::markets::upsert_markets(db, &rows)?;
    Ok(())
}

/// The token groups (one per market, both tokens together) of every open market with an
/// order book in the `markets` table, or only of those in `shard`: what the listener should
/// hold after a sync.
pub fn open_token_groups(db: &mut Client, shard: Option<Shard>) -> Result<Vec<Vec<String>>> {
    crate::store::markets::active_token_groups_in(db, shard)
}
