//! How the book tape's rows are written in a segment (its local, CRC-framed, crash-safe form
//! before the Parquet file): compact, because every book event the sockets apply passes
//! through it, tens of thousands a second.
//!
//! A segment opens with a [`MAGIC`] record. Each later record (the rows of one sync, up to a
//! second's) stands alone: a token's ids are written in full at its first row in the record
//! and by a small index after, times as differences from the record's row before, numbers
//! as variable-length integers. A row costs ~15 bytes against ~180 in the first format, which
//! wrote both ids in every row (that format, a segment without the magic record, is still
//! read: a segment an older version left is finished at the next start).
//!
//! Records stand alone so that a write cut back after an error (the tape cuts a torn
//! record off and goes on) never leaves a later record naming tokens it cannot resolve.

use std::collections::HashMap;
use std::sync::Arc;

use super::number::{Price, Side, Size};
use super::tape::TapeRow;

/// The payload of a segment's first record in this format (no row of the first format is
/// this short, so a first-format segment is never taken for this one).
pub(super) const MAGIC: &[u8] = b"polytape-tape-2\n";

/// What a new record's encoder and decoder start from.
#[derive(Default)]
struct Deltas {
    timestamp_us: i64,
    local_timestamp_us: i64,
}

/// Writes rows into one record; [`Encoder::start`] at each record's start.
#[derive(Default)]
pub(super) struct Encoder {
    /// Index of each token written in this record, by the addresses of its two ids (rows
    /// share the connections' `Arc`s; `held` keeps them alive, so an address names one
    /// token for the record's life).
    index: HashMap<(usize, usize), u32>,
    held: Vec<(Arc<str>, Arc<str>)>,
    /// The last row's ids and index: rows come in runs of one token.
    last: Option<(usize, usize, u32)>,
    before: Deltas,
}

fn ids(r: &TapeRow) -> (usize, usize) {
    (
        Arc::as_ptr(&r.asset_id).cast::<u8>() as usize,
        Arc::as_ptr(&r.market).cast::<u8>() as usize,
    )
}

impl Encoder {
    /// A new record starts: no token is known in it yet.
    pub(super) fn start(&mut self) {
        self.index.clear();
        self.held.clear();
        self.last = None;
        self.before = Deltas::default();
    }

    pub(super) fn row(&mut self, r: &TapeRow, out: &mut Vec<u8>) {
        let key = ids(r);
        let known = match self.last {
            Some((a, m, i)) if (a, m) == key => Some(i),
            _ => self.index.get(&key).copied(),
        };
        let i = match known {
            Some(i) => {
                put_varint(out, u64::from(i) + 1);
                i
            }
            None => {
                let i = self.held.len() as u32;
                out.push(0);
                put_str(out, &r.asset_id);
                put_str(out, &r.market);
                self.index.insert(key, i);
                self.held
                    .push((Arc::clone(&r.asset_id), Arc::clone(&r.market)));
                i
            }
        };
        self.last = Some((key.0, key.1, i));
        put_signed(out, r.timestamp_us.wrapping_sub(self.before.timestamp_us));
        put_signed(
            out,
            r.local_timestamp_us
                .wrapping_sub(self.before.local_timestamp_us),
        );
        self.before = Deltas {
            timestamp_us: r.timestamp_us,
            local_timestamp_us: r.local_timestamp_us,
        };
        out.push(flags(r));
        put_varint(out, r.price.units());
        put_varint(out, r.amount.units());
    }
}

/// Reads the rows of one record; [`Decoder::start`] at each record's start.
#[derive(Default)]
pub(super) struct Decoder {
    tokens: Vec<(Arc<str>, Arc<str>)>,
    before: Deltas,
}

impl Decoder {
    pub(super) fn start(&mut self) {
        self.tokens.clear();
        self.before = Deltas::default();
    }

    /// The next row of `b`, its ids shared through `names` across records; `None` if it is
    /// cut short or makes no sense.
    pub(super) fn row(
        &mut self,
        b: &mut &[u8],
        names: &mut HashMap<Vec<u8>, Arc<str>>,
    ) -> Option<TapeRow> {
        let (asset_id, market) = match varint(b)? {
            0 => {
                let asset = name(b, names)?;
                let market = name(b, names)?;
                self.tokens.push((Arc::clone(&asset), Arc::clone(&market)));
                (asset, market)
            }
            i => {
                let (a, m) = self.tokens.get(usize::try_from(i - 1).ok()?)?;
                (Arc::clone(a), Arc::clone(m))
            }
        };
        let timestamp_us = self.before.timestamp_us.wrapping_add(signed(b)?);
        let local_timestamp_us = self.before.local_timestamp_us.wrapping_add(signed(b)?);
        self.before = Deltas {
            timestamp_us,
            local_timestamp_us,
        };
        let flags = take(b, 1)?[0];
        let price = Price::from_units(varint(b)?)?;
        let amount = Size::from_units(varint(b)?);
        assemble(
            (asset_id, market),
            (timestamp_us, local_timestamp_us),
            (flags, price, amount),
        )
    }
}

