//! `--efi`: a disk that boots on its own under UEFI. Partition 1 is an EFI system partition
//! written by linuxdisk-mk (checked by `fsck.fat -n`, listed by `mdir` and read back by `mcopy`,
//! byte for byte as in the tree; this host's kernel has no vfat, the booted guest's has and
//! compares the files too), partition 2 the root filesystem (`sgdisk -v`, `systemd-dissect`);
//! missing pieces are one error; the build is reproducible and the served disk is the written
//! one. tests/efi_boot.rs boots such a disk.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use crate::common::mount::{mount_image, LoopDev};
use crate::common::*;

/// One partition as `sgdisk -i N` describes it.
#[derive(Debug)]
struct PartInfo {
    offset: u64,
    size: u64,
    type_guid: String,
    guid: String,
    name: String,
}

fn partition(img: &Path, n: u32) -> PartInfo {
    let i = tool_ok(
        "sgdisk",
        [
            OsStr::new("-i"),
            OsStr::new(&n.to_string()),
            img.as_os_str(),
        ],
    );
    let field = |key: &str| -> String {
        i.lines()
            .find_map(|l| l.trim_start().strip_prefix(key))
            .unwrap_or_else(|| panic!("sgdisk -i {n}: no {key:?} in:\n{i}"))
            .trim()
            .to_string()
    };
    let sector = |key: &str| -> u64 {
        field(key)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (first, last) = (sector("First sector:"), sector("Last sector:"));
    PartInfo {
        offset: first * 512,
        size: (last + 1 - first) * 512,
        type_guid: field("Partition GUID code:")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string(),
        guid: field("Partition unique GUID:").to_lowercase(),
        name: field("Partition name:").trim_matches('\'').to_string(),
    }
}

/// mtools' name (`-i`) for the FAT volume at `offset` in `img`.
fn fat_at(img: &Path, offset: u64) -> String {
    format!("{}@@{offset}", img.display())
}

/// A file of the FAT volume at `offset` in `img`, read by mtools.
fn esp_file(img: &Path, offset: u64, path: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("file");
    let i = fat_at(img, offset);
    let from = format!("::{path}");
    tool_ok(
        "mcopy",
        [
            OsStr::new("-n"),
            OsStr::new("-i"),
            OsStr::new(&i),
            OsStr::new(&from),
            out.as_os_str(),
        ],
    );
    fs::read(&out).unwrap()
}

/// Asserts that `in_esp`, read by mtools from the ESP of `img`, holds the bytes of the tree's
/// `in_tree`.
fn assert_esp_holds(img: &Path, esp: &PartInfo, in_esp: &str, tree: &Path, in_tree: &str) {
    let a = esp_file(img, esp.offset, in_esp);
    let b = fs::read(tree.join(in_tree)).unwrap();
    assert!(a == b, "{in_esp} differs from the tree's {in_tree}");
}

fn random_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An EFI (PE) executable's first bytes, then `len` random ones.
fn pe_file(len: usize, seed: u32) -> Vec<u8> {
    let mut exe = b"MZ".to_vec();
    exe.extend(random_bytes(len, seed));
    exe
}

/// A small tree with what `--efi` looks for: two kernels (9 and 10, which only a version
/// comparison orders right), their initrds, systemd-boot, os-release behind a symlink, and a
/// /vmlinuz symlink as Debian makes.
fn boot_tree(root: &Path) {
    let write = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    };
    write(
        "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        &pe_file(140_000, 1),
    );
    write("boot/vmlinuz-6.1.0-9-amd64", &random_bytes(700_001, 2));
    write("boot/initrd.img-6.1.0-9-amd64", &random_bytes(1_500_000, 3));
    write("boot/vmlinuz-6.1.0-10-amd64", &random_bytes(1_000_003, 4));
    write(
        "boot/initrd.img-6.1.0-10-amd64",
        &random_bytes(2_000_000, 5),
    );
    write(
        "usr/lib/os-release",
        b"PRETTY_NAME=\"Test OS 1 (efi)\"\nNAME=\"Test OS\"\nID=testos\n",
    );
    write("etc/hostname", b"efi-test\n");
    symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    symlink("boot/vmlinuz-6.1.0-9-amd64", root.join("vmlinuz")).unwrap();
}

