//! The tape's monthly partitions: made ahead of time, compacted once their month is over,
//! archived and dropped by the operator's retention (`polytape archive`, `polytape
//! retention`).
//!
//! Partitions are native declarative partitions of `trade_tape` by `traded_at`, one per UTC
//! month, made by the SQL function `tape_ensure_month` (migration V6), which also moves out
//! of the default partition whatever arrived before its month was prepared. Every partition
//! is recorded in `tape_partitions` with what became of it.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use postgres::Client;

use crate::error::{Error, Result};

/// Months made ahead of the current one, so the writer never waits on a `CREATE TABLE`.
const MONTHS_AHEAD: i32 = 2;

/// One monthly partition of the tape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its table name (`trade_tape_2026_11`).
    pub name: String,
    /// The first day of its month (UTC).
    pub month: NaiveDate,
    /// Where it was archived, and how many rows the archive holds, if it was.
    pub archive: Option<(String, i64)>,
    /// Whether its index was rebuilt after its month ended.
    pub compacted: bool,
    /// Whether it holds rows no archive has: it was dropped by retention, then made again
    /// for a late trade (a backfill of an old window). Its archive is the month's; the late
    /// rows go to a file of their own, and retention keeps it until they have.
    pub late_rows: bool,
}

/// Makes the partition of month `index` (year · 12 + month − 1) if it is missing; true when
/// it was.
///
/// A role without `EXECUTE` on `tape_ensure_month` (V7 took it from `PUBLIC`; README says
/// to grant it to the writer) is told so in the log, and its trades of that month are not
/// refused: they wait in the default partition until a role that may makes the month
/// (which moves them). Refusing them would stop a least-privilege writer at its first batch.
pub(crate) fn ensure_month(db: &mut Client, index: i32) -> Result<bool> {
    let first = month_start(index)?;
    match db.query_one("SELECT tape_ensure_month($1)", &[&first]) {
        Ok(row) => Ok(row.try_get(0)?),
        Err(e) if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            log::warn!(
                "tape: this role may not make the partition of {first} (grant it EXECUTE on \
                 tape_ensure_month, README \"Roles\"); its trades wait in trade_tape_default"
            );
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The first day of month `index` (year · 12 + month − 1).
pub(crate) fn month_start(index: i32) -> Result<NaiveDate> {
    NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
        .ok_or_else(|| Error::data(format!("no such month: {index}")))
}

/// The month of `t` as year · 12 + month − 1 (UTC): how the writer and [`maintain`] name
/// months.
pub(crate) fn month_index(t: DateTime<Utc>) -> i32 {
    t.year() * 12 + t.month0() as i32
}

/// What [`maintain`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Partitions made ahead.
    pub created: usize,
    /// Partitions of past months whose index was rebuilt.
    pub compacted: Vec<String>,
}

/// Makes this month's partition and the next two if they are missing; returns how many it
/// made. Quick (a catalogue lookup when they exist): safe on a start path.
pub fn prepare(db: &mut Client, now: DateTime<Utc>) -> Result<usize> {
    let this = month_index(now);
    let mut created = 0;
    for m in this..=this + MONTHS_AHEAD {
        created += usize::from(ensure_month(db, m)?);
    }
    Ok(created)
}

/// Keeps the tape's partitions in shape (the daemon calls it after every market re-sync,
/// never on its start path): [`prepare`]; then every month that ended more than a day ago
/// has its index rebuilt once (`REINDEX … CONCURRENTLY`: writers go on). A live month's
/// natural-key index fills its pages about half (each token's entries grow at their own
/// right edge, and a B-tree splits such a page in halves); rebuilt, it takes about 40% less
/// room (BENCHMARKS.md).
///
/// A rebuild takes as long as its month is large (20 s at 10 M rows), so it runs without the
/// connection's statement timeout; an invalid index a rebuild left behind when it was cut
/// short (a `…_ccnew` index, from a timeout or a crash) is dropped first.
pub fn maintain(db: &mut Client, now: DateTime<Utc>) -> Result<Maintenance> {
    let mut report = Maintenance {
        created: prepare(db, now)?,
        ..Maintenance::default()
    };
    drop_invalid_leftovers(db)?;
    // Over for a day: late trades (a backfill) are rare from then on.
    let settled = month_start(month_index(now - chrono::Duration::days(1)))?;
    let due: Vec<String> = db
        .query(
            "SELECT name FROM tape_partitions
             WHERE month < $1 AND compacted_at IS NULL AND dropped_at IS NULL
             ORDER BY month",
            &[&settled],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    for name in due {
        // Not in a transaction: CONCURRENTLY cannot be. The name comes from our own table
        // and is quoted anyway.
        without_statement_timeout(db, |db| {
            db.batch_execute(&format!(
                "REINDEX TABLE CONCURRENTLY {}",
                quote_ident(&name)
            ))
        })?;
        db.execute(
            "UPDATE tape_partitions SET compacted_at = now() WHERE name = $1",
            &[&name],
        )?;
        log::info!("tape: partition {name} compacted (its month is over)");
        report.compacted.push(name);
    }
    Ok(report)
}

/// Runs `f` with no statement timeout on `db`, then puts the session's own back (also when
/// `f` fails).
fn without_statement_timeout(
    db: &mut Client,
    f: impl FnOnce(&mut Client) -> std::result::Result<(), postgres::Error>,
) -> Result<()> {
    let before: String = db.query_one("SHOW statement_timeout", &[])?.try_get(0)?;
    db.batch_execute("SET statement_timeout = 0")?;
    let result = f(db);
    db.execute(
        "SELECT set_config('statement_timeout', $1, false)",
        &[&before],
    )?;
    Ok(result?)
}

/// Drops the invalid indexes an interrupted `REINDEX … CONCURRENTLY` leaves on the tape's
/// partitions (named `…_ccnew`, `…_ccnew1`, …): they cost every insert and serve no query.
fn drop_invalid_leftovers(db: &mut Client) -> Result<()> {
    let leftovers: Vec<String> = db
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(i.relname)
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_namespace n ON n.oid = i.relnamespace
             JOIN tape_partitions p ON p.name = t.relname
             WHERE NOT x.indisvalid AND i.relname ~ '_ccnew[0-9]*$'
               AND n.nspname = current_schema()",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    for index in leftovers {
        without_statement_timeout(db, |db| {
            db.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
        })?;
        log::warn!("tape: dropped {index}, an invalid index an interrupted rebuild left");
    }
    Ok(())
}

/// Every partition still attached, oldest first.
pub fn partitions(db: &mut Client) -> Result<Vec<Partition>> {
    db.query(
        "SELECT name, month, archive_path, archive_rows, compacted_at IS NOT NULL,
                late_rows_since IS NOT NULL
         FROM tape_partitions WHERE dropped_at IS NULL ORDER BY month",
        &[],
    )?
    .iter()
    .map(|r| {
        let path: Option<String> = r.try_get(2)?;
        let rows: Option<i64> = r.try_get(3)?;
        Ok(Partition {
            name: r.try_get(0)?,
            month: r.try_get(1)?,
            archive: path.zip(rows),
            compacted: r.try_get(4)?,
            late_rows: r.try_get(5)?,
        })
    })
    .collect()
}

/// Records that `partition` was archived to `path` with `rows` rows (checked by the caller
/// against the partition and by reading the archive back). For a partition with
/// [`Partition::late_rows`], `path` holds the late rows: it is added to the month's
/// `late_archives`, and the month's own archive stays on record.
pub fn mark_archived(db: &mut Client, partition: &str, path: &str, rows: i64) -> Result<()> {
    let n = db.execute(
        "UPDATE tape_partitions SET archived_at = now(),
             archive_path = CASE WHEN late_rows_since IS NULL THEN $2 ELSE archive_path END,
             archive_rows = CASE WHEN late_rows_since IS NULL THEN $3
                                 ELSE coalesce(archive_rows, 0) + $3 END,
             late_archives = CASE WHEN late_rows_since IS NULL THEN late_archives
                                  ELSE array_append(late_archives, $2) END,
             late_rows_since = NULL
         WHERE name = $1 AND dropped_at IS NULL",
        &[&partition, &path, &rows],
    )?;
    if n == 0 {
        return Err(Error::data(format!("no partition {partition}")));
    }
    Ok(())
}

/// What [`drop_before`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Partitions detached and dropped.
    pub dropped: Vec<String>,
    /// Partitions old enough that were kept because no archive of them is recorded.
    pub kept_unarchived: Vec<String>,
}

