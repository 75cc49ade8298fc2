//! `NUMERIC`: exact decimals, the type PostgreSQL gives `AVG` of integers, and only that here.
//!
//! PostgreSQL's `AVG(int)` is `numeric`: `SELECT AVG(x)` over 1, 2, 3, 4 prints
//! `2.5000000000000000`, and Meridian prints the same digits. The quotient `sum / count` is
//! rounded (half away from zero) to PostgreSQL's division scale (`select_div_scale` in
//! `numeric.c`): at least 16 significant digits, so the number of decimals shrinks as the
//! quotient grows — `50001.000000000000`, `1.6666666666666667`, `9223372036854775807`.
//!
//! Meridian has no `NUMERIC` columns, literals or casts to it: a value of this type comes only
//! from `AVG`. It compares exactly with integers and other numerics, and with floats as a float;
//! arithmetic on it, and `CAST(… AS FLOAT)`, give a `FLOAT` (PostgreSQL would keep `numeric`);
//! `CAST(… AS INT)` rounds half away from zero, as PostgreSQL does. On the wire it is `numeric`
//! (OID 1700), in PostgreSQL's text or binary format.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Result, SqlError, SqlState};

/// PostgreSQL's `NUMERIC_MIN_SIG_DIGITS`: a quotient has at least this many significant digits.
const SIG_DIGITS_MIN: i64 = 16;
/// Decimal digits per digit of PostgreSQL's base-10000 representation (`DEC_DIGITS`).
const DEC_DIGITS: i64 = 4;
/// PostgreSQL's `NUMERIC_MAX_DISPLAY_SCALE`.
const SCALE_MAX: i64 = 1000;

/// An exact decimal: `unscaled / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numeric {
    unscaled: i128,
    scale: u32,
}

/// `x`'s weight and first digit in base 10000 (PostgreSQL's `NumericVar`), for `x ≠ 0`.
fn base10000_head(x: u128) -> (i64, u128) {
    let (mut weight, mut head) = (0, x);
    while head >= 10_000 {
        head /= 10_000;
        weight += 1;
    }
    (weight, head)
}

fn out_of_range() -> SqlError {
    SqlError::new(SqlState::NumericValueOutOfRange, "value out of range: overflow computing AVG")
}

impl Numeric {
    /// `sum / count` as PostgreSQL's `AVG` of integers computes it; `count > 0`.
    pub fn avg(sum: i128, count: i64) -> Result<Numeric> {
        assert!(count > 0, "invariant: AVG divides by the count of non-NULL values, at least one");
        let count = i128::from(count);
        // select_div_scale: the quotient's weight estimated from both operands' first digits.
        let (w1, d1) = if sum == 0 { (0, 0) } else { base10000_head(sum.unsigned_abs()) };
        let (w2, d2) = base10000_head(count.unsigned_abs());
        let mut qweight = w1 - w2;
        if d1 <= d2 {
            qweight -= 1;
        }
        let scale = (SIG_DIGITS_MIN - qweight * DEC_DIGITS).clamp(0, SCALE_MAX);
        let scale = u32::try_from(scale).expect("invariant: clamped to 0..=1000");
        let scaled = 10i128.checked_pow(scale).and_then(|p| sum.checked_mul(p)).ok_or_else(out_of_range)?;
        let (mut unscaled, rest) = (scaled / count, scaled % count);
        if 2 * rest.abs() >= count {
            unscaled += scaled.signum();
        }
        Ok(Numeric { unscaled, scale })
    }

    /// The nearest float.
    pub fn to_f64(self) -> f64 {
        // Through the text: exact digits, one correctly rounded conversion.
        self.to_string().parse().expect("invariant: a numeric's text is a decimal number")
    }

    /// Rounded to an integer, half away from zero; `None` out of `i64`'s range.
    pub fn round(self) -> Option<i64> {
        let unit = 10i128.checked_pow(self.scale)?;
        let (whole, rest) = (self.unscaled / unit, self.unscaled % unit);
        let whole = if 2 * rest.abs() >= unit { whole + self.unscaled.signum() } else { whole };
        i64::try_from(whole).ok()
    }

    /// Exact order against another numeric (or an integer, as a numeric of scale 0); through
    /// floats only should the scaled values not fit in 128 bits.
    pub fn cmp_exact(self, other: Numeric) -> Ordering {
        let scale = self.scale.max(other.scale);
        let rescale = |n: Numeric| 10i128.checked_pow(scale - n.scale).and_then(|p| n.unscaled.checked_mul(p));
        match (rescale(self), rescale(other)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => crate::types::float_cmp(self.to_f64(), other.to_f64()),
        }
    }

