//! Directory-index name hashes: `ext2fs_dirhash2` with a filesystem's default hash version, its
//! signed/unsigned-char flavour (`EXT2_FLAGS_UNSIGNED_HASH`) and its hash seed, as the kernel and
//! e2fsck compute them for htree directories.

use ext2fs_sys as sys;

use crate::error::check;
use crate::{Error, Filesystem, Result};

/// The hash of one name: the major hash (low bit always clear, as libext2fs returns it) and the
/// minor hash (0 for the legacy hash).
pub type NameHash = (u32, u32);

/// A directory-index hash algorithm, as stored in `s_def_hash_version` and a dx_root's
/// `hash_version` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashVersion(u8);

impl HashVersion {
    /// The original ext3 hash (no minor hash).
    pub const LEGACY: HashVersion = HashVersion(sys::EXT2_HASH_LEGACY as u8);
    /// Half MD4, mke2fs's default.
    pub const HALF_MD4: HashVersion = HashVersion(sys::EXT2_HASH_HALF_MD4 as u8);
    /// TEA.
    pub const TEA: HashVersion = HashVersion(sys::EXT2_HASH_TEA as u8);
    /// SipHash, only for casefolded, encrypted directories (not supported by [`DirHash`]).
    pub const SIPHASH: HashVersion = HashVersion(sys::EXT2_HASH_SIPHASH as u8);

    /// The version an on-disk byte names.
    pub fn from_byte(b: u8) -> HashVersion {
        HashVersion(b)
    }

    /// The on-disk byte.
    pub fn byte(self) -> u8 {
        self.0
    }
}

/// Computes directory-entry name hashes for one filesystem.
#[derive(Debug, Clone)]
pub struct DirHash {
    /// The version stored in a dx_root (`s_def_hash_version`: legacy, half_md4 or tea).
    stored: HashVersion,
    /// The version passed to libext2fs: `stored`, or its `*_UNSIGNED` variant.
    algorithm: i32,
    seed: [u32; 4],
}

impl DirHash {
    /// The hash `fs` uses for new indexed directories: `s_def_hash_version`, unsigned when
    /// `s_flags` has `EXT2_FLAGS_UNSIGNED_HASH`, seeded with `s_hash_seed`.
    pub fn for_fs(fs: &Filesystem) -> Result<DirHash> {
        let sb = fs.superblock();
        DirHash::new(sb.def_hash_version(), sb.unsigned_hash(), sb.hash_seed())
    }

    /// A hash of `version` (legacy, half_md4 or tea), with unsigned chars when `unsigned`; an
    /// all-zero `seed` means libext2fs's default seed.
    pub fn new(version: HashVersion, unsigned: bool, seed: [u32; 4]) -> Result<DirHash> {
        let v = version.byte() as u32;
        if v > sys::EXT2_HASH_TEA {
            // SipHash needs casefolded, encrypted names: not for directories we write.
            return Err(Error::new(
                "ext2fs_dirhash2",
                sys::EXT2_ET_DIRHASH_UNSUPP as sys::errcode_t,
            ));
        }
        let algorithm = (v + if unsigned { 3 } else { 0 }) as i32;
        let mut h = 0;
        // SAFETY: a null name of length 0 only asks whether the version is supported; a null
        // charset means no casefolding; the seed and both out-pointers are valid for the call.
        check("ext2fs_dirhash2", unsafe {
            sys::ext2fs_dirhash2(
                algorithm,
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                seed.as_ptr(),
                &mut h,
                std::ptr::null_mut(),
            )
        })?;
        Ok(DirHash {
            stored: version,
            algorithm,
            seed,
        })
    }

    /// The `hash_version` byte of a dx_root_info (never the `*_UNSIGNED` value: the kernel adds
    /// that from the superblock's flags).
    pub fn root_version(&self) -> u8 {
        self.stored.byte()
    }

