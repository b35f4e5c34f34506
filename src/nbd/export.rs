//! What a connection serves: the [`Export`] trait (reads, optional writes, block status), its
//! read-only implementation over a [`Disk`](crate::disk::Disk) (block status told truthfully
//! from the regions and the file holes), and [`MemExport`], an export in memory for tests.

use std::fs::File;
use std::io;
use std::sync::RwLock;

use crate::disk::{Disk, Source};
use crate::nbd::proto::{STATE_HOLE, STATE_ZERO};

/// One extent of block status: `len` bytes with `NBD_STATE_*` flags (HOLE = 1, ZERO = 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    pub flags: u32,
}

fn read_only() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::PERM.raw_os_error())
}

/// A block device's worth of bytes, shared by every connection (hence `Sync`).
pub trait Export: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// True when clients may write (the copy-on-write overlay).
    fn writable(&self) -> bool {
        false
    }

    /// Fills `buf` from `offset`; the caller has checked the range is inside the export.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes `buf` at `offset` (EPERM when read-only).
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only())
    }

    /// Makes `len` bytes at `offset` read as zeros; `may_trim`: they may become a hole.
    fn write_zeroes(&self, _offset: u64, _len: u64, _may_trim: bool) -> io::Result<()> {
        Err(read_only())
    }

    /// Discards `len` bytes at `offset` (they read as zeros afterwards here).
    fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    /// Makes completed writes durable.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    /// Block status from `offset`: extents in order, describing at least one byte and at most
    /// `len` bytes (`len` > 0, the range inside the export).
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
}

/// Most extents one block-status query on a [`Disk`] reports (the client asks again for more).
const MAX_EXTENTS: usize = 1 << 16;

/// Granularity at which in-memory bytes are checked for zeros.
const ZERO_GRAIN: u64 = 4096;

/// Extents in order, adjacent ones with equal flags merged.
#[derive(Default)]
struct Extents(Vec<Extent>);

impl Extents {
    fn push(&mut self, len: u64, flags: u32) {
        if len == 0 {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.flags == flags => last.len += len,
            _ => self.0.push(Extent { len, flags }),
        }
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_EXTENTS
    }
}

impl Export for Disk {
    fn size(&self) -> u64 {
        Disk::size(self)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        Disk::read_at(self, buf, offset)
    }

    /// Zero regions are holes; file regions follow the file's holes (SEEK_DATA/SEEK_HOLE);
    /// in-memory bytes are data except 4 KiB blocks that are all zero (hole|zero: nothing backs
    /// them, like the GPT padding).
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= Disk::size(self))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "block status of {len} bytes at {offset} is beyond the end of the {}-byte disk",
                        Disk::size(self)
                    ),
                )
            })?;
        let mut out = Extents::default();
        let regions = self.regions();
        let first = regions.partition_point(|r| r.end() <= offset);
        let mut pos = offset;
        for region in &regions[first..] {
            if pos >= end || out.full() {
                break;
            }
            let stop = region.end().min(end);
            match &region.source {
                Source::Zero => out.push(stop - pos, STATE_HOLE | STATE_ZERO),
                // A source file's data range (`--lazy`): holes were left out when it was placed.
                Source::Live { .. } => out.push(stop - pos, 0),
                Source::Bytes(bytes, start) => {
                    let base = *start as u64 + (pos - region.start);
                    let mut p = pos;
                    while p < stop {
                        let next = ((p / ZERO_GRAIN + 1) * ZERO_GRAIN).min(stop);
                        let s = (base + (p - pos)) as usize;
                        let zero = bytes[s..s + (next - p) as usize].iter().all(|&b| b == 0);
                        out.push(next - p, if zero { STATE_HOLE | STATE_ZERO } else { 0 });
                        p = next;
                    }
                }
                Source::File { file, offset: o } => {
                    let from = o + (pos - region.start);
                    file_extents(file, from, from + (stop - pos), &mut out).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("finding the holes of the filesystem image: {e}"),
                        )
                    })?
                }
            }
            pos = stop;
        }
        Ok(out.0)
    }
}

/// Appends the extents of `file` between byte `from` and `to`: holes (and anything past the
/// end of the file) are hole|zero, the rest data.
fn file_extents(file: &File, from: u64, to: u64, out: &mut Extents) -> io::Result<()> {
    let mut p = from;
    while p < to && !out.full() {
        match crate::sparse::next_data(file, p, to)? {
            None => {
                out.push(to - p, STATE_HOLE | STATE_ZERO);
                p = to;
            }
            Some((data, hole)) => {
                if data > p {
                    out.push(data - p, STATE_HOLE | STATE_ZERO);
                }
                out.push(hole - data, 0);
                p = hole;
            }
        }
    }
    Ok(())
}

/// An export held in memory, for tests and fuzzing: block status reports 4 KiB blocks that
/// are all zero as hole|zero.
pub struct MemExport {
    data: RwLock<Vec<u8>>,
    writable: bool,
}

impl MemExport {
    pub fn new(data: Vec<u8>, writable: bool) -> MemExport {
        MemExport {
            data: RwLock::new(data),
            writable,
        }
    }