/// The binary's arguments `OPTS... -t ext4 --efi EXTRA... TREE IMG`.
fn efi_args<'a>(
    opts: &[&'a str],
    extra: &[&'a str],
    tree: &'a Path,
    img: &'a Path,
) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = opts
        .iter()
        .chain(&["-t", "ext4", "--efi"])
        .chain(extra)
        .map(|s| OsStr::new(*s))
        .collect();
    args.extend([tree.as_os_str(), img.as_os_str()]);
    args
}

fn build(tree: &Path, img: &Path, extra: &[&str]) -> Run {
    run_bin(efi_args(&["-q", "-f"], extra, tree, img))
}

/// Whether `cmp` finds the files the same; its output.
fn cmp(a: &Path, b: &Path) -> (bool, String) {
    let t = tool("cmp", [a.as_os_str(), b.as_os_str()]);
    (t.code == Some(0), t.out)
}

#[test]
fn esp_holds_systemd_boot_the_newest_kernel_and_its_initrd_byte_for_byte() {
    let (dir, tree) = temp_source(boot_tree);
    let img = dir.path().join("disk.img");
    build(&tree, &img, &["--cmdline", "console=ttyS0 quiet"]).assert_ok();
    let esp = partition(&img, 1);
    let root = partition(&img, 2);
    // fsck.fat reads the volume with its own code; mdir lists it.
    let lo = LoopDev::attach(&img, esp.offset);
    let fsck = tool_ok(
        "fsck.fat",
        [OsStr::new("-n"), OsStr::new("-v"), lo.dev.as_os_str()],
    );
    assert!(fsck.contains("2 FATs, 32 bit entries"), "{fsck}");
    drop(lo);
    let listing = tool_ok("mdir", ["-/", "-i", &fat_at(&img, esp.offset), "::/"]);
    for name in [
        "BOOTX64  EFI",
        "loader.conf",
        "testos-6.1.0-10-amd64.conf",
        "initrd",
    ] {
        assert!(listing.contains(name), "mdir lists no {name}:\n{listing}");
    }
    // mtools reads every byte as in the tree.
    let read = |p: &str| esp_file(&img, esp.offset, p);
    let same = |in_esp: &str, in_tree: &str| assert_esp_holds(&img, &esp, in_esp, &tree, in_tree);
    same(
        "EFI/BOOT/BOOTX64.EFI",
        "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
    );
    same("testos/6.1.0-10-amd64/linux", "boot/vmlinuz-6.1.0-10-amd64");
    same(
        "testos/6.1.0-10-amd64/initrd",
        "boot/initrd.img-6.1.0-10-amd64",
    );
    let entry = String::from_utf8(read("loader/entries/testos-6.1.0-10-amd64.conf")).unwrap();
    assert_eq!(
        entry,
        format!(
            "title Test OS 1 (efi)\nversion 6.1.0-10-amd64\nlinux /testos/6.1.0-10-amd64/linux\n\
             initrd /testos/6.1.0-10-amd64/initrd\noptions root=PARTUUID={} rw console=ttyS0 \
             quiet\n",
            root.guid
        )
    );
    let conf = String::from_utf8(read("loader/loader.conf")).unwrap();
    assert_eq!(conf, "timeout 0\ndefault testos-6.1.0-10-amd64.conf\n");
    // Partition 2 holds the tree.
    let m = mount_image(&img, root.offset);
    assert_eq!(
        fs::read(m.path().join("etc/hostname")).unwrap(),
        b"efi-test\n"
    );
}

