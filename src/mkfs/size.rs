//! How the filesystem's size is chosen ([`SizeSpec`], from `--size`) and byte counts printed the
//! way `--size` takes them back ([`Human`]).

use std::fmt;

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
    fn human_sizes_round_trip() {
        assert_eq!(Human(12 << 20).to_string(), "12M");
        assert_eq!(Human(3 << 30).to_string(), "3G");
        assert_eq!(Human(1536 << 10).to_string(), "1.5 MiB");
        assert_eq!(Human(16_843_020 << 10).to_string(), "16.1 GiB");
        assert_eq!(Human(512 << 10).to_string(), "512K");
    }
}
