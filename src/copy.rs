//! Moving file bytes in large runs: `copy_file_range` (in-kernel, may share extents), falling back
//! to pread/pwrite when the kernel or filesystem can't (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use rustix::io::Errno;

/// Largest single copy request.
const RUN: u64 = 64 << 20;
/// Buffer for the fallback path.
const BUF: usize = 1 << 20;

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off`. Returns the bytes copied,
/// fewer than `len` only when the source ended first.
pub fn copy_range<S: AsFd>(
    src: S,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    len: u64,
) -> io::Result<u64> {
    let end = src_off + len;
    let start = src_off;
    while src_off < end {
        let want = (end - src_off).min(RUN) as usize;
        match rustix::fs::copy_file_range(&src, Some(&mut src_off), dst, Some(&mut dst_off), want) {
            Ok(0) => return Ok(src_off - start),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return Ok(src_off - start + fallback(src, src_off, dst, dst_off, end - src_off)?)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(src_off - start)
}

fn fallback<S: AsFd>(
    src: S,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    len: u64,
) -> io::Result<u64> {
    let src = File::from(src.as_fd().try_clone_to_owned()?);
    let mut buf = vec![0u8; BUF.min(len as usize)];
    let end = src_off + len;
    let start = src_off;
    while src_off < end {
        let n = (end - src_off).min(buf.len() as u64) as usize;
        let got = match src.read_at(&mut buf[..n], src_off) {
            Ok(0) => break,
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all_at(&buf[..got], dst_off)?;
        src_off += got as u64;
        dst_off += got as u64;
    }
    Ok(src_off - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_at_offsets_and_reports_short_sources() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::create_new(dir.path().join("src")).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        src.write_all_at(&data, 0).unwrap();
        let dst = File::create_new(dir.path().join("dst")).unwrap();
        assert_eq!(
            copy_range(&src, 1000, &dst, 5000, 200_000).unwrap(),
            200_000
        );
        let mut back = vec![0u8; 200_000];
        dst.read_exact_at(&mut back, 5000).unwrap();
        assert_eq!(back, data[1000..201_000]);
        assert_eq!(copy_range(&src, 299_000, &dst, 0, 5000).unwrap(), 1000);
        assert_eq!(fallback(&src, 10, &dst, 0, 100).unwrap(), 100);
    }
}
