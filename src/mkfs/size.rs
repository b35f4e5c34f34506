//! The `--size` argument: `SIZE` (the filesystem's total size) or `+SIZE` (at least that much
//! free space once the files are in), with K, M, G, T, P suffixes as powers of 1024; a bare
//! number is bytes.

use std::fmt;
use std::str::FromStr;

/// How the filesystem's size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeSpec {
    /// The smallest filesystem that holds the tree with a small margin.
    #[default]
    Auto,
    /// Exactly this many bytes (rounded down to whole blocks).
    Total(u64),
    /// At least this many bytes free after populating.
    Free(u64),
}

impl FromStr for SizeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<SizeSpec, String> {
        let (plus, rest) = match s.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let n = parse_bytes(rest)?;
        Ok(if plus {
            SizeSpec::Free(n)
        } else {
            SizeSpec::Total(n)
        })
    }
}

/// Parses `123`, `64K`, `512M`, `3G`, `1T` (case-insensitive, optional `iB`/`B`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size '{s}': expected a number with an optional K, M, G, T or P suffix (powers of 1024)")
    };
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits_end].parse().map_err(|_| bad())?;
    let suffix = t[digits_end..].to_ascii_uppercase();
    let shift = match suffix.as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// Formats a byte count the way the size options take it back (e.g. "12M", "1536K", "4096").
pub struct Human(pub u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, s) in [(40, "T"), (30, "G"), (20, "M")] {
            if n >= 1 << shift && n % (1 << shift) == 0 {
                return write!(f, "{}{s}", n >> shift);
            }
        }
        for (shift, s) in [(40, "TiB"), (30, "GiB"), (20, "MiB")] {
            if n >= 1 << shift {
                return write!(f, "{:.1} {s}", n as f64 / (1u64 << shift) as f64);
            }
        }
        if n >= 1 << 10 && n % (1 << 10) == 0 {
            return write!(f, "{}K", n >> 10);
        }
        write!(f, "{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("3G"), Ok(3 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn plus_means_free_space() {
        assert_eq!("+1G".parse(), Ok(SizeSpec::Free(1 << 30)));
        assert_eq!("100M".parse(), Ok(SizeSpec::Total(100 << 20)));
    }

    #[test]
    fn garbage_is_rejected() {
        for s in [
            "",
            "+",
            "M",
            "12Q",
            "1.5G",
            "-5M",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(s.parse::<SizeSpec>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn human_sizes_round_trip() {
        assert_eq!(Human(12 << 20).to_string(), "12M");
        assert_eq!(Human(3 << 30).to_string(), "3G");
        assert_eq!(Human(1536 << 10).to_string(), "1.5 MiB");
        assert_eq!(Human(16_843_020 << 10).to_string(), "16.1 GiB");
        assert_eq!(Human(512 << 10).to_string(), "512K");
        assert_eq!(parse_bytes(&Human(3 << 30).to_string()), Ok(3 << 30));
    }
}
