//! The crate's public API on real images in temp files (no root needed): a filesystem formatted
//! the way mke2fs formats one, a file, a symlink and a device node written through the wrapper,
//! then checked with e2fsprogs' own tools — `e2fsck -fn` clean, `dumpe2fs -h` for features and
//! label, `debugfs` for the file's bytes, owner, times and extended attributes — and errors that
//! carry libext2fs's message.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use ext2fs::{
    CompatFeatures, DirHash, Error, FileType, Filesystem, FormatParams, HashVersion,
    IncompatFeatures, Ino, Inode, InodeFlags, RoCompatFeatures, Run, Timestamp, ROOT_INO,
};
use tempfile::NamedTempFile;

/// Runs an e2fsprogs tool (from /sbin when PATH lacks it) with TZ=UTC.
fn tool(name: &str, args: &[&str]) -> Output {
    let sbin = Path::new("/sbin").join(name);
    let prog = if sbin.exists() { sbin } else { name.into() };
    Command::new(&prog)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", prog.display()))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `debugfs -R REQUEST IMAGE`, its stdout.
fn debugfs(img: &Path, request: &str) -> Vec<u8> {
    let o = tool("debugfs", &["-R", request, img.to_str().unwrap()]);
    assert!(o.status.success(), "debugfs {request}: {}", text(&o));
    o.stdout
}

/// The `dumpe2fs -h` field `name`.
fn dumpe2fs_field(img: &Path, name: &str) -> String {
    let o = tool("dumpe2fs", &["-h", img.to_str().unwrap()]);
    assert!(o.status.success(), "dumpe2fs: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in dumpe2fs -h:\n{out}"))
        .trim()
        .to_string()
}

fn assert_fsck_clean(img: &Path) {
    let o = tool("e2fsck", &["-fn", img.to_str().unwrap()]);
    assert!(o.status.success(), "e2fsck -fn: {}", text(&o));
}

const LABEL: &[u8; 16] = b"ext2fs-test\0\0\0\0\0";
const UUID: [u8; 16] = *b"0123456789abcdef";

fn ext4() -> (CompatFeatures, IncompatFeatures, RoCompatFeatures) {
    (
        CompatFeatures::HAS_JOURNAL
            | CompatFeatures::EXT_ATTR
            | CompatFeatures::RESIZE_INODE
            | CompatFeatures::DIR_INDEX,
        IncompatFeatures::FILETYPE
            | IncompatFeatures::EXTENTS
            | IncompatFeatures::BIT64
            | IncompatFeatures::FLEX_BG,
        RoCompatFeatures::SPARSE_SUPER
            | RoCompatFeatures::LARGE_FILE
            | RoCompatFeatures::HUGE_FILE
            | RoCompatFeatures::DIR_NLINK
            | RoCompatFeatures::EXTRA_ISIZE
            | RoCompatFeatures::METADATA_CSUM,
    )
}

fn ext2() -> (CompatFeatures, IncompatFeatures, RoCompatFeatures) {
    (
        CompatFeatures::EXT_ATTR | CompatFeatures::RESIZE_INODE | CompatFeatures::DIR_INDEX,
        IncompatFeatures::FILETYPE,
        RoCompatFeatures::SPARSE_SUPER | RoCompatFeatures::LARGE_FILE,
    )
}

fn params(
    blocks: u64,
    block_size: u32,
    features: (CompatFeatures, IncompatFeatures, RoCompatFeatures),
) -> FormatParams {
    let (compat, incompat, ro_compat) = features;
    FormatParams {
        blocks,
        block_size,
        inodes: 256,
        inode_size: 256,
        compat,
        incompat,
        ro_compat,
        log_groups_per_flex: if incompat.contains(IncompatFeatures::FLEX_BG) {
            4
        } else {
            0
        },
        reserved_blocks: blocks / 20,
        label: *LABEL,
        uuid: UUID,
        hash_seed: *b"fedcba9876543210",
        time: 1_700_000_000,
    }
}

