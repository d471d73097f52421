//! `polytape archive` and `polytape retention`: the tape's monthly partitions, and the book
//! side's (`book_snapshot`, `price_bar`), leave the database as Parquet files, then go; the
//! book tape's files of the months dropped are removed.
//!
//! An archive is a whole partition in one file, typed (prices and sizes as exact decimals,
//! times as UTC timestamps), zstd-compressed, written beside its final name and renamed only
//! once read back and found whole (row count and the exact sum of sizes). Retention drops a
//! partition only when its archive is recorded and its file is there, unless told
//! `--no-archive`.

use chrono::{Datelike, Months, Utc};

use crate::Result;
use crate::cli::{Common, RetentionArgs};

/// Detaches and drops the partitions older than `--keep` months before this one.
pub(crate) fn retention(common: &Common, args: &RetentionArgs) -> Result {
    let config = common.config()?;
    polytape::store::migrate(&config)?;
    let mut db = polytape::store::connect(&config)?;
    let cutoff = Utc::now()
        .date_naive()
        .with_day(1)
        .and_then(|first| first.checked_sub_months(Months::new(args.keep)))
        .ok_or("the cutoff month is out of range")?;
    if !args.no_archive {
        // An archive on record whose file is gone is no archive: refuse before dropping any.
        let tape = polytape::store::tape::partitions(&mut db)?
            .into_iter()
            .map(|p| (p.name, p.month, p.archive));
        let side = polytape::store::tape::side_partitions(&mut db)?
            .into_iter()
            .map(|p| (p.name, p.month, p.archive));
        for (name, month, archive) in tape.chain(side) {
            if let (true, Some((path, _))) = (month < cutoff, &archive)
                && !std::path::Path::new(path).exists()
            {
                return Err(format!(
                    "partition {name} was archived to {path}, which is gone: archive it again, \
                     or drop it with --no-archive"
                )
                .into());
            }
        }
    }
    let mut r = polytape::store::tape::drop_before(&mut db, cutoff, args.no_archive)?;
    let side = polytape::store::tape::drop_side_before(&mut db, cutoff, args.no_archive)?;
    r.dropped.extend(side.dropped);
    r.kept_unarchived.extend(side.kept_unarchived);
    let files = polytape::store::tape::remove_tape_files_before(&mut db, cutoff)?;
    if !files.is_empty() {
        println!(
            "retention: removed {} book tape files of the months dropped",
            files.len()
        );
    }
    println!(
        "retention: keeping {} months from {cutoff}; dropped {} partitions{}",
        args.keep,
        r.dropped.len(),
        if r.dropped.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.dropped.join(", "))
        }
    );
    if !r.kept_unarchived.is_empty() {
        println!(
            "retention: kept {} old partitions that have no archive ({}): run `polytape archive` \
             first, or add --no-archive",
            r.kept_unarchived.len(),
            r.kept_unarchived.join(", ")
        );
    }
    Ok(())
}

#[cfg(feature = "archive")]
pub(crate) use parquet_archive::archive;

#[cfg(feature = "archive")]
mod archive_file {
    //! What every archive file shares: a zstd Parquet writer on a temporary name beside the
    //! final one, and the step that makes it the archive without ever writing over one.

    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use arrow_schema::Schema;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    use crate::Result;

    /// The temporary file beside `path`, and a zstd Parquet writer on it.
    pub(super) fn create(path: &Path, schema: Arc<Schema>) -> Result<(PathBuf, ArrowWriter<File>)> {
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .build();
        let writer = ArrowWriter::try_new(File::create(&tmp)?, schema, Some(props))?;
        Ok((tmp, writer))
    }

