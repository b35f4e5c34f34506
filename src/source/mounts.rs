//! Mount points met while scanning: which mount an entry is on (statx's mount ID, so that a bind
//! mount of the same filesystem counts too), and whether what is mounted is one of the kernel's
//! own filesystems (proc, sysfs, cgroup...), whose files are its state rather than data.

use std::os::fd::OwnedFd;

use rustix::fs::{self as rfs, Mode, OFlags, StatxFlags};

/// The mount an entry is on: its mount ID, or (kernels before 5.8) its device.
pub fn of(st: &rfs::Statx) -> u64 {
    if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        st.stx_mnt_id
    } else {
        super::open::dev_of(st) | 1 << 63
    }
}

/// The `statfs` type of the filesystem mounted at `name` in `parent` (opened as a path only).
pub fn fs_type(parent: &OwnedFd, name: &[u8]) -> Option<i64> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    Some(rfs::fstatfs(&fd).ok()?.f_type as i64)
}

/// The name of a filesystem of the kernel's state, by its `statfs` type (linux/magic.h); None
/// for any other.
pub fn kernel_state(fs_type: i64) -> Option<&'static str> {
    Some(match fs_type {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0xcafe_4a11 => "bpf",
        0x6165_676c => "pstore",
        0xde5e_81e4 => "efivarfs",
        0x6265_6570 => "configfs",
        0xf97c_ff8c => "selinuxfs",
        0x6573_5543 => "fusectl",
        0x4249_4e4d => "binfmt_misc",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_the_kernel_s_state_and_a_directory_is_not() {
        let root = rfs::open("/", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let proc = fs_type(&root, b"proc").unwrap();
        assert_eq!(kernel_state(proc), Some("proc"));
        let dir = tempfile::tempdir().unwrap();
        let parent = rfs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert_eq!(kernel_state(fs_type(&parent, b"d").unwrap()), None);
    }
}
