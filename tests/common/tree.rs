//! Source trees for the tests. `build_full_tree` holds one of every kind of entry and metadata the
//! tool must carry over exactly (see the issue); `build_small_tree` is a quick one; `build_sized_tree`
//! makes N files totalling B bytes for the sizing tests.
//!
//! Every builder ends with `entries::set_times` (nanosecond mtimes, atimes in 2099 or later).

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{mkdirat, openat, symlinkat, FileType, Mode, OFlags, CWD};

use super::entries::*;
use super::{tool_ok, MIB};

/// Knobs for the full tree (what must change for small block sizes or for mke2fs -d).
#[derive(Clone, Debug)]
pub struct FullTree {
    /// The target block size: limits the long symlink (< block size) and drops the 3000-byte xattr
    /// (xattrs outside the inode must fit one block) below 4096.
    pub block_size: u32,
    /// Include a path longer than PATH_MAX (mke2fs -d aborts on it).
    pub long_path: bool,
    /// Number of entries in one big directory (multi-block / htree directory).
    pub big_dir: usize,
}

impl Default for FullTree {
    fn default() -> Self {
        FullTree {
            block_size: 4096,
            long_path: true,
            big_dir: 3000,
        }
    }
}

/// Builds the full tree with the default knobs (4096-byte blocks, long path, big directory).
pub fn build_full_tree(dir: &Path) {
    build_full_tree_with(dir, &FullTree::default())
}

/// Sets the root directory's own metadata: mode 0751, owner 1000:1000, an xattr.
fn root_metadata(dir: &Path) {
    chown(dir, b"", 1000, 1000);
    chmod(dir, b"", 0o751);
    xattr(dir, b"", "user.root", b"root directory xattr");
}

/// A quick tree: files with content, a subdirectory, a symlink, a hard link, an xattr; the root
/// directory 0751 1000:1000; nanosecond times.
pub fn build_small_tree(dir: &Path) {
    mkdir(dir, b"sub/deeper");
    write(dir, b"hello.txt", b"hello, world\n");
    write(dir, b"sub/data.bin", &Rng::new(7).bytes(100_000));
    write(dir, b"sub/deeper/empty", b"");
    symlink(dir, b"link", b"sub/data.bin");
    hardlink(dir, b"hello.txt", b"sub/hello-again.txt");
    chown(dir, b"sub/data.bin", 100_000, 200_000);
    chmod(dir, b"sub/data.bin", 0o640);
    xattr(dir, b"hello.txt", "user.note", b"small tree");
    root_metadata(dir);
    set_times(dir);
}

/// `nfiles` files of pseudo-random data totalling `total` bytes, spread over 10 directories: every
/// 30th file is big (together ~80% of the bytes), the rest are small and of varied sizes.
pub fn build_sized_tree(dir: &Path, nfiles: usize, total: u64) {
    let big: Vec<usize> = (0..nfiles).filter(|i| i % 30 == 0).collect();
    let small_w = |i: usize| (i as u64 * 7919) % 97 + 3;
    let small_sum: u64 = (0..nfiles).filter(|i| i % 30 != 0).map(small_w).sum();
    let big_each = total * 4 / 5 / big.len().max(1) as u64;
    let small_total = total - big_each * big.len() as u64;
    let pool = Rng::new(nfiles as u64).bytes(4 * MIB as usize + 4096);
    let mut written = 0u64;
    for i in 0..nfiles {
        let d = format!("d{:02}", i % 10);
        mkdir(dir, d.as_bytes());
        let mut size = if i % 30 == 0 {
            big_each
        } else {
            small_total * small_w(i) / small_sum.max(1)
        };
        if i == nfiles - 1 {
            size = total.saturating_sub(written);
        }
        let path = p(dir, format!("{d}/file{i:04}").as_bytes());
        let f = std::fs::File::create(&path).expect("create");
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(4 * MIB);
            let start = ((i as u64 * 4099 + off / MIB) % 4096) as usize;
            f.write_all_at(&pool[start..start + n as usize], off)
                .expect("write");
            off += n;
        }
        written += size;
    }
    set_times(dir);
}

