//! Checks of the images by real tools: `sgdisk -v` / `-p` / `-i 1` (the GPT), `e2fsck -fn` and
//! `dumpe2fs -h` (the filesystem, through a loop device at the partition's offset), and the real
//! `mke2fs -d` to make reference images that validate the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;

use super::{tool, tool_ok, LoopDev};

/// What `sgdisk` says about partition 1 of a GPT image.
#[derive(Debug)]
pub struct GptInfo {
    pub first_sector: u64,
    pub last_sector: u64,
    pub type_guid: String,
    pub part_guid: String,
    pub disk_guid: String,
    pub partitions: usize,
}

/// `sgdisk -v` must find no problems; then reads partition 1 with `sgdisk -p` / `-i 1`.
pub fn check_gpt(img: &Path) -> GptInfo {
    gpt_info(img).unwrap_or_else(|e| panic!("{e}"))
}

/// Like `check_gpt`, but returns what is wrong instead of panicking.
pub fn gpt_info(img: &Path) -> Result<GptInfo, String> {
    let v = tool("sgdisk", [OsStr::new("-v"), img.as_os_str()]);
    if !(v.code == Some(0) && v.out.contains("No problems found")) {
        return Err(format!(
            "sgdisk -v {} reports problems:\n{}",
            img.display(),
            v.out
        ));
    }
    let p = tool("sgdisk", [OsStr::new("-p"), img.as_os_str()]).out;
    let disk_guid = field_after(&p, "Disk identifier (GUID):").unwrap_or_default();
    // Partition table rows start with a partition number after the "Number  Start" header.
    let partitions = p
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .count();
    let i = tool(
        "sgdisk",
        [OsStr::new("-i"), OsStr::new("1"), img.as_os_str()],
    )
    .out;
    let num = |key: &str| -> Result<u64, String> {
        field_after(&i, key)
            .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()))
            .ok_or_else(|| format!("sgdisk -i 1: no {key:?} in:\n{i}"))
    };
    let type_guid = field_after(&i, "Partition GUID code:")
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let part_guid = field_after(&i, "Partition unique GUID:").unwrap_or_default();
    Ok(GptInfo {
        first_sector: num("First sector:")?,
        last_sector: num("Last sector:")?,
        type_guid,
        part_guid,
        disk_guid,
        partitions,
    })
}

fn field_after(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim_start()
            .strip_prefix(key)
            .map(|r| r.trim().to_owned())
    })
}

/// `e2fsck -fn` on `dev` (a loop device or a bare filesystem image) must exit 0.
pub fn assert_e2fsck_clean(dev: &Path) {
    if let Some(e) = e2fsck_problem(dev) {
        panic!("{e}");
    }
}

/// What `e2fsck -fn` says when it does not exit 0.
pub fn e2fsck_problem(dev: &Path) -> Option<String> {
    let t = tool("e2fsck", [OsStr::new("-fn"), dev.as_os_str()]);
    (t.code != Some(0)).then(|| {
        format!(
            "e2fsck -fn {} exits {:?}:\n{}",
            dev.display(),
            t.code,
            t.out
        )
    })
}

/// `dumpe2fs -h` parsed into "Key" -> "value".
pub fn dumpe2fs(dev: &Path) -> BTreeMap<String, String> {
    let out = tool_ok("dumpe2fs", [OsStr::new("-h"), dev.as_os_str()]);
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Typed view of the `dumpe2fs -h` fields the tests use.
#[derive(Debug)]
pub struct FsInfo {
    pub map: BTreeMap<String, String>,
}

impl FsInfo {
    pub fn read(dev: &Path) -> FsInfo {
        FsInfo { map: dumpe2fs(dev) }
    }
    pub fn get(&self, key: &str) -> &str {
        self.map
            .get(key)
            .unwrap_or_else(|| panic!("dumpe2fs -h has no {key:?}: {:#?}", self.map))
    }
    pub fn num(&self, key: &str) -> u64 {
        let v = self.get(key);
        v.parse()
            .unwrap_or_else(|_| panic!("dumpe2fs {key:?} = {v:?} is not a number"))
    }
    pub fn features(&self) -> BTreeSet<String> {
        self.get("Filesystem features")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
    pub fn block_size(&self) -> u64 {
        self.num("Block size")
    }
    pub fn size_bytes(&self) -> u64 {
        self.num("Block count") * self.block_size()
    }
    pub fn free_bytes(&self) -> u64 {
        self.num("Free blocks") * self.block_size()
    }
    pub fn label(&self) -> &str {
        self.get("Filesystem volume name")
    }
}

/// Runs `f` with a device for the filesystem at `offset` in `img`: the file itself for offset 0,
/// else a read-only loop device (detached afterwards, even on panic).
pub fn with_fs_device<T>(img: &Path, offset: u64, f: impl FnOnce(&Path) -> T) -> T {
    if offset == 0 {
        f(img)
    } else {
        let lo = LoopDev::attach(img, offset);
        f(&lo.dev)
    }
}

/// Makes a bare filesystem image (4 KiB blocks, 256-byte inodes) with the real mke2fs -d, for
/// validating the harness.
pub fn mke2fs_d(tree: &Path, img: &Path, fstype: &str, size: &str) {
    let f = std::fs::File::create(img).expect("create image");
    drop(f);
    tool_ok(
        "truncate",
        [OsStr::new("-s"), OsStr::new(size), img.as_os_str()],
    );
    tool_ok(
        "mke2fs",
        [
            OsStr::new("-q"),
            OsStr::new("-F"),
            OsStr::new("-t"),
            OsStr::new(fstype),
            OsStr::new("-b"),
            OsStr::new("4096"),
            OsStr::new("-I"),
            OsStr::new("256"),
            OsStr::new("-d"),
            tree.as_os_str(),
            img.as_os_str(),
        ],
    );
}