/// A row of the first format (both ids in full, fixed-width numbers).
pub(super) fn legacy_row(b: &mut &[u8], names: &mut HashMap<Vec<u8>, Arc<str>>) -> Option<TapeRow> {
    let asset_id = name(b, names)?;
    let market = name(b, names)?;
    let i64_at = |b: &mut &[u8]| Some(i64::from_le_bytes(take(b, 8)?.try_into().ok()?));
    let timestamp_us = i64_at(b)?;
    let local_timestamp_us = i64_at(b)?;
    let flags = take(b, 1)?[0];
    let price = Price::from_units(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))?;
    let amount = Size::from_units(u64::from_le_bytes(take(b, 8)?.try_into().ok()?));
    assemble(
        (asset_id, market),
        (timestamp_us, local_timestamp_us),
        (flags, price, amount),
    )
}

/// A row's flags byte, in both formats: bit 0 a snapshot row, bit 1 the ask side.
fn flags(r: &TapeRow) -> u8 {
    u8::from(r.is_snapshot) | if r.side == Side::Ask { 2 } else { 0 }
}

/// A decoded row; `None` for flags no row has.
fn assemble(
    (asset_id, market): (Arc<str>, Arc<str>),
    (timestamp_us, local_timestamp_us): (i64, i64),
    (flags, price, amount): (u8, Price, Size),
) -> Option<TapeRow> {
    (flags <= 3).then_some(TapeRow {
        asset_id,
        market,
        timestamp_us,
        local_timestamp_us,
        is_snapshot: flags & 1 != 0,
        side: if flags & 2 != 0 { Side::Ask } else { Side::Bid },
        price,
        amount,
    })
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = b.split_at_checked(n)?;
    *b = rest;
    Some(head)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn name(b: &mut &[u8], names: &mut HashMap<Vec<u8>, Arc<str>>) -> Option<Arc<str>> {
    let len = u16::from_le_bytes(take(b, 2)?.try_into().ok()?) as usize;
    let bytes = take(b, len)?;
    if let Some(a) = names.get(bytes) {
        return Some(Arc::clone(a));
    }
    let a: Arc<str> = Arc::from(std::str::from_utf8(bytes).ok()?);
    names.insert(bytes.to_vec(), Arc::clone(&a));
    Some(a)
}

/// LEB128: seven bits a byte, low first.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(b, 1)?[0];
        v |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Zigzag, so that small differences either way are small.
fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn signed(b: &mut &[u8]) -> Option<i64> {
    let u = varint(b)?;
    Some((u >> 1) as i64 ^ -((u & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(asset: &Arc<str>, market: &Arc<str>, ts: i64, local: i64, ask: bool) -> TapeRow {
        TapeRow {
            asset_id: Arc::clone(asset),
            market: Arc::clone(market),
            timestamp_us: ts,
            local_timestamp_us: local,
            is_snapshot: !ask,
            side: if ask { Side::Ask } else { Side::Bid },
            price: Price::parse("0.0025").expect("p"),
            amount: Size::parse("123456.789012").expect("s"),
        }
    }

    #[test]
    fn records_round_trip_and_stand_alone() {
        let (a, b, m) = (Arc::from("111"), Arc::from("222"), Arc::from("0xabc"));
        // A second Arc of the same id: a token written twice is no harm.
        let a2: Arc<str> = Arc::from("111");
        let rows = [
            row(&a, &m, 1_700_000_000_000_000, 1_700_000_000_001_000, false),
            row(&a, &m, 1_700_000_000_000_000, 1_700_000_000_001_000, true),
            row(&b, &m, 1_699_999_999_000_000, 1_700_000_000_001_001, true),
            // The next record names b first: it must write b in full again.
            row(&b, &m, 1_700_000_000_400_000, 1_700_000_000_001_500, false),
            row(&a2, &m, 1_700_000_000_500_000, 1_700_000_000_002_000, false),
            row(&a, &m, i64::MIN, i64::MAX, true),
        ];
        let mut enc = Encoder::default();
        let mut records = Vec::new();
        for chunk in [&rows[..3], &rows[3..]] {
            enc.start();
            let mut buf = Vec::new();
            for r in chunk {
                enc.row(r, &mut buf);
            }
            records.push(buf);
        }
        assert!(
            records[0].len() < 3 * 40,
            "compact: {} bytes for three rows",
            records[0].len()
        );
        let mut names = HashMap::new();
        let mut dec = Decoder::default();
        let mut back = Vec::new();
        // The second record read first, alone: it resolves every token it names.
        for record in [&records[1], &records[0], &records[1]] {
            dec.start();
            let mut b = &record[..];
            while !b.is_empty() {
                back.push(dec.row(&mut b, &mut names).expect("row"));
            }
        }
        assert_eq!(back, [&rows[3..], &rows[..3], &rows[3..]].concat());
        // Cut short anywhere: no row, never a wrong one.
        for cut in 0..records[0].len() {
            dec.start();
            let mut b = &records[0][..cut];
            let mut n = 0;
            while let Some(r) = dec.row(&mut b, &mut names) {
                assert_eq!(r, rows[n]);
                n += 1;
            }
        }
    }

    #[test]
    fn an_index_the_record_never_defined_is_refused() {
        let mut out = Vec::new();
        put_varint(&mut out, 1); // the first token, never written in this record
        put_signed(&mut out, 0);
        put_signed(&mut out, 0);
        out.extend_from_slice(&[0, 1, 1]);
        let mut dec = Decoder::default();
        assert_eq!(dec.row(&mut &out[..], &mut HashMap::new()), None);
    }
}
