//! The virtual disk: an ordered list of regions (in-memory bytes, a range of a file, or zeros)
//! that together cover the whole disk exactly once.
//!
//! A [`Disk`] is the single description of the image that both sinks consume: the image writer
//! (`crate::image`) copies it region by region into OUTPUT, leaving zero regions and file holes as
//! holes, and the NBD server answers reads (and block-status queries) from the same regions, so
//! the two can never disagree. The GPT bytes themselves are built in [`gpt`].

pub mod boot_entry;
pub mod boot_files;
pub mod esp;
pub mod fat;
pub mod gpt;
pub mod part_types;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::mkfs::LazyData;
use crate::source::live::LiveFile;

/// Where the bytes of a region come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// In-memory bytes, starting at the given offset into the slice.
    Bytes(Arc<[u8]>, usize),
    /// A range of a (usually sparse) file starting at `offset`; holes and anything past the
    /// file's end read as zeros.
    File { file: Arc<File>, offset: u64 },
    /// Zeros.
    Zero,
    /// A source file's bytes from `offset`, read when asked for (`--serve --lazy`).
    Live { file: Arc<LiveFile>, offset: u64 },
}

impl From<LazyData> for Source {
    fn from(d: LazyData) -> Source {
        match d {
            LazyData::Live { file, offset } => Source::Live { file, offset },
        }
    }
}

impl Source {
    /// The same source, `by` bytes further on.
    pub fn advanced(&self, by: u64) -> Source {
        match self {
            Source::Bytes(b, start) => Source::Bytes(b.clone(), start + by as usize),
            Source::File { file, offset } => Source::File {
                file: file.clone(),
                offset: offset + by,
            },
            Source::Zero => Source::Zero,
            Source::Live { file, offset } => Source::Live {
                file: file.clone(),
                offset: offset + by,
            },
        }
    }
}

/// `len` bytes of the disk starting at `start`, read from `source`.
#[derive(Debug, Clone)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub source: Source,
}

impl Region {
    /// One past the last byte of the region.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// One partition of a GPT disk: its table entry and `len` bytes of contents read from `source`
/// (a multiple of 512; the partition is rounded up to 1 MiB with zeros).
#[derive(Debug, Clone)]
pub struct Part {
    pub entry: gpt::Entry,
    pub len: u64,
    pub source: Source,
}

/// A virtual disk: sorted, contiguous, non-overlapping, non-empty regions covering `[0, size)`.
#[derive(Debug, Clone)]
pub struct Disk {
    regions: Vec<Region>,
    size: u64,
    partition_offset: u64,
    partition_size: u64,
}

impl Disk {
    /// GPT-partitioned disk: primary GPT bytes, the filesystem image (bytes `[0, fs_size)` of
    /// `fs`, a sparse file whose holes read as zero), zero padding, backup GPT.
    pub fn partitioned(fs: Arc<File>, fs_size: u64, guids: &gpt::Guids) -> Disk {
        Disk::partitioned_at(fs, 0, fs_size, guids)
    }

    /// Like [`Disk::partitioned`], with the filesystem at `fs_offset` in `fs` (an image file
    /// whose filesystem was built in place at the partition offset).
    pub fn partitioned_at(fs: Arc<File>, fs_offset: u64, fs_size: u64, guids: &gpt::Guids) -> Disk {
        let part = Part {
            entry: guids.entry(),
            len: fs_size,
            source: Source::File {
                file: fs,
                offset: fs_offset,
            },
        };
        Disk::gpt(guids.disk, vec![part], 0)
    }

