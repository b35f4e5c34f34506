//! Directory blocks built in one pass: `.` and `..` first, then every child, packed as the
//! kernel packs them (4-byte aligned records, the last record of a block stretched to its end),
//! with the 12-byte checksum tail reserved in each block when metadata_csum is on, each block
//! handed on as soon as it is full. Writing a directory this way costs O(entries) time and one
//! block of memory; `ext2fs_link` rescans the directory on every call.

use anyhow::Result;
use ext2fs::{FileType, Ino};

/// Bytes a directory record with a name of `name_len` bytes needs.
pub fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Size of the metadata_csum tail (`struct ext2_dir_entry_tail`).
const TAIL: usize = 12;

/// Receives a directory's blocks in order: (logical block number, the block's bytes).
pub use super::htree::Sink;

/// Packs directory entries into blocks, handing each finished block to a [`Sink`] (only one
/// block is held at a time). With `write` false it only counts blocks (to allocate them before
/// writing), using the same arithmetic as the real thing; the sink is never called then.
pub struct DirPacker {
    block_size: usize,
    usable: usize,
    csum: bool,
    write: bool,
    /// The block being filled (empty unless writing).
    block: Vec<u8>,
    /// Offset of the next record in the current block, and of the last record written in it.
    off: usize,
    last: usize,
    count: u64,
}

impl DirPacker {
    pub fn new(block_size: u32, csum: bool, write: bool) -> DirPacker {
        let block_size = block_size as usize;
        let usable = block_size - if csum { TAIL } else { 0 };
        DirPacker {
            block_size,
            usable,
            csum,
            write,
            block: Vec::new(),
            off: usable,
            last: 0,
            count: 0,
        }
    }

    /// Starts a directory: the `.` and `..` entries.
    pub fn start(block_size: u32, csum: bool, write: bool, ino: Ino, parent: Ino) -> DirPacker {
        let mut p = DirPacker::new(block_size, csum, write);
        let mut none =
            |_: u64, _: &mut [u8]| -> Result<()> { unreachable!("the first block is still open") };
        p.add(b".", ino, FileType::Directory, &mut none)
            .and_then(|_| p.add(b"..", parent, FileType::Directory, &mut none))
            .expect("no block is finished by . and ..");
        p
    }

    pub fn add(&mut self, name: &[u8], ino: Ino, ft: FileType, sink: &mut Sink) -> Result<()> {
        let need = rec_len(name.len());
        if self.off + need > self.usable {
            self.new_block(sink)?;
        }
        if self.write {
            let (b, o) = (&mut self.block, self.off);
            b[o..o + 4].copy_from_slice(&ino.to_le_bytes());
            b[o + 4..o + 6].copy_from_slice(&(need as u16).to_le_bytes());
            b[o + 6] = name.len() as u8;
            b[o + 7] = ft.dirent_byte();
            b[o + 8..o + 8 + name.len()].copy_from_slice(name);
        }
        self.last = self.off;
        self.off += need;
        Ok(())
    }

    /// Finishes the current block (stretching its last record) and opens a new, empty one.
    fn new_block(&mut self, sink: &mut Sink) -> Result<()> {
        self.close_block(sink)?;
        self.count += 1;
        if self.write {
            self.block.clear();
            self.block.resize(self.block_size, 0);
            if self.csum {
                // inode 0, rec_len 12, name_len 0, file_type 0xDE; checksum filled in on write.
                let t = self.usable;
                self.block[t + 4..t + 6].copy_from_slice(&(TAIL as u16).to_le_bytes());
                self.block[t + 7] = 0xDE;
            }
        }
        self.off = 0;
        self.last = 0;
        Ok(())
    }

    /// Hands the current block (if any) to `sink`, its records tiling it.
    fn close_block(&mut self, sink: &mut Sink) -> Result<()> {
        if self.count == 0 || !self.write {
            return Ok(());
        }
        let usable = self.usable;
        let b = &mut self.block;
        if self.off == 0 {
            // An empty block: one unused record (inode 0) spanning it.
            b[4..6].copy_from_slice(&(usable as u16).to_le_bytes());
        } else {
            let l = self.last;
            b[l + 4..l + 6].copy_from_slice(&((usable - l) as u16).to_le_bytes());
        }
        sink(self.count - 1, b)
    }