/// A zeroed temp file of `blocks` blocks.
fn image(p: &FormatParams) -> NamedTempFile {
    let f = NamedTempFile::new().unwrap();
    f.as_file().set_len(p.blocks * p.block_size as u64).unwrap();
    f
}

/// Formats as mke2fs does: tables, reserved inodes, root, lost+found, bad-block and resize
/// inodes, a journal when the features ask for one. Returns the filesystem and lost+found.
fn format(img: &Path, p: &FormatParams) -> (Filesystem, Ino) {
    let mut fs = Filesystem::initialize(img, 0, p).unwrap();
    fs.allocate_tables().unwrap();
    fs.mark_inode_tables_zeroed();
    fs.write_reserved_inodes().unwrap();
    fs.mkdir(ROOT_INO, ROOT_INO, None).unwrap();
    fs.set_umask(0o077);
    fs.mkdir(ROOT_INO, 0, Some(b"lost+found")).unwrap();
    let lost_found = fs.lookup(ROOT_INO, b"lost+found").unwrap();
    fs.expand_dir(lost_found).unwrap();
    fs.set_umask(0o022);
    fs.reserve_inodes();
    fs.create_bad_block_inode().unwrap();
    if p.compat.contains(CompatFeatures::RESIZE_INODE) {
        fs.create_resize_inode().unwrap();
    }
    if p.compat.contains(CompatFeatures::HAS_JOURNAL) {
        let blocks = ext2fs::default_journal_blocks(p.blocks);
        fs.add_journal(blocks, true).unwrap();
    }
    fs.record_overhead().unwrap();
    (fs, lost_found)
}

fn has_csum(fs: &Filesystem) -> bool {
    fs.superblock()
        .ro_compat()
        .contains(RoCompatFeatures::METADATA_CSUM)
}

fn has_extents(fs: &Filesystem) -> bool {
    fs.superblock()
        .incompat()
        .contains(IncompatFeatures::EXTENTS)
}

/// One linear directory block holding `entries`, with the checksum tail reserved (its checksum
/// is filled in by `write_dir_block`) when metadata_csum is on.
fn dir_block(fs: &Filesystem, entries: &[(&[u8], Ino, FileType)]) -> Vec<u8> {
    let bs = fs.block_size() as usize;
    let end = if has_csum(fs) { bs - 12 } else { bs };
    let mut b = vec![0u8; bs];
    let mut off = 0;
    for (i, &(name, ino, ft)) in entries.iter().enumerate() {
        let need = (8 + name.len() + 3) & !3;
        let rec_len = if i + 1 == entries.len() {
            end - off
        } else {
            need
        };
        b[off..off + 4].copy_from_slice(&ino.to_le_bytes());
        b[off + 4..off + 6].copy_from_slice(&(rec_len as u16).to_le_bytes());
        b[off + 6] = name.len() as u8;
        b[off + 7] = ft.dirent_byte();
        b[off + 8..off + 8 + name.len()].copy_from_slice(name);
        off += rec_len;
    }
    assert_eq!(off, end, "the entries fit in one block");
    if end < bs {
        // struct ext2_dir_entry_tail: inode 0, rec_len 12, name_len 0, file_type 0xDE.
        b[end + 4] = 12;
        b[end + 7] = 0xDE;
    }
    b
}

/// Allocates `blocks` blocks for a new inode, front to back, as an extent tree when the
/// filesystem has extents.
fn place(fs: &mut Filesystem, ino: Ino, inode: &mut Inode, blocks: u64) -> Vec<Run> {
    if has_extents(fs) {
        inode.init_extents();
    }
    fs.allocate(ino, inode, 0, blocks).unwrap();
    let runs = fs.runs(ino, inode).unwrap();
    assert_eq!(runs.iter().map(|r| r.len).sum::<u64>(), blocks);
    assert_eq!(runs[0].lblk, 0);
    for w in runs.windows(2) {
        assert_eq!(w[0].lblk + w[0].len, w[1].lblk, "runs are in logical order");
    }
    runs
}

