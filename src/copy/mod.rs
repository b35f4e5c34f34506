//! Moving file bytes in large runs, the one copy engine of the program. Each step takes the
//! fastest way that works for the bytes at hand, and falls back: cloning ([`clone`], the
//! destination shares the source's extents: only whole aligned blocks, on filesystems such as XFS
//! and btrfs), then copying in the kernel ([`kernel`], copy_file_range), then copying through
//! this process ([`user`], pread/pwrite, skipping zero blocks). [`CopyStats`] counts the bytes
//! that went each way, for -v.

pub mod clone;
pub mod kernel;
pub mod user;

use std::fs::File;
use std::io;

use self::clone::{Cloned, Plan};
pub use self::user::write_nonzero;

/// Largest single step (a multiple of any block size that cloning can need).
const RUN: u64 = 64 << 20;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Shared with the source (FICLONERANGE).
    pub cloned: u64,
    /// Copied by copy_file_range (which may itself share extents on some filesystems).
    pub in_kernel: u64,
    /// Read into this process and written out.
    pub copied: u64,
}

impl std::ops::AddAssign for CopyStats {
    fn add_assign(&mut self, o: CopyStats) {
        self.cloned += o.cloned;
        self.in_kernel += o.in_kernel;
        self.copied += o.copied;
    }
}

/// Copies byte ranges into one destination file; remembers which ways work there.
pub struct RangeCopier<'a> {
    dst: &'a File,
    /// The block size clones into `dst` are aligned to; None once cloning is known not to work
    /// there (or is turned off).
    clone_block: Option<u64>,
    /// False once copy_file_range has failed with an "unsupported" error.
    kernel: bool,
    buf: Vec<u8>,
    stats: CopyStats,
}

impl<'a> RangeCopier<'a> {
    /// A copier into `dst`, trying every way.
    pub fn new(dst: &'a File) -> RangeCopier<'a> {
        RangeCopier {
            dst,
            clone_block: clone::block_size(dst).ok(),
            kernel: true,
            buf: Vec::new(),
            stats: CopyStats::default(),
        }
    }

    /// Never clones (for tests).
    pub fn without_clone(mut self) -> RangeCopier<'a> {
        self.clone_block = None;
        self
    }

    /// Never copies in the kernel (for tests).
    pub fn without_kernel_copy(mut self) -> RangeCopier<'a> {
        self.kernel = false;
        self
    }

    /// The bytes moved so far, by way.
    pub fn stats(&self) -> CopyStats {
        self.stats
    }

    /// Copies `len` bytes of `src` at `src_off` to the destination at `dst_off`, reporting
    /// progress through `on_bytes`. Returns the bytes copied: fewer than `len` only when the
    /// source ended first. Each step is at most [`RUN`] bytes.
    pub fn copy(
        &mut self,
        src: &File,
        src_off: u64,
        dst_off: u64,
        len: u64,
        on_bytes: &mut dyn FnMut(u64),
    ) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            let n = self.step(src, src_off + done, dst_off + done, (len - done).min(RUN))?;
            if n == 0 {
                break; // the source ended
            }
            on_bytes(n);
            done += n;
        }
        Ok(done)
    }

    /// Moves up to `want` bytes at `src_off` to `dst_off` the fastest way that works for them;
    /// the bytes moved, 0 at the source's end.
    fn step(&mut self, src: &File, src_off: u64, dst_off: u64, want: u64) -> io::Result<u64> {
        let mut n = want;
        if let Some(block) = self.clone_block {
            match clone::plan(block, src_off, dst_off, want) {
                Plan::Clone(c) => match clone::range(src, src_off, self.dst, dst_off, c)? {
                    Cloned::Done => {
                        self.stats.cloned += c;
                        return Ok(c);
                    }
                    Cloned::NotHere => {}
                    Cloned::Never => self.clone_block = None,
                },
                Plan::Copy(c) => n = c,
            }
        }
        if self.kernel {
            match kernel::copy(src, src_off, self.dst, dst_off, n)? {
                Some(k) => {
                    self.stats.in_kernel += k;
                    return Ok(k);
                }
                None => self.kernel = false,
            }
        }
        let k = user::copy(&mut self.buf, src, src_off, self.dst, dst_off, n)?;
        self.stats.copied += k;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn copies_at_offsets_and_reports_short_sources() {
        type Way = fn(RangeCopier) -> RangeCopier;
        let ways: [Way; 3] = [
            |c| c,
            |c| c.without_clone(),
            |c| c.without_clone().without_kernel_copy(),
        ];
        for (i, way) in ways.iter().enumerate() {
            let dir = tempfile::tempdir_in("/var/tmp").unwrap();
            let src = File::create_new(dir.path().join("src")).unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            src.write_all_at(&data, 0).unwrap();
            let dst = File::create_new(dir.path().join("dst")).unwrap();
            dst.set_len(1 << 20).unwrap();
            let mut c = way(RangeCopier::new(&dst));
            let mut seen = 0;
            // Offsets aligned alike (an unaligned head, whole blocks, a tail), then not alike.
            for (from, to) in [(1000, 5096), (1000, 300_000)] {
                assert_eq!(
                    c.copy(&src, from, to, 200_000, &mut |n| seen += n).unwrap(),
                    200_000
                );
                let mut back = vec![0u8; 200_000];
                dst.read_exact_at(&mut back, to).unwrap();
                assert_eq!(back, data[1000..201_000]);
            }
            assert_eq!(seen, 400_000);
            assert_eq!(
                c.copy(&src, 299_000, 600_000, 5000, &mut |_| {}).unwrap(),
                1000
            );
            let s = c.stats();
            assert_eq!(s.cloned + s.in_kernel + s.copied, 401_000, "{s:?}");
            match i {
                1 => assert_eq!(s.cloned, 0),
                2 => assert_eq!((s.cloned, s.in_kernel, s.copied), (0, 0, 401_000)),
                _ => {}
            }
        }
    }
}
