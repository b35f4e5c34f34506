//! Moving file bytes in large runs, the one copy engine of the program: `copy_file_range`
//! (in-kernel, may share extents), falling back to pread/pwrite when the kernel or filesystem
//! can't (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP). The fallback never writes all-zero blocks: every
//! destination here is a fresh sparse file, where they already read as zeros.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use rustix::io::Errno;

/// Largest single copy_file_range request.
const COPY_RUN: u64 = 64 << 20;
/// Buffer size for the pread/pwrite fallback.
const BUF_SIZE: usize = 4 << 20;
/// Granularity at which all-zero data is skipped (left as a hole).
const ZERO_BLOCK: usize = 4096;

/// Copies byte ranges between files; remembers whether copy_file_range works here.
pub struct RangeCopier {
    /// False once copy_file_range has failed with an "unsupported" error.
    use_copy_file_range: bool,
    buf: Vec<u8>,
}

impl Default for RangeCopier {
    fn default() -> Self {
        RangeCopier::new()
    }
}

impl RangeCopier {
    pub fn new() -> RangeCopier {
        RangeCopier {
            use_copy_file_range: true,
            buf: Vec::new(),
        }
    }

    /// Forces the pread/pwrite path (for tests).
    pub fn without_copy_file_range() -> RangeCopier {
        RangeCopier {
            use_copy_file_range: false,
            buf: Vec::new(),
        }
    }

    /// Copies `len` bytes of `src` at `src_off` to `dst` at `dst_off`, reporting progress through
    /// `on_bytes`. Returns the bytes copied: fewer than `len` only when the source ended first.
    pub fn copy<S: AsFd>(
        &mut self,
        src: S,
        mut src_off: u64,
        dst: &File,
        mut dst_off: u64,
        len: u64,
        on_bytes: &mut dyn FnMut(u64),
    ) -> io::Result<u64> {
        let start = src_off;
        let end = src_off + len;
        while src_off < end && self.use_copy_file_range {
            let want = (end - src_off).min(COPY_RUN) as usize;
            let before = src_off;
            match rustix::fs::copy_file_range(
                &src,
                Some(&mut src_off),
                dst,
                Some(&mut dst_off),
                want,
            ) {
                Ok(0) => return Ok(src_off - start),
                Ok(_) => on_bytes(src_off - before),
                Err(Errno::INTR) => {}
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    self.use_copy_file_range = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        while src_off < end {
            if self.buf.is_empty() {
                self.buf = vec![0u8; BUF_SIZE];
            }
            let n = (end - src_off).min(BUF_SIZE as u64) as usize;
            let chunk = &mut self.buf[..n];
            let got = read_some(&src, chunk, src_off)?;
            if got == 0 {
                break;
            }
            write_nonzero(dst, &chunk[..got], dst_off)?;
            on_bytes(got as u64);
            src_off += got as u64;
            dst_off += got as u64;
        }
        Ok(src_off - start)
    }
}

/// Reads as much as possible (up to `buf.len()`) at `offset`; fewer bytes only at end of file.
fn read_some<S: AsFd>(src: S, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(&src, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Writes `data` at `offset`, skipping all-zero blocks (the destination is a fresh sparse file,
/// so they already read as zeros). Blocks are aligned to the file offset, not to the slice.
pub fn write_nonzero(out: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut i = 0;
    let mut run_start: Option<usize> = None;
    while i < data.len() {
        let to_boundary = ZERO_BLOCK - ((offset as usize + i) % ZERO_BLOCK);
        let next = (i + to_boundary).min(data.len());
        let zero = data[i..next].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                out.write_all_at(&data[s..i], offset + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        i = next;
    }
    if let Some(s) = run_start {
        out.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_at_offsets_and_reports_short_sources() {
        for mut c in [RangeCopier::new(), RangeCopier::without_copy_file_range()] {
            let dir = tempfile::tempdir().unwrap();
            let src = File::create_new(dir.path().join("src")).unwrap();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            src.write_all_at(&data, 0).unwrap();
            let dst = File::create_new(dir.path().join("dst")).unwrap();
            let mut seen = 0;
            assert_eq!(
                c.copy(&src, 1000, &dst, 5000, 200_000, &mut |n| seen += n)
                    .unwrap(),
                200_000
            );
            assert_eq!(seen, 200_000);
            let mut back = vec![0u8; 200_000];
            dst.read_exact_at(&mut back, 5000).unwrap();
            assert_eq!(back, data[1000..201_000]);
            assert_eq!(
                c.copy(&src, 299_000, &dst, 0, 5000, &mut |_| {}).unwrap(),
                1000
            );
        }
    }

    #[test]
    fn write_nonzero_skips_zero_blocks() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 * 1024).unwrap();
        let mut data = vec![0u8; 40_000];
        data[5] = 1;
        data[20_000] = 2;
        data[39_999] = 3;
        write_nonzero(&f, &data, 100).unwrap();
        let mut back = vec![9u8; 40_000];
        f.read_exact_at(&mut back, 100).unwrap();
        assert_eq!(back, data);
    }
}
