//! Where a file's data and holes are: the one SEEK_DATA/SEEK_HOLE walk of the program, used by
//! the scanner (sparse source files), the image writer (copy only data), and block status over
//! NBD (the served filesystem and the copy-on-write overlay).

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{seek, SeekFrom};
use rustix::io::Errno;

/// The first data segment of `f` within `pos..end`: `Some((start, stop))` with
/// `pos <= start < stop <= end`, or `None` when only holes (or the end of the file) remain.
/// A filesystem that cannot tell (EINVAL, EOPNOTSUPP) reports all of `pos..end` as data, which
/// is always safe.
pub fn next_data<F: AsFd>(f: F, pos: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
    if pos >= end {
        return Ok(None);
    }
    let start = match seek(&f, SeekFrom::Data(pos)) {
        Ok(d) => d,
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((pos, end))),
        Err(e) => return Err(e.into()),
    };
    if start >= end {
        return Ok(None);
    }
    let stop = match seek(&f, SeekFrom::Hole(start)) {
        // At least one byte, so that a racing hole punch cannot stall a caller's loop.
        Ok(h) => h.clamp(start + 1, end),
        Err(Errno::NXIO | Errno::INVAL | Errno::OPNOTSUPP) => end,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, stop)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_data_between_holes() {
        let f = tempfile::tempfile().unwrap();
        let mib = 1u64 << 20;
        f.set_len(8 * mib).unwrap();
        f.write_all_at(&[1; 4096], 2 * mib).unwrap();
        f.write_all_at(&[2; 4096], 6 * mib).unwrap();
        let mut found = Vec::new();
        let mut pos = 0;
        while let Some((a, b)) = next_data(&f, pos, 8 * mib).unwrap() {
            found.push((a, b));
            pos = b;
        }
        // Filesystems may round to their block size; the data must be covered, the rest not.
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].0 <= 2 * mib && found[0].1 >= 2 * mib + 4096 && found[0].1 < 6 * mib);
        assert!(found[1].0 <= 6 * mib && found[1].1 >= 6 * mib + 4096);
        assert_eq!(next_data(&f, 7 * mib, 8 * mib).unwrap(), None);
        assert_eq!(next_data(&f, 5, 5).unwrap(), None);
    }
}
