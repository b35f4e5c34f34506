//! Block allocation for an inode's data: allocating logical ranges (extent-mapped files through
//! `ext2fs_fallocate` with FORCE_INIT, block-mapped ones through `ext2fs_new_range` +
//! `BMAP_SET`), learning where the blocks landed, freeing them, and writing metadata blocks.

use ext2fs_sys as sys;

use crate::error::check;
use crate::{BlockNo, Filesystem, Ino, Inode, InodeFlags, Result};

/// A run of blocks: logical blocks `lblk..lblk+len` of a file live at `pblk..pblk+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The first logical block (block index within the file).
    pub lblk: u64,
    /// The physical block it lives in.
    pub pblk: BlockNo,
    /// Length of the run in blocks.
    pub len: u64,
}

/// Owns an `ext2_extent_handle_t`.
struct ExtentHandle(sys::ext2_extent_handle_t);

impl Drop for ExtentHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from ext2fs_extent_open2 and is freed once.
        unsafe { sys::ext2fs_extent_free(self.0) };
    }
}

impl Filesystem {
    /// Allocates logical blocks `lblk..lblk+len` of `inode` (initialized, never "unwritten"),
    /// updating the in-memory inode's block map and block count. Allocate front to back:
    /// libext2fs 1.47.0 mishandles allocation in front of an existing extent.
    pub fn allocate(&mut self, ino: Ino, inode: &mut Inode, lblk: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if inode.flags().contains(InodeFlags::EXTENTS) {
            // SAFETY: fs and inode are valid; goal ~0 lets the library choose one.
            return check("ext2fs_fallocate", unsafe {
                sys::ext2fs_fallocate(
                    self.raw(),
                    sys::EXT2_FALLOCATE_FORCE_INIT as i32,
                    ino,
                    inode.as_small_mut(),
                    !0u64,
                    lblk,
                    len,
                )
            });
        }
        self.allocate_block_mapped(ino, inode, lblk, len)
    }

    /// ext2/ext3 files: take free ranges with new_range and map each block with BMAP_SET (which
    /// allocates indirect blocks as needed). ext2fs_fallocate would write zeros to every block.
    fn allocate_block_mapped(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        lblk: u64,
        len: u64,
    ) -> Result<()> {
        let mut buf = vec![0u8; 3 * self.block_size() as usize];
        // SAFETY: fs and inode are valid.
        let mut goal =
            unsafe { sys::ext2fs_find_inode_goal(self.raw(), ino, inode.as_small_mut(), lblk) };
        let mut done = 0u64;
        while done < len {
            let (mut pblk, mut plen) = (0u64, 0u64);
            // SAFETY: out-pointers are valid; a null map means the filesystem's block bitmap.
            check("ext2fs_new_range", unsafe {
                sys::ext2fs_new_range(
                    self.raw(),
                    0,
                    goal,
                    len - done,
                    std::ptr::null_mut(),
                    &mut pblk,
                    &mut plen,
                )
            })?;
            // SAFETY: the range was just found free in the valid fs.
            unsafe { sys::ext2fs_block_alloc_stats_range(self.raw(), pblk, plen as u32, 1) };
            for i in 0..plen {
                self.map_block(ino, inode, &mut buf, lblk + done + i, pblk + i)?;
            }
            // SAFETY: inode is valid; BMAP_SET does not count the data blocks themselves.
            check("ext2fs_iblk_add_blocks", unsafe {
                sys::ext2fs_iblk_add_blocks(self.raw(), inode.as_small_mut(), plen)
            })?;
            done += plen;
            goal = pblk + plen;
        }
        Ok(())
    }

    /// Maps logical block `lblk` of a block-mapped inode to physical block `pblk` (`ext2fs_bmap2`
    /// with BMAP_SET, which allocates indirect blocks as needed). `buf`: 3 blocks of scratch.
    fn map_block(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        buf: &mut [u8],
        lblk: u64,
        pblk: BlockNo,
    ) -> Result<()> {
        let mut p = pblk;
        let flags = sys::BMAP_SET | sys::BMAP_ALLOC;
        // SAFETY: `&mut self`: nothing else sees the filesystem while bmap2 changes it.
        unsafe { self.bmap2(ino, inode, buf, flags, lblk, &mut p) }
    }

    /// The physical block holding logical block `lblk` of a block-mapped inode (0 for a hole).
    fn lookup_block(&self, ino: Ino, inode: &mut Inode, buf: &mut [u8], lblk: u64) -> Result<u64> {
        let mut p = 0;
        // SAFETY: flags 0 only looks the block up and changes nothing.
        unsafe { self.bmap2(ino, inode, buf, 0, lblk, &mut p)? };
        Ok(p)
    }