    /// GPT disk with GUID `disk` and `parts` in table order, placed by [`gpt::place`]: primary
    /// GPT bytes, each partition's contents followed by zeros to its MiB boundary, zeros, backup
    /// GPT. Partition `fs` holds the filesystem ([`Disk::partition_offset`]).
    pub fn gpt(disk: uuid::Uuid, parts: Vec<Part>, fs: usize) -> Disk {
        let table: Vec<(gpt::Entry, u64)> =
            parts.iter().map(|p| (p.entry.clone(), p.len)).collect();
        let layout = gpt::layout_parts(disk, &table);
        let backup_offset = layout.backup_offset();
        let mut b = Builder::default();
        b.push(
            layout.primary.len() as u64,
            Source::Bytes(layout.primary.into(), 0),
        );
        for (part, placed) in parts.into_iter().zip(&layout.partitions) {
            b.push(placed.offset - b.end, Source::Zero);
            b.push(part.len, part.source);
        }
        b.push(backup_offset - b.end, Source::Zero);
        b.push(
            layout.backup.len() as u64,
            Source::Bytes(layout.backup.into(), 0),
        );
        let at = layout.partitions[fs];
        b.finish(at.offset, at.size)
    }

    /// The bare filesystem (like nbdkit's partition filter).
    pub fn bare(fs: Arc<File>, fs_size: u64) -> Disk {
        let mut b = Builder::default();
        b.push(
            fs_size,
            Source::File {
                file: fs,
                offset: 0,
            },
        );
        b.finish(0, fs_size)
    }

    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The regions, in disk order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Byte offset of the filesystem's partition on the disk (0 for a bare disk).
    pub fn partition_offset(&self) -> u64 {
        self.partition_offset
    }

    /// Size in bytes of the filesystem's partition (of the filesystem for a bare disk).
    pub fn partition_size(&self) -> u64 {
        self.partition_size
    }