    /// Adds empty blocks until there are at least `n` (lost+found is kept at mke2fs's size).
    pub fn pad_to(&mut self, n: u64, sink: &mut Sink) -> Result<()> {
        while self.count < n {
            self.new_block(sink)?;
        }
        Ok(())
    }

    pub fn block_count(&self) -> u64 {
        self.count
    }

    /// Hands the last block to `sink`.
    pub fn finish(mut self, sink: &mut Sink) -> Result<()> {
        self.close_block(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(b: &[u8], usable: usize) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut o = 0;
        while o < usable {
            let ino = u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            let rl = u16::from_le_bytes(b[o + 4..o + 6].try_into().unwrap()) as usize;
            let nl = b[o + 6] as usize;
            assert!(rl >= rec_len(nl) && rl % 4 == 0, "bad rec_len {rl} at {o}");
            if ino != 0 {
                out.push((ino, b[o + 8..o + 8 + nl].to_vec()));
            }
            o += rl;
        }
        assert_eq!(o, usable, "records must end exactly at the usable end");
        out
    }

    /// Runs `f` on a packer writing into a Vec (checking that blocks come in order, once each).
    fn collect(p: DirPacker, f: impl FnOnce(&mut DirPacker, &mut Sink)) -> (u64, Vec<Vec<u8>>) {
        let mut p = p;
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut sink = |lblk: u64, b: &mut [u8]| -> Result<()> {
            assert_eq!(lblk, blocks.len() as u64, "blocks out of order");
            blocks.push(b.to_vec());
            Ok(())
        };
        f(&mut p, &mut sink);
        let count = p.block_count();
        p.finish(&mut sink).unwrap();
        (count, blocks)
    }

    #[test]
    fn records_tile_each_block_and_round_trip() {
        for csum in [false, true] {
            let names: Vec<Vec<u8>> = (0..200)
                .map(|i| format!("file-{i:03}-{}", "x".repeat(i % 40)).into_bytes())
                .collect();
            let (count, blocks) = collect(DirPacker::start(1024, csum, true, 12, 2), |p, sink| {
                for (i, n) in names.iter().enumerate() {
                    p.add(n, 100 + i as u32, FileType::Regular, sink).unwrap();
                }
            });
            assert_eq!(blocks.len() as u64, count);
            let usable = if csum { 1024 - 12 } else { 1024 };
            let all: Vec<_> = blocks.iter().flat_map(|b| records(b, usable)).collect();
            assert_eq!(all[0], (12, b".".to_vec()));
            assert_eq!(all[1], (2, b"..".to_vec()));
            for (i, n) in names.iter().enumerate() {
                assert_eq!(all[i + 2], (100 + i as u32, n.clone()));
            }
            if csum {
                for b in &blocks {
                    assert_eq!(&b[1012..1020], &[0, 0, 0, 0, 12, 0, 0, 0xDE]);
                }
            }
        }
    }

    #[test]
    fn counting_matches_writing() {
        for bs in [1024u32, 2048, 4096] {
            let mut c = DirPacker::start(bs, true, false, 2, 2);
            let mut never = |_: u64, _: &mut [u8]| -> Result<()> {
                panic!("a counting packer makes no blocks")
            };
            let (count, blocks) = collect(DirPacker::start(bs, true, true, 2, 2), |w, sink| {
                for i in 0..5000u32 {
                    let name = vec![b'a' + (i % 26) as u8; 1 + (i as usize * 7) % 255];
                    w.add(&name, i + 20, FileType::Regular, sink).unwrap();
                    c.add(&name, i + 20, FileType::Regular, &mut never).unwrap();
                }
            });
            assert_eq!(count, c.block_count());
            assert_eq!(blocks.len() as u64, c.block_count());
        }
    }

    #[test]
    fn padding_blocks_are_empty_records() {
        let (_, blocks) = collect(DirPacker::start(4096, false, true, 11, 2), |p, sink| {
            p.pad_to(4, sink).unwrap()
        });
        assert_eq!(blocks.len(), 4);
        assert_eq!(records(&blocks[0], 4096).len(), 2);
        for b in &blocks[1..] {
            assert!(records(b, 4096).is_empty());
        }
    }
}
