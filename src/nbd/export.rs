//! What a connection serves: the [`Export`] trait (reads, optional writes, block status), and
//! its read-only implementation over a [`Disk`](crate::disk::Disk).

use std::io;

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

impl Export for crate::disk::Disk {
    fn size(&self) -> u64 {
        crate::disk::Disk::size(self)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        crate::disk::Disk::read_at(self, buf, offset)
    }

    fn extents(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(vec![Extent { len, flags: 0 }]) // TODO: from the regions
    }
}
