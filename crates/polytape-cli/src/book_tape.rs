//! The book tape's Parquet files (issue 18): the library keeps each period crash-safe on
//! local disk and hands it here when it closes; this writes it as Parquet, in the columns of
//! Tardis `incremental_book_L2` (`asset_id`, `market`, `timestamp`, `local_timestamp`,
//! `is_snapshot`, `side`, `price`, `amount`), zstd-compressed.
//!
//! Prices and amounts are exact decimals with six places (the exchange's tick and USDC's
//! decimals); with precision 18 they are 8-byte integers in the file, and with the strings
//! dictionary-encoded, the timestamps delta-encoded and zstd on top a book event takes a few
//! bytes (BENCHMARKS.md, "book tape").

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, Int32Builder, TimestampMicrosecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use polytape::book::{Side, TapeFinisher, TapeRow};

/// Decimal columns: 18 digits, 6 after the point.
const PRECISION: u8 = 18;
const SCALE: i8 = 6;
/// Rows per record batch (and row group granularity).
const BATCH: usize = 262_144;

/// The tape's schema.
pub(crate) fn schema() -> Arc<Schema> {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("asset_id", dict(), false),
        Field::new("market", dict(), false),
        Field::new("timestamp", utc(), false),
        Field::new("local_timestamp", utc(), false),
        Field::new("is_snapshot", DataType::Boolean, false),
        Field::new("side", dict(), false),
        Field::new("price", DataType::Decimal128(PRECISION, SCALE), false),
        Field::new("amount", DataType::Decimal128(PRECISION, SCALE), false),
    ]))
}

/// Writes the tape's files as Parquet.
pub(crate) struct ParquetTape;

/// A dictionary column built from the rows' shared ids: a row's key is found by the address
/// of its `Arc` (the segment reader hands out one `Arc` per distinct id), so an id is hashed
/// once a batch, not once a row; the last key is kept, as rows come in runs of one token.
/// Two `Arc`s of one id only make two equal dictionary values.
#[derive(Default)]
struct Ids {
    keys: Vec<i32>,
    values: Vec<Arc<str>>,
    index: HashMap<usize, i32>,
    last: Option<(usize, i32)>,
}

impl Ids {
    fn push(&mut self, id: &Arc<str>) {
        let at = Arc::as_ptr(id).cast::<u8>() as usize;
        let key = match self.last {
            Some((a, k)) if a == at => k,
            _ => *self.index.entry(at).or_insert_with(|| {
                self.values.push(Arc::clone(id));
                self.values.len() as i32 - 1
            }),
        };
        self.last = Some((at, key));
        self.keys.push(key);
    }

    fn finish(&mut self) -> io::Result<DictionaryArray<Int32Type>> {
        let keys = Int32Array::from(std::mem::take(&mut self.keys));
        let values = StringArray::from_iter_values(self.values.iter().map(|v| &**v));
        // The `Arc`s are held until here, so no address was reused within the batch.
        self.values.clear();
        self.index.clear();
        self.last = None;
        DictionaryArray::try_new(keys, Arc::new(values)).map_err(io::Error::other)
    }
}

struct Columns {
    asset: Ids,
    market: Ids,
    ts: TimestampMicrosecondBuilder,
    local: TimestampMicrosecondBuilder,
    snapshot: BooleanBuilder,
    /// Keys into `["bid", "ask"]`.
    side: Int32Builder,
    price: Decimal128Builder,
    amount: Decimal128Builder,
    rows: usize,
}

impl Columns {
    fn new() -> Columns {
        let decimal = || {
            Decimal128Builder::with_capacity(BATCH)
                .with_precision_and_scale(PRECISION, SCALE)
                .unwrap_or_else(|_| Decimal128Builder::with_capacity(BATCH))
        };
        Columns {
            asset: Ids::default(),
            market: Ids::default(),
            ts: TimestampMicrosecondBuilder::with_capacity(BATCH).with_timezone("UTC"),
            local: TimestampMicrosecondBuilder::with_capacity(BATCH).with_timezone("UTC"),
            snapshot: BooleanBuilder::with_capacity(BATCH),
            side: Int32Builder::with_capacity(BATCH),
            price: decimal(),
            amount: decimal(),
            rows: 0,
        }
    }