    /// A copy of the current content.
    pub fn content(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{len} bytes at {offset} are outside the {size}-byte export"),
            )),
        }
    }

    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        let r = self.range(offset, len)?;
        self.data.write().unwrap_or_else(|e| e.into_inner())[r].fill(0);
        Ok(())
    }
}

impl Export for MemExport {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn writable(&self) -> bool {
        self.writable
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.read().unwrap_or_else(|e| e.into_inner())[r]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        let r = self.range(offset, buf.len() as u64)?;
        self.data.write().unwrap_or_else(|e| e.into_inner())[r].copy_from_slice(buf);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_trim: bool) -> io::Result<()> {
        self.zero(offset, len)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let r = self.range(offset, len)?;
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Extents::default();
        let mut p = r.start as u64;
        while p < r.end as u64 {
            let next = ((p / ZERO_GRAIN + 1) * ZERO_GRAIN).min(r.end as u64);
            let zero = data[p as usize..next as usize].iter().all(|&b| b == 0);
            out.push(next - p, if zero { STATE_HOLE | STATE_ZERO } else { 0 });
            p = next;
        }
        Ok(out.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    const HZ: u32 = STATE_HOLE | STATE_ZERO;

    /// A sparse file of `size` bytes with `data` written at each offset.
    fn sparse_file(size: u64, data: &[(u64, usize)]) -> Arc<File> {
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        for &(off, len) in data {
            f.write_all_at(&vec![0xA5u8; len], off).unwrap();
        }
        Arc::new(f)
    }

    fn ext(len: u64, flags: u32) -> Extent {
        Extent { len, flags }
    }

    /// Checks the extents against the content: zero-flagged ranges read as zeros, no two
    /// neighbours share flags, and they cover exactly `len` bytes.
    fn check(d: &dyn Export, offset: u64, len: u64) -> Vec<Extent> {
        let e = d.extents(offset, len).unwrap();
        assert!(!e.is_empty());
        assert_eq!(e.iter().map(|e| e.len).sum::<u64>(), len);
        assert!(e.windows(2).all(|w| w[0].flags != w[1].flags), "{e:?}");
        let mut pos = offset;
        for x in &e {
            if x.flags & STATE_ZERO != 0 {
                let mut buf = vec![1u8; x.len as usize];
                d.read_at(&mut buf, pos).unwrap();
                assert!(buf.iter().all(|&b| b == 0), "extent at {pos} is not zero");
            }
            pos += x.len;
        }
        e
    }

    #[test]
    fn bare_disk_follows_the_file_holes() {
        let mb = 1u64 << 20;
        // Data at [1M, 1M+4K) and [3M, 3M+8K); the file is 4 MiB but the region 5 MiB
        // (the tail past the end of the file reads as zeros).
        let fs = sparse_file(4 * mb, &[(mb, 4096), (3 * mb, 8192)]);
        let d = Disk::bare(fs, 5 * mb);
        let e = check(&d, 0, 5 * mb);
        assert_eq!(
            e,
            vec![
                ext(mb, HZ),
                ext(4096, 0),
                ext(2 * mb - 4096, HZ),
                ext(8192, 0),
                ext(2 * mb - 8192, HZ)
            ]
        );
        // A query inside a data extent, and one straddling data and hole.
        assert_eq!(check(&d, mb + 100, 200), vec![ext(200, 0)]);
        assert_eq!(check(&d, mb + 4000, 200), vec![ext(96, 0), ext(104, HZ)]);
        assert_eq!(check(&d, 4 * mb + 1, 10), vec![ext(10, HZ)]);
        assert_eq!(check(&d, 5 * mb - 1, 1), vec![ext(1, HZ)]);
    }

    #[test]
    fn partitioned_disk_reports_gpt_padding_and_tail_as_zero() {
        let mb = 1u64 << 20;
        let fs_size = 2 * mb;
        let fs = sparse_file(fs_size, &[(0, 4096)]);
        let d = Disk::partitioned(fs, fs_size, &gpt::Guids::random());
        let e = check(&d, 0, d.size());
        // The GPT bytes start with data (MBR + header + entries), then zero blocks.
        assert_eq!(e[0].flags, 0);
        assert!(e[0].len < 64 * 1024, "{e:?}");
        assert_eq!(e[1].flags, HZ);
        // Then the filesystem: its first 4 KiB are data, the rest a hole, then padding.
        let part = d.partition_offset();
        let before: u64 = e[..2].iter().map(|x| x.len).sum();
        assert_eq!(before, part);
        assert_eq!(e[2], ext(4096, 0));
        assert_eq!(e[3].flags, HZ);
        // The backup GPT ends the disk with data.
        assert_eq!(e.last().unwrap().flags, 0);
        // Every sub-range agrees with the whole-disk answer.
        for (off, len) in [(0, 512), (part - 10, 20), (d.size() - 33 * 512, 33 * 512)] {
            check(&d, off, len);
        }
    }

    #[test]
    fn out_of_range_queries_are_errors() {
        let d = Disk::bare(sparse_file(8192, &[]), 8192);
        assert!(d.extents(8192, 1).is_err());
        assert!(d.extents(u64::MAX, 2).is_err());
        assert_eq!(check(&d, 0, 8192), vec![ext(8192, HZ)]);
    }

    #[test]
    fn extents_are_capped() {
        // Alternating 4 KiB data and hole blocks, more than MAX_EXTENTS of them.
        let n = MAX_EXTENTS as u64 + 10;
        let blocks: Vec<(u64, usize)> = (0..n).map(|i| (i * 8192, 4096)).collect();
        let d = Disk::bare(sparse_file(n * 8192, &blocks), n * 8192);
        let e = d.extents(0, n * 8192).unwrap();
        assert!(e.len() >= MAX_EXTENTS && e.len() < MAX_EXTENTS + 2);
        assert!(e.iter().map(|x| x.len).sum::<u64>() < n * 8192);
    }

    #[test]
    fn mem_export_reads_writes_and_reports_zero_blocks() {
        let mut v = vec![0u8; 5 * 4096];
        v[4096] = 1;
        let m = MemExport::new(v, true);
        assert_eq!(
            check(&m, 0, m.size()),
            vec![ext(4096, HZ), ext(4096, 0), ext(3 * 4096, HZ)]
        );
        m.write_at(&[7; 10], 3 * 4096).unwrap();
        assert_eq!(check(&m, 2 * 4096, 8192), vec![ext(4096, HZ), ext(4096, 0)]);
        m.write_zeroes(4096, 4096, true).unwrap();
        m.trim(3 * 4096, 4096).unwrap();
        assert_eq!(check(&m, 0, m.size()), vec![ext(5 * 4096, HZ)]);
        assert!(m.write_at(&[1], m.size()).is_err());
        let ro = MemExport::new(vec![0; 10], false);
        assert!(!ro.writable());
        assert_eq!(ro.write_at(&[1], 0).unwrap_err().raw_os_error(), Some(1));
        assert!(ro.trim(0, 1).is_err() && ro.write_zeroes(0, 1, false).is_err());
        assert_eq!(ro.content(), vec![0; 10]);
    }

    /// Serves `export` on a Unix socket in a temp dir (handshake + transmission on a thread
    /// per connection), for real clients; returns the dir and the NBD URI.
    fn serve_unix(export: Arc<dyn Export>) -> (tempfile::TempDir, String) {
        use crate::nbd::handshake::{handshake, ExportInfo};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let (conn, export) = (conn.unwrap(), export.clone());
                std::thread::spawn(move || {
                    let info = ExportInfo {
                        name: "disk".into(),
                        description: "a test disk".into(),
                    };
                    let (mut r, mut w) = (conn.try_clone().unwrap(), conn);
                    if let Ok(Some(neg)) = handshake(&mut r, &mut w, &*export, &info) {
                        let res = crate::nbd::session::transmission(
                            Box::new(r),
                            Box::new(w),
                            export,
                            &neg,
                        );
                        res.unwrap();
                    }
                });
            }
        });
        let uri = format!("nbd+unix:///disk?socket={}", path.display());
        (dir, uri)
    }

    fn tool(args: &[&str]) -> String {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", args[0]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?} failed: {err}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn libnbd_tools_read_the_served_disk_and_its_holes() {
        let mb = 1u64 << 20;
        let fs = sparse_file(4 * mb, &[(mb, 4096), (3 * mb, 8192)]);
        let d = Disk::partitioned(fs, 4 * mb, &gpt::Guids::random());
        let mut content = vec![0u8; d.size() as usize];
        d.read_at(&mut content, 0).unwrap();
        let extents = d.extents(0, d.size()).unwrap();
        let (dir, uri) = serve_unix(Arc::new(d.clone()));

        let json = tool(&["nbdinfo", "--json", &uri]);
        let size = format!("\"export-size\": {}", d.size());
        for want in [&size[..], "\"base:allocation\"", "\"is_read_only\": true"] {
            assert!(json.contains(want), "{want} not in {json}");
        }
        assert!(json.contains("\"can_df\": true") && json.contains("\"can_multi_conn\": true"));
        assert!(json.contains("\"description\": \"a test disk\""), "{json}");

        // nbdinfo --map: "offset length type description" per extent, as the disk says.
        let map = tool(&["nbdinfo", "--map", &uri]);
        let got: Vec<(u64, u64, u32)> = map
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        let mut pos = 0;
        let want: Vec<(u64, u64, u32)> = extents
            .iter()
            .map(|x| {
                pos += x.len;
                (pos - x.len, x.len, x.flags)
            })
            .collect();
        assert_eq!(got, want, "{map}");
        assert!(want.iter().any(|x| x.2 == HZ && x.1 >= mb));

        // nbdcopy with several connections copies the content exactly.
        let out = dir.path().join("copy.img");
        let out_s = out.to_str().unwrap();
        tool(&["nbdcopy", "--connections=4", "--requests=16", &uri, out_s]);
        assert!(
            std::fs::read(&out).unwrap() == content,
            "nbdcopy's copy differs"
        );
    }
}
