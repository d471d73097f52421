//! One spool record: a batch of trades or a gap, with the time it was spooled, in a compact
//! binary form. The framing around it (length and CRC) is the segment's business.

use crate::book::{BookSnapshot, SnapshotSource, decode_levels, encode_levels};
use crate::feed::{Decimal, Gap, Side, Trade};
use crate::prices::PriceBar;

/// What the spool holds, in the order it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Trades, written to `trades` in one batch on replay.
    Trades(Vec<Trade>),
    /// A gap record.
    Gap(Gap),
    /// Book snapshots, written to `book_snapshot` in one batch on replay.
    Books(Vec<BookSnapshot>),
    /// Minute price bars, written to `price_bar` in one batch on replay.
    Bars(Vec<PriceBar>),
}

impl Entry {
    /// Trades it carries.
    pub(crate) fn trades(&self) -> usize {
        match self {
            Entry::Trades(t) => t.len(),
            Entry::Gap(_) | Entry::Books(_) | Entry::Bars(_) => 0,
        }
    }
}

const TRADES: u8 = 1;
const GAP: u8 = 2;
const BOOKS: u8 = 3;
const BARS: u8 = 4;

/// Appends `entry`, spooled at `spooled_ms`, to `out`.
pub(crate) fn encode(entry: &Entry, spooled_ms: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&spooled_ms.to_le_bytes());
    match entry {
        Entry::Trades(trades) => {
            out.push(TRADES);
            put_u32(out, trades.len() as u32);
            for t in trades {
                put_str(out, &t.asset_id);
                put_str(out, &t.market);
                put_str(out, t.price.as_str());
                put_str(out, t.size.as_str());
                out.push(match t.side {
                    Side::Buy => 0,
                    Side::Sell => 1,
                });
                match t.fee_rate_bps {
                    Some(f) => {
                        out.push(1);
                        out.extend_from_slice(&f.to_le_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&t.timestamp_ms.to_le_bytes());
                put_opt_str(out, t.transaction_hash.as_deref());
                out.extend_from_slice(&t.received_at_us.to_le_bytes());
            }
        }
        Entry::Gap(g) => {
            out.push(GAP);
            match g.connection {
                Some(c) => {
                    out.push(1);
                    put_u32(out, c as u32);
                }
                None => out.push(0),
            }
            out.extend_from_slice(&g.from_ms.to_le_bytes());
            out.extend_from_slice(&g.to_ms.to_le_bytes());
            put_str(out, &g.reason);
            put_u32(out, g.asset_ids.len() as u32);
            for a in &g.asset_ids {
                put_str(out, a);
            }
        }
        Entry::Books(books) => {
            out.push(BOOKS);
            put_u32(out, books.len() as u32);
            let mut levels = Vec::new();
            for b in books {
                put_str(out, &b.asset_id);
                put_str(out, &b.market);
                out.extend_from_slice(&b.taken_at_ms.to_le_bytes());
                out.push(match b.source {
                    SnapshotSource::Feed => 0,
                    SnapshotSource::Rest => 1,
                });
                // Flags: 1 a blind window's start follows, 2 a count of unchecked levels.
                let flags =
                    u8::from(b.blind_from_ms.is_some()) | (u8::from(b.levels_unchecked > 0) << 1);
                out.push(flags);
                if let Some(t) = b.blind_from_ms {
                    out.extend_from_slice(&t.to_le_bytes());
                }
                if b.levels_unchecked > 0 {
                    put_u32(out, b.levels_unchecked);
                }
                // The stored form: one encoding of a book's levels, here and in the table.
                levels.clear();
                encode_levels(&b.bids, &b.asks, &mut levels);
                put_u32(out, levels.len() as u32);
                out.extend_from_slice(&levels);
            }
        }
        Entry::Bars(bars) => {
            out.push(BARS);
            put_u32(out, bars.len() as u32);
            for b in bars {
                put_str(out, &b.asset_id);
                put_str(out, &b.market);
                out.extend_from_slice(&b.minute_ms.to_le_bytes());
                for v in [b.open2, b.high2, b.low2, b.close2, b.best_bid, b.best_ask] {
                    match v {
                        Some(v) => {
                            out.push(1);
                            put_u32(out, v);
                        }
                        None => out.push(0),
                    }
                }
            }
        }
    }
}

/// Reads back what [`encode`] wrote: (spooled at, entry). A record that passed its CRC and
/// still does not decode is reported, never guessed at.
pub(crate) fn decode(mut b: &[u8]) -> Result<(i64, Entry), String> {
    let r = &mut b;
    let spooled_ms = get_i64(r)?;
    let entry = match get_u8(r)? {
        TRADES => {
            let n = get_u32(r)? as usize;
            // Each trade takes at least 40 bytes: a count past that is corrupt.
            if n > r.len() / 40 + 1 {
                return Err(format!("{n} trades in {} bytes", r.len()));
            }
            let mut trades = Vec::with_capacity(n);
            for _ in 0..n {
                let asset_id = get_str(r)?;
                let market = get_str(r)?;
                let price = get_decimal(r)?;
                let size = get_decimal(r)?;
                let side = match get_u8(r)? {
                    0 => Side::Buy,
                    1 => Side::Sell,
                    s => return Err(format!("side {s}")),
                };
                let fee_rate_bps = match get_u8(r)? {
                    0 => None,
                    _ => Some(i32::from_le_bytes(take::<4>(r)?)),
                };
                let timestamp_ms = get_i64(r)?;
                let transaction_hash = match get_u8(r)? {
                    0 => None,
                    _ => Some(get_str(r)?),
                };
                let received_at_us = get_i64(r)?;
                trades.push(Trade {
                    asset_id,
                    market,
                    price,
                    size,
                    side,
                    fee_rate_bps,
                    timestamp_ms,
                    transaction_hash,
                    received_at_us,
                });
            }
            Entry::Trades(trades)
        }
        GAP => {
            let connection = match get_u8(r)? {
                0 => None,
                _ => Some(get_u32(r)? as usize),
            };
            let from_ms = get_i64(r)?;
            let to_ms = get_i64(r)?;
            let reason = get_str(r)?;
            let n = get_u32(r)? as usize;
            if n > r.len() / 4 + 1 {
                return Err(format!("{n} asset ids in {} bytes", r.len()));
            }
            let mut asset_ids = Vec::with_capacity(n);
            for _ in 0..n {
                asset_ids.push(get_str(r)?);
            }
            Entry::Gap(Gap {
                connection,
                from_ms,
                to_ms,
                reason,
                asset_ids,
            })
        }
        BOOKS => {
            let n = get_u32(r)? as usize;
            // Each snapshot takes at least 30 bytes: a count past that is corrupt.
            if n > r.len() / 30 + 1 {
                return Err(format!("{n} book snapshots in {} bytes", r.len()));
            }
            let mut books = Vec::with_capacity(n);
            for _ in 0..n {
                let asset_id = get_str(r)?;
                let market = get_str(r)?;
                let taken_at_ms = get_i64(r)?;
                let source = match get_u8(r)? {
                    0 => SnapshotSource::Feed,
                    1 => SnapshotSource::Rest,
                    s => return Err(format!("snapshot source {s}")),
                };
                let flags = get_u8(r)?;
                if flags > 3 {
                    return Err(format!("snapshot flags {flags}"));
                }
                let blind_from_ms = if flags & 1 != 0 {
                    Some(get_i64(r)?)
                } else {
                    None
                };
                let levels_unchecked = if flags & 2 != 0 { get_u32(r)? } else { 0 };
                let len = get_u32(r)? as usize;
                if len > r.len() {
                    return Err("book levels past the record's end".into());
                }
                let (levels, rest) = r.split_at(len);
                *r = rest;
                let (bids, asks) =
                    decode_levels(levels).ok_or_else(|| "book levels unreadable".to_owned())?;
                books.push(BookSnapshot {
                    asset_id,
                    market,
                    taken_at_ms,
                    bids,
                    asks,
                    source,
                    blind_from_ms,
                    levels_unchecked,
                });
            }
            Entry::Books(books)
        }
        BARS => {
            let n = get_u32(r)? as usize;
            // Each bar takes at least 22 bytes: a count past that is corrupt.
            if n > r.len() / 22 + 1 {
                return Err(format!("{n} price bars in {} bytes", r.len()));
            }
            let mut bars = Vec::with_capacity(n);
            for _ in 0..n {
                let asset_id = get_str(r)?;
                let market = get_str(r)?;
                let minute_ms = get_i64(r)?;
                let mut v = [None; 6];
                for slot in &mut v {
                    *slot = match get_u8(r)? {
                        0 => None,
                        _ => Some(get_u32(r)?),
                    };
                }
                let [open2, high2, low2, close2, best_bid, best_ask] = v;
                bars.push(PriceBar {
                    asset_id,
                    market,
                    minute_ms,
                    open2,
                    high2,
                    low2,
                    close2,
                    best_bid,
                    best_ask,
                });
            }
            Entry::Bars(bars)
        }
        k => return Err(format!("unknown record kind {k}")),
    };
    if !r.is_empty() {
        return Err(format!("{} bytes after the record", r.len()));
    }
    Ok((spooled_ms, entry))
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], String> {
    let (head, rest) = r
        .split_first_chunk::<N>()
        .ok_or_else(|| "record ends early".to_owned())?;
    *r = rest;
    Ok(*head)
}

fn get_u8(r: &mut &[u8]) -> Result<u8, String> {
    Ok(take::<1>(r)?[0])
}

fn get_u32(r: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(take::<4>(r)?))
}