    /// The (major, minor) hash of `name` (at most 255 bytes, as in any directory entry).
    pub fn hash(&self, name: &[u8]) -> NameHash {
        assert!(
            name.len() <= 255,
            "a directory entry name is at most 255 bytes"
        );
        let (mut major, mut minor) = (0, 0);
        // SAFETY: name points at name.len() readable bytes; the charset is null (no casefold,
        // so hash_flags 0 is ignored); seed and both out-pointers are valid for the call.
        let code = unsafe {
            sys::ext2fs_dirhash2(
                self.algorithm,
                name.as_ptr().cast(),
                name.len() as i32,
                std::ptr::null(),
                0,
                self.seed.as_ptr(),
                &mut major,
                &mut minor,
            )
        };
        // The version was checked in `new`; without a charset nothing else can fail.
        assert_eq!(code, 0, "ext2fs_dirhash2 failed for a supported version");
        (major, minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u32; 4] = [0x1234_5678, 0x9abc_def0, 0x0fed_cba9, 0x8765_4321];

    #[test]
    fn half_md4_is_deterministic_seeded_and_even() {
        let h = DirHash::new(HashVersion::HALF_MD4, false, SEED).unwrap();
        assert_eq!(h.root_version(), 1);
        let a = h.hash(b"file-00001");
        assert_eq!(a, h.hash(b"file-00001"));
        assert_ne!(a, h.hash(b"file-00002"));
        assert_eq!(a.0 & 1, 0, "major hashes have the low bit clear");
        let other = DirHash::new(HashVersion::HALF_MD4, false, [1, 2, 3, 4]).unwrap();
        assert_ne!(a, other.hash(b"file-00001"));
    }

    #[test]
    fn matches_debugfs_dx_hash() {
        // `debugfs -R "dx_hash -h half_md4 [-s 12345678-9abc-def0-0fed-cba987654321] file-00001"`
        // (the seed UUID's bytes read as little-endian words).
        let seed = [0x7856_3412, 0xf0de_bc9a, 0xa9cb_ed0f, 0x2143_6587];
        let md4 = DirHash::new(HashVersion::HALF_MD4, false, seed).unwrap();
        assert_eq!(md4.hash(b"file-00001"), (0x183b_3590, 0xc5a2_872f));
        let unseeded = DirHash::new(HashVersion::HALF_MD4, false, [0; 4]).unwrap();
        assert_eq!(unseeded.hash(b"file-00001"), (0x84e6_dbde, 0xcb56_9be3));
        let tea = DirHash::new(HashVersion::TEA, false, seed).unwrap();
        assert_eq!(tea.hash(b"file-00001"), (0x86a9_6fda, 0x1264_1335));
    }

    #[test]
    fn unsigned_flavour_differs_only_for_high_bytes() {
        let s = DirHash::new(HashVersion::HALF_MD4, false, SEED).unwrap();
        let u = DirHash::new(HashVersion::HALF_MD4, true, SEED).unwrap();
        assert_eq!(u.root_version(), 1);
        assert_eq!(s.hash(b"plain-ascii"), u.hash(b"plain-ascii"));
        assert_ne!(
            s.hash("caf\u{e9}-\u{fc}ber".as_bytes()),
            u.hash("caf\u{e9}-\u{fc}ber".as_bytes())
        );
    }

    #[test]
    fn legacy_and_tea_work_and_siphash_is_refused() {
        let legacy = DirHash::new(HashVersion::LEGACY, false, SEED).unwrap();
        assert_eq!(legacy.hash(b"x").1, 0, "the legacy hash has no minor hash");
        let tea = DirHash::new(HashVersion::TEA, true, SEED).unwrap();
        assert_eq!(tea.hash(b"name").0 & 1, 0);
        let e = DirHash::new(HashVersion::SIPHASH, false, SEED).unwrap_err();
        assert!(e.is(sys::EXT2_ET_DIRHASH_UNSUPP), "{e}");
    }

    #[test]
    fn long_names_hash() {
        let h = DirHash::new(HashVersion::HALF_MD4, false, [0; 4]).unwrap();
        let n = vec![b'z'; 255];
        assert_eq!(h.hash(&n), h.hash(&n));
    }
}
