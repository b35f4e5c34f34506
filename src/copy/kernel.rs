//! Copying in the kernel: `copy_file_range`, which never brings the bytes into this process (and
//! on some filesystems shares extents by itself).

use std::fs::File;
use std::io;

use rustix::io::Errno;

/// Copies up to `len` bytes of `src` at `src_off` to `dst` at `dst_off` with one
/// `copy_file_range` call: `Some(bytes copied)` (0 at the source's end), or None when the kernel
/// or the filesystems cannot (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP).
pub fn copy(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    len: u64,
) -> io::Result<Option<u64>> {
    loop {
        match rustix::fs::copy_file_range(
            src,
            Some(&mut src_off),
            dst,
            Some(&mut dst_off),
            len as usize,
        ) {
            Ok(n) => return Ok(Some(n as u64)),
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