const MTIME: Timestamp = Timestamp {
    sec: 4_102_444_800, // 2100-01-01: needs the epoch bits of the extra field
    nsec: 123_456_789,
};

/// Writes a `size`-byte file, a symlink and a character device into the root directory (which
/// is rebuilt in one block, as linuxdisk-mk does), with owner, times and xattrs; returns the
/// file's contents.
fn populate(fs: &mut Filesystem, img: &NamedTempFile, lost_found: Ino, size: u64) -> Vec<u8> {
    let bs = fs.block_size() as u64;
    let extra = fs.superblock().want_extra_isize();

    let file = fs.new_inode(ROOT_INO, FileType::Regular).unwrap();
    let mut inode = Inode::new(FileType::Regular, 0o4755, extra);
    inode.set_owner(100_000, 200_000);
    inode.set_times(MTIME, MTIME, MTIME, MTIME);
    inode.set_links(1);
    inode.set_size(size);
    let runs = place(fs, file, &mut inode, size.div_ceil(bs));
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    for r in &runs {
        let from = (r.lblk * bs) as usize;
        let to = (((r.lblk + r.len) * bs) as usize).min(data.len());
        img.as_file()
            .write_all_at(&data[from..to], r.pblk * bs)
            .unwrap();
    }
    fs.write_inode(file, &mut inode).unwrap();
    let attrs = [
        (
            b"user.comment".to_vec(),
            b"written by the ext2fs tests".to_vec(),
        ),
        (b"trusted.big".to_vec(), vec![b'x'; 200]),
    ];
    fs.set_xattrs(file, &attrs).unwrap();

    let link = fs.symlink(ROOT_INO, b"file").unwrap();
    let dev = fs.new_inode(ROOT_INO, FileType::CharDevice).unwrap();
    let mut inode = Inode::new(FileType::CharDevice, 0o600, extra);
    inode.set_links(1);
    inode.set_device(300, 70_000);
    fs.write_inode(dev, &mut inode).unwrap();

    // The root again, in one block: give back the block ext2fs_mkdir gave it, then place one.
    let mut old = fs.read_inode(ROOT_INO).unwrap();
    assert_eq!(old.file_type(), Some(FileType::Directory));
    fs.free_all_blocks(ROOT_INO, &mut old).unwrap();
    let mut root = Inode::new(FileType::Directory, 0o755, extra);
    root.set_links(3);
    root.set_size(bs);
    let runs = place(fs, ROOT_INO, &mut root, 1);
    let mut block = dir_block(
        fs,
        &[
            (b".", ROOT_INO, FileType::Directory),
            (b"..", ROOT_INO, FileType::Directory),
            (b"lost+found", lost_found, FileType::Directory),
            (b"file", file, FileType::Regular),
            (b"link", link, FileType::Symlink),
            (b"dev", dev, FileType::CharDevice),
        ],
    );
    fs.write_dir_block(runs[0].pblk, &mut block, ROOT_INO)
        .unwrap();
    fs.write_inode(ROOT_INO, &mut root).unwrap();
    data
}

