//! Large (256-byte) inodes: building them field by field (type, owner, times with nanoseconds and
//! epoch bits, device numbers, sizes, flags), allocating inode numbers, and reading/writing whole
//! inodes with `ext2fs_write_inode_full` (the 128-byte `ext2fs_write_new_inode` would drop the
//! extra fields).

use bitflags::bitflags;
use ext2fs_sys as sys;

use crate::error::check;
use crate::{Filesystem, Ino, Result};

/// Seconds and nanoseconds since the epoch (seconds may be negative or past 2038).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01 00:00 UTC.
    pub sec: i64,
    /// Nanoseconds, below 1,000,000,000.
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

/// What an inode is: the type bits of its mode and the file type of its directory entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
}

impl FileType {
    /// The type bits of an inode's mode (`LINUX_S_IF*`).
    pub fn mode_bits(self) -> u16 {
        (match self {
            FileType::Regular => sys::LINUX_S_IFREG,
            FileType::Directory => sys::LINUX_S_IFDIR,
            FileType::Symlink => sys::LINUX_S_IFLNK,
            FileType::CharDevice => sys::LINUX_S_IFCHR,
            FileType::BlockDevice => sys::LINUX_S_IFBLK,
            FileType::Fifo => sys::LINUX_S_IFIFO,
            FileType::Socket => sys::LINUX_S_IFSOCK,
        }) as u16
    }

    /// The file type byte of a directory entry (`EXT2_FT_*`, with the filetype feature).
    pub fn dirent_byte(self) -> u8 {
        (match self {
            FileType::Regular => sys::EXT2_FT_REG_FILE,
            FileType::Directory => sys::EXT2_FT_DIR,
            FileType::Symlink => sys::EXT2_FT_SYMLINK,
            FileType::CharDevice => sys::EXT2_FT_CHRDEV,
            FileType::BlockDevice => sys::EXT2_FT_BLKDEV,
            FileType::Fifo => sys::EXT2_FT_FIFO,
            FileType::Socket => sys::EXT2_FT_SOCK,
        }) as u8
    }

    /// The type a mode's type bits name, if any.
    pub fn from_mode(mode: u16) -> Option<FileType> {
        [
            FileType::Regular,
            FileType::Directory,
            FileType::Symlink,
            FileType::CharDevice,
            FileType::BlockDevice,
            FileType::Fifo,
            FileType::Socket,
        ]
        .into_iter()
        .find(|t| t.mode_bits() == mode & sys::LINUX_S_IFMT as u16)
    }
}

bitflags! {
    /// Inode flags (`i_flags`), those this crate sets or reads; other bits are kept as they are.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct InodeFlags: u32 {
        /// A hash-indexed (htree) directory (`EXT2_INDEX_FL`).
        const INDEX = sys::EXT2_INDEX_FL;
        /// Block count in filesystem blocks rather than 512-byte sectors (`EXT4_HUGE_FILE_FL`).
        const HUGE_FILE = sys::EXT4_HUGE_FILE_FL;
        /// Data mapped by an extent tree (`EXT4_EXTENTS_FL`).
        const EXTENTS = sys::EXT4_EXTENTS_FL;
        /// Data kept inside the inode (`EXT4_INLINE_DATA_FL`).
        const INLINE_DATA = sys::EXT4_INLINE_DATA_FL;
    }
}

/// The permission bits of a mode: rwx for all three, setuid, setgid and sticky.
const PERM_MASK: u16 = 0o7777;

/// An in-memory large inode (`struct ext2_inode_large`).
#[derive(Clone)]
pub struct Inode {
    pub(crate) raw: sys::ext2_inode_large,
}

