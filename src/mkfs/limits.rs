//! The filesystem's limits, checked before anything is read or written: option values (inode
//! counts, sizes, inode tables) that no ext2/3/4 filesystem of the chosen type and block size
//! can take, and — per entry, while planning — more hard links than a link count holds. Each
//! refusal names the limit. Times outside what an inode stores are clamped to it, as the kernel
//! stores them, with a warning (rather than wrapped round to another date).

use anyhow::{bail, Result};

use super::size::{Human, SizeSpec};
use super::Options;
use crate::source::Timestamp;

/// Most inodes a filesystem has: the superblock's count is 32 bits.
pub const MAX_INODES: u64 = u32::MAX as u64;
/// Most names a file may have: its inode's link count is 16 bits (beyond, it wraps round, and
/// 65,536 names would make a deleted inode that every name still points at). The kernel makes
/// no more than 65,000 itself, but reads any count the field holds, as e2fsck does.
pub const MAX_LINKS: u64 = u16::MAX as u64;

/// Refuses option values past the filesystem's limits (see the module's doc).
pub fn check(opts: &Options) -> Result<()> {
    let bs = opts.block_size as u64;
    let max_bytes = opts.features.max_blocks().saturating_mul(bs);
    let type_limit = || {
        format!(
            "{} with {bs}-byte blocks{} addresses {} at most",
            opts.fstype.name(),
            if opts.features.has_64bit() {
                ""
            } else {
                " (without 64bit)"
            },
            Human(max_bytes)
        )
    };
    if let Some(n) = opts.inodes.filter(|&n| n > MAX_INODES) {
        bail!("-N {n}: a filesystem holds at most {MAX_INODES} inodes (its count is 32 bits)");
    }
    match opts.size {
        SizeSpec::Total(n) if n / bs > opts.features.max_blocks() => {
            bail!("--size {}: {}", Human(n), type_limit())
        }
        SizeSpec::Free(n) if n / bs > opts.features.max_blocks() => {
            bail!("--size +{}: {}", Human(n), type_limit())
        }
        _ => {}
    }
    // mke2fs's rule: the inode tables alone must be smaller than the filesystem. (Without
    // --size the filesystem is made large enough for them: at most 2^32-1 inodes of at most a
    // block each never need more blocks than a filesystem addresses.)
    if let (Some(n), SizeSpec::Total(size)) = (opts.inodes, opts.size) {
        let tables = n.saturating_mul(opts.inode_size as u64);
        if tables >= size {
            bail!(
                "-N {n}: {n} inodes of {} bytes take {}, more than the whole --size {} filesystem",
                opts.inode_size,
                Human(tables),
                Human(size)
            );
        }
    }
    Ok(())
}

/// The times an inode stores, as (first, last) seconds: the 32-bit signed seconds of the base
/// fields (1901 to 2038), extended by two epoch bits (to 2446) when it has the extra fields
/// (libext2fs gives them to every inode larger than 128 bytes, and the kernel reads them
/// whenever they are there).
pub fn time_range(extra_fields: bool) -> (i64, i64) {
    let first = i32::MIN as i64;
    if extra_fields {
        (first, first + (1i64 << 34) - 1)
    } else {
        (first, i32::MAX as i64)
    }
}

/// `t` brought into `range` as the kernel stores a time its filesystem cannot hold (clamped to
/// the nearest end: `utimensat` and tar extraction on such a filesystem give the same); None
/// when it is inside already.
pub fn fit_time(t: Timestamp, range: (i64, i64)) -> Option<Timestamp> {
    let sec = t.sec;
    if (range.0..=range.1).contains(&sec) {
        return None;
    }
    let sec = sec.clamp(range.0, range.1);
    let nsec = if sec == range.1 { 999_999_999 } else { 0 };
    Some(Timestamp { sec, nsec })
}

/// About the year of a time, for messages.
pub fn year(sec: i64) -> i64 {
    1970 + sec.div_euclid(31_556_952)
}

#[cfg(test)]
mod tests {
    use super::super::fstype::FsType;
    use super::*;

    fn err(o: &Options) -> String {
        check(o).unwrap_err().to_string()
    }

    #[test]
    fn inode_counts_past_32_bits_or_the_size_are_refused() {
        let mut o = Options::new(FsType::Ext4);
        o.inodes = Some(1 << 32);
        assert!(err(&o).contains("4294967295"), "{}", err(&o));
        o.inodes = Some(MAX_INODES);
        check(&o).unwrap();
        o.size = SizeSpec::Total(10 << 20);
        assert!(err(&o).contains("--size 10M"), "{}", err(&o));
        o.inodes = Some(40_000);
        check(&o).unwrap();
        o.inodes = Some(40_960);
        assert!(err(&o).contains("10M"), "{}", err(&o));
    }

    #[test]
    fn sizes_past_the_block_numbers_are_refused() {
        let mut o = Options::new(FsType::Ext3);
        o.size = SizeSpec::Total(20 << 40);
        assert!(err(&o).starts_with("--size 20T: ext3"), "{}", err(&o));
        o.size = SizeSpec::Free(20 << 40);
        assert!(err(&o).starts_with("--size +20T"), "{}", err(&o));
        o.size = SizeSpec::Total(16 << 40);
        check(&o).unwrap_err();
        o.size = SizeSpec::Total((16 << 40) - 4096);
        check(&o).unwrap();
        let mut o = Options::new(FsType::Ext4);
        o.size = SizeSpec::Total(1 << 50);
        check(&o).unwrap();
    }

    #[test]
    fn times_outside_the_inode_s_fields_are_clamped_to_them() {
        let t = |sec| Timestamp { sec, nsec: 5 };
        let (big, small) = (time_range(true), time_range(false));
        assert_eq!((year(big.0), year(big.1)), (1901, 2446));
        assert_eq!(year(small.1), 2038);
        assert_eq!(fit_time(t(1 << 33), big), None);
        assert_eq!(fit_time(t(-(1 << 31)), big), None);
        assert_eq!(
            fit_time(t(1 << 40), big),
            Some(Timestamp {
                sec: big.1,
                nsec: 999_999_999
            })
        );
        assert_eq!(
            fit_time(t(i64::MIN), big),
            Some(Timestamp {
                sec: big.0,
                nsec: 0
            })
        );
        let fit = fit_time(t(1 << 31), small).unwrap();
        assert_eq!({ fit.sec }, i32::MAX as i64);
    }
}