    /// Reads bytes at `offset` into `buf` (must be within the disk), from whatever regions cover
    /// it (pread for File sources, zero fill for Zero).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "read of {} bytes at {offset} is beyond the end of the {}-byte disk",
                        buf.len(),
                        self.size
                    ),
                )
            })?;
        let first = self.regions.partition_point(|r| r.end() <= offset);
        let mut pos = offset;
        for region in &self.regions[first..] {
            if pos >= end {
                break;
            }
            let n = (region.end().min(end) - pos) as usize;
            let within = pos - region.start;
            let out = &mut buf[(pos - offset) as usize..][..n];
            match &region.source {
                Source::Bytes(bytes, start) => {
                    let s = start + within as usize;
                    out.copy_from_slice(&bytes[s..s + n]);
                }
                Source::File { file, offset: o } => read_file_at(file, out, o + within)?,
                Source::Zero => out.fill(0),
                Source::Live { file, offset: o } => file.read_at(out, o + within)?,
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// The disk with each of `parts` (disk offset, length, source; sorted, not overlapping)
    /// in place of what covered those bytes. Each part must lie within one region.
    pub fn overlay(self, parts: Vec<(u64, u64, Source)>) -> Disk {
        let mut b = Builder::default();
        let mut parts = parts.into_iter().filter(|p| p.1 > 0).peekable();
        for r in self.regions {
            let mut pos = r.start;
            while let Some((at, len, _)) = parts.peek() {
                let (at, len) = (*at, *len);
                if at >= r.end() {
                    break;
                }
                assert!(
                    at >= pos && at + len <= r.end(),
                    "overlay part {at}+{len} does not fit region {}+{}",
                    r.start,
                    r.len
                );
                b.push(at - pos, r.source.advanced(pos - r.start));
                let (_, _, source) = parts.next().expect("peeked");
                b.push(len, source);
                pos = at + len;
            }
            b.push(r.end() - pos, r.source.advanced(pos - r.start));
        }
        assert!(parts.next().is_none(), "overlay part beyond the disk");
        b.finish(self.partition_offset, self.partition_size)
    }

    /// Checks the invariant: regions non-empty, sorted, contiguous, covering `[0, size)`.
    fn check(&self) -> bool {
        let mut pos = 0;
        for r in &self.regions {
            if r.len == 0 || r.start != pos {
                return false;
            }
            if let Source::Bytes(bytes, start) = &r.source {
                if (*start as u64).saturating_add(r.len) > bytes.len() as u64 {
                    return false;
                }
            }
            pos = r.end();
        }
        pos == self.size
    }
}

/// Fills `buf` from `file` at `offset`; bytes past the end of the file read as zeros.
fn read_file_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends regions back to back, dropping empty ones.
#[derive(Default)]
struct Builder {
    regions: Vec<Region>,
    end: u64,
}

impl Builder {
    fn push(&mut self, len: u64, source: Source) {
        if len > 0 {
            self.regions.push(Region {
                start: self.end,
                len,
                source,
            });
            self.end += len;
        }
    }

    fn finish(self, partition_offset: u64, partition_size: u64) -> Disk {
        let disk = Disk {
            regions: self.regions,
            size: self.end,
            partition_offset,
            partition_size,
        };
        debug_assert!(disk.check(), "disk regions do not tile the disk: {disk:?}");
        disk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file of `size` bytes with `data` written at each offset.
    fn sparse_file(size: u64, data: &[(u64, &[u8])]) -> Arc<File> {
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        for (off, bytes) in data {
            f.write_all_at(bytes, *off).unwrap();
        }
        Arc::new(f)
    }

    /// The disk's content built naively, for comparison.
    fn expected(disk: &Disk, fs_content: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; disk.size() as usize];
        for r in disk.regions() {
            let out = &mut v[r.start as usize..r.end() as usize];
            match &r.source {
                Source::Bytes(b, s) => out.copy_from_slice(&b[*s..*s + r.len as usize]),
                Source::File { offset, .. } => {
                    let o = *offset as usize;
                    out.copy_from_slice(&fs_content[o..o + r.len as usize])
                }
                Source::Zero => {}
                Source::Live { .. } => unreachable!("no live sources in these tests"),
            }
        }
        v
    }

    #[test]
    fn partitioned_regions_tile_the_disk() {
        for fs_size in [4096u64, 1 << 20, (3 << 20) + 4096] {
            let fs = sparse_file(fs_size, &[]);
            let d = Disk::partitioned(fs, fs_size, &gpt::Guids::random());
            assert!(d.check());
            assert_eq!(d.size(), gpt::disk_size_for(fs_size));
            assert_eq!(d.partition_offset(), 1 << 20);
            assert_eq!(d.partition_size(), gpt::partition_size_for(fs_size));
            let r = d.regions();
            assert_eq!(r.len(), 4);
            assert!(matches!(r[0].source, Source::Bytes(..)));
            assert!(matches!(r[1].source, Source::File { offset: 0, .. }));
            assert_eq!((r[1].start, r[1].len), (1 << 20, fs_size));
            assert!(matches!(r[2].source, Source::Zero));
            assert_eq!(r[3].len, 33 * 512);
            assert!(r.iter().all(|r| r.len > 0));
        }
        let bare = Disk::bare(sparse_file(8192, &[]), 8192);
        assert!(bare.check());
        assert_eq!((bare.size(), bare.partition_offset()), (8192, 0));
        assert_eq!(Disk::bare(sparse_file(0, &[]), 0).regions().len(), 0);
    }

    #[test]
    fn two_partitions_tile_the_disk_each_from_its_mib() {
        let esp = Part {
            entry: gpt::Entry {
                part_type: gpt::ESP_TYPE,
                guid: uuid::Uuid::new_v4(),
                name: gpt::ESP_NAME.into(),
            },
            len: (2 << 20) + 512,
            source: Source::Bytes(vec![5u8; (2 << 20) + 512].into(), 0),
        };
        let fs = Part {
            entry: gpt::Guids::random().entry(),
            len: 8192,
            source: Source::File {
                file: sparse_file(8192, &[(0, &[6u8; 8192])]),
                offset: 0,
            },
        };
        let d = Disk::gpt(uuid::Uuid::new_v4(), vec![esp, fs], 1);
        assert!(d.check());
        assert_eq!(
            (d.partition_offset(), d.partition_size()),
            (4 << 20, 1 << 20)
        );
        assert_eq!(d.size(), 6 << 20);
        let mut all = vec![0u8; d.size() as usize];
        d.read_at(&mut all, 0).unwrap();
        let mib = 1 << 20;
        assert!(all[mib..3 * mib + 512].iter().all(|&b| b == 5));
        assert!(all[3 * mib + 512..4 * mib].iter().all(|&b| b == 0));
        assert!(all[4 * mib..4 * mib + 8192].iter().all(|&b| b == 6));
        assert!(all[4 * mib + 8192..5 * mib].iter().all(|&b| b == 0));
    }

    #[test]
    fn overlay_splits_regions_and_reads_the_parts() {
        let fs_size = 3 << 20;
        let fs = sparse_file(fs_size, &[(0, &[1u8; 8192]), (2 << 20, &[2u8; 4096])]);
        let d = Disk::partitioned(fs, fs_size, &gpt::Guids::random());
        let mut before = vec![0u8; d.size() as usize];
        d.read_at(&mut before, 0).unwrap();
        let fs_at = d.partition_offset();
        let part = |n: u8, len: usize| Source::Bytes(vec![n; len].into(), 0);
        // One part at the start of the filesystem region, one inside it, one at its end.
        let parts = vec![
            (fs_at, 4096, part(7, 4096)),
            (fs_at + (1 << 20), 100, part(8, 100)),
            (fs_at + fs_size - 10, 10, part(9, 10)),
        ];
        let o = d.overlay(parts.clone());
        assert!(o.check());
        assert_eq!(o.regions().len(), 4 + 4);
        let mut after = vec![0u8; o.size() as usize];
        o.read_at(&mut after, 0).unwrap();
        let mut want = before;
        for (at, len, src) in &parts {
            let Source::Bytes(b, _) = src else {
                unreachable!()
            };
            want[*at as usize..(*at + *len) as usize].copy_from_slice(b);
        }
        assert_eq!(after, want);
    }

    #[test]
    fn invariant_check_rejects_bad_tilings() {
        let mut d = Disk::bare(sparse_file(8192, &[]), 8192);
        d.size = 8193;
        assert!(!d.check());
        d.size = 8192;
        d.regions[0].start = 1;
        assert!(!d.check());
        d.regions[0].start = 0;
        d.regions.push(Region {
            start: 8192,
            len: 0,
            source: Source::Zero,
        });
        assert!(!d.check());
    }

    #[test]
    fn read_at_across_region_boundaries() {
        let fs_size = (2 << 20) + 4096;
        let a: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 + 1).collect();
        let b = vec![0xABu8; 3000];
        let end_off = fs_size - 100;
        let fs = sparse_file(fs_size, &[(0, &a), (1 << 20, &b), (end_off, &[7u8; 100])]);
        let mut content = vec![0u8; fs_size as usize];
        content[..a.len()].copy_from_slice(&a);
        content[1 << 20..(1 << 20) + b.len()].copy_from_slice(&b);
        content[end_off as usize..].fill(7);

        let d = Disk::partitioned(fs.clone(), fs_size, &gpt::Guids::random());
        let want = expected(&d, &content);
        let mut whole = vec![0u8; d.size() as usize];
        d.read_at(&mut whole, 0).unwrap();
        assert_eq!(whole, want);
        // Reads straddling every boundary, and single bytes on both sides.
        for r in d.regions() {
            for (off, len) in [(r.start.saturating_sub(700), 1500), (r.start, 1)] {
                let len = len.min(d.size() - off) as usize;
                let mut buf = vec![0x55u8; len];
                d.read_at(&mut buf, off).unwrap();
                assert_eq!(buf, want[off as usize..off as usize + len], "at {off}");
            }
        }
        let mut last = [0u8; 1];
        d.read_at(&mut last, d.size() - 1).unwrap();
        d.read_at(&mut [], d.size()).unwrap();
        assert!(d.read_at(&mut [0u8; 2], d.size() - 1).is_err());
        assert!(d.read_at(&mut [0u8; 1], u64::MAX).is_err());

        let bare = Disk::bare(fs, fs_size);
        let mut buf = vec![0u8; 10_000];
        bare.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, content[..10_000]);
    }

    #[test]
    fn file_shorter_than_region_reads_zeros() {
        let fs = sparse_file(10, &[(0, &[9u8; 10])]);
        let d = Disk::bare(fs, 4096);
        let mut buf = vec![1u8; 4096];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf[..10].iter().all(|&x| x == 9));
        assert!(buf[10..].iter().all(|&x| x == 0));
    }
}