/// Builds the tree holding every case of the issue (see the module doc and the comments below).
pub fn build_full_tree_with(dir: &Path, spec: &FullTree) {
    super::require_root();
    let small_blocks = spec.block_size < 4096;
    // Regular files, sparse ones included ("holes stay holes").
    mkdir(dir, b"files");
    write(dir, b"files/empty", b"");
    write(dir, b"files/one_byte", b"x");
    write(dir, b"files/small", b"hello world\n");
    write(dir, b"files/exact_4096", &Rng::new(1).bytes(4096));
    write(dir, b"files/odd_5000", &Rng::new(2).bytes(5000));
    write(dir, b"files/random_1MiB", &Rng::new(3).bytes(MIB as usize));
    let chunk = Rng::new(4).bytes(4096);
    let f = std::fs::File::create(p(dir, b"files/sparse_64MiB")).unwrap();
    f.set_len(64 * MIB).unwrap();
    for off in [0, 20 * MIB, 64 * MIB - 4096] {
        f.write_all_at(&chunk, off).unwrap();
    }
    let f = std::fs::File::create(p(dir, b"files/all_hole_10MiB")).unwrap();
    f.set_len(10 * MIB).unwrap();
    let f = std::fs::File::create(p(dir, b"files/hole_then_tail")).unwrap();
    f.write_all_at(b"tail data after an 8 MiB hole", 8 * MIB)
        .unwrap();

    // Nested and empty directories.
    mkdir(dir, b"nest/a/b/c/d/e");
    mkdir(dir, b"nest/empty_dir");
    write(dir, b"nest/a/b/c/d/e/deep_file", b"deep\n");

    // Symlinks: fast (< 60 bytes) and slow, boundary lengths, dangling, to a dir, non-UTF-8.
    mkdir(dir, b"links");
    symlink(dir, b"links/short", b"../files/small");
    symlink(dir, b"links/len59", &[b'a'; 59]);
    symlink(dir, b"links/len60", &[b'b'; 60]);
    let long_len = if small_blocks {
        spec.block_size as usize - 1
    } else {
        4095
    };
    let mut long: Vec<u8> = b"seg/".iter().copied().cycle().take(long_len - 4).collect();
    long.extend_from_slice(b"last");
    symlink(dir, b"links/long", &long);
    symlink(dir, b"links/dangling", b"does/not/exist");
    symlink(dir, b"links/to_dir", b"../nest");
    symlink(dir, b"links/absolute", b"/etc/passwd");
    symlink(dir, b"links/non_utf8", b"\xff\xfe/target");

    // Hard links: a group of 3 across directories, a group of 40, a hard-linked symlink.
    mkdir(dir, b"hard/sub");
    write(dir, b"hard/one", b"one inode, three names\n");
    hardlink(dir, b"hard/one", b"hard/sub/two");
    hardlink(dir, b"hard/one", b"nest/a/three");
    mkdir(dir, b"hard/many");
    write(dir, b"hard/many/f00", b"forty names\n");
    for i in 1..40 {
        hardlink(
            dir,
            b"hard/many/f00",
            format!("hard/many/f{i:02}").as_bytes(),
        );
    }
    symlink(dir, b"hard/sym_a", b"one");
    hardlink(dir, b"hard/sym_a", b"hard/sym_b");

    // Devices (old and new encodings, an overlayfs whiteout), FIFO, socket.
    mkdir(dir, b"special");
    mknod(
        dir,
        b"special/char_1_3",
        FileType::CharacterDevice,
        0o666,
        1,
        3,
    );
    mknod(
        dir,
        b"special/block_8_1",
        FileType::BlockDevice,
        0o660,
        8,
        1,
    );
    mknod(
        dir,
        b"special/char_300_70000",
        FileType::CharacterDevice,
        0o600,
        300,
        70000,
    );
    mknod(
        dir,
        b"special/block_max",
        FileType::BlockDevice,
        0o640,
        4095,
        1_048_575,
    );
    mknod(
        dir,
        b"special/whiteout",
        FileType::CharacterDevice,
        0o000,
        0,
        0,
    );
    mknod(dir, b"special/fifo", FileType::Fifo, 0o644, 0, 0);
    let sock = p(dir, b"special/socket");
    assert!(
        sock.as_os_str().len() < 100,
        "socket path too long for bind: {sock:?}"
    );
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind unix socket"));

    // Modes: none, all, setuid/setgid/sticky on files and directories.
    mkdir(dir, b"modes/dir_0000");
    write(dir, b"modes/dir_0000/inside", b"in an unreadable dir\n");
    for (name, mode) in [
        (&b"modes/m0000"[..], 0o000),
        (b"modes/m0777", 0o777),
        (b"modes/m4755", 0o4755),
        (b"modes/m2755", 0o2755),
        (b"modes/m7777", 0o7777),
    ] {
        write(dir, name, b"#!/bin/sh\n");
        chmod(dir, name, mode);
    }
    mkdir(dir, b"modes/sticky_1777");
    chmod(dir, b"modes/sticky_1777", 0o1777);
    mkdir(dir, b"modes/setgid_2775");
    chmod(dir, b"modes/setgid_2775", 0o2775);
    chmod(dir, b"modes/dir_0000", 0o000);

    // Owners above 65535, up to 2^32-2, on files, dirs, symlinks and devices.
    mkdir(dir, b"owners/dir_65536");
    write(dir, b"owners/big", b"100000:200000\n");
    chown(dir, b"owners/big", 100_000, 200_000);
    chown(dir, b"owners/dir_65536", 65_536, 65_536);
    write(dir, b"owners/max", b"2^32-2\n");
    chown(dir, b"owners/max", 4_294_967_294, 4_294_967_294);
    symlink(dir, b"owners/symlink", b"big");
    chown(dir, b"owners/symlink", 100_001, 100_002);
    mknod(dir, b"owners/dev", FileType::CharacterDevice, 0o620, 4, 64);
    chown(dir, b"owners/dev", 70_000, 80_000);

    // Extended attributes of every namespace.
    mkdir(dir, b"xattr/trusted_dir");
    write(dir, b"xattr/user", b"xattrs\n");
    xattr(dir, b"xattr/user", "user.comment", b"hello");
    xattr(dir, b"xattr/user", "user.empty", b"");
    xattr(
        dir,
        b"xattr/user",
        "user.binary",
        &(0..=255u8).collect::<Vec<u8>>(),
    );
    if !small_blocks {
        write(dir, b"xattr/big", b"3000-byte xattr\n");
        xattr(dir, b"xattr/big", "user.big", &Rng::new(5).bytes(3000));
    }
    write(dir, b"xattr/many", b"many xattrs\n");
    for i in 0..(if small_blocks { 12 } else { 25 }) {
        xattr(
            dir,
            b"xattr/many",
            &format!("user.k{i:02}"),
            format!("value number {i:02}").as_bytes(),
        );
    }
    xattr(dir, b"xattr/trusted_dir", "trusted.overlay.opaque", b"y");
    symlink(dir, b"xattr/symlink", b"user");
    xattr(
        dir,
        b"xattr/symlink",
        "trusted.on_symlink",
        b"symlink xattr",
    );
    mknod(dir, b"xattr/fifo", FileType::Fifo, 0o600, 0, 0);
    xattr(dir, b"xattr/fifo", "trusted.on_fifo", b"fifo xattr");
    let label = b"system_u:object_r:bin_t:s0\0";
    for rel in [
        &b"xattr/user"[..],
        b"xattr/trusted_dir",
        b"xattr/symlink",
        b"special/char_1_3",
    ] {
        xattr(dir, rel, "security.selinux", label);
    }
    write(dir, b"xattr/cap", b"#!/bin/sh\necho ping\n");
    chmod(dir, b"xattr/cap", 0o755);
    tool_ok(
        "setcap",
        [
            OsStr::new("cap_net_raw+ep"),
            p(dir, b"xattr/cap").as_os_str(),
        ],
    );

    // POSIX ACLs: an access ACL, a default ACL on a directory and what inherits it.
    mkdir(dir, b"acl/dir");
    write(dir, b"acl/file", b"acl\n");
    tool_ok(
        "setfacl",
        [
            OsStr::new("-m"),
            OsStr::new("u:1234:rwx,g:2345:r-x"),
            p(dir, b"acl/file").as_os_str(),
        ],
    );
    tool_ok(
        "setfacl",
        [
            OsStr::new("-m"),
            OsStr::new("u:1234:r-x"),
            p(dir, b"acl/dir").as_os_str(),
        ],
    );
    tool_ok(
        "setfacl",
        [
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("u:1234:rwx"),
            p(dir, b"acl/dir").as_os_str(),
        ],
    );
    write(dir, b"acl/dir/inherits", b"inherited acl\n");
    mkdir(dir, b"acl/dir/inherits_dir");

    // Names are bytes.
    mkdir(dir, b"names");
    let n255 = [b'n'; 255];
    let mut d255 = vec![b'd'; 255];
    for name in [
        &b"with space"[..],
        b"new\nline",
        b"\xff\xfe",
        b"tab\tand\\backslash",
        "ünïcødé".as_bytes(),
        b"-leading-dash",
        b".hidden",
        b"...",
        &n255,
    ] {
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(name);
        write(dir, &rel, name);
    }
    let mut rel = b"names/".to_vec();
    rel.append(&mut d255);
    mkdir(dir, &rel);
    rel.push(b'/');
    rel.extend_from_slice(&n255);
    write(dir, &rel, b"255/255\n");

    // A big directory (several blocks; an htree on ext3/4).
    mkdir(dir, b"bigdir");
    for i in 0..spec.big_dir {
        write(
            dir,
            format!("bigdir/entry-{i:05}-with-a-longer-name").as_bytes(),
            b"",
        );
    }

    // A path longer than PATH_MAX, made with directory fds.
    if spec.long_path {
        mkdir(dir, b"deep");
        let mut fd = openat(
            CWD,
            p(dir, b"deep"),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let mut len = 5;
        let mut i = 0;
        while len <= 5000 {
            let name = format!("{i:03}{}", "L".repeat(197));
            mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).expect("mkdirat");
            fd = openat(
                &fd,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
            len += 201;
            i += 1;
        }
        let leaf = openat(
            &fd,
            "leaf",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        std::fs::File::from(leaf)
            .write_all_at(b"beyond PATH_MAX\n", 0)
            .unwrap();
        symlinkat("leaf", &fd, "leaf_link").unwrap();
    }

    // Times beyond 2038 / before 1970, set after the general pass below.
    mkdir(dir, b"times/dir_2040");
    write(dir, b"times/y2100", b"2100\n");
    write(dir, b"times/y2400", b"2400\n");
    write(dir, b"times/pre1970", b"1938\n");
    symlink(dir, b"times/symlink_y2100", b"y2100");

    root_metadata(dir);
    xattr(
        dir,
        b"",
        "security.selinux",
        b"system_u:object_r:root_t:s0\0",
    );
    set_times(dir);
    set_entry_times(
        &p(dir, b"times/y2100"),
        (Y2100 + 86_400, 1),
        (Y2100, 987_654_321),
    );
    set_entry_times(
        &p(dir, b"times/y2400"),
        (Y2400 + 86_400, 2),
        (Y2400, 123_456_789),
    );
    set_entry_times(
        &p(dir, b"times/pre1970"),
        (ATIME_BASE, 5),
        (PRE1970, 500_000_001),
    );
    set_entry_times(
        &p(dir, b"times/symlink_y2100"),
        (Y2100 + 60, 7),
        (Y2100 + 30, 999_999_999),
    );
    set_entry_times(
        &p(dir, b"times/dir_2040"),
        (ATIME_BASE, 9),
        (2_208_988_800, 42),
    );
}