#[test]
fn efi_disk_passes_sgdisk_and_systemd_dissect() {
    let (dir, tree) = temp_source(boot_tree);
    let img = dir.path().join("disk.img");
    build(&tree, &img, &[]).assert_ok();
    let v = tool_ok("sgdisk", [OsStr::new("-v"), img.as_os_str()]);
    assert!(v.contains("No problems found"), "{v}");
    assert!(!v.contains("Caution"), "{v}");
    let esp = partition(&img, 1);
    let root = partition(&img, 2);
    assert_eq!(esp.type_guid, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!((esp.offset, esp.name.as_str()), (MIB, "esp"));
    assert!(esp.size >= 33 * MIB, "FAT32 needs 65,525 clusters: {esp:?}");
    assert_eq!(root.type_guid, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(root.offset, esp.offset + esp.size);
    // Named for its type, as systemd-repart names partitions.
    assert_eq!(root.name, "root-x86-64");
    let out = tool_ok(
        "systemd-dissect",
        [OsStr::new("--json=short"), img.as_os_str()],
    );
    let j = crate::common::nbd::json("systemd-dissect", &out);
    let mounts = j["mounts"].as_array().expect("mounts");
    let find = |designator: &str| {
        mounts
            .iter()
            .find(|m| m["designator"] == designator)
            .unwrap_or_else(|| panic!("systemd-dissect found no {designator} partition: {out}"))
    };
    let (r, e) = (find("root"), find("esp"));
    assert_eq!(
        (r["fstype"].as_str(), r["partno"].as_u64()),
        (Some("ext4"), Some(2))
    );
    assert_eq!(r["partition_uuid"].as_str(), Some(root.guid.as_str()));
    assert_eq!(
        (e["fstype"].as_str(), e["partno"].as_u64()),
        (Some("vfat"), Some(1))
    );
    assert_eq!(e["partition_uuid"].as_str(), Some(esp.guid.as_str()));
    assert_eq!(j["useBootableUefi"], true, "{out}");
}

#[test]
fn kernel_initrd_and_loader_options_pick_the_files() {
    let (dir, tree) = temp_source(boot_tree);
    let host_loader = dir.path().join("loader.efi");
    let loader = pe_file(50_000, 9);
    fs::write(&host_loader, &loader).unwrap();
    let img = dir.path().join("disk.img");
    // --kernel through the tree's own symlink (/vmlinuz -> boot/vmlinuz-6.1.0-9-amd64).
    build(
        &tree,
        &img,
        &[
            "--kernel",
            "/vmlinuz",
            "--initrd",
            "boot/initrd.img-6.1.0-9-amd64",
            "--efi-loader",
            host_loader.to_str().unwrap(),
        ],
    )
    .assert_ok();
    let esp = partition(&img, 1);

    assert!(esp_file(&img, esp.offset, "EFI/BOOT/BOOTX64.EFI") == loader);
    let same = |in_esp: &str, in_tree: &str| assert_esp_holds(&img, &esp, in_esp, &tree, in_tree);
    same("testos/6.1.0-9-amd64/linux", "boot/vmlinuz-6.1.0-9-amd64");
    same(
        "testos/6.1.0-9-amd64/initrd",
        "boot/initrd.img-6.1.0-9-amd64",
    );
}

#[test]
fn missing_boot_pieces_are_one_error_naming_what_to_install() {
    let dir = tempdir();
    let img = dir.path().join("disk.img");
    let case = |name: &str, remove: &[&str], extra: &[&str], mentions: &[&str]| {
        let tree = dir.path().join(name);
        boot_tree(&tree);
        for r in remove {
            fs::remove_file(tree.join(r)).unwrap();
        }
        run_bin(efi_args(&[], extra, &tree, &img)).assert_one_line_error(mentions);
        assert!(!img.exists(), "{name}: nothing may be left at OUTPUT");
    };
    case(
        "no-loader",
        &["usr/lib/systemd/boot/efi/systemd-bootx64.efi"],
        &[],
        &[
            "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            "install systemd-boot",
            "--efi-loader",
        ],
    );
    case(
        "no-kernel",
        &["boot/vmlinuz-6.1.0-9-amd64", "boot/vmlinuz-6.1.0-10-amd64"],
        &[],
        &["no kernel", "linux-image-amd64", "--kernel"],
    );
    case(
        "no-initrd",
        &["boot/initrd.img-6.1.0-10-amd64"],
        &[],
        &[
            "/boot/vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "initramfs-tools",
            "--initrd",
        ],
    );
    case(
        "bad-kernel",
        &[],
        &["--kernel", "/boot/nope"],
        &["--kernel", "/boot/nope", "no such file"],
    );
    case(
        "dir-kernel",
        &[],
        &["--kernel", "/boot"],
        &["--kernel", "/boot", "not a regular file"],
    );
    case(
        "bad-loader",
        &[],
        &["--efi-loader", "/etc/hostname"],
        &[
            "--efi-loader",
            "/etc/hostname",
            "not an EFI (PE) executable",
        ],
    );
    // Usage errors: options of --efi without it, --efi without a partition table.
    let tree = dir.path().join("no-loader");
    let r = run_bin([
        OsStr::new("--kernel"),
        OsStr::new("/x"),
        tree.as_os_str(),
        img.as_os_str(),
    ]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("--kernel needs --efi"),
        "{}",
        r.describe()
    );
    run_bin([
        OsStr::new("--efi"),
        OsStr::new("--partition"),
        OsStr::new("none"),
        tree.as_os_str(),
        img.as_os_str(),
    ])
    .assert_code(2);
}

#[test]
fn efi_images_are_reproducible_under_source_date_epoch() {
    let (dir, a) = temp_source(boot_tree);
    let b = dir.path().join("elsewhere/b");
    fs::create_dir_all(&b).unwrap();
    tool_ok(
        "cp",
        ["-a", &format!("{}/.", a.display()), b.to_str().unwrap()],
    );
    let build_epoch = |tree: &Path, img: &Path, extra: &[&str]| {
        let args = efi_args(&["-q"], extra, tree, img);
        run_cmd_timeout(bin_at_epoch(), args, Duration::from_secs(300)).assert_ok();
    };
    let (ia, ib, ic) = (
        dir.path().join("a.img"),
        dir.path().join("b.img"),
        dir.path().join("c.img"),
    );
    build_epoch(&a, &ia, &[]);
    build_epoch(&b, &ib, &[]);
    build_epoch(&a, &ic, &["--cmdline", "quiet"]);
    assert!(
        cmp(&ia, &ib).0,
        "the same tree elsewhere gave another image"
    );
    assert!(!cmp(&ia, &ic).0, "another command line gave the same image");
    assert_ne!(
        partition(&ia, 1).guid,
        partition(&ic, 1).guid,
        "ids do not depend on --cmdline"
    );
    // FAT times: the files' mtimes clamped to the epoch (2023-11-14 22:13:20 UTC).
    let listing = tool_ok("mdir", ["-i", &fat_at(&ia, MIB), "::/loader"]);
    assert!(listing.contains("2023-11-14  22:13"), "{listing}");
}

#[test]
fn served_efi_disk_is_the_written_one_also_lazily() {
    crate::common::nbd::require_tools(&["nbdcopy"]);
    let (dir, tree) = temp_source(boot_tree);
    let written = dir.path().join("written.img");
    let common = ["-q", "-t", "ext4", "--efi", "--cmdline", "console=ttyS0"];
    let mut args: Vec<&OsStr> = common.iter().map(OsStr::new).collect();
    args.extend([tree.as_os_str(), written.as_os_str()]);
    run_cmd_timeout(bin_at_epoch(), args, Duration::from_secs(300)).assert_ok();
    for (name, lazy) in [("served.img", false), ("lazy.img", true)] {
        let out = dir.path().join(name);
        let mut args: Vec<&OsStr> = common.iter().map(OsStr::new).collect();
        args.push(OsStr::new("--serve"));
        if lazy {
            args.push(OsStr::new("--lazy"));
        }
        let run = format!("nbdcopy \"$uri\" {}", out.display());
        args.extend([OsStr::new("--run"), OsStr::new(&run), tree.as_os_str()]);
        run_cmd_timeout(bin_at_epoch(), args, Duration::from_secs(300)).assert_ok();
        let (same, said) = cmp(&written, &out);
        assert!(same, "{name} differs from the written image: {said}");
    }
}

#[test]
fn esp_from_a_tar_archive_holds_the_archives_bytes() {
    let (dir, tree) = temp_source(boot_tree);
    let tar = dir.path().join("tree.tar.gz");
    tar_c(&tree, &tar, &["-z"]);
    let img = dir.path().join("disk.img");
    build(&tar, &img, &[]).assert_ok();
    let esp = partition(&img, 1);
    assert_esp_holds(
        &img,
        &esp,
        "testos/6.1.0-10-amd64/initrd",
        &tree,
        "boot/initrd.img-6.1.0-10-amd64",
    );
}

#[test]
fn boot_file_errors_name_the_host_file_of_the_source_it_came_from() {
    let dir = tempdir();
    let tree = dir.path().join("tree");
    boot_tree(&tree);
    fs::remove_file(tree.join("etc/os-release")).unwrap();
    // An os-release too large to be one comes from an --add file: the error names that file
    // on the host, not SOURCE followed by its path in the tree.
    let big = dir.path().join("big-os-release");
    fs::write(&big, vec![b'#'; 100_000]).unwrap();
    let add = format!("{}:/etc/os-release", big.display());
    let img = dir.path().join("disk.img");
    let run = run_bin(efi_args(&["--add", &add], &[], &tree, &img));
    run.assert_one_line_error(&[big.to_str().unwrap(), "larger than"]);
    let wrong = format!("{}/etc/os-release", tree.display());
    assert!(!run.stderr.contains(&wrong), "{}", run.stderr);
    assert!(!img.exists(), "nothing may be left at OUTPUT");
}