/// Formats, populates and closes an image, then checks it with e2fsprogs.
fn build_and_check(p: &FormatParams, size: u64) {
    let img = image(p);
    let (mut fs, lost_found) = format(img.path(), p);
    let data = populate(&mut fs, &img, lost_found, size);
    fs.close().unwrap();

    let path = img.path();
    assert_fsck_clean(path);
    assert_eq!(debugfs(path, "cat /file"), data, "the file's bytes");
    let stat = String::from_utf8_lossy(&debugfs(path, "stat /file")).into_owned();
    assert!(stat.contains("User: 100000   Group: 200000"), "{stat}");
    assert!(stat.contains("Mode:  04755"), "{stat}");
    assert!(stat.contains("mtime: ") && stat.contains("2100"), "{stat}");
    let xattrs = String::from_utf8_lossy(&debugfs(path, "ea_list /file")).into_owned();
    assert!(
        xattrs.contains("user.comment") && xattrs.contains("written by the ext2fs tests"),
        "{xattrs}"
    );
    assert!(xattrs.contains("trusted.big"), "{xattrs}");
    let link = String::from_utf8_lossy(&debugfs(path, "stat /link")).into_owned();
    assert!(link.contains("Fast link dest: \"file\""), "{link}");
    let dev = String::from_utf8_lossy(&debugfs(path, "stat /dev")).into_owned();
    assert!(dev.contains("300:70000"), "{dev}");

    assert_eq!(
        dumpe2fs_field(path, "Filesystem volume name"),
        "ext2fs-test"
    );
    assert_eq!(
        dumpe2fs_field(path, "Filesystem UUID"),
        "30313233-3435-3637-3839-616263646566"
    );
    assert_eq!(dumpe2fs_field(path, "Block size"), p.block_size.to_string());
    assert_eq!(dumpe2fs_field(path, "Block count"), p.blocks.to_string());
    assert_eq!(dumpe2fs_field(path, "Default directory hash"), "half_md4");
    let features = dumpe2fs_field(path, "Filesystem features");
    let on: Vec<&str> = features.split_whitespace().collect();
    let want: &[(bool, &str)] = &[
        (
            p.compat.contains(CompatFeatures::HAS_JOURNAL),
            "has_journal",
        ),
        (p.compat.contains(CompatFeatures::DIR_INDEX), "dir_index"),
        (p.incompat.contains(IncompatFeatures::EXTENTS), "extent"),
        (p.incompat.contains(IncompatFeatures::BIT64), "64bit"),
        (p.incompat.contains(IncompatFeatures::FLEX_BG), "flex_bg"),
        (
            p.ro_compat.contains(RoCompatFeatures::METADATA_CSUM),
            "metadata_csum",
        ),
        (
            p.ro_compat.contains(RoCompatFeatures::HUGE_FILE),
            "huge_file",
        ),
    ];
    for &(expected, name) in want {
        assert_eq!(on.contains(&name), expected, "{name} in {features}");
    }
}

#[test]
fn ext4_image_with_extents_journal_and_checksums_is_clean() {
    // 64 MiB of 4 KiB blocks; the file's last block is partly used.
    build_and_check(&params(16384, 4096, ext4()), 3 * 4096 + 10);
}

#[test]
fn ext2_image_with_block_maps_and_indirect_blocks_is_clean() {
    // 1 KiB blocks: 300 blocks need the indirect and the double-indirect block.
    build_and_check(&params(8192, 1024, ext2()), 300 * 1024 - 1);
}

#[test]
fn superblock_view_reports_the_format_parameters() {
    let p = params(8192, 1024, ext4());
    let img = image(&p);
    let (fs, lost_found) = format(img.path(), &p);
    let sb = fs.superblock();
    assert_eq!(sb.blocks_count(), 8192);
    assert_eq!(sb.reserved_blocks(), 8192 / 20);
    assert_eq!(sb.first_data_block(), 1, "1 KiB blocks start at block 1");
    assert_eq!(sb.first_ino(), 11);
    assert_eq!(lost_found, 11);
    assert_eq!(sb.want_extra_isize(), 32);
    assert_eq!(sb.log_groups_per_flex(), 4);
    assert_eq!((sb.compat(), sb.incompat(), sb.ro_compat()), ext4());
    assert_eq!(sb.label(), *LABEL);
    assert_eq!(sb.uuid(), UUID);
    assert_eq!(sb.def_hash_version(), HashVersion::HALF_MD4);
    assert_eq!(sb.hash_seed()[0], u32::from_le_bytes(*b"fedc"));
    assert!(sb.free_blocks() > 0 && sb.free_blocks() < 8192);
    assert!(sb.overhead_blocks() > 0);
    assert_eq!(sb.free_inodes(), sb.inodes_count() - 11);
    assert!(sb.inodes_count() >= 256);
    assert_eq!(fs.block_size(), 1024);
    assert_eq!(fs.inode_size(), 256);
    assert!(fs.group_count() >= 1);
    let h = DirHash::for_fs(&fs).unwrap();
    let same = DirHash::new(sb.def_hash_version(), sb.unsigned_hash(), sb.hash_seed()).unwrap();
    assert_eq!(h.hash(b"name"), same.hash(b"name"));
    assert_eq!(h.root_version(), HashVersion::HALF_MD4.byte());
    let root = fs.read_inode(ROOT_INO).unwrap();
    assert_eq!(root.file_type(), Some(FileType::Directory));
    assert!(!root.flags().contains(InodeFlags::INDEX));
    // Dropped without close: nothing is flushed and the handle is freed.
}

