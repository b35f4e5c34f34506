//! The filesystem's limits, checked before anything is read or written: option values (inode
//! counts, sizes, inode tables) that no ext2/3/4 filesystem of the chosen type and block size
//! can take, and — per entry, while planning — times outside what an inode stores and more hard
//! links than a link count holds. Each refusal names the limit.

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
            "{} with {bs}-byte blocks{} addresses at most {}",
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

/// The times an inode of `inode_size` bytes stores, as (first, last) seconds: the 32-bit signed
/// seconds of the base fields (1901 to 2038), extended by two epoch bits (to 2446) when the
/// inode has room for the extra fields (libext2fs gives every inode larger than 128 bytes that
/// room, and the kernel reads them whenever it is there).
pub fn time_range(inode_size: u16) -> (i64, i64) {
    let first = i32::MIN as i64;
    if inode_size > 128 {
        (first, first + (1i64 << 34) - 1)
    } else {
        (first, i32::MAX as i64)
    }
}

/// Refuses time `t` (the entry's `what`, e.g. "modification time") outside `range`.
pub fn check_time(t: Timestamp, range: (i64, i64), what: &str) -> Result<()> {
    if (range.0..=range.1).contains(&t.sec) {
        return Ok(());
    }
    let year = |s: i64| 1970 + s.div_euclid(31_556_952);
    bail!(
        "its {what} ({} s since 1970, about the year {}) is outside what the inodes store: {} to {}{}",
        t.sec,
        year(t.sec),
        year(range.0),
        year(range.1),
        if range.1 <= i32::MAX as i64 {
            " (128-byte inodes; -I 256 reaches 2446)"
        } else {
            ""
        }
    )
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
    fn times_outside_the_inode_s_fields_are_refused() {
        let t = |sec| Timestamp { sec, nsec: 0 };
        let big = time_range(256);
        let small = time_range(128);
        check_time(t(1 << 33), big, "mtime").unwrap();
        check_time(t(-(1 << 31)), big, "mtime").unwrap();
        assert!(check_time(t(1 << 34), big, "mtime").is_err());
        assert!(check_time(t(-(1 << 31) - 1), big, "mtime").is_err());
        let e = check_time(t(1 << 31), small, "mtime")
            .unwrap_err()
            .to_string();
        assert!(e.contains("2038") && e.contains("-I 256"), "{e}");
    }
}
