//! Large (256-byte) inodes: building them field by field (owner, times with nanoseconds and epoch
//! bits, device numbers, sizes), allocating inode numbers, and reading/writing whole inodes with
//! `ext2fs_write_inode_full` (the 128-byte `ext2fs_write_new_inode` would drop the extra fields).

use ext2fs_sys as sys;

use super::{check, Filesystem, Ino, Result};

/// Seconds and nanoseconds since the epoch (seconds may be negative or past 2038).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    /// ext4's on-disk encoding: the low 32 bits of the seconds in the base field; in the extra
    /// field two epoch bits (seconds beyond the signed 32-bit range) and the nanoseconds << 2.
    pub fn encode(self) -> (u32, u32) {
        let base = self.sec as i32;
        let epoch = ((self.sec - base as i64) >> 32) as u32 & 3;
        (base as u32, epoch | (self.nsec << 2))
    }
}

/// An in-memory large inode (`struct ext2_inode_large`).
#[derive(Clone)]
pub struct Inode {
    pub(super) raw: sys::ext2_inode_large,
}

impl Inode {
    /// A zeroed inode with `mode` (type and permission bits) and `extra_isize` extra bytes in use.
    pub fn new(mode: u16, extra_isize: u16) -> Inode {
        let mut raw = sys::ext2_inode_large {
            i_mode: mode,
            ..Default::default()
        };
        raw.i_extra_isize = extra_isize;
        Inode { raw }
    }

    pub fn mode(&self) -> u16 {
        self.raw.i_mode
    }

    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        self.raw.i_uid = uid as u16;
        self.raw.i_gid = gid as u16;
        // Writing a Copy field of a union needs no unsafe; linux2 is the Linux layout.
        self.raw.osd2.linux2 = sys::ext2_inode_large__bindgen_ty_2__bindgen_ty_1 {
            l_i_uid_high: (uid >> 16) as u16,
            l_i_gid_high: (gid >> 16) as u16,
            ..self.linux2()
        };
    }

    fn linux2(&self) -> sys::ext2_inode_large__bindgen_ty_2__bindgen_ty_1 {
        // SAFETY: every bit pattern is a valid value of this plain-integer struct.
        unsafe { self.raw.osd2.linux2 }
    }

    pub fn uid(&self) -> u32 {
        self.raw.i_uid as u32 | (self.linux2().l_i_uid_high as u32) << 16
    }

    pub fn gid(&self) -> u32 {
        self.raw.i_gid as u32 | (self.linux2().l_i_gid_high as u32) << 16
    }

    pub fn set_times(
        &mut self,
        atime: Timestamp,
        mtime: Timestamp,
        ctime: Timestamp,
        crtime: Timestamp,
    ) {
        (self.raw.i_atime, self.raw.i_atime_extra) = atime.encode();
        (self.raw.i_mtime, self.raw.i_mtime_extra) = mtime.encode();
        (self.raw.i_ctime, self.raw.i_ctime_extra) = ctime.encode();
        (self.raw.i_crtime, self.raw.i_crtime_extra) = crtime.encode();
    }

    pub fn links(&self) -> u16 {
        self.raw.i_links_count
    }

    pub fn set_links(&mut self, n: u16) {
        self.raw.i_links_count = n;
    }

    pub fn size(&self) -> u64 {
        self.raw.i_size as u64 | (self.raw.i_size_high as u64) << 32
    }

    pub fn set_size(&mut self, size: u64) {
        self.raw.i_size = size as u32;
        self.raw.i_size_high = (size >> 32) as u32;
    }

    pub fn add_flags(&mut self, flags: u32) {
        self.raw.i_flags |= flags;
    }

    pub fn flags(&self) -> u32 {
        self.raw.i_flags
    }

    /// Marks the inode as extent-mapped with an empty in-inode extent tree (magic 0xF30A, no
    /// entries, room for 4, depth 0), as the kernel does for every new file on ext4.
    pub fn init_extents(&mut self) {
        self.raw.i_flags |= sys::EXT4_EXTENTS_FL;
        self.raw.i_block = [0; 15];
        self.raw.i_block[0] = 0xF30A; // eh_magic, eh_entries = 0
        self.raw.i_block[1] = 4; // eh_max = 4, eh_depth = 0
    }

    /// Device number, in the old 16-bit encoding when it fits (as the kernel writes it), else the
    /// new 32-bit one in i_block[1].
    pub fn set_device(&mut self, major: u32, minor: u32) {
        self.raw.i_block = [0; 15];
        if major < 256 && minor < 256 {
            self.raw.i_block[0] = major << 8 | minor;
        } else {
            self.raw.i_block[1] = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        }
    }

    /// Takes over `other`'s data mapping: size, block map or inline data, block count and flags.
    pub fn copy_mapping_from(&mut self, other: &Inode) {
        self.raw.i_size = other.raw.i_size;
        self.raw.i_size_high = other.raw.i_size_high;
        self.raw.i_block = other.raw.i_block;
        self.raw.i_blocks = other.raw.i_blocks;
        self.raw.i_flags = other.raw.i_flags;
        self.raw.osd2.linux2 = sys::ext2_inode_large__bindgen_ty_2__bindgen_ty_1 {
            l_i_blocks_hi: other.linux2().l_i_blocks_hi,
            ..self.linux2()
        };
    }

    pub(super) fn as_small_mut(&mut self) -> *mut sys::ext2_inode {
        // ext2_inode_large starts with the exact layout of ext2_inode.
        (&mut self.raw as *mut sys::ext2_inode_large).cast()
    }
}

