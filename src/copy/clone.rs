//! Cloning (FICLONERANGE, through `reflink-copy`'s `ReflinkBlockBuilder`): the destination shares
//! the source's extents instead of receiving a copy of its bytes. Only whole blocks of the
//! destination's filesystem can be cloned, at offsets aligned to them in both files; [`plan`]
//! says how much of a step can be, and [`range`] tries it.

use std::fs::File;
use std::io;
use std::num::NonZeroU64;

use reflink_copy::ReflinkBlockBuilder;
use rustix::io::Errno;

/// What to do with the next bytes of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Clone this many bytes (a whole number of blocks, at aligned offsets).
    Clone(u64),
    /// Copy this many bytes: an unaligned head (up to the next block boundary, after which the
    /// range can be cloned), a partial tail, or all of a range whose offsets are not aligned
    /// alike in the two files.
    Copy(u64),
}

/// How the next `want` bytes at source offset `src` and destination offset `dst` can be moved
/// when whole `block`-byte blocks can be cloned.
pub fn plan(block: u64, src: u64, dst: u64, want: u64) -> Plan {
    if src % block != dst % block {
        return Plan::Copy(want);
    }
    let head = (block - src % block) % block;
    if head > 0 {
        return Plan::Copy(head.min(want));
    }
    match want / block * block {
        0 => Plan::Copy(want),
        n => Plan::Clone(n),
    }
}

/// The outcome of one clone attempt that did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloned {
    /// The range now shares the source's extents.
    Done,
    /// Not this range (another filesystem or mount, a file that cannot share its extents, a
    /// source that ended early): copy it instead, and try again with the next one.
    NotHere,
    /// Not into this destination at all (its filesystem cannot clone): stop trying.
    Never,
}

/// The block size that clones into `dst` must be aligned to: its filesystem's block size.
pub fn block_size(dst: &File) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(dst)?;
    Ok(st.f_bsize.max(512))
}

/// Clones `len` bytes (not 0: that would mean "to the end of the file") of `src` at `src_off`
/// into `dst` at `dst_off`.
pub fn range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<Cloned> {
    let len = NonZeroU64::new(len).expect("a clone of 0 bytes means the whole file");
    let res = ReflinkBlockBuilder::new(src, dst, len)
        .from_offset(src_off)
        .to_offset(dst_off)
        .reflink_block();
    match res {
        Ok(()) => Ok(Cloned::Done),
        Err(e) => match Errno::from_io_error(&e) {
            Some(Errno::XDEV | Errno::INVAL | Errno::PERM | Errno::TXTBSY | Errno::ISDIR) => {
                Ok(Cloned::NotHere)
            }
            Some(Errno::OPNOTSUPP | Errno::NOTTY | Errno::NOSYS) => Ok(Cloned::Never),
            _ if e.kind() == io::ErrorKind::Unsupported => Ok(Cloned::Never),
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_clone_whole_aligned_blocks_and_copy_the_rest() {
        const B: u64 = 4096;
        // Aligned: whole blocks cloned, the partial tail copied.
        assert_eq!(plan(B, 0, 1 << 20, 3 * B + 100), Plan::Clone(3 * B));
        assert_eq!(plan(B, 3 * B, (1 << 20) + 3 * B, 100), Plan::Copy(100));
        // Offsets aligned alike: copy up to the boundary, then clone.
        assert_eq!(plan(B, 1000, 5096, 10 * B), Plan::Copy(B - 1000));
        assert_eq!(plan(B, 1000, 5096, 50), Plan::Copy(50));
        // Not alike (1 KiB filesystem blocks at an odd block number): never cloned.
        assert_eq!(plan(B, 0, 1024, 10 * B), Plan::Copy(10 * B));
        assert_eq!(plan(B, 0, 0, B - 1), Plan::Copy(B - 1));
    }

    #[test]
    fn a_filesystem_that_cannot_clone_says_so() {
        // /var/tmp is where the tests' temp files go; on ext4 or tmpfs cloning is unsupported,
        // on XFS or btrfs it works. Either way the answer is not an error, and a clone that
        // worked reads back the same.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let src = File::create_new(dir.path().join("src")).unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 253) as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&src, &data, 0).unwrap();
        let dst = File::create_new(dir.path().join("dst")).unwrap();
        dst.set_len(1 << 20).unwrap();
        let b = block_size(&dst).unwrap();
        assert!(b.is_power_of_two(), "{b}");
        match range(&src, 0, &dst, 8192, 8192).unwrap() {
            Cloned::Done => {
                let mut back = vec![0u8; 8192];
                std::os::unix::fs::FileExt::read_exact_at(&dst, &mut back, 8192).unwrap();
                assert_eq!(back, data[..8192]);
            }
            Cloned::Never | Cloned::NotHere => {}
        }
    }
}