/// Detaches and drops every partition whose month ended before `cutoff`'s month began,
/// keeping those without a recorded archive (or with late rows not archived yet) unless
/// `without_archive`. Rows in the default
/// partition are never dropped.
pub fn drop_before(db: &mut Client, cutoff: NaiveDate, without_archive: bool) -> Result<Retention> {
    let first = month_start(cutoff.year() * 12 + cutoff.month0() as i32)?;
    let mut report = Retention::default();
    for p in partitions(db)?.into_iter().filter(|p| p.month < first) {
        if (p.archive.is_none() || p.late_rows) && !without_archive {
            report.kept_unarchived.push(p.name);
            continue;
        }
        let mut tx = db.transaction()?;
        tx.batch_execute(&format!(
            "ALTER TABLE trade_tape DETACH PARTITION {name}; DROP TABLE {name};",
            name = quote_ident(&p.name)
        ))?;
        tx.execute(
            "UPDATE tape_partitions SET dropped_at = now() WHERE name = $1",
            &[&p.name],
        )?;
        tx.commit()?;
        log::info!("tape: partition {} dropped", p.name);
        report.dropped.push(p.name);
    }
    Ok(report)
}

/// A month of a book-side table (`book_snapshot`, `price_bar`) still attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidePartition {
    /// The partition's name (`book_snapshot_2026_01`).
    pub name: String,
    /// Its table.
    pub parent: String,
    /// The first day of its month.
    pub month: NaiveDate,
    /// Where its archive was written and how many rows it holds, if it was.
    pub archive: Option<(String, i64)>,
}

