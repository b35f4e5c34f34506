//! Read buffers (READ data and WRITE payloads). Large ones are anonymous mappings kept in a process-wide pool (at most
//! [`POOL_BYTES`]) for the next reads, and the pool is emptied when the last client disconnects,
//! so the server's memory comes back down once clients leave. With malloc, the buffers of many
//! concurrent clients stayed cached in per-thread arenas (about 100 MiB after 64 clients here); a
//! fresh mapping for every read gives memory back at once but halves throughput (page faults).
//! Small buffers come from the heap.

use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers at least this large are mappings.
const MAP_AT: usize = 256 << 10;
/// A mapping is reused for a read of at least 1/SLACK less than its size.
const SLACK: usize = 8;
/// Most bytes of idle mappings kept for reuse (besides the ones in use, which the budgets of
/// `budget` bound).
const POOL_BYTES: usize = 64 << 20;

/// Idle mappings and their total size.
static POOL: Mutex<(Vec<memmap2::MmapMut>, usize)> = Mutex::new((Vec::new(), 0));

fn pool() -> std::sync::MutexGuard<'static, (Vec<memmap2::MmapMut>, usize)> {
    crate::sync::lock(&POOL)
}

/// Unmaps every idle mapping (the last client has gone).
pub fn release_idle() {
    let idle = std::mem::take(&mut *pool());
    drop(idle);
}

/// Bytes held by idle mappings.
pub fn idle_bytes() -> usize {
    pool().1
}

/// A read's bytes: from the heap, or the first `len` bytes of a mapping that goes back to the
/// pool when dropped.
#[derive(Debug)]
pub enum Buffer {
    Heap(Vec<u8>),
    Mapped(Mapped),
}

#[derive(Debug)]
pub struct Mapped {
    map: Option<memmap2::MmapMut>,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        let mut p = pool();
        if p.1 + map.len() <= POOL_BYTES {
            p.1 += map.len();
            p.0.push(map);
        }
    }
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer::Heap(Vec::new())
    }
}

impl Buffer {
    /// `len` bytes for a read. Not necessarily zeroed (a mapping may have served an earlier
    /// read): the caller must overwrite every byte it sends.
    pub fn for_read(len: usize) -> io::Result<Buffer> {
        if len < MAP_AT {
            return Ok(Buffer::Heap(vec![0; len]));
        }
        let reused = {
            let mut p = pool();
            // The smallest idle mapping that is large enough, and not much larger: the budgets
            // count the bytes asked for, so a small read must not hold a big mapping (its pages
            // were all touched by the read that made it).
            let best = (0..p.0.len())
                .filter(|&i| (len..=len + len / SLACK).contains(&p.0[i].len()))
                .min_by_key(|&i| p.0[i].len());
            best.map(|i| {
                let m = p.0.swap_remove(i);
                p.1 -= m.len();
                m
            })
        };
        let map = match reused {
            Some(m) => m,
            None => memmap2::MmapMut::map_anon(len)?,
        };
        Ok(Buffer::Mapped(Mapped {
            map: Some(map),
            len,
        }))
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Buffer {
        Buffer::Heap(v)
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Heap(v) => v,
            Buffer::Mapped(m) => &m.map.as_ref().expect("mapped")[..m.len],
        }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buffer::Heap(v) => v,
            Buffer::Mapped(m) => &mut m.map.as_mut().expect("mapped")[..m.len],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the pool is process-wide.
    #[test]
    fn mappings_are_pooled_reused_bounded_and_released() {
        release_idle();
        for len in [0, 1, MAP_AT - 1, MAP_AT, 4 << 20] {
            let mut b = Buffer::for_read(len).unwrap();
            assert_eq!(b.len(), len);
            assert_eq!(matches!(b, Buffer::Mapped(..)), len >= MAP_AT);
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
        release_idle();
        assert_eq!(idle_bytes(), 0);
        let mut big = Buffer::for_read(4 << 20).unwrap();
        big[100] = 9;
        drop(big);
        assert_eq!(idle_bytes(), 4 << 20);
        // A much smaller read gets a mapping of its own; one almost as large reuses it.
        let small = Buffer::for_read(1 << 20).unwrap();
        assert_eq!((small.len(), idle_bytes()), (1 << 20, 4 << 20));
        drop(small);
        release_idle();
        let mut big = Buffer::for_read(4 << 20).unwrap();
        big[100] = 9;
        drop(big);
        let again = Buffer::for_read((4 << 20) - 4096).unwrap();
        assert_eq!(
            (again.len(), again[100], idle_bytes()),
            ((4 << 20) - 4096, 9, 0)
        );
        drop(again);
        release_idle();
        // Never more than POOL_BYTES idle.
        let many: Vec<Buffer> = (0..(POOL_BYTES >> 22) + 4)
            .map(|_| Buffer::for_read(4 << 20).unwrap())
            .collect();
        drop(many);
        assert_eq!(idle_bytes(), POOL_BYTES);
        release_idle();
        assert_eq!(idle_bytes(), 0);
    }
}
