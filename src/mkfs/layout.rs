//! From a file's byte layout (data ranges and holes) to the logical blocks it occupies.

use crate::source::Layout;

/// The logical block ranges `(first, count)` holding a file's data, sorted and merged; holes of
/// at least a whole block stay unallocated.
pub fn block_ranges(size: u64, layout: &Layout, block_size: u32) -> Vec<(u64, u64)> {
    let bs = block_size as u64;
    let bytes: Vec<(u64, u64)> = match layout {
        Layout::Dense if size == 0 => Vec::new(),
        Layout::Dense => vec![(0, size)],
        Layout::Sparse(r) => r.clone(),
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in bytes {
        let (first, end) = (a / bs, b.min(size).div_ceil(bs));
        if end <= first {
            continue;
        }
        match out.last_mut() {
            Some(l) if l.0 + l.1 >= first => l.1 = l.1.max(end - l.0),
            _ => out.push((first, end - first)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_files_cover_every_block() {
        assert_eq!(block_ranges(0, &Layout::Dense, 4096), vec![]);
        assert_eq!(block_ranges(1, &Layout::Dense, 4096), vec![(0, 1)]);
        assert_eq!(block_ranges(8193, &Layout::Dense, 4096), vec![(0, 3)]);
    }

    #[test]
    fn sparse_ranges_round_out_to_blocks_and_merge() {
        let l = Layout::Sparse(vec![(0, 100), (4000, 5000), (1 << 20, (1 << 20) + 1)]);
        assert_eq!(block_ranges(2 << 20, &l, 4096), vec![(0, 2), (256, 1)]);
        let l = Layout::Sparse(vec![]);
        assert_eq!(block_ranges(1 << 30, &l, 4096), vec![]);
    }
}
