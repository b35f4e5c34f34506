//! The copy-on-write overlay behind `--cow`: clients write to an unlinked sparse temp file,
//! never to the source; reads merge that overlay with the read-only base export per 4 KiB
//! block. One overlay is shared by every connection.
//!
//! A bitmap says which blocks the overlay holds (in full: a partial write to a block not yet
//! in the overlay copies the block from the base first). A block's bit is set only after its
//! bytes are in the overlay, so a reader that sees the bit reads the overlay. Operations that
//! touch blocks not yet in the overlay take striped locks over their range, so two writers
//! can never both copy the same block from the base and lose one another's bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::FallocateFlags;

use super::{Export, Extent};

/// Overlay granularity in bytes.
pub const BLOCK: u64 = 4096;
/// Number of block lock stripes (block `b` is guarded by stripe `b % STRIPES`).
const STRIPES: usize = 256;
/// `NBD_STATE_HOLE | NBD_STATE_ZERO`.
const HOLE_ZERO: u32 = 3;
/// Block status answers stop after this many extents (the caller asks again from there).
const MAX_EXTENTS: usize = 1024;
/// Zeros written at a time where the overlay cannot punch holes.
const ZERO_CHUNK: usize = 1 << 20;

/// Copy-on-write overlay over a read-only export.
pub struct CowExport {
    base: Arc<dyn Export>,
    size: u64,
    overlay: File,
    /// One bit per block: set when the overlay holds the block.
    written: Vec<AtomicU64>,
    stripes: Vec<Mutex<()>>,
}

impl CowExport {
    /// An empty overlay over `base`: an unlinked sparse file of the base's size in `tmpdir`.
    pub fn new(base: Arc<dyn Export>, tmpdir: &Path) -> io::Result<CowExport> {
        let size = base.size();
        let overlay = tempfile::tempfile_in(tmpdir)
            .and_then(|f| f.set_len(size).map(|()| f))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("overlay file in {}: {e}", tmpdir.display()),
                )
            })?;
        let blocks = size.div_ceil(BLOCK);
        let written = (0..blocks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        Ok(CowExport {
            base,
            size,
            overlay,
            written,
            stripes,
        })
    }

    fn is_written(&self, block: u64) -> bool {
        self.written[(block / 64) as usize].load(Ordering::Acquire) & (1 << (block % 64)) != 0
    }

    fn mark_written(&self, first: u64, end: u64) {
        for b in first..end {
            self.written[(b / 64) as usize].fetch_or(1 << (b % 64), Ordering::Release);
        }
    }

    /// The first block in `start..end` whose state differs from `start`'s (or `end`).
    fn run_end(&self, start: u64, end: u64) -> u64 {
        let state = self.is_written(start);
        let mut b = start;
        while b < end {
            let word = self.written[(b / 64) as usize].load(Ordering::Acquire);
            let word = if state { !word } else { word };
            // Bits at or above b's position that differ from `state`.
            let diff = word & (!0u64 << (b % 64));
            if diff != 0 {
                return (b - b % 64 + u64::from(diff.trailing_zeros())).min(end);
            }
            b = b - b % 64 + 64;
        }
        end
    }

    /// Blocks covering `offset..offset+len`, as `first..end`.
    fn blocks(offset: u64, len: u64) -> (u64, u64) {
        (offset / BLOCK, (offset + len).div_ceil(BLOCK))
    }

    /// True when the overlay already holds every block of the range.
    fn all_written(&self, first: u64, end: u64) -> bool {
        self.is_written(first) && self.run_end(first, end) == end
    }

    /// Locks the stripes of blocks `first..end`, in stripe order.
    fn lock(&self, first: u64, end: u64) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = if end - first >= STRIPES as u64 {
            (0..STRIPES).collect()
        } else {
            (first..end)
                .map(|b| (b % STRIPES as u64) as usize)
                .collect()
        };
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| crate::sync::lock(&self.stripes[i]))
            .collect()
    }

    /// Copies block `b` from the base into the overlay (caller holds its stripe, bit clear).
    fn copy_up(&self, b: u64) -> io::Result<()> {
        let start = b * BLOCK;
        let len = BLOCK.min(self.size - start) as usize;
        let mut buf = vec![0u8; len];
        self.base.read_at(&mut buf, start)?;
        self.overlay.write_all_at(&buf, start)?;
        self.mark_written(b, b + 1);
        Ok(())
    }

    /// Runs `op` over `offset..offset+len` once every block it only partly covers is in the
    /// overlay; afterwards every block of the range is marked written.
    fn modify(&self, offset: u64, len: u64, op: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (first, end) = Self::blocks(offset, len);
        if self.all_written(first, end) {
            return op();
        }
        let _locks = self.lock(first, end);
        let last = end - 1;
        if offset % BLOCK != 0 && !self.is_written(first) {
            self.copy_up(first)?;
        }
        let tail = (offset + len) % BLOCK != 0 && offset + len < self.size;
        if tail && !self.is_written(last) {
            self.copy_up(last)?;
        }
        op()?;
        self.mark_written(first, end);
        Ok(())
    }

    /// Makes `offset..offset+len` of the overlay read as zeros: a hole where allowed and
    /// possible, else written zeros.
    fn zero_overlay(&self, offset: u64, len: u64, punch: bool) -> io::Result<()> {
        let flags = if punch {
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE
        } else {
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE
        };
        match rustix::fs::fallocate(&self.overlay, flags, offset, len) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(e.into()),
        }
        let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.overlay.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Zeroes a range: partial blocks get written zeros, whole blocks a hole or zero range.
    fn zero(&self, offset: u64, len: u64, punch: bool) -> io::Result<()> {
        self.modify(offset, len, || {
            let end = offset + len;
            let inner_start = offset.next_multiple_of(BLOCK);
            let inner_end = if end == self.size {
                end
            } else {
                end - end % BLOCK
            };
            if inner_start >= inner_end {
                return self.zero_overlay(offset, len, false);
            }
            if offset < inner_start {
                self.zero_overlay(offset, inner_start - offset, false)?;
            }
            self.zero_overlay(inner_start, inner_end - inner_start, punch)?;
            if inner_end < end {
                self.zero_overlay(inner_end, end - inner_end, false)?;
            }
            Ok(())
        })
    }

    /// Block status of the overlay's `offset..end`: data, or hole|zero where it has holes.
    fn overlay_extents(&self, offset: u64, end: u64, out: &mut Vec<Extent>) -> io::Result<()> {
        let mut pos = offset;
        while pos < end && out.len() < MAX_EXTENTS {
            match crate::sparse::next_data(&self.overlay, pos, end)? {
                None => {
                    push(out, end - pos, HOLE_ZERO);
                    pos = end;
                }
                Some((data, hole)) => {
                    if data > pos {
                        push(out, data - pos, HOLE_ZERO);
                    }
                    push(out, hole - data, 0);
                    pos = hole;
                }
            }
        }
        Ok(())
    }
}

