//! `Decimal`: an exact decimal number as the feed and the Data API spell it, kept as its
//! canonical text (never a float), with the checks a trade's price and size need.

use std::fmt;

/// Longest decimal string we accept, and most digits after the point.
const MAX_DECIMAL_LEN: usize = 40;
const MAX_DECIMAL_SCALE: usize = 18;

/// An exact, non-negative decimal number in canonical text form: no sign, at least one digit
/// before the point (`".48"` becomes `"0.48"`), no redundant leading zeros, no trailing point.
/// Trailing zeros after the point are kept: PostgreSQL's `numeric` keeps them too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decimal(Box<str>);

impl Decimal {
    /// Parses an unsigned decimal such as `"0.456"`, `".48"`, `"219.217767"` or `"12"`.
    pub fn parse(s: &str) -> Option<Decimal> {
        if s.is_empty() || s.len() > MAX_DECIMAL_LEN {
            return None;
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) {
            return None;
        }
        let frac = match frac {
            Some(f) if !all_digits(f) || f.len() > MAX_DECIMAL_SCALE => return None,
            Some("") => None,
            other => other,
        };
        if int.is_empty() && frac.is_none() {
            return None;
        }
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let text = match frac {
            Some(f) => format!("{int}.{f}"),
            None => int.to_owned(),
        };
        Some(Decimal(text.into_boxed_str()))
    }

    /// The decimal text, as stored (`0.48`, never `.48`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shortest spelling of a decimal's value: trailing fractional zeros and a bare point
    /// dropped, a missing integer part written (`0.480`, `.48` and `0.48` all give `0.48`).
    /// The key for comparing one value that came by different roads: the feed's text,
    /// PostgreSQL's `numeric::text`, the Data API's JSON numbers. Text that is not a decimal
    /// is returned as it is.
    pub fn canonical(text: &str) -> String {
        let Some(d) = Decimal::parse(text) else {
            return text.to_owned();
        };
        match d.0.split_once('.') {
            Some((int, frac)) => match frac.trim_end_matches('0') {
                "" => int.to_owned(),
                frac => format!("{int}.{frac}"),
            },
            None => d.0.into_string(),
        }
    }

    /// The integer part, as digits.
    fn int_part(&self) -> &str {
        self.0.split('.').next().unwrap_or("0")
    }

    /// True for any spelling of zero (`0`, `0.00`).
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0' || b == b'.')
    }

    /// True when the value is at most one.
    pub fn at_most_one(&self) -> bool {
        match self.int_part() {
            "0" => true,
            "1" => self.0.bytes().skip(1).all(|b| b == b'0' || b == b'.'),
            _ => false,
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
