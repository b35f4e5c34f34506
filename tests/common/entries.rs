//! Low-level makers for source entries, addressed by byte paths relative to a tree root (names are
//! bytes), and the time setter every tree builder ends with: all entries get distinct nanosecond
//! mtimes and atimes in 2099 or later, so that reading the source under relatime (during a build or a
//! comparison) cannot change them.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    chownat, lsetxattr, makedev, mknodat, openat, statat, symlinkat, utimensat, AtFlags, Dir,
    FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags, CWD,
};

/// 2099-01-01T00:00:00Z: atimes from here on are "in the future" for relatime.
pub const ATIME_BASE: i64 = 4_070_908_800;
/// 2100-01-01T00:00:00Z.
pub const Y2100: i64 = 4_102_444_800;
/// 2400-01-01T00:00:00Z (ext4 epoch bits = 3).
pub const Y2400: i64 = 13_569_465_600;
/// 1938-04-24: before 1970, negative.
pub const PRE1970: i64 = -1_000_000_000;

pub fn p(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}

pub fn mkdir(dir: &Path, rel: &[u8]) {
    std::fs::create_dir_all(p(dir, rel)).unwrap_or_else(|e| panic!("mkdir {:?}: {e}", p(dir, rel)));
}

pub fn write(dir: &Path, rel: &[u8], data: &[u8]) {
    std::fs::write(p(dir, rel), data).unwrap_or_else(|e| panic!("write {:?}: {e}", p(dir, rel)));
}

pub fn chmod(dir: &Path, rel: &[u8], mode: u32) {
    std::fs::set_permissions(p(dir, rel), std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn chown(dir: &Path, rel: &[u8], uid: u32, gid: u32) {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    chownat(
        CWD,
        p(dir, rel),
        Some(u),
        Some(g),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {:?}: {e}", p(dir, rel)));
}

pub fn symlink(dir: &Path, rel: &[u8], target: &[u8]) {
    symlinkat(target, CWD, p(dir, rel))
        .unwrap_or_else(|e| panic!("symlink {:?}: {e}", p(dir, rel)));
}

pub fn hardlink(dir: &Path, from: &[u8], to: &[u8]) {
    rustix::fs::linkat(CWD, p(dir, from), CWD, p(dir, to), AtFlags::empty())
        .unwrap_or_else(|e| panic!("link {:?}: {e}", p(dir, to)));
}

pub fn mknod(dir: &Path, rel: &[u8], ft: FileType, mode: u32, maj: u32, min: u32) {
    mknodat(
        CWD,
        p(dir, rel),
        ft,
        Mode::from_raw_mode(mode),
        makedev(maj, min),
    )
    .unwrap_or_else(|e| panic!("mknod {:?}: {e}", p(dir, rel)));
}

/// Sets an xattr on the entry itself (never following a symlink).
pub fn xattr(dir: &Path, rel: &[u8], name: &str, value: &[u8]) {
    lsetxattr(p(dir, rel), name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {:?}: {e}", p(dir, rel)));
}

pub fn ts(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Sets atime and mtime of `path` (never following a symlink).
pub fn set_entry_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let t = Timestamps {
        last_access: ts(atime.0, atime.1),
        last_modification: ts(mtime.0, mtime.1),
    };
    utimensat(CWD, path, &t, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {path:?}: {e}"));
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Gives every entry below and including `root` a distinct nanosecond mtime and a 2099+ atime,
/// children before parents (so directory times are final). Returns the number of entries.
pub fn set_times(root: &Path) -> u64 {
    let fd = openat(
        CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open tree root");
    let mut k = 1u64;
    times_below(&fd, &mut k);
    set_entry_times(root, atime_for(0), mtime_for(0));
    k
}

pub fn mtime_for(k: u64) -> (i64, i64) {
    let ns = (k.wrapping_mul(1_042_871_237) + 1) % 1_000_000_000;
    (1_500_000_000 + (k as i64) * 7919, ns.max(1) as i64)
}

pub fn atime_for(k: u64) -> (i64, i64) {
    let ns = (k.wrapping_mul(7_654_321) + 3) % 1_000_000_000;
    (ATIME_BASE + (k as i64) * 13, ns as i64)
}

pub fn times_below(dirfd: &OwnedFd, k: &mut u64) {
    let mut names: Vec<Vec<u8>> = Dir::read_from(dirfd)
        .expect("readdir")
        .map(|e| e.expect("dirent").file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    names.sort();
    for name in names {
        let st = statat(dirfd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW).expect("stat");
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = openat(
                dirfd,
                name.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .expect("open subdir");
            times_below(&sub, k);
        }
        let (a, m) = (atime_for(*k), mtime_for(*k));
        let t = Timestamps {
            last_access: ts(a.0, a.1),
            last_modification: ts(m.0, m.1),
        };
        utimensat(dirfd, name.as_slice(), &t, AtFlags::SYMLINK_NOFOLLOW).expect("utimensat");
        *k += 1;
    }
}
