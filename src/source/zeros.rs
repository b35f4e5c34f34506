//! All-zero blocks become holes: a file's bytes are looked at in filesystem blocks (aligned to the
//! file's own offsets, as the filesystem will store it) and only the blocks holding a non-zero
//! byte are kept as data, as `cp --sparse=always` and `mke2fs -d` do. Used while an archive's
//! members are read (their bytes pass through anyway) and, with `--sparse`, on the files of a
//! directory (read once more at scan time).

use std::io;
use std::os::fd::AsFd;

use super::Layout;

/// Bytes read at a time when a directory source's file is scanned.
const READ_BUF: usize = 1 << 20;

/// Whether every byte of `b` is zero (compared 64 bytes at a time, which the compiler
/// vectorises).
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    let whole = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0);
    whole && chunks.remainder().iter().all(|&x| x == 0)
}

/// The data blocks of one file, found as its bytes are fed in (in increasing offsets; a block
/// fed in several pieces is data if any piece has a non-zero byte; bytes never fed are holes).
#[derive(Debug)]
pub struct DataMap {
    block: u64,
    size: u64,
    /// Byte ranges of data blocks (the last one cut at `size`), merged, in order.
    ranges: Vec<(u64, u64)>,
}

impl DataMap {
    /// For a file of `size` bytes on a filesystem of `block`-byte blocks.
    pub fn new(block: u32, size: u64) -> DataMap {
        DataMap {
            block: block as u64,
            size,
            ranges: Vec::new(),
        }
    }

    /// Looks at `buf`, the file's bytes from offset `at`; calls `on_data(start, end)` for each run
    /// of data blocks in it (indexes into `buf`), e.g. to write just those.
    pub fn feed(
        &mut self,
        at: u64,
        buf: &[u8],
        on_data: &mut dyn FnMut(usize, usize) -> io::Result<()>,
    ) -> io::Result<()> {
        let bs = self.block;
        let mut i = 0usize;
        let mut run: Option<usize> = None;
        while i < buf.len() {
            let off = at + i as u64;
            let next = (i as u64 + bs - off % bs).min(buf.len() as u64) as usize;
            if is_zero(&buf[i..next]) {
                if let Some(s) = run.take() {
                    on_data(s, i)?;
                }
            } else {
                let start = off - off % bs;
                self.mark(start, (start + bs).min(self.size));
                run.get_or_insert(i);
            }
            i = next;
        }
        if let Some(s) = run {
            on_data(s, buf.len())?;
        }
        Ok(())
    }

    fn mark(&mut self, a: u64, b: u64) {
        match self.ranges.last_mut() {
            Some(l) if l.1 >= a && l.0 <= a => l.1 = l.1.max(b),
            _ => self.ranges.push((a, b)),
        }
    }

    /// The file's layout: dense when every block holds data.
    pub fn finish(mut self) -> Layout {
        // Pieces may come out of order (a hostile sparse map is checked elsewhere): sort, merge.
        if self.ranges.windows(2).any(|w| w[0].1 > w[1].0) {
            self.ranges.sort_unstable();
            let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
            for r in self.ranges {
                match out.last_mut() {
                    Some(l) if l.1 >= r.0 => l.1 = l.1.max(r.1),
                    _ => out.push(r),
                }
            }
            self.ranges = out;
        }
        if self.size == 0 || self.ranges == [(0, self.size)] {
            return Layout::Dense;
        }
        self.ranges.shrink_to_fit();
        Layout::Sparse(self.ranges)
    }
}

/// The layout of an open file of `size` bytes whose data ranges are `layout`'s, with its
/// all-zero `block`-byte blocks taken out (`--sparse` on a directory source).
pub fn scan_file(f: impl AsFd, size: u64, layout: &Layout, block: u32) -> io::Result<Layout> {
    let mut map = DataMap::new(block, size);
    let mut buf = vec![0u8; READ_BUF];
    for (a, b) in layout.data_ranges(size) {
        let mut pos = a;
        while pos < b {
            let want = ((b - pos) as usize).min(READ_BUF);
            let got = match rustix::io::pread(&f, &mut buf[..want], pos) {
                Ok(0) => return Err(io::Error::other("it shrank while being read")),
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            map.feed(pos, &buf[..got], &mut |_, _| Ok(()))?;
            pos += got as u64;
        }
    }
    Ok(map.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_of(block: u32, size: u64, pieces: &[(u64, &[u8])]) -> (Layout, Vec<(u64, u64)>) {
        let mut m = DataMap::new(block, size);
        let mut written = Vec::new();
        for &(at, buf) in pieces {
            m.feed(at, buf, &mut |s, e| {
                written.push((at + s as u64, at + e as u64));
                Ok(())
            })
            .unwrap();
        }
        (m.finish(), written)
    }

    #[test]
    fn zero_blocks_aligned_to_the_file_offset_become_holes() {
        let mut buf = vec![0u8; 5 * 1024];
        buf[1024 + 3] = 1; // block 1
        buf[4 * 1024 + 1023] = 2; // block 4
        let (l, w) = layout_of(1024, 5 * 1024, &[(0, &buf)]);
        assert_eq!(l, Layout::Sparse(vec![(1024, 2048), (4096, 5120)]));
        assert_eq!(w, vec![(1024, 2048), (4096, 5120)]);
        // Fed in two pieces split inside a block, with 4 KiB blocks: both blocks hold data.
        let (l, _) = layout_of(4096, 5 * 1024, &[(0, &buf[..1000]), (1000, &buf[1000..])]);
        assert_eq!(l, Layout::Dense);
    }

    #[test]
    fn dense_all_zero_and_empty_files() {
        let (l, _) = layout_of(4096, 10_000, &[(0, &[7u8; 10_000])]);
        assert_eq!(l, Layout::Dense);
        let (l, w) = layout_of(4096, 1 << 20, &[(0, &vec![0u8; 1 << 20])]);
        assert_eq!((l, w), (Layout::Sparse(vec![]), vec![]));
        assert_eq!(layout_of(4096, 0, &[]).0, Layout::Dense);
        // A last partial block with data ends at the size.
        let mut buf = vec![0u8; 9000];
        buf[8999] = 1;
        assert_eq!(
            layout_of(4096, 9000, &[(0, &buf)]).0,
            Layout::Sparse(vec![(8192, 9000)])
        );
    }

    #[test]
    fn a_block_split_between_pieces_is_data_if_either_piece_is() {
        let a = vec![0u8; 4000];
        let mut b = vec![0u8; 4192];
        b[100] = 1; // offset 4100, in block 1
        let (l, _) = layout_of(4096, 8192, &[(0, &a), (4000, &b)]);
        assert_eq!(l, Layout::Sparse(vec![(4096, 8192)]));
        let mut a = vec![0u8; 4000];
        a[3999] = 1; // block 0, whose rest comes in the second piece
        let (l, _) = layout_of(4096, 8192, &[(0, &a), (4000, &vec![0u8; 4192])]);
        assert_eq!(l, Layout::Sparse(vec![(0, 4096)]));
    }

    #[test]
    fn is_zero_looks_at_every_byte() {
        for n in [0usize, 1, 63, 64, 65, 4096, 4097] {
            let mut v = vec![0u8; n];
            assert!(is_zero(&v));
            if n > 0 {
                v[n - 1] = 1;
                assert!(!is_zero(&v), "{n}");
            }
        }
    }
}
