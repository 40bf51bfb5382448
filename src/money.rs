//! Exact money: amounts are integer pico-dollars (1e-12 USD) and prices are integer
//! micro-dollars per million tokens, so `tokens × price` is exact with no rounding.
//! Floats appear only at the edges (parsing a config price, printing a report).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};

/// An amount of US dollars in pico-dollars (1e-12 USD). Exact; never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u128);

const PICO_PER_USD: u128 = 1_000_000_000_000;

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_pico(pico: u128) -> Usd {
        Usd(pico)
    }

    pub const fn pico(self) -> u128 {
        self.0
    }

    /// Parses a decimal USD amount such as `12`, `12.50` or `$0.000125`, exactly.
    pub fn parse(text: &str) -> Result<Usd, String> {
        let t = text.trim().trim_start_matches('$');
        let err = || format!("'{text}' is not a USD amount (expected e.g. 25 or 12.50)");
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(err());
        }
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b == b'_');
        if !digits_ok(whole) || !digits_ok(frac) || frac.len() > 12 {
            return Err(err());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.replace('_', "").parse().map_err(|_| err())?
        };
        let mut frac_pico = 0u128;
        for (i, b) in frac.bytes().filter(|b| *b != b'_').enumerate() {
            frac_pico += u128::from(b - b'0') * 10u128.pow(11 - i as u32);
        }
        whole
            .checked_mul(PICO_PER_USD)
            .and_then(|w| w.checked_add(frac_pico))
            .map(Usd)
            .ok_or_else(err)
    }

    /// Converts a float dollar amount (from JSON/TOML/Parquet), rounding to the pico.
    pub fn from_f64(usd: f64) -> Option<Usd> {
        (usd.is_finite() && usd >= 0.0).then(|| Usd((usd * PICO_PER_USD as f64).round() as u128))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / PICO_PER_USD as f64
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    /// The exact decimal, with all 12 places: `0.000123450000`.
    pub fn exact(self) -> String {
        format!("{}.{:012}", self.0 / PICO_PER_USD, self.0 % PICO_PER_USD)
    }

    /// `part / self` as a fraction in [0, 1]; 0 when self is zero.
    pub fn share(self, part: Usd) -> f64 {
        if self.0 == 0 {
            0.0
        } else {
            part.0 as f64 / self.0 as f64
        }
    }
}

/// `#[serde(with = "crate::money::exact")]`: an amount as its exact decimal string,
/// for files that must restore spend to the pico-dollar (the run journal).
pub mod exact {
    use super::Usd;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(u: &Usd, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&u.exact())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Usd, D::Error> {
        let text = String::deserialize(d)?;
        Usd::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, o: Usd) -> Usd {
        Usd(self.0 + o.0)
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, o: Usd) {
        self.0 += o.0;
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, o: Usd) -> Usd {
        Usd(self.0 - o.0)
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, Add::add)
    }
}

/// Human display: `$1,234.57` from $100 up, `$12.3457` from $1, `$0.012346` below.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let places: u32 = if self.0 >= 100 * PICO_PER_USD {
            2
        } else if self.0 >= PICO_PER_USD {
            4
        } else {
            6
        };
        let unit = 10u128.pow(12 - places);
        let rounded = (self.0 + unit / 2) / unit;
        let scale = 10u128.pow(places);
        let whole = group_thousands(rounded / scale);
        write!(
            f,
            "${whole}.{:0width$}",
            rounded % scale,
            width = places as usize
        )
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_thousands(n: impl Into<u128>) -> String {
    let s = n.into().to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A token price in micro-dollars per million tokens (`$0.14/M` = 140_000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PerMtok(u64);

impl PerMtok {
    pub const fn from_micro(micro_usd_per_mtok: u64) -> PerMtok {
        PerMtok(micro_usd_per_mtok)
    }

    /// From USD per million tokens as written in config (`0.14`), to the micro-dollar.
    pub fn from_usd_per_mtok(usd: f64) -> Option<PerMtok> {
        (usd.is_finite() && usd >= 0.0).then(|| PerMtok((usd * 1e6).round() as u64))
    }

    /// From LiteLLM's USD-per-token figure (`1.4e-07`).
    pub fn from_usd_per_token(usd: f64) -> Option<PerMtok> {
        (usd.is_finite() && usd >= 0.0).then(|| PerMtok((usd * 1e12).round() as u64))
    }

    /// Half this price, rounded down to the micro-dollar (batch APIs' 50%).
    pub fn half(self) -> PerMtok {
        PerMtok(self.0 / 2)
    }

    /// This price times `num / den` (a discount another price implies), rounded
    /// down to the micro-dollar; unchanged when `den` is zero.
    pub fn scaled(self, num: PerMtok, den: PerMtok) -> PerMtok {
        match den.0 {
            0 => self,
            d => PerMtok((u128::from(self.0) * u128::from(num.0) / u128::from(d)) as u64),
        }
    }

    pub fn usd_per_mtok(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The exact cost of `tokens` at this price: µ$/Mtok × tokens = pico-dollars.
    pub fn cost(self, tokens: u64) -> Usd {
        Usd(u128::from(self.0) * u128::from(tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cost_is_exact() {
        let p = PerMtok::from_usd_per_mtok(0.14).unwrap();
        assert_eq!(p.cost(1_000_000), Usd::parse("0.14").unwrap());
        assert_eq!(p.cost(1), Usd::from_pico(140_000));
        // 0.1 + 0.2 style drift cannot happen: a million one-token sums equal one sum.
        let sum: Usd = (0..1_000_000).map(|_| p.cost(1)).sum();
        assert_eq!(sum, p.cost(1_000_000));
        assert_eq!(
            PerMtok::from_usd_per_token(1.4e-07),
            PerMtok::from_usd_per_mtok(0.14)
        );
        assert_eq!(
            PerMtok::from_usd_per_mtok(0.0375)
                .unwrap()
                .cost(1000)
                .exact(),
            "0.000037500000"
        );
    }

    #[test]
    fn parses_usd() {
        assert_eq!(Usd::parse("12.50").unwrap().exact(), "12.500000000000");
        assert_eq!(Usd::parse("$0.000001").unwrap(), Usd::from_pico(1_000_000));
        assert_eq!(Usd::parse("3").unwrap().pico(), 3 * PICO_PER_USD);
        assert_eq!(Usd::parse(".5").unwrap().exact(), "0.500000000000");
        for bad in ["", "abc", "-1", "1.2.3", "1e3", "0.0000000000001"] {
            assert!(Usd::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_by_magnitude() {
        assert_eq!(Usd::parse("1234.567").unwrap().to_string(), "$1,234.57");
        assert_eq!(Usd::parse("12.34567").unwrap().to_string(), "$12.3457");
        assert_eq!(Usd::parse("0.0123456").unwrap().to_string(), "$0.012346");
        assert_eq!(Usd::ZERO.to_string(), "$0.000000");
        assert_eq!(group_thousands(1_000_000u64), "1,000,000");
        assert_eq!(group_thousands(999u64), "999");
    }
}