/// Appends an extent, merging it with the previous one when the flags agree.
fn push(out: &mut Vec<Extent>, len: u64, flags: u32) {
    match out.last_mut() {
        Some(last) if last.flags == flags => last.len += len,
        _ => out.push(Extent { len, flags }),
    }
}

impl Export for CowExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn writable(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (first, end) = Self::blocks(offset, buf.len() as u64);
        let mut b = first;
        let mut done = 0usize;
        while b < end {
            let run_end = self.run_end(b, end);
            let run_stop = (run_end * BLOCK).min(offset + buf.len() as u64);
            let n = (run_stop - (offset + done as u64)) as usize;
            let part = &mut buf[done..done + n];
            let at = offset + done as u64;
            if self.is_written(b) {
                self.overlay.read_exact_at(part, at)?;
            } else {
                self.base.read_at(part, at)?;
            }
            done += n;
            b = run_end;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.modify(offset, buf.len() as u64, || {
            self.overlay.write_all_at(buf, offset)
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.zero(offset, len, may_trim)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len, true)
    }

    fn flush(&self) -> io::Result<()> {
        self.overlay.sync_data()
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = offset + len;
        let (first, end_block) = Self::blocks(offset, len);
        let mut out = Vec::new();
        let mut b = first;
        let mut pos = offset;
        while b < end_block && out.len() < MAX_EXTENTS {
            let run_end = self.run_end(b, end_block);
            let stop = (run_end * BLOCK).min(end);
            if self.is_written(b) {
                self.overlay_extents(pos, stop, &mut out)?;
            } else {
                let mut at = pos;
                while at < stop && out.len() < MAX_EXTENTS {
                    let got = self.base.extents(at, stop - at)?;
                    let before = at;
                    for e in got {
                        let len = e.len.min(stop - at);
                        if len == 0 {
                            break;
                        }
                        push(&mut out, len, e.flags);
                        at += len;
                    }
                    if at == before {
                        return Err(io::Error::other("base export returned no extents"));
                    }
                }
                if at < stop {
                    break;
                }
            }
            pos = stop;
            b = run_end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory base: bytes, with block status "data" up to `data_end`, hole|zero after.
    struct Mem {
        bytes: Vec<u8>,
        data_end: u64,
    }

    impl Export for Mem {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
            Ok(())
        }
        fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
            // One extent per call, to exercise the caller's loop.
            Ok(vec![if offset < self.data_end {
                Extent {
                    len: len.min(self.data_end - offset),
                    flags: 0,
                }
            } else {
                Extent {
                    len,
                    flags: HOLE_ZERO,
                }
            }])
        }
    }

    const SIZE: usize = 10 * BLOCK as usize + 1000;

    fn setup(data_end: u64) -> (CowExport, Vec<u8>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8 + 1).collect();
        bytes[data_end as usize..].fill(0);
        let base = Arc::new(Mem {
            bytes: bytes.clone(),
            data_end,
        });
        (CowExport::new(base, dir.path()).unwrap(), bytes, dir)
    }

    fn read_all(cow: &CowExport) -> Vec<u8> {
        let mut buf = vec![0u8; SIZE];
        cow.read_at(&mut buf, 0).unwrap();
        buf
    }

    fn extents_all(cow: &CowExport) -> Vec<(u64, u32)> {
        let ext = cow.extents(0, SIZE as u64).unwrap();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), SIZE as u64);
        ext.iter().map(|e| (e.len, e.flags)).collect()
    }

    #[test]
    fn overlapping_unaligned_writes() {
        let (cow, mut model, _dir) = setup(SIZE as u64);
        assert!(cow.writable());
        assert_eq!(read_all(&cow), model);
        for (off, len, v) in [(1000, 5000, 0xaa), (3000, 6000, 0xbb), (4095, 2, 0xcc)] {
            cow.write_at(&vec![v; len], off as u64).unwrap();
            model[off..off + len].fill(v);
            assert_eq!(read_all(&cow), model);
        }
        // Reads that start and end mid-block, across written and unwritten blocks.
        for (off, len) in [(1, 4096), (4000, 9000), (8191, 2), (SIZE - 5000, 5000)] {
            let mut buf = vec![0u8; len];
            cow.read_at(&mut buf, off as u64).unwrap();
            assert_eq!(buf, model[off..off + len], "read {off}+{len}");
        }
        // The last, partial block.
        cow.write_at(b"tail", SIZE as u64 - 4).unwrap();
        model[SIZE - 4..].copy_from_slice(b"tail");
        assert_eq!(read_all(&cow), model);
        cow.flush().unwrap();
    }

    #[test]
    fn pseudo_random_ops_match_a_model() {
        let (cow, mut model, _dir) = setup(6 * BLOCK);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for i in 0..300 {
            let off = next(SIZE as u64) as usize;
            let len = 1 + next((SIZE - off) as u64).min(3 * BLOCK) as usize;
            match i % 4 {
                0 | 1 => {
                    let v = (i % 200) as u8 + 1;
                    cow.write_at(&vec![v; len], off as u64).unwrap();
                    model[off..off + len].fill(v);
                }
                2 => {
                    cow.write_zeroes(off as u64, len as u64, i % 8 == 2)
                        .unwrap();
                    model[off..off + len].fill(0);
                }
                _ => {
                    cow.trim(off as u64, len as u64).unwrap();
                    model[off..off + len].fill(0);
                }
            }
            assert_eq!(read_all(&cow), model, "after op {i} at {off}+{len}");
        }
        extents_all(&cow);
    }

    #[test]
    fn zeroing_and_extents_merge_base_and_overlay() {
        let b = BLOCK;
        let (cow, mut model, _dir) = setup(4 * b);
        let tail = SIZE as u64 - 4 * b;
        assert_eq!(extents_all(&cow), vec![(4 * b, 0), (tail, HOLE_ZERO)]);
        // Data written into the base's hole; a whole-block trim inside its data.
        cow.write_at(&[7u8; 4096], 6 * b).unwrap();
        model[6 * b as usize..7 * b as usize].fill(7);
        cow.trim(b, b).unwrap();
        model[b as usize..2 * b as usize].fill(0);
        assert_eq!(read_all(&cow), model);
        assert_eq!(
            extents_all(&cow),
            vec![
                (b, 0),
                (b, HOLE_ZERO),
                (2 * b, 0),
                (2 * b, HOLE_ZERO),
                (b, 0),
                (SIZE as u64 - 7 * b, HOLE_ZERO),
            ]
        );
        // Unaligned zeroing: the partial blocks become data, the whole one a hole.
        cow.write_zeroes(2 * b + 100, 2 * b, true).unwrap();
        model[(2 * b + 100) as usize..(4 * b + 100) as usize].fill(0);
        assert_eq!(read_all(&cow), model);
        let ext = extents_all(&cow);
        assert_eq!(ext[..3], [(b, 0), (b, HOLE_ZERO), (b, 0)]);
        assert_eq!(ext[3], (b, HOLE_ZERO));
        // A sub-range starting mid-block.
        let ext = cow.extents(b + 10, 100).unwrap();
        assert_eq!(
            ext,
            vec![Extent {
                len: 100,
                flags: HOLE_ZERO
            }]
        );
    }

    #[test]
    fn concurrent_writers_sharing_blocks_lose_nothing() {
        let (cow, _, _dir) = setup(SIZE as u64);
        let cow = Arc::new(cow);
        // Eight threads, each owning 1000 unaligned bytes: neighbours share blocks.
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let cow = Arc::clone(&cow);
                std::thread::spawn(move || {
                    for round in 0..50u8 {
                        let v = t * 30 + round % 30 + 1;
                        cow.write_at(&[v; 1000], u64::from(t) * 1000 + 500).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got = read_all(&cow);
        for t in 0..8u8 {
            let at = usize::from(t) * 1000 + 500;
            let want = t * 30 + 49 % 30 + 1;
            assert!(got[at..at + 1000].iter().all(|&x| x == want), "thread {t}");
        }
        assert_eq!(
            got[..500],
            (0..500).map(|i| (i % 251) as u8 + 1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn overlay_in_a_missing_directory_names_it() {
        let base = Arc::new(Mem {
            bytes: vec![0; 10],
            data_end: 0,
        });
        let err = CowExport::new(base, Path::new("/nonexistent/dir"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
    }
}
