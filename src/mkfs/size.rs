//! How the filesystem's size is chosen ([`SizeSpec`], from `--size`; the automatic size's
//! margin, [`auto_margin`]) and byte counts printed the way `--size` takes them back ([`Human`]).

use std::fmt;

/// An automatic size leaves ordinary users this percentage of the filesystem's blocks...
pub const AUTO_AVAIL_PERCENT: u64 = 5;
/// ...and never less than this many bytes: enough for a booted system's journal and logs.
pub const AUTO_AVAIL_MIN: u64 = 16 << 20;

/// The root reserve of a filesystem of `blocks` blocks (`-m`), as the superblock gets it.
pub fn root_reserve(blocks: u64, reserved_percent: f64) -> u64 {
    (blocks as f64 * reserved_percent / 100.0) as u64
}

/// The blocks the kernel keeps back on ext4 with extents beyond the root reserve (2% of the
/// blocks, at most 4096: ext4_calculate_resv_clusters), which df's "Avail" leaves out too.
pub fn kernel_reserve(blocks: u64, extents: bool) -> u64 {
    if extents {
        (blocks / 50).min(4096)
    } else {
        0
    }
}

/// What an automatic size keeps free beyond the tree in a filesystem of `blocks` blocks of
/// `block_size` bytes: the root's and the kernel's reserves plus what ordinary users get,
/// [`AUTO_AVAIL_PERCENT`] of the blocks and at least [`AUTO_AVAIL_MIN`] bytes (so df shows 1% to
/// 10% available, or 16 MiB on a small tree).
pub fn auto_margin(blocks: u64, block_size: u32, reserved_percent: f64, extents: bool) -> u64 {
    let avail = (blocks * AUTO_AVAIL_PERCENT / 100).max(AUTO_AVAIL_MIN / block_size as u64);
    root_reserve(blocks, reserved_percent) + kernel_reserve(blocks, extents) + avail
}

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
    fn the_automatic_margin_leaves_users_5_percent_and_at_least_16_mib() {
        // Small: 16 MiB for users, plus the reserves.
        assert_eq!(auto_margin(10_000, 4096, 5.0, false), 500 + 4096);
        assert_eq!(auto_margin(10_000, 4096, 5.0, true), 500 + 200 + 4096);
        assert_eq!(auto_margin(10_000, 1024, 0.0, false), 16384);
        // Large: 5%, and the kernel's reserve capped at 4096 blocks.
        let b = 10_000_000;
        assert_eq!(auto_margin(b, 4096, 5.0, true), b / 20 + 4096 + b / 20);
    }

    #[test]
    fn human_sizes_round_trip() {
        assert_eq!(Human(12 << 20).to_string(), "12M");
        assert_eq!(Human(3 << 30).to_string(), "3G");
        assert_eq!(Human(1536 << 10).to_string(), "1.5 MiB");
        assert_eq!(Human(16_843_020 << 10).to_string(), "16.1 GiB");
        assert_eq!(Human(512 << 10).to_string(), "512K");
    }
}