impl Filesystem {
    /// Picks a free inode number near `parent` (`ext2fs_new_inode`) and counts it as used.
    pub fn new_inode(&mut self, parent: Ino, mode: u16) -> Result<Ino> {
        let mut ino: Ino = 0;
        // SAFETY: fs is valid; a null map means the filesystem's own inode bitmap.
        check("ext2fs_new_inode", unsafe {
            sys::ext2fs_new_inode(
                self.raw(),
                parent,
                mode as i32,
                std::ptr::null_mut(),
                &mut ino,
            )
        })?;
        let is_dir = mode as u32 & sys::LINUX_S_IFMT == sys::LINUX_S_IFDIR;
        self.inode_alloc_stats(ino, true, is_dir);
        Ok(ino)
    }

    /// Writes the whole large inode (with its checksum when metadata_csum is on).
    pub fn write_inode(&mut self, ino: Ino, inode: &mut Inode) -> Result<()> {
        let size = std::mem::size_of::<sys::ext2_inode_large>().min(self.inode_size());
        // SAFETY: the buffer is a valid ext2_inode_large of at least `size` bytes.
        check("ext2fs_write_inode_full", unsafe {
            sys::ext2fs_write_inode_full(self.raw(), ino, inode.as_small_mut(), size as i32)
        })
    }

    /// Reads the whole large inode.
    pub fn read_inode(&self, ino: Ino) -> Result<Inode> {
        let mut inode = Inode::new(0, 0);
        let size = std::mem::size_of::<sys::ext2_inode_large>().min(self.inode_size());
        // SAFETY: the buffer is a valid ext2_inode_large of at least `size` bytes.
        check("ext2fs_read_inode_full", unsafe {
            sys::ext2fs_read_inode_full(self.raw(), ino, inode.as_small_mut(), size as i32)
        })?;
        Ok(inode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(base: u32, extra: u32) -> (i64, u32) {
        (
            base as i32 as i64 + (((extra & 3) as i64) << 32),
            extra >> 2,
        )
    }

    #[test]
    fn timestamps_round_trip_past_2038_and_before_1970() {
        for (sec, nsec) in [
            (0i64, 0u32),
            (1_700_000_000, 123_456_789),
            (4_102_444_800, 999_999_999), // 2100-01-01
            (-1_000, 5),
            (i32::MAX as i64 + 1, 1),
            (-(1i64 << 31), 0),
        ] {
            let (b, e) = Timestamp { sec, nsec }.encode();
            assert_eq!(decode(b, e), (sec, nsec), "{sec}.{nsec}");
        }
    }

    #[test]
    fn owner_above_65535_uses_high_halves() {
        let mut i = Inode::new(0o100644, 32);
        i.set_owner(100_000, 200_000);
        assert_eq!((i.uid(), i.gid()), (100_000, 200_000));
    }

    #[test]
    fn device_numbers_old_and_new_encoding() {
        let mut i = Inode::new(0o20644, 32);
        i.set_device(5, 1);
        assert_eq!(i.raw.i_block[0], 0x0501);
        i.set_device(300, 70_000);
        assert_eq!(i.raw.i_block[0], 0);
        let v = i.raw.i_block[1];
        let major = (v & 0xfff00) >> 8;
        let minor = (v & 0xff) | ((v >> 12) & 0xfff00);
        assert_eq!((major, minor), (300, 70_000));
    }
}
