//! Copying through this process: pread into a buffer, pwrite out of it. It never writes all-zero
//! blocks: every destination here is a fresh sparse file, where they already read as zeros.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::io::Errno;

/// Buffer size for one step.
pub const BUF_SIZE: usize = 4 << 20;
/// Granularity at which all-zero data is skipped (left as a hole).
const ZERO_BLOCK: usize = 4096;

/// Copies up to `len` bytes (at most [`BUF_SIZE`]) of `src` at `src_off` to `dst` at `dst_off`
/// through `buf` (allocated on first use); the bytes copied, fewer only at the source's end.
pub fn copy(
    buf: &mut Vec<u8>,
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
) -> io::Result<u64> {
    if buf.is_empty() {
        *buf = vec![0u8; BUF_SIZE];
    }
    let n = len.min(BUF_SIZE as u64) as usize;
    let chunk = &mut buf[..n];
    let got = read_some(src, chunk, src_off)?;
    write_nonzero(dst, &chunk[..got], dst_off)?;
    Ok(got as u64)
}

/// Reads as much as possible (up to `buf.len()`) at `offset`; fewer bytes only at end of file.
fn read_some(src: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(src, &mut buf[done..], offset + done as u64) {
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