    fn push(&mut self, r: &TapeRow) {
        self.asset.push(&r.asset_id);
        self.market.push(&r.market);
        self.ts.append_value(r.timestamp_us);
        self.local.append_value(r.local_timestamp_us);
        self.snapshot.append_value(r.is_snapshot);
        self.side.append_value(match r.side {
            Side::Bid => 0,
            Side::Ask => 1,
        });
        self.price.append_value(i128::from(r.price.units()));
        self.amount.append_value(i128::from(r.amount.units()));
        self.rows += 1;
    }

    fn batch(&mut self) -> io::Result<RecordBatch> {
        let sides = StringArray::from(vec!["bid", "ask"]);
        let side = DictionaryArray::<Int32Type>::try_new(self.side.finish(), Arc::new(sides))
            .map_err(io::Error::other)?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.asset.finish()?),
            Arc::new(self.market.finish()?),
            Arc::new(self.ts.finish()),
            Arc::new(self.local.finish()),
            Arc::new(self.snapshot.finish()),
            Arc::new(side),
            Arc::new(self.price.finish()),
            Arc::new(self.amount.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(schema(), columns).map_err(io::Error::other)
    }
}

impl TapeFinisher for ParquetTape {
    fn write(
        &self,
        rows: &mut dyn Iterator<Item = io::Result<TapeRow>>,
        path: &Path,
    ) -> io::Result<()> {
        // Times rise almost monotonically: stored as deltas (a byte or two each) rather than
        // dictionaries of 8-byte values.
        let delta = |props: parquet::file::properties::WriterPropertiesBuilder, col: &str| {
            let col = parquet::schema::types::ColumnPath::from(col);
            props
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_encoding(col, Encoding::DELTA_BINARY_PACKED)
        };
        // zstd at level 3: on columns already dictionary- and delta-encoded, level 9 saved
        // no measurable bytes (10.21 against 10.13 bytes a book event, back to back) for half
        // again the book side's CPU (+17.3 points of a core against +11.5; BENCHMARKS.md,
        // "One pass per frame").
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).map_err(io::Error::other)?,
            ))
            .set_max_row_group_size(4 * BATCH);
        let props = delta(delta(props, "timestamp"), "local_timestamp").build();
        let mut writer = ArrowWriter::try_new(File::create(path)?, schema(), Some(props))
            .map_err(io::Error::other)?;
        let mut cols = Columns::new();
        for row in rows {
            cols.push(&row?);
            if cols.rows >= BATCH {
                writer.write(&cols.batch()?).map_err(io::Error::other)?;
            }
        }
        if cols.rows > 0 {
            writer.write(&cols.batch()?).map_err(io::Error::other)?;
        }
        writer.close().map_err(io::Error::other)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polytape::book::{Price, Size};

    /// What writing a period costs, on rows shaped like the live mix (4,600 tokens, runs of
    /// one token, rising times). A measurement, not a check: `cargo test --release -p
    /// polytape-cli parquet_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn parquet_cost() {
        let tokens: Vec<(Arc<str>, Arc<str>)> = (0..4_600u64)
            .map(|i| {
                let id = format!("{:077}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let market = format!("0x{:064x}", i / 2);
                (Arc::from(id), Arc::from(market))
            })
            .collect();
        let rows: Vec<TapeRow> = (0..2_000_000u64)
            .map(|i| {
                let (asset_id, market) =
                    tokens[((i / 3).wrapping_mul(7919) % 4_600) as usize].clone();
                TapeRow {
                    asset_id,
                    market,
                    timestamp_us: 1_780_000_000_000_000 + (i as i64) * 2,
                    local_timestamp_us: 1_780_000_000_000_000 + (i as i64) * 2 + 900,
                    is_snapshot: i % 50 == 0,
                    side: if i % 2 == 0 { Side::Bid } else { Side::Ask },
                    price: Price::from_units(10_000 * (1 + i % 98)).expect("price"),
                    amount: Size::from_units(1_000_000 * (i % 997)),
                }
            })
            .collect();
        let path =
            std::env::temp_dir().join(format!("parquet-cost-{}.parquet", std::process::id()));
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let mut it = rows.iter().cloned().map(Ok);
            ParquetTape.write(&mut it, &path).expect("write");
            let secs = started.elapsed().as_secs_f64();
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!(
                "{} rows: {:.0} ns a row, {:.2} bytes a row",
                rows.len(),
                secs / rows.len() as f64 * 1e9,
                bytes as f64 / rows.len() as f64
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}