/// The book side's tables whose months archive and retention act on.
pub const SIDE_TABLES: [&str; 2] = ["book_snapshot", "price_bar"];

/// Every monthly partition of the book side's tables still attached, oldest first (found in
/// the catalogue: `tape_ensure_month` makes them), with the archive on record if any.
pub fn side_partitions(db: &mut Client) -> Result<Vec<SidePartition>> {
    let rows = db.query(
        "SELECT c.relname::text, p.relname::text, s.archive_path, s.archive_rows
         FROM pg_catalog.pg_inherits i
         JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
         JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
         LEFT JOIN side_partitions s ON s.name = c.relname
         WHERE p.relname = ANY($1) AND c.relname ~ '_[0-9]{4}_[0-9]{2}$'
           AND p.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace
                                 WHERE nspname = current_schema())
         ORDER BY c.relname",
        &[&SIDE_TABLES.as_slice()],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0)?;
        let month = name
            .len()
            .checked_sub(7)
            .and_then(|i| name.get(i..))
            .and_then(|ym| NaiveDate::parse_from_str(&format!("{ym}_01"), "%Y_%m_%d").ok())
            .ok_or_else(|| Error::data(format!("partition {name} has no month in its name")))?;
        let path: Option<String> = r.try_get(2)?;
        let rows: Option<i64> = r.try_get(3)?;
        out.push(SidePartition {
            name,
            parent: r.try_get(1)?,
            month,
            archive: path.zip(rows),
        });
    }
    out.sort_by(|a, b| a.month.cmp(&b.month).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Records that the book-side partition `p` was archived to `path` with `rows` rows.
pub fn mark_side_archived(db: &mut Client, p: &SidePartition, path: &str, rows: i64) -> Result<()> {
    db.execute(
        "INSERT INTO side_partitions (name, parent, month, archive_path, archive_rows, archived_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (name) DO UPDATE SET archive_path = EXCLUDED.archive_path,
             archive_rows = EXCLUDED.archive_rows, archived_at = now(), dropped_at = NULL",
        &[&p.name, &p.parent, &p.month, &path, &rows],
    )?;
    Ok(())
}

/// Detaches and drops every book-side partition whose month ended before `cutoff`'s month
/// began, keeping those without a recorded archive unless `without_archive`.
pub fn drop_side_before(
    db: &mut Client,
    cutoff: NaiveDate,
    without_archive: bool,
) -> Result<Retention> {
    let first = month_start(cutoff.year() * 12 + cutoff.month0() as i32)?;
    let mut report = Retention::default();
    for p in side_partitions(db)?.into_iter().filter(|p| p.month < first) {
        if p.archive.is_none() && !without_archive {
            report.kept_unarchived.push(p.name);
            continue;
        }
        let mut tx = db.transaction()?;
        tx.batch_execute(&format!(
            "ALTER TABLE {parent} DETACH PARTITION {name}; DROP TABLE {name};",
            parent = quote_ident(&p.parent),
            name = quote_ident(&p.name)
        ))?;
        tx.execute(
            "INSERT INTO side_partitions (name, parent, month, dropped_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (name) DO UPDATE SET dropped_at = now()",
            &[&p.name, &p.parent, &p.month],
        )?;
        tx.commit()?;
        log::info!("retention: partition {} dropped", p.name);
        report.dropped.push(p.name);
    }
    Ok(report)
}

/// Removes the book tape's files whose period ended before `cutoff` (UTC midnight of its
/// first day) and records it (`book_files.removed_at`); a file already gone is recorded as
/// removed too. Returns the paths removed.
pub fn remove_tape_files_before(db: &mut Client, cutoff: NaiveDate) -> Result<Vec<String>> {
    let until = cutoff
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| Error::data("cutoff out of range"))?;
    let mut removed = Vec::new();
    for r in db.query(
        "SELECT path FROM book_files WHERE removed_at IS NULL AND period_end <= $1 ORDER BY path",
        &[&until],
    )? {
        let path: String = r.try_get(0)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::data(format!("cannot remove {path}: {e}"))),
        }
        db.execute(
            "UPDATE book_files SET removed_at = now() WHERE path = $1",
            &[&path],
        )?;
        removed.push(path);
    }
    Ok(removed)
}

/// A SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_indexes_round_trip() {
        let t = DateTime::parse_from_rfc3339("2026-01-31T23:59:59Z")
            .expect("time")
            .with_timezone(&Utc);
        let m = month_index(t);
        assert_eq!(month_start(m).ok(), NaiveDate::from_ymd_opt(2026, 1, 1));
        assert_eq!(
            month_start(m - 1).ok(),
            NaiveDate::from_ymd_opt(2025, 12, 1)
        );
        assert_eq!(
            month_start(m + 11).ok(),
            NaiveDate::from_ymd_opt(2026, 12, 1)
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
