//! GNU sparse files: the maps of the old GNU `S` header (with its extension blocks) and of the
//! PAX formats 0.0, 0.1 and 1.0 (whose map is decimal text at the start of the data), checked
//! against the sizes, and the [`Layout`] they give.

use anyhow::{bail, Result};

use crate::source::Layout;

/// A sparse map: (offset, length) chunks of data in file order.
pub type Map = Vec<(u64, u64)>;

/// Reads a PAX 1.0 map from the text at the start of the data — a count, then that many
/// offset/length pairs, one decimal number per line — as it arrives, block by block: each byte is
/// looked at once, so a map of any length is read in linear time.
#[derive(Debug, Default)]
pub struct V1Map {
    /// The numbers read so far (the count first).
    nums: Vec<u64>,
    /// The digits of a number whose line has not ended yet.
    line: Vec<u8>,
    /// Bytes of text taken so far.
    used: usize,
}

impl V1Map {
    /// Takes the next piece of text. Returns None while the map needs more, else the map and
    /// the bytes of text it used in all.
    pub fn feed(&mut self, text: &[u8]) -> Result<Option<(Map, usize)>> {
        for (i, &b) in text.iter().enumerate() {
            if b != b'\n' {
                if self.line.len() == 20 {
                    bail!("corrupt sparse map (a number longer than 20 digits)");
                }
                self.line.push(b);
                continue;
            }
            let v = super::pax::decimal(&self.line)
                .map_err(|e| anyhow::anyhow!("corrupt sparse map ({e})"))?;
            self.line.clear();
            // Each pair needs at least 4 bytes of text; refuse absurd counts early.
            if self.nums.is_empty() && v > (1 << 32) {
                bail!("corrupt sparse map ({v} entries)");
            }
            self.nums.push(v);
            if self.nums.len() as u64 == 1 + 2 * self.nums[0] {
                let used = self.used + i + 1;
                let map = self.nums[1..].chunks(2).map(|c| (c[0], c[1])).collect();
                return Ok(Some((map, used)));
            }
        }
        self.used += text.len();
        Ok(None)
    }
}

/// Parses a whole PAX 1.0 map at the start of `text` (see [`V1Map`]): None when `text` ends
/// before the map does, else the map and the bytes it used.
#[cfg(test)]
pub fn parse_v1_map(text: &[u8]) -> Result<Option<(Map, usize)>> {
    V1Map::default().feed(text)
}

/// Checks a map (chunks in file order, not overlapping, inside `real_size`, their lengths adding
/// up to the `stored` bytes of data) and gives the file's layout.
pub fn layout(map: &[(u64, u64)], real_size: u64, stored: u64) -> Result<Layout> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut total = 0u64;
    let mut prev_end = 0u64;
    for &(off, len) in map {
        let end = off.checked_add(len).filter(|&e| e <= real_size);
        let Some(end) = end.filter(|_| off >= prev_end) else {
            bail!("corrupt sparse map (chunk {off}+{len} out of order or beyond the size {real_size})");
        };
        prev_end = end;
        total += len;
        if len == 0 {
            continue;
        }
        match ranges.last_mut() {
            Some(l) if l.1 == off => l.1 = end,
            _ => ranges.push((off, end)),
        }
    }
    if total != stored {
        bail!("corrupt sparse map (it maps {total} bytes of data, the archive holds {stored})");
    }
    Ok(if real_size == 0 || ranges == [(0, real_size)] {
        Layout::Dense
    } else {
        Layout::Sparse(ranges)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_map_needs_all_its_lines() {
        assert_eq!(parse_v1_map(b"2\n0\n10\n").unwrap(), None);
        let (m, used) = parse_v1_map(b"2\n0\n10\n100\n5\nDATA").unwrap().unwrap();
        assert_eq!(m, vec![(0, 10), (100, 5)]);
        assert_eq!(used, 13);
        assert_eq!(parse_v1_map(b"0\n").unwrap(), Some((vec![], 2)));
        assert!(parse_v1_map(b"x\n").is_err());
        assert!(parse_v1_map(&[b'1'; 40]).is_err());
    }

    #[test]
    fn v1_map_read_in_pieces_is_the_map_read_at_once() {
        let mut text = String::from("1000\n");
        for i in 0..1000u64 {
            text.push_str(&format!("{}\n{}\n", i * 1_000_003, i % 7 + 1));
        }
        text.push_str("trailing data");
        let (whole, used) = parse_v1_map(text.as_bytes()).unwrap().unwrap();
        assert_eq!(whole.len(), 1000);
        assert_eq!(&text.as_bytes()[used..], b"trailing data");
        for piece in [1, 7, 512] {
            let mut m = V1Map::default();
            let mut got = None;
            for chunk in text.as_bytes().chunks(piece) {
                got = m.feed(chunk).unwrap();
                if got.is_some() {
                    break;
                }
            }
            assert_eq!(got, Some((whole.clone(), used)), "pieces of {piece}");
        }
    }

    #[test]
    fn layouts_from_maps() {
        assert_eq!(
            layout(&[(0, 10), (100, 5), (200, 0)], 200, 15).unwrap(),
            Layout::Sparse(vec![(0, 10), (100, 105)])
        );
        assert_eq!(layout(&[(0, 4), (4, 6)], 10, 10).unwrap(), Layout::Dense);
        assert_eq!(
            layout(&[(1 << 20, 0)], 1 << 20, 0).unwrap(),
            Layout::Sparse(vec![])
        );
        assert!(layout(&[(0, 10)], 5, 10).is_err());
        assert!(layout(&[(100, 10), (0, 10)], 200, 20).is_err());
        assert!(layout(&[(0, 10)], 100, 11).is_err());
    }
}
