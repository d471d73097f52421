//! A book snapshot, as it is stored (`book_snapshot`, migration V11) and spooled: both sides'
//! levels, best first, in a compact binary form that the SQL function `book_levels` decodes
//! for the `book_snapshots` view.
//!
//! The form: a version byte (1), the price unit's and the size unit's decimal places (the
//! fewest that hold every price, every size, exactly), then LEB128 integers: the bid and ask
//! counts, the best bid and each lower bid's distance below the one before, the best ask and
//! each higher ask's distance above, the bid sizes, the ask sizes. Prices a tick apart cost a
//! byte each; a ten-level book takes about sixty bytes.

use super::number::{Price, Size};

/// Where a snapshot's book came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// Rebuilt from the market channel (`'feed'`).
    Feed,
    /// Fetched from CLOB REST (`'rest'`).
    Rest,
}

/// One token's book at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookSnapshot {
    /// The token.
    pub asset_id: String,
    /// Its market (condition id).
    pub market: String,
    /// The moment it is the book of (Unix ms).
    pub taken_at_ms: i64,
    /// Bid levels, best (highest) first.
    pub bids: Vec<(Price, Size)>,
    /// Ask levels, best (lowest) first.
    pub asks: Vec<(Price, Size)>,
    /// Where it came from.
    pub source: SnapshotSource,
    /// When it ends a window without a trusted book (a resync, a reconnection): where that
    /// window began (Unix ms).
    pub blind_from_ms: Option<i64>,
    /// Of a periodic cut: how many of its levels were changed between the cut and the fresh
    /// book that vouched for it, so could not be checked against it (0: every level was).
    pub levels_unchecked: u32,
}

/// Levels of one side, best first.
pub type Levels = Vec<(Price, Size)>;

const VERSION: u8 = 1;
const DECIMALS: u32 = 6;