    /// An integer as a numeric.
    pub fn from_int(i: i64) -> Numeric {
        Numeric { unscaled: i128::from(i), scale: 0 }
    }

    /// PostgreSQL's binary format of `numeric`: digit count, weight, sign and display scale
    /// (16 bits each), then the base-10000 digits, without leading or trailing zero digits.
    pub fn pg_binary(self) -> Vec<u8> {
        let text = self.unscaled.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let padded = format!("{}{text}", "0".repeat((scale + 1).saturating_sub(text.len())));
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        let int_part = int_part.trim_start_matches('0');
        let group = |s: &str| s.parse::<i16>().expect("invariant: four decimal digits fit in i16");
        // Integer digits grouped from the point leftwards, fraction digits from it rightwards.
        let lead = int_part.len() % 4;
        let mut digits: Vec<i16> = Vec::new();
        if lead > 0 {
            digits.push(group(&int_part[..lead]));
        }
        digits.extend(int_part.as_bytes()[lead..].chunks(4).map(|c| group(std::str::from_utf8(c).expect("ASCII"))));
        let mut weight = digits.len() as i16 - 1;
        let frac = format!("{frac_part}{}", "0".repeat((4 - frac_part.len() % 4) % 4));
        digits.extend(frac.as_bytes().chunks(4).map(|c| group(std::str::from_utf8(c).expect("ASCII"))));
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        let sign: u16 = if self.unscaled < 0 { 0x4000 } else { 0 };
        let mut out = Vec::with_capacity(8 + 2 * digits.len());
        out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&(self.scale as u16).to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }
}

/// PostgreSQL's `numeric_out`: all `scale` decimals, `-` for negatives, no exponent.
impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.unscaled.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let padded = format!("{}{digits}", "0".repeat((scale + 1).saturating_sub(digits.len())));
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        let sign = if self.unscaled < 0 { "-" } else { "" };
        if scale == 0 { write!(f, "{sign}{int_part}") } else { write!(f, "{sign}{int_part}.{frac_part}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avg(values: &[i64]) -> String {
        let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
        Numeric::avg(sum, values.len() as i64).expect("in range").to_string()
    }

    #[test]
    fn avg_prints_what_postgresql_prints() {
        // Each checked against PostgreSQL 15: SELECT AVG(x) FROM (VALUES …) v(x).
        assert_eq!(avg(&[1, 2, 3, 4]), "2.5000000000000000");
        assert_eq!(avg(&[1, 2]), "1.5000000000000000");
        assert_eq!(avg(&[100_000, 2]), "50001.000000000000");
        assert_eq!(avg(&[1, 2, 2]), "1.6666666666666667");
        assert_eq!(avg(&[-1, -2]), "-1.5000000000000000");
        assert_eq!(avg(&[i64::MAX, i64::MAX]), "9223372036854775807");
        assert_eq!(avg(&[0, 0]), "0.00000000000000000000");
        assert_eq!(avg(&[7]), "7.0000000000000000");
    }

    #[test]
    fn rounding_comparison_and_the_binary_format() {
        let n = Numeric::avg(5, 2).expect("2.5");
        assert_eq!(n.round(), Some(3));
        assert_eq!(Numeric::avg(-5, 2).expect("-2.5").round(), Some(-3));
        assert_eq!(n.to_f64(), 2.5);
        assert_eq!(n.cmp_exact(Numeric::from_int(2)), Ordering::Greater);
        assert_eq!(n.cmp_exact(Numeric::avg(10, 4).expect("2.5")), Ordering::Equal);
        // 2.5000000000000000: one digit 2, one 5000 (weight 0), display scale 16.
        assert_eq!(n.pg_binary(), [0, 2, 0, 0, 0, 0, 0, 16, 0, 2, 0x13, 0x88]);
        // 50001.000000000000: digits 5, 1 (weight 1), scale 12.
        assert_eq!(Numeric::avg(100_002, 2).expect("50001").pg_binary(), [0, 2, 0, 1, 0, 0, 0, 12, 0, 5, 0, 1]);
        // -0.25000000000000000000 (PostgreSQL's scale 20): digit 2500 at weight -1, negative.
        let quarter = Numeric::avg(-1, 4).expect("-0.25");
        assert_eq!(quarter.to_string(), "-0.25000000000000000000");
        assert_eq!(quarter.pg_binary(), [0, 1, 0xff, 0xff, 0x40, 0, 0, 20, 0x09, 0xc4]);
    }
}