impl Inode {
    /// A zeroed inode of type `file_type` with permission bits `perm` (the low 12 bits of a
    /// mode) and `extra_isize` extra bytes in use.
    pub fn new(file_type: FileType, perm: u16, extra_isize: u16) -> Inode {
        let mut raw = sys::ext2_inode_large {
            i_mode: file_type.mode_bits() | perm & PERM_MASK,
            ..Default::default()
        };
        raw.i_extra_isize = extra_isize;
        Inode { raw }
    }

    /// The whole mode: type and permission bits.
    pub fn mode(&self) -> u16 {
        self.raw.i_mode
    }

    /// The type its mode names (None for a zeroed, unused inode).
    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.raw.i_mode)
    }

    /// Sets the owner, both 16-bit halves of each id.
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

    /// The owner's user id.
    pub fn uid(&self) -> u32 {
        self.raw.i_uid as u32 | (self.linux2().l_i_uid_high as u32) << 16
    }

    /// The owner's group id.
    pub fn gid(&self) -> u32 {
        self.raw.i_gid as u32 | (self.linux2().l_i_gid_high as u32) << 16
    }

    /// Sets access, modification, change and creation times, with nanoseconds.
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

    /// The link count.
    pub fn links(&self) -> u16 {
        self.raw.i_links_count
    }

    /// Sets the link count.
    pub fn set_links(&mut self, n: u16) {
        self.raw.i_links_count = n;
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.raw.i_size as u64 | (self.raw.i_size_high as u64) << 32
    }

    /// Sets the size in bytes.
    pub fn set_size(&mut self, size: u64) {
        self.raw.i_size = size as u32;
        self.raw.i_size_high = (size >> 32) as u32;
    }

    /// Sets `flags` in addition to those already set.
    pub fn add_flags(&mut self, flags: InodeFlags) {
        self.raw.i_flags |= flags.bits();
    }

    /// The inode's flags.
    pub fn flags(&self) -> InodeFlags {
        InodeFlags::from_bits_retain(self.raw.i_flags)
    }

    /// Marks the inode as extent-mapped with an empty in-inode extent tree (magic 0xF30A, no
    /// entries, room for 4, depth 0), as the kernel does for every new file on ext4.
    pub fn init_extents(&mut self) {
        self.raw.i_flags |= InodeFlags::EXTENTS.bits();
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

    pub(crate) fn as_small_mut(&mut self) -> *mut sys::ext2_inode {
        // ext2_inode_large starts with the exact layout of ext2_inode.
        (&mut self.raw as *mut sys::ext2_inode_large).cast()
    }
}

impl Filesystem {
    /// Picks a free inode number for a `file_type` inode near `parent` (`ext2fs_new_inode`)
    /// and counts it as used. The search starts at the first inode of `parent`'s group and
    /// walks the groups from there: near an inode in the last group used, it is quick however
    /// many inodes are taken (near a directory's own inode, each pick walks every full group
    /// after it).
    pub fn new_inode(&mut self, parent: Ino, file_type: FileType) -> Result<Ino> {
        let mut ino: Ino = 0;
        // SAFETY: fs is valid; a null map means the filesystem's own inode bitmap.
        check("ext2fs_new_inode", unsafe {
            sys::ext2fs_new_inode(
                self.raw(),
                parent,
                file_type.mode_bits() as i32,
                std::ptr::null_mut(),
                &mut ino,
            )
        })?;
        self.inode_alloc_stats(ino, true, file_type == FileType::Directory);
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
        let mut inode = Inode {
            raw: sys::ext2_inode_large::default(),
        };
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
        let mut i = Inode::new(FileType::Regular, 0o644, 32);
        assert_eq!(i.mode(), 0o100644);
        assert_eq!(i.file_type(), Some(FileType::Regular));
        i.set_owner(100_000, 200_000);
        assert_eq!((i.uid(), i.gid()), (100_000, 200_000));
    }

    #[test]
    fn device_numbers_old_and_new_encoding() {
        let mut i = Inode::new(FileType::CharDevice, 0o644, 32);
        assert_eq!(i.mode(), 0o20644);
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