/// The fewest decimal places that hold every value exactly.
fn decimals(values: impl Iterator<Item = u64>) -> u32 {
    let mut d = 0;
    for v in values {
        while d < DECIMALS && v % 10u64.pow(DECIMALS - d) != 0 {
            d += 1;
        }
    }
    d
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Appends the levels in the stored form. Bids must be best (highest) first, asks best
/// (lowest) first, as [`super::Book::levels`] gives them.
pub fn encode_levels(bids: &[(Price, Size)], asks: &[(Price, Size)], out: &mut Vec<u8>) {
    let all = || bids.iter().chain(asks);
    let pd = decimals(all().map(|(p, _)| p.units()));
    let sd = decimals(all().map(|(_, s)| s.units()));
    let (pu, su) = (10u64.pow(DECIMALS - pd), 10u64.pow(DECIMALS - sd));
    out.extend_from_slice(&[VERSION, pd as u8, sd as u8]);
    put_varint(out, bids.len() as u64);
    put_varint(out, asks.len() as u64);
    let mut prev = 0;
    for (i, (p, _)) in bids.iter().enumerate() {
        let v = p.units() / pu;
        put_varint(out, if i == 0 { v } else { prev - v.min(prev) });
        prev = v;
    }
    for (i, (p, _)) in asks.iter().enumerate() {
        let v = p.units() / pu;
        put_varint(out, if i == 0 { v } else { v.saturating_sub(prev) });
        prev = v;
    }
    for (_, s) in bids.iter().chain(asks) {
        put_varint(out, s.units() / su);
    }
}

/// The levels back from [`encode_levels`]'s form; `None` if it is not one.
pub fn decode_levels(mut b: &[u8]) -> Option<(Levels, Levels)> {
    let (&[version, pd, sd], rest) = b.split_first_chunk::<3>()?;
    if version != VERSION || u32::from(pd) > DECIMALS || u32::from(sd) > DECIMALS {
        return None;
    }
    b = rest;
    let (pu, su) = (
        10u64.pow(DECIMALS - u32::from(pd)),
        10u64.pow(DECIMALS - u32::from(sd)),
    );
    let nb = usize::try_from(get_varint(&mut b)?).ok()?;
    let na = usize::try_from(get_varint(&mut b)?).ok()?;
    if nb.saturating_add(na) > b.len() {
        return None; // every level takes at least two bytes
    }
    let mut prices = Vec::with_capacity(nb + na);
    let mut prev: u64 = 0;
    for i in 0..nb {
        let d = get_varint(&mut b)?;
        prev = if i == 0 { d } else { prev.checked_sub(d)? };
        prices.push(Price::from_units(prev.checked_mul(pu)?)?);
    }
    for i in 0..na {
        let d = get_varint(&mut b)?;
        prev = if i == 0 { d } else { prev.checked_add(d)? };
        prices.push(Price::from_units(prev.checked_mul(pu)?)?);
    }
    let mut levels = Vec::with_capacity(nb + na);
    for p in prices {
        levels.push((p, Size::from_units(get_varint(&mut b)?.checked_mul(su)?)));
    }
    if !b.is_empty() {
        return None;
    }
    let asks = levels.split_off(nb);
    Some((levels, asks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Price {
        Price::parse(s).expect("price")
    }
    fn q(s: &str) -> Size {
        Size::parse(s).expect("size")
    }

    #[test]
    fn levels_round_trip_in_few_bytes() {
        let bids: Vec<_> = (0..10)
            .map(|i| {
                (
                    Price::from_units(480_000 - i * 10_000).expect("p"),
                    q("120.5"),
                )
            })
            .collect();
        let asks: Vec<_> = (0..10)
            .map(|i| (Price::from_units(490_000 + i * 10_000).expect("p"), q("33")))
            .collect();
        let mut out = Vec::new();
        encode_levels(&bids, &asks, &mut out);
        assert!(out.len() <= 3 + 2 + 2 + 18 + 40, "{} bytes", out.len());
        assert_eq!(decode_levels(&out), Some((bids, asks)));
    }

    #[test]
    fn every_tick_and_a_book_across_a_tick_change_round_trip_exactly() {
        // 0.1, 0.01, 0.001, 0.0001 and 0.0025 grids (in millionths), five levels a side
        // around 0.5; then one book holding 0.0025-grid levels and 0.0001-grid ones, as after
        // a tick_size_change (the exchange moves no resting order).
        for tick in [100_000, 10_000, 1_000, 100, 2_500] {
            let bids: Vec<_> = (0..5)
                .map(|i| {
                    (
                        Price::from_units(500_000 - (i + 1) * tick).expect("p"),
                        q("7.5"),
                    )
                })
                .collect();
            let asks: Vec<_> = (0..5)
                .map(|i| (Price::from_units(500_000 + i * tick).expect("p"), q("12")))
                .collect();
            let mut out = Vec::new();
            encode_levels(&bids, &asks, &mut out);
            assert_eq!(decode_levels(&out), Some((bids, asks)), "tick {tick}");
        }
        let bids = vec![
            (p("0.4851"), q("3")),
            (p("0.485"), q("12.5")),
            (p("0.4825"), q("40")),
        ];
        let asks = vec![(p("0.4875"), q("20")), (p("0.49"), q("60"))];
        let mut out = Vec::new();
        encode_levels(&bids, &asks, &mut out);
        assert_eq!(decode_levels(&out), Some((bids, asks)));
    }

    #[test]
    fn odd_decimals_empty_sides_and_bad_input() {
        let bids = vec![(p("0.4805"), q("0.000001")), (p("0.001"), q("1000000"))];
        let mut out = Vec::new();
        encode_levels(&bids, &[], &mut out);
        assert_eq!(decode_levels(&out), Some((bids.clone(), vec![])));
        let mut empty = Vec::new();
        encode_levels(&[], &[], &mut empty);
        assert_eq!(decode_levels(&empty), Some((vec![], vec![])));
        // Cut short, trailing bytes, a wrong version, a bid above the one before it.
        assert_eq!(decode_levels(&out[..out.len() - 1]), None);
        let mut longer = out.clone();
        longer.push(0);
        assert_eq!(decode_levels(&longer), None);
        assert_eq!(decode_levels(&[2, 0, 0, 0, 0]), None);
        assert_eq!(decode_levels(&[1, 2, 0, 2, 0, 10, 20, 1, 1]), None);
    }
}