    /// Gives the checked temporary file its final name. Never over an existing file: a hard
    /// link fails where `path` exists (a rename would replace it), and the temporary name goes
    /// once the final one stands. `what` names the partition in the error.
    pub(super) fn publish(tmp: &Path, path: &Path, what: &str) -> Result {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => Ok(std::fs::remove_file(tmp)?),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(tmp);
                Err(format!(
                    "{what}: {} exists already, and polytape never writes over an archive: \
                     move it aside, or archive to another --out",
                    path.display()
                )
                .into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The book side's months in Parquet: their rows as stored (snapshots' levels in the stored
/// encoding, decoded by the library's `decode_levels` or SQL `book_levels`; bars' prices as
/// the stored integers), with each token's asset id and market.
#[cfg(feature = "archive")]
mod side_archive {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::builder::{
        BinaryBuilder, Int32Builder, StringBuilder, TimestampMicrosecondBuilder,
    };
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use polytape::store::tape::SidePartition;

    use crate::Result;

    /// Columns: (name, type) in the order the query gives them; every one nullable but the
    /// first three.
    fn columns(parent: &str) -> Result<(&'static str, Vec<(&'static str, DataType)>)> {
        let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Ok(match parent {
            "book_snapshot" => (
                "SELECT k.asset_id, k.market, (extract(epoch FROM s.taken_at) * 1000000)::bigint,
                        (extract(epoch FROM s.blind_from) * 1000000)::bigint, s.source::text,
                        s.levels_unchecked, s.levels
                 FROM {p} s JOIN tokens k ON k.id = s.token ORDER BY s.taken_at",
                vec![
                    ("asset_id", DataType::Utf8),
                    ("market", DataType::Utf8),
                    ("taken_at", utc()),
                    ("blind_from", utc()),
                    ("source", DataType::Utf8),
                    ("levels_unchecked", DataType::Int32),
                    ("levels", DataType::Binary),
                ],
            ),
            "price_bar" => (
                "SELECT k.asset_id, k.market, (extract(epoch FROM b.minute) * 1000000)::bigint,
                        b.source::text, b.open2, b.high2, b.low2, b.close2, b.best_bid,
                        b.best_ask, b.trades, b.volume::text, b.notional::text,
                        b.last_trade_price::text
                 FROM {p} b JOIN tokens k ON k.id = b.token ORDER BY b.minute",
                vec![
                    ("asset_id", DataType::Utf8),
                    ("market", DataType::Utf8),
                    ("minute", utc()),
                    ("source", DataType::Utf8),
                    ("open2", DataType::Int32),
                    ("high2", DataType::Int32),
                    ("low2", DataType::Int32),
                    ("close2", DataType::Int32),
                    ("best_bid", DataType::Int32),
                    ("best_ask", DataType::Int32),
                    ("trades", DataType::Int32),
                    // Exact decimal text (the tape's numeric, as stored).
                    ("volume", DataType::Utf8),
                    ("notional", DataType::Utf8),
                    ("last_trade_price", DataType::Utf8),
                ],
            ),
            other => return Err(format!("no archive form for {other}").into()),
        })
    }

    /// Writes partition `p` to `path` (through a temporary file, read back, never over an
    /// existing file); returns its rows.
    pub(crate) fn write(db: &mut postgres::Client, p: &SidePartition, path: &Path) -> Result<i64> {
        let (query, cols) = columns(&p.parent)?;
        let schema = Arc::new(Schema::new(
            cols.iter()
                .enumerate()
                .map(|(i, (n, t))| Field::new(*n, t.clone(), i >= 3))
                .collect::<Vec<_>>(),
        ));
        let (tmp, mut writer) = super::archive_file::create(path, Arc::clone(&schema))?;
        let name = format!("\"{}\"", p.name.replace('"', "\"\""));
        let mut tx = db.transaction()?;
        let expected: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])?
            .try_get(0)?;
        let portal = tx.bind(&query.replace("{p}", &name), &[])?;
        let mut written = 0i64;
        loop {
            let rows = tx.query_portal(&portal, 50_000)?;
            if rows.is_empty() {
                break;
            }
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
            for (i, (_, t)) in cols.iter().enumerate() {
                let n = rows.len();
                let array: ArrayRef = match t {
                    DataType::Utf8 => {
                        let mut b = StringBuilder::with_capacity(n, n * 16);
                        for r in &rows {
                            b.append_option(r.try_get::<_, Option<&str>>(i)?);
                        }
                        Arc::new(b.finish())
                    }
                    DataType::Int32 => {
                        let mut b = Int32Builder::with_capacity(n);
                        for r in &rows {
                            b.append_option(r.try_get::<_, Option<i32>>(i)?);
                        }
                        Arc::new(b.finish())
                    }
                    DataType::Binary => {
                        let mut b = BinaryBuilder::with_capacity(n, n * 64);
                        for r in &rows {
                            b.append_option(r.try_get::<_, Option<&[u8]>>(i)?);
                        }
                        Arc::new(b.finish())
                    }
                    _ => {
                        let mut b =
                            TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                        for r in &rows {
                            b.append_option(r.try_get::<_, Option<i64>>(i)?);
                        }
                        Arc::new(b.finish())
                    }
                };
                arrays.push(array);
            }
            let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
            written += batch.num_rows() as i64;
            writer.write(&batch)?;
        }
        tx.commit()?;
        writer.close()?;
        let read: i64 = ParquetRecordBatchReaderBuilder::try_new(File::open(&tmp)?)?
            .build()?
            .map(|b| b.map(|b| b.num_rows() as i64))
            .sum::<std::result::Result<i64, _>>()?;
        if written != expected || read != written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "{}: wrote {written} rows of {expected}, read back {read}",
                p.name
            )
            .into());
        }
        super::archive_file::publish(&tmp, path, &p.name)?;
        Ok(written)
    }
}

