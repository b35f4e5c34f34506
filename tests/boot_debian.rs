//! A distribution that boots and writes: a debootstrapped Debian bookworm (systemd-sysv, udev,
//! linux-image-amd64, ...: tests/debian/tree.sh, cached in /var/tmp/linuxdisk-mk-debian) made
//! into a disk at the default size, with a check service added by `--add`, boots under qemu
//! (TCG) with its own kernel and initrd and `root=LABEL=root`. From inside
//! (tests/debian/ldmk-check.sh, whose one line the test reads on the serial console): the system
//! is running with no failed unit, the journal is persistent, nobody writes 20 MiB, setuid and
//! setgid programs work and ping keeps its file capability; then the guest powers off and
//! `e2fsck -fn` finds the filesystem clean, with the file written. The same tree as an OCI image
//! (two layers, one with a whiteout) with the same overlay boots the same way.
//!
//! Named `boot_debian` so that these long tests start early (libtest starts them by name).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::boot::{repo, run_ok, tail, watch_console};
use crate::common::oci::{tar_file_of_dir, Compression, Layout, TarWriter, META};
use crate::common::*;

/// The packages of the tree (the list another test of the suite uses too: one cached tree).
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "linux-image-amd64",
    "systemd-boot",
    "iputils-ping",
    "libcap2-bin",
];
/// What ldmk-check.sh prints.
const MARKER: &str = "LDMK-CHECK ";
/// ~25 s alone under TCG here; minutes on a loaded machine. Only bounds a stuck guest.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1500);
/// From the marker to qemu's exit (a poweroff).
const POWEROFF_GRACE: Duration = Duration::from_secs(300);

/// The cached Debian tree (made by debootstrap the first time).
fn tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        require_root();
        let out = run_ok(Command::new(repo().join("tests/debian/tree.sh")).args(PACKAGES));
        let p = PathBuf::from(out.trim());
        assert!(
            p.join("etc/debian_version").is_file(),
            "tree.sh printed {out:?}"
        );
        p
    })
}