    /// `ext2fs_bmap2` for logical block `lblk`: `p` is the physical block to set (BMAP_SET) or
    /// receives the one found. `buf` is 3 blocks of scratch space.
    ///
    /// # Safety
    /// With flags that change the filesystem, the caller must hold it exclusively.
    unsafe fn bmap2(
        &self,
        ino: Ino,
        inode: &mut Inode,
        buf: &mut [u8],
        flags: u32,
        lblk: u64,
        p: &mut BlockNo,
    ) -> Result<()> {
        assert!(buf.len() >= 3 * self.block_size() as usize);
        // SAFETY: buf holds the 3 blocks bmap2 requires; p is a valid in/out pointer; the caller
        // holds the filesystem exclusively when the flags change it.
        check("ext2fs_bmap2", unsafe {
            sys::ext2fs_bmap2(
                self.raw(),
                ino,
                inode.as_small_mut(),
                buf.as_mut_ptr().cast(),
                flags as i32,
                lblk,
                std::ptr::null_mut(),
                p,
            )
        })
    }

    /// Every mapped run of the inode, in logical order, adjacent runs merged. Uninitialized
    /// ("unwritten") extents never occur: [`Filesystem::allocate`] does not make them.
    pub fn runs(&self, ino: Ino, inode: &Inode) -> Result<Vec<Run>> {
        // The library wants a mutable inode even to read it; it gets a copy.
        let mut inode = inode.clone();
        let mut runs: Vec<Run> = Vec::new();
        let mut push = |r: Run| match runs.last_mut() {
            Some(l) if l.lblk + l.len == r.lblk && l.pblk + l.len == r.pblk => l.len += r.len,
            _ => runs.push(r),
        };
        if inode.flags().contains(InodeFlags::EXTENTS) {
            let mut h: sys::ext2_extent_handle_t = std::ptr::null_mut();
            // SAFETY: fs and inode are valid; h receives a new handle owned by ExtentHandle.
            check("ext2fs_extent_open2", unsafe {
                sys::ext2fs_extent_open2(self.raw(), ino, inode.as_small_mut(), &mut h)
            })?;
            let h = ExtentHandle(h);
            let mut e = sys::ext2fs_extent::default();
            let mut op = sys::EXT2_EXTENT_ROOT;
            loop {
                // SAFETY: h is a valid handle; e is a valid out-pointer.
                let code = unsafe { sys::ext2fs_extent_get(h.0, op as i32, &mut e) };
                op = sys::EXT2_EXTENT_NEXT;
                if code == sys::EXT2_ET_EXTENT_NO_NEXT as i64 {
                    break;
                }
                check("ext2fs_extent_get", code)?;
                if e.e_flags & sys::EXT2_EXTENT_FLAGS_LEAF == 0
                    || e.e_flags & sys::EXT2_EXTENT_FLAGS_SECOND_VISIT != 0
                {
                    continue;
                }
                assert!(
                    e.e_flags & sys::EXT2_EXTENT_FLAGS_UNINIT == 0,
                    "inode {ino}: fallocate left an uninitialized extent"
                );
                push(Run {
                    lblk: e.e_lblk,
                    pblk: e.e_pblk,
                    len: e.e_len as u64,
                });
            }
            return Ok(runs);
        }
        let bs = self.block_size() as u64;
        let nblocks = inode.size().div_ceil(bs);
        let mut buf = vec![0u8; 3 * bs as usize];
        for lblk in 0..nblocks {
            let p = self.lookup_block(ino, &mut inode, &mut buf, lblk)?;
            if p != 0 {
                push(Run {
                    lblk,
                    pblk: p,
                    len: 1,
                });
            }
        }
        Ok(runs)
    }

    /// Frees every block of the inode (`ext2fs_punch` of the whole range).
    pub fn free_all_blocks(&mut self, ino: Ino, inode: &mut Inode) -> Result<()> {
        // SAFETY: fs and inode are valid; a null block_buf lets the library allocate one.
        check("ext2fs_punch", unsafe {
            sys::ext2fs_punch(
                self.raw(),
                ino,
                inode.as_small_mut(),
                std::ptr::null_mut(),
                0,
                !0u64,
            )
        })
    }

    /// Writes one directory block at `pblk`, filling in its checksum tail (metadata_csum).
    pub fn write_dir_block(&mut self, pblk: BlockNo, block: &mut [u8], dir: Ino) -> Result<()> {
        assert_eq!(block.len(), self.block_size() as usize);
        // SAFETY: block is exactly one filesystem block, writable (the checksum goes in place).
        check("ext2fs_write_dir_block4", unsafe {
            sys::ext2fs_write_dir_block4(self.raw(), pblk, block.as_mut_ptr().cast(), 0, dir)
        })
    }
}