fn get_i64(r: &mut &[u8]) -> Result<i64, String> {
    Ok(i64::from_le_bytes(take::<8>(r)?))
}

fn get_str(r: &mut &[u8]) -> Result<String, String> {
    let n = get_u32(r)? as usize;
    if n > r.len() {
        return Err("string past the record's end".into());
    }
    let (s, rest) = r.split_at(n);
    *r = rest;
    String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".to_owned())
}

fn get_decimal(r: &mut &[u8]) -> Result<Decimal, String> {
    let s = get_str(r)?;
    Decimal::parse(&s).ok_or_else(|| format!("not a decimal: {s:?}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn p(s: &str) -> crate::book::Price {
        crate::book::Price::parse(s).expect("price")
    }

    fn q(s: &str) -> crate::book::Size {
        crate::book::Size::parse(s).expect("size")
    }

    /// A trade for tests, varied by `i` (every optional field both ways).
    pub(crate) fn trade(i: u64) -> Trade {
        Trade {
            asset_id: format!("asset-{}", i % 7),
            market: "0xmarket".into(),
            price: Decimal::parse(&format!("0.{:02}", i % 100)).expect("decimal"),
            size: Decimal::parse(&format!("{}.5", i + 1)).expect("decimal"),
            side: if i.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            fee_rate_bps: i.is_multiple_of(3).then_some(i as i32),
            timestamp_ms: 1_764_000_000_000 + i as i64,
            transaction_hash: (!i.is_multiple_of(4)).then(|| format!("0x{i:064x}")),
            received_at_us: 1_764_000_000_000_000 + i as i64,
        }
    }

    #[test]
    fn round_trips() {
        let entries = [
            Entry::Trades((0..25).map(trade).collect()),
            Entry::Trades(vec![]),
            Entry::Gap(Gap {
                connection: Some(3),
                from_ms: 1,
                to_ms: 2,
                reason: "closed".into(),
                asset_ids: vec!["a".into(), "b".into()],
            }),
            Entry::Gap(Gap {
                connection: None,
                from_ms: -5,
                to_ms: i64::MAX,
                reason: "crash: ünïcode".into(),
                asset_ids: vec![],
            }),
            // Book snapshots ride the spool too: an outage loses none.
            Entry::Books(vec![
                BookSnapshot {
                    asset_id: "asset-1".into(),
                    market: "0xmarket".into(),
                    taken_at_ms: 1_764_000_000_999,
                    bids: vec![(p("0.48"), q("120.5")), (p("0.47"), q("33"))],
                    asks: vec![(p("0.5"), q("0.000001"))],
                    source: SnapshotSource::Feed,
                    blind_from_ms: None,
                    levels_unchecked: 3,
                },
                BookSnapshot {
                    asset_id: "asset-2".into(),
                    market: "0xmarket".into(),
                    taken_at_ms: 5,
                    bids: vec![],
                    asks: vec![],
                    source: SnapshotSource::Rest,
                    blind_from_ms: Some(1),
                    levels_unchecked: 0,
                },
            ]),
            // And price bars.
            Entry::Bars(vec![PriceBar {
                asset_id: "asset-1".into(),
                market: "0xmarket".into(),
                minute_ms: 1_764_000_060_000,
                open2: Some(960_000),
                high2: Some(1_000_001),
                low2: None,
                close2: Some(u32::MAX),
                best_bid: Some(0),
                best_ask: None,
            }]),
        ];
        for e in entries {
            let mut buf = Vec::new();
            encode(&e, 42, &mut buf);
            assert_eq!(decode(&buf), Ok((42, e.clone())));
            // Every truncation is an error, never a panic or a different entry.
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn corrupt_records_are_errors() {
        let mut buf = Vec::new();
        encode(&Entry::Trades(vec![trade(1)]), 0, &mut buf);
        let mut bad_kind = buf.clone();
        bad_kind[8] = 9;
        assert!(decode(&bad_kind).is_err());
        let mut huge_count = buf.clone();
        huge_count[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge_count).is_err());
        let mut trailing = buf.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
