//! Exact prices and sizes (fixed point, six decimals) and the side of a book.

use std::fmt;

/// Decimals held: every price and size the exchange sends has at most this many.
const SCALE: u32 = 6;
const ONE: u64 = 10u64.pow(SCALE);

/// Parses unsigned decimal text (`"0.48"`, `".48"`, `"219.217767"`, `"12"`) into units of
/// 10⁻⁶, exactly; `None` for anything else (a sign, an exponent, more than six decimals,
/// an overflow, empty text). One pass over the bytes: every level of every book event goes
/// through here twice.
fn parse_fixed(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut int: u64 = 0;
    while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
        int = int.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        i += 1;
    }
    let int_digits = i;
    let mut frac: u64 = 0;
    let mut frac_digits = 0u32;
    if let Some(&c) = b.get(i) {
        if c != b'.' {
            return None;
        }
        for &d in &b[i + 1..] {
            if !d.is_ascii_digit() || frac_digits == SCALE {
                return None;
            }
            frac = frac * 10 + u64::from(d - b'0');
            frac_digits += 1;
        }
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    int.checked_mul(ONE)?
        .checked_add(frac * 10u64.pow(SCALE - frac_digits))
}

/// Writes units of 10⁻⁶ as the shortest decimal text (`480000` → `0.48`, `12000000` → `12`).
fn write_fixed(units: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (int, frac) = (units / ONE, units % ONE);
    if frac == 0 {
        return write!(f, "{int}");
    }
    let digits = format!("{frac:06}");
    write!(f, "{int}.{}", digits.trim_end_matches('0'))
}

/// A price, exactly: units of 10⁻⁶ (the exchange's tick is at most 0.0001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price(u64);

/// A size (shares), exactly: units of 10⁻⁶ (USDC's six decimals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(u64);

impl Price {
    /// Exact decimal text to a price; `None` for anything that is not one (more than six
    /// decimals, a sign, an exponent) or is above 1, which no outcome price can be.
    pub fn parse(text: &str) -> Option<Price> {
        parse_fixed(text).filter(|&u| u <= ONE).map(Price)
    }

    /// Units of 10⁻⁶.
    pub fn units(self) -> u64 {
        self.0
    }

    /// From units of 10⁻⁶ (at most 1 000 000: a price is at most 1).
    pub fn from_units(units: u64) -> Option<Price> {
        (units <= ONE).then_some(Price(units))
    }
}

impl Size {
    /// Exact decimal text to a size; `None` for anything that is not one.
    pub fn parse(text: &str) -> Option<Size> {
        parse_fixed(text).map(Size)
    }

    /// Units of 10⁻⁶.
    pub fn units(self) -> u64 {
        self.0
    }

    /// From units of 10⁻⁶.
    pub fn from_units(units: u64) -> Size {
        Size(units)
    }

    /// True for zero: the level is removed.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fixed(self.0, f)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fixed(self.0, f)
    }
}

/// A side of the book. The feed's `BUY` is the bid side, `SELL` the ask side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buyers' resting orders (the feed's `BUY`).
    Bid,
    /// Sellers' resting orders (the feed's `SELL`).
    Ask,
}

impl Side {
    /// The feed's `BUY` / `SELL` (a `price_change` entry's side).
    pub fn from_feed(text: &str) -> Option<Side> {
        match text {
            "BUY" => Some(Side::Bid),
            "SELL" => Some(Side::Ask),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first parser (split at the point, then the standard library's integer parse):
    /// the one-pass parser must answer as it did on every text.
    fn split_parse(text: &str) -> Option<u64> {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if (int.is_empty() && frac.is_empty()) || frac.len() > SCALE as usize {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_units: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        int.checked_mul(ONE)?
            .checked_add(frac_units * 10u64.pow(SCALE - frac.len() as u32))
    }

    #[test]
    fn one_pass_parses_as_the_split_parser_did() {
        let fixed = [
            "",
            ".",
            "1.",
            ".5",
            "0.480",
            "1.2.3",
            "+1",
            "-0.5",
            "1e3",
            "0.1234567",
            "0.123456",
            "18446744073709",
            "18446744073709.551615",
            "18446744073710",
            "18446744073709551615",
            "99999999999999999999",
            "00000000000000000000001.5",
            " 1",
            "1 ",
            "٣",
        ];
        for text in fixed {
            assert_eq!(parse_fixed(text), split_parse(text), "{text:?}");
        }
        let alphabet = b"0123456789..9+e ";
        fastrand::seed(7);
        for _ in 0..200_000 {
            let len = fastrand::usize(0..24);
            let text: String = (0..len)
                .map(|_| char::from(alphabet[fastrand::usize(0..alphabet.len())]))
                .collect();
            assert_eq!(parse_fixed(&text), split_parse(&text), "{text:?}");
        }
    }
}