/// The overlay added with `--add DIR:/`: the check service (enabled) and its script, in
/// directories owned by root with the modes the tree has for them.
fn overlay(dir: &Path) -> PathBuf {
    let o = dir.join("overlay");
    let wants = o.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::fs::create_dir_all(o.join("usr/local/sbin")).unwrap();
    std::fs::copy(
        repo().join("tests/debian/ldmk-check.service"),
        o.join("etc/systemd/system/ldmk-check.service"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("tests/debian/ldmk-check.sh"),
        o.join("usr/local/sbin/ldmk-check"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../ldmk-check.service", wants.join("ldmk-check.service")).unwrap();
    for d in [
        "",
        "etc",
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/multi-user.target.wants",
        "usr",
        "usr/local",
        "usr/local/sbin",
    ] {
        std::fs::set_permissions(
            o.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    o
}

/// A kernel file of the tree's /boot.
fn boot_file(prefix: &str) -> PathBuf {
    let boot = tree().join("boot");
    std::fs::read_dir(&boot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", boot.display()))
}

/// Builds `img` from `source` with the overlay, at the default size, labelled root.
fn build(source: &Path, overlay: &Path, img: &Path) {
    let add = format!("{}:/", overlay.display());
    let args: Vec<OsString> = vec![
        "-q".into(),
        "-t".into(),
        "ext4".into(),
        "-L".into(),
        "root".into(),
        "--add".into(),
        add.into(),
        source.into(),
        img.into(),
    ];
    run_bin_timeout(&args, Duration::from_secs(900)).assert_ok();
}

/// Boots `img` (written to: no snapshot) until the check's line is on the console and the
/// guest has powered off; asserts every check passed, then that the filesystem is clean and
/// holds the file nobody wrote.
fn boot_and_check(img: &Path, work: &Path, what: &str) {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-machine",
        "accel=tcg",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(boot_file("vmlinuz-"))
    .arg("-initrd")
    .arg(boot_file("initrd.img-"))
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", img.display()))
    .args(["-append", "console=ttyS0 root=LABEL=root rw panic=-1"]);
    let log = work.join("console.log");
    let c = watch_console(qemu, &log, MARKER, BOOT_TIMEOUT, POWEROFF_GRACE);
    let line = c
        .text
        .lines()
        .find_map(|l| l.find(MARKER).map(|i| l[i..].trim_end().to_string()));
    let fail = |why: String| -> ! {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}.console.log"));
        let _ = std::fs::copy(&log, &kept);
        panic!(
            "{what}: {why}\nfull console log: {}\n--- last console lines ---\n{}",
            kept.display(),
            tail(&c.text)
        );
    };
    let Some(line) = line else {
        fail(format!("the check never printed its line ({:?})", c.ended));
    };
    eprintln!(
        "{what}: {line} (after {:.1?})",
        c.marker_at.unwrap_or_default()
    );
    let field = |k: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    for (k, want) in [
        ("state", "running"),
        ("failed", "none"),
        ("journal", "persistent"),
        ("write", "ok"),
        ("setuid", "ok"),
        ("setgid", "ok"),
        ("caps", "cap_net_raw=ep"),
    ] {
        if field(k) != want {
            fail(format!("{k} is {:?}, want {want:?}: {line}", field(k)));
        }
    }
    if c.text.contains("EXT4-fs error") {
        fail("the kernel reported ext4 errors".to_string());
    }
    match &c.ended {
        Ok(st) if st.success() => {}
        other => fail(format!("qemu did not power off cleanly: {other:?}")),
    }
    with_fs_device(img, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(img, PART_OFFSET);
    let written = std::fs::metadata(mnt.path().join("var/tmp/ldmk-write")).unwrap();
    assert_eq!((written.len(), written.uid()), (20 << 20, 65534));
}

#[test]
fn debian_tree_boots_and_writes() {
    let tmp = tempdir();
    let o = overlay(tmp.path());
    let img = tmp.path().join("debian.img");
    build(tree(), &o, &img);
    boot_and_check(&img, tmp.path(), "debian-tree");
}

#[test]
fn debian_as_an_oci_image_boots_and_writes() {
    let tmp = tempdir();
    let layout = Layout::new(&tmp.path().join("layout"));
    let tar = tmp.path().join("tree.tar");
    tar_file_of_dir(tree(), &tar);
    let l1 = layout.layer_file(&tar);
    std::fs::remove_file(&tar).unwrap();
    // A second layer, as an image build would add: a whiteout and a file.
    let mut t = TarWriter::default();
    t.whiteout("var/log/", "bootstrap.log").file(
        "etc/motd",
        META,
        b"booted from an OCI image by linuxdisk-mk\n",
    );
    let l2 = layout.layer(&t.finish(), Compression::Zstd);
    let m = layout.image(&[l1, l2], "linux/amd64");
    layout.index(&[m]);
    let o = overlay(tmp.path());
    let img = tmp.path().join("debian.img");
    build(&layout.dir, &o, &img);
    {
        let mnt = mount_image(&img, PART_OFFSET);
        assert!(!mnt.path().join("var/log/bootstrap.log").exists());
        assert!(mnt.path().join("etc/motd").is_file());
    }
    boot_and_check(&img, tmp.path(), "debian-oci");
}

/// With `--part-type NAME`, the partition is named NAME (as systemd-repart names partitions),
/// unless `--part-label` says otherwise.
#[test]
fn a_partition_type_names_the_partition() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_small_tree(&src);
    let name = |extra: &[&str]| {
        let img = tmp.path().join("p.img");
        let mut a: Vec<OsString> = vec!["-q".into(), "-f".into()];
        a.extend(extra.iter().map(OsString::from));
        a.extend([src.clone().into(), img.clone().into()]);
        run_bin(&a).assert_ok();
        check_gpt(&img);
        let out = tool_ok("sgdisk", [OsString::from("-i"), "1".into(), img.into()]);
        out.lines()
            .find_map(|l| l.strip_prefix("Partition name: "))
            .map(|n| n.trim().trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("no name in {out}"))
    };
    assert_eq!(name(&[]), "linux");
    assert_eq!(name(&["--part-type", "root-x86-64"]), "root-x86-64");
    assert_eq!(
        name(&["--part-type", "home", "--part-label", "mine"]),
        "mine"
    );
}