#[test]
fn allocation_failure_says_which_call_and_why() {
    for (features, name) in [(ext2(), "ext2"), (ext4(), "ext4")] {
        let p = params(2048, 1024, features);
        let img = image(&p);
        let (mut fs, _) = format(img.path(), &p);
        let ino = fs.new_inode(ROOT_INO, FileType::Regular).unwrap();
        let mut inode = Inode::new(FileType::Regular, 0o644, 32);
        if has_extents(&fs) {
            inode.init_extents();
        }
        let e: Error = fs.allocate(ino, &mut inode, 0, 4096).unwrap_err();
        assert!(e.is_no_space(), "{name}: {e} ({})", e.code());
        let s = e.to_string();
        assert!(s.starts_with(&format!("{}: ", e.call())), "{s}");
        assert!(s.ends_with(e.message()), "{s}");
        assert!(e.message().to_lowercase().contains("block"), "{name}: {s}");
    }
}

#[test]
fn errors_carry_the_library_message() {
    let p = params(2048, 1024, ext2());
    let e = Filesystem::initialize(Path::new("/nonexistent/dir/image"), 0, &p)
        .expect_err("no such directory");
    assert_eq!(e.call(), "ext2fs_initialize");
    assert_eq!(
        e.to_string(),
        "ext2fs_initialize: No such file or directory"
    );

    let img = image(&p);
    let (mut fs, _) = format(img.path(), &p);
    let e = fs.lookup(ROOT_INO, b"missing").unwrap_err();
    assert_eq!(e.call(), "ext2fs_lookup");
    assert!(e.message().contains("not found"), "{e}");
    assert!(!e.is_no_space());

    let e = fs.mkdir(ROOT_INO, 0, Some(b"a\0b")).unwrap_err();
    assert_eq!(e.call(), "ext2fs_mkdir");
    assert!(
        e.message().to_lowercase().contains("invalid argument"),
        "{e}"
    );

    // An xattr name with a NUL: refused, and the open xattr handle is released on the way out.
    let ino = fs.new_inode(ROOT_INO, FileType::Regular).unwrap();
    let mut inode = Inode::new(FileType::Regular, 0o644, 32);
    inode.set_links(1);
    fs.write_inode(ino, &mut inode).unwrap();
    let e = fs
        .set_xattrs(ino, &[(b"user.a\0b".to_vec(), b"v".to_vec())])
        .unwrap_err();
    assert_eq!(e.call(), "ext2fs_xattr_set");
}

#[test]
fn too_small_an_image_fails_to_lay_out_with_a_message() {
    // Too few blocks for even the group's metadata.
    let p = params(16, 1024, ext4());
    let img = image(&p);
    let e = Filesystem::initialize(img.path(), 0, &p)
        .and_then(|mut fs| fs.allocate_tables())
        .expect_err("16 blocks cannot hold an ext4 filesystem");
    assert_eq!(e.call(), "ext2fs_initialize");
    assert!(
        e.message().to_lowercase().contains("not enough space"),
        "{e}"
    );
}