#[cfg(feature = "archive")]
mod parquet_archive {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::builder::{
        Decimal128Builder, Int32Builder, StringBuilder, TimestampMicrosecondBuilder,
    };
    use arrow_array::{Array, ArrayRef, Decimal128Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use crate::Result;
    use crate::cli::{ArchiveArgs, Common};

    /// Decimal columns: 38 digits, 18 after the point (exact for every price and size the
    /// feed and the Data API send: USDC has 6 decimals).
    const PRECISION: u8 = 38;
    const SCALE: i8 = 18;
    /// Rows fetched and written per batch.
    const BATCH: i32 = 50_000;

    fn schema() -> Arc<Schema> {
        let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("asset_id", DataType::Utf8, false),
            Field::new("market", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(PRECISION, SCALE), false),
            Field::new("size", DataType::Decimal128(PRECISION, SCALE), false),
            Field::new("side", DataType::Utf8, false),
            Field::new("fee_rate_bps", DataType::Int32, true),
            Field::new("traded_at", utc(), false),
            Field::new("transaction_hash", DataType::Utf8, true),
            Field::new("received_at", utc(), false),
            Field::new("source", DataType::Utf8, false),
        ]))
    }

    /// Archives every partition of a month before `--before` that has no archive yet.
    pub(crate) fn archive(common: &Common, args: &ArchiveArgs) -> Result {
        let config = common.config()?;
        polytape::store::migrate(&config)?;
        let mut db = polytape::store::connect(&config)?;
        std::fs::create_dir_all(&args.out)?;
        let due: Vec<_> = polytape::store::tape::partitions(&mut db)?
            .into_iter()
            .filter(|p| p.month < args.before)
            .filter(|p| {
                p.late_rows
                    || p.archive
                        .as_ref()
                        .is_none_or(|(path, _)| !Path::new(path).exists())
            })
            .collect();
        let side_due: Vec<_> = polytape::store::tape::side_partitions(&mut db)?
            .into_iter()
            .filter(|p| p.month < args.before)
            .filter(|p| {
                p.archive
                    .as_ref()
                    .is_none_or(|(path, _)| !Path::new(path).exists())
            })
            .collect();
        if due.is_empty() && side_due.is_empty() {
            println!("archive: nothing to archive before {}", args.before);
        }
        for p in side_due {
            let path = args.out.join(format!("{}.parquet", p.name));
            let rows = super::side_archive::write(&mut db, &p, &path)?;
            let recorded = std::fs::canonicalize(&path)?;
            let recorded = recorded.to_string_lossy();
            polytape::store::tape::mark_side_archived(&mut db, &p, &recorded, rows)?;
            println!(
                "archive: {} → {recorded}: {rows} rows, {} bytes (read back whole)",
                p.name,
                std::fs::metadata(&path)?.len()
            );
        }
        for p in due {
            // Late rows of a month archived and dropped before go to a file of their own: the
            // month's archive is never written over.
            let path = if p.late_rows {
                let at = chrono::Utc::now().format("%Y%m%dT%H%M%S");
                args.out.join(format!("{}.late-{at}.parquet", p.name))
            } else {
                args.out.join(format!("{}.parquet", p.name))
            };
            let started = std::time::Instant::now();
            let rows = write_partition(&mut db, &p.name, &path)?;
            // Recorded with an absolute path: retention checks the file is still there.
            let recorded = std::fs::canonicalize(&path)?;
            let recorded = recorded.to_string_lossy();
            polytape::store::tape::mark_archived(&mut db, &p.name, &recorded, rows)?;
            println!(
                "archive: {} → {recorded}: {rows} rows, {} bytes, {:.1} s (read back whole)",
                p.name,
                std::fs::metadata(&path)?.len(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Writes one partition to `path` (through a temporary file), reads it back, and
    /// returns its row count.
    fn write_partition(db: &mut postgres::Client, partition: &str, path: &Path) -> Result<i64> {
        let (tmp, mut writer) = super::archive_file::create(path, schema())?;
        let mut tx = db.transaction()?;
        let expected: i64 = tx
            .query_one(&format!("SELECT count(*) FROM \"{partition}\""), &[])?
            .try_get(0)?;
        // Times as exact microseconds (extract gives a numeric).
        let portal = tx.bind(
            &format!(
                "SELECT k.asset_id, k.market, t.price::text, t.size::text,
                        CASE WHEN t.is_buy THEN 'BUY' ELSE 'SELL' END, t.fee_rate_bps::integer,
                        (extract(epoch FROM t.traded_at) * 1000000)::bigint,
                        '0x' || encode(t.tx, 'hex'),
                        (extract(epoch FROM t.received_at) * 1000000)::bigint,
                        CASE t.source WHEN 'd' THEN 'data_api' WHEN 'c' THEN 'chain'
                                      ELSE 'feed' END
                 FROM \"{partition}\" t JOIN tokens k ON k.id = t.token
                 ORDER BY t.traded_at"
            ),
            &[],
        )?;
        let (mut written, mut size_sum) = (0i64, 0i128);
        loop {
            let rows = tx.query_portal(&portal, BATCH)?;
            if rows.is_empty() {
                break;
            }
            let batch = to_batch(&rows)?;
            written += batch.num_rows() as i64;
            size_sum += column_sum(&batch, 3)?;
            writer.write(&batch)?;
        }
        tx.commit()?;
        writer.close()?;
        if written != expected {
            return Err(format!("{partition}: wrote {written} rows of {expected}").into());
        }
        // Read it back: the same number of rows, the same sizes to the last digit.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&tmp)?)?.build()?;
        let (mut read, mut read_sum) = (0i64, 0i128);
        for batch in reader {
            let batch = batch?;
            read += batch.num_rows() as i64;
            read_sum += column_sum(&batch, 3)?;
        }
        if (read, read_sum) != (written, size_sum) {
            return Err(format!(
                "{partition}: the archive reads back {read} rows (sizes {read_sum}), \
                 not {written} ({size_sum})"
            )
            .into());
        }
        super::archive_file::publish(&tmp, path, partition)?;
        Ok(written)
    }

    fn column_sum(batch: &RecordBatch, i: usize) -> Result<i128> {
        let col = batch
            .column(i)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .ok_or("not a decimal column")?;
        Ok((0..col.len()).map(|r| col.value(r)).sum())
    }

    fn to_batch(rows: &[postgres::Row]) -> Result<RecordBatch> {
        let n = rows.len();
        let mut asset = StringBuilder::with_capacity(n, n * 78);
        let mut market = StringBuilder::with_capacity(n, n * 66);
        let decimal =
            || Decimal128Builder::with_capacity(n).with_precision_and_scale(PRECISION, SCALE);
        let (mut price, mut size) = (decimal()?, decimal()?);
        let mut side = StringBuilder::with_capacity(n, n * 4);
        let mut fee = Int32Builder::with_capacity(n);
        let utc = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let (mut traded, mut received) = (utc(), utc());
        let mut hash = StringBuilder::with_capacity(n, n * 66);
        let mut source = StringBuilder::with_capacity(n, n * 4);
        for r in rows {
            asset.append_value(r.try_get::<_, &str>(0)?);
            market.append_value(r.try_get::<_, &str>(1)?);
            price.append_value(scaled(r.try_get(2)?)?);
            size.append_value(scaled(r.try_get(3)?)?);
            side.append_value(r.try_get::<_, &str>(4)?);
            fee.append_option(r.try_get::<_, Option<i32>>(5)?);
            traded.append_value(r.try_get(6)?);
            hash.append_option(r.try_get::<_, Option<&str>>(7)?);
            received.append_value(r.try_get(8)?);
            source.append_value(r.try_get::<_, &str>(9)?);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(asset.finish()),
            Arc::new(market.finish()),
            Arc::new(price.finish()),
            Arc::new(size.finish()),
            Arc::new(side.finish()),
            Arc::new(fee.finish()),
            Arc::new(traded.finish()),
            Arc::new(hash.finish()),
            Arc::new(received.finish()),
            Arc::new(source.finish()),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }

    /// A decimal's text as an integer of 10⁻¹⁸ units, exactly, or an error (never rounded).
    pub(super) fn scaled(text: &str) -> Result<i128> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let frac = frac.trim_end_matches('0');
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() && frac.is_empty() || !ok(int) || !ok(frac) {
            return Err(format!("{text:?} is not a plain decimal").into());
        }
        if frac.len() > SCALE as usize || int.trim_start_matches('0').len() > 20 {
            return Err(format!("{text:?} does not fit decimal(38, 18) exactly").into());
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse()? };
        let frac_units: i128 = if frac.is_empty() { 0 } else { frac.parse()? };
        let value = int * 10i128.pow(SCALE as u32)
            + frac_units * 10i128.pow(SCALE as u32 - frac.len() as u32);
        Ok(if negative { -value } else { value })
    }
}

#[cfg(all(test, feature = "archive"))]
mod tests {
    use super::parquet_archive::scaled;

    #[test]
    fn decimals_scale_exactly_or_not_at_all() {
        let e18 = 10i128.pow(18);
        assert_eq!(scaled("0.48").ok(), Some(48 * e18 / 100));
        assert_eq!(scaled("0.480000").ok(), Some(48 * e18 / 100));
        assert_eq!(scaled("12").ok(), Some(12 * e18));
        assert_eq!(scaled(".5").ok(), Some(e18 / 2));
        assert_eq!(scaled("-1.25").ok(), Some(-125 * e18 / 100));
        assert_eq!(scaled("0.000000000000000001").ok(), Some(1));
        assert!(
            scaled("0.0000000000000000001").is_err(),
            "19 decimals: refused, not rounded"
        );
        assert!(
            scaled("123456789012345678901").is_err(),
            "21 integer digits"
        );
        assert!(scaled("1e5").is_err() && scaled("").is_err() && scaled(".").is_err());
    }
}
