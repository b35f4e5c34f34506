//! The EFI system partition of `--efi`: planned from the scanned tree before the root
//! filesystem is built (its size fixes where partition 2 starts), then written into the image
//! file — the loader, kernel and initrd copied from the tree and checked against the scan like
//! every other copy — or, with `--serve --lazy`, described as regions read from the tree when a
//! client asks.
//!
//! Layout (systemd-boot and the Boot Loader Specification): `EFI/BOOT/BOOTX64.EFI` (the
//! removable-media path that firmware boots without any NVRAM entry), `loader/loader.conf`,
//! `loader/entries/TOKEN-VERSION.conf`, `TOKEN/VERSION/linux` and `TOKEN/VERSION/initrd`.

use std::fs::File;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use super::boot_entry::{BootEntry, EntrySpec};
use super::boot_files::{self, BootFiles, EfiOptions, Loader, TreeFile};
use super::fat::{self, DosTime, Node, What};
use super::gpt::PARTITION_START;
use super::Source;
use crate::copy::{write_nonzero, RangeCopier};
use crate::source::live::LiveTree;
use crate::source::{display, Kind, Tree};

/// The FAT volume label.
const LABEL: [u8; 11] = *b"ESP        ";

/// Where a file of the ESP comes from.
#[derive(Debug, Clone)]
pub enum EspData {
    Tree(Arc<TreeFile>),
    Bytes(Arc<[u8]>),
}

/// Identifiers and times of the ESP.
#[derive(Debug, Clone, Copy)]
pub struct EspIds {
    /// The root filesystem's partition GUID, for `root=PARTUUID=`.
    pub root_partuuid: Uuid,
    pub volume_id: u32,
    /// The time of the files made here (loader.conf, the entry, the directories).
    pub now: i64,
    /// SOURCE_DATE_EPOCH: later file times are clamped to it.
    pub clamp: Option<i64>,
}

/// A planned EFI system partition.
#[derive(Debug, Clone)]
pub struct Esp {
    pub files: BootFiles,
    pub entry: BootEntry,
    volume: fat::Volume<EspData>,
}

/// Finds what the ESP holds in `tree` and lays out its FAT volume: the files plus a quarter
/// of their size free, at least FAT32's minimum.
pub fn plan(tree: &Tree, opts: &EfiOptions, ids: EspIds) -> Result<Esp> {
    let files = boot_files::find(tree, opts)?;
    let entry = BootEntry::new(&EntrySpec {
        os_id: files.os_id.as_deref(),
        pretty_name: files.pretty_name.as_deref(),
        version: &files.version,
        root: ids.root_partuuid,
        cmdline: opts.cmdline.as_deref(),
    });
    let now = DosTime::from_unix(ids.clamp.unwrap_or(ids.now));
    let clamp = |t: i64| DosTime::from_unix(ids.clamp.map_or(t, |c| t.min(c)));
    let tree_file = |name: &str, f: &TreeFile| Node::File {
        name: name.into(),
        time: clamp(f.entry.meta.mtime.sec),
        len: f.size(),
        data: EspData::Tree(Arc::new(f.clone())),
    };
    let text = |name: &str, s: &str| Node::File {
        name: name.into(),
        time: now,
        len: s.len() as u64,
        data: EspData::Bytes(s.as_bytes().into()),
    };
    let dir = |name: &str, children| Node::Dir {
        name: name.into(),
        time: now,
        children,
    };
    let loader = match &files.loader {
        Loader::Tree(f) => tree_file("BOOTX64.EFI", f),
        Loader::Host { bytes, mtime, .. } => Node::File {
            name: "BOOTX64.EFI".into(),
            time: clamp(*mtime),
            len: bytes.len() as u64,
            data: EspData::Bytes(bytes.clone()),
        },
    };
    let root = vec![
        dir("EFI", vec![dir("BOOT", vec![loader])]),
        dir(
            "loader",
            vec![
                text("loader.conf", &entry.loader_conf),
                dir("entries", vec![text(&entry.file_name, &entry.entry)]),
            ],
        ),
        dir(
            &entry.token,
            vec![dir(
                &entry.version_dir,
                vec![
                    tree_file("linux", &files.kernel),
                    tree_file("initrd", &files.initrd),
                ],
            )],
        ),
    ];
    let contents: u64 = [files.kernel.size(), files.initrd.size()]
        .iter()
        .sum::<u64>()
        + match &files.loader {
            Loader::Tree(f) => f.size(),
            Loader::Host { bytes, .. } => bytes.len() as u64,
        };
    let opts = fat::Options {
        volume_id: ids.volume_id,
        label: LABEL,
        hidden_sectors: (PARTITION_START / fat::SECTOR) as u32,
        time: now,
    };
    let size = fat::size_for(&root, contents / 4)?;
    let volume = fat::layout(&root, size, &opts)?;
    Ok(Esp {
        files,
        entry,
        volume,
    })
}

impl Esp {
    /// The volume's size in bytes (whole MiB).
    pub fn size(&self) -> u64 {
        self.volume.size
    }

    /// Writes the volume into `file` at `at` (a sparse stretch that reads as zeros): metadata
    /// written where not zero, each file of the tree copied where it has data and checked to be
    /// the file scanned, before and after.
    pub fn write(&self, tree: &Tree, file: &File, at: u64, name: &str) -> Result<()> {
        let writing = || format!("writing the EFI system partition into {name}");
        let mut copier = RangeCopier::new(file);
        for p in &self.volume.pieces {
            match &p.what {
                What::Bytes(b) => write_nonzero(file, b, at + p.offset).with_context(writing)?,
                What::File(EspData::Bytes(b)) => {
                    write_nonzero(file, b, at + p.offset).with_context(writing)?
                }
                What::File(EspData::Tree(f)) => {
                    copy_tree_file(f, tree, at + p.offset, &mut copier).with_context(writing)?
                }
            }
        }
        Ok(())
    }

    /// The volume as regions for `--serve --lazy`, at disk offset `at`: metadata and host bytes
    /// from memory, the tree's files read from their sources (or spools) when asked, checked
    /// against the scan as every file served lazily is.
    pub fn lazy_parts(&self, tree: &Tree, at: u64) -> Result<Vec<(u64, u64, Source)>> {
        let live = LiveTree::new(&tree.origins);
        let mut parts = Vec::new();
        for (id, p) in self.volume.pieces.iter().enumerate() {
            let src = match &p.what {
                What::Bytes(b) => Source::Bytes(b.clone().into(), 0),
                What::File(EspData::Bytes(b)) => Source::Bytes(b.clone(), 0),
                What::File(EspData::Tree(f)) => {
                    let Kind::File { size, data, .. } = f.entry.kind else {
                        bail!("{}: not a regular file", display(&f.path()));
                    };
                    let dirs = f.dirs(tree)?;
                    let file = live.entry(&f.entry, data, size, &dirs, &f.path(), id)?;
                    Source::Live {
                        file: Arc::new(file),
                        offset: 0,
                    }
                }
            };
            parts.push((at + p.offset, p.len, src));
        }
        Ok(parts)
    }

    /// What -v says about it.
    pub fn describe(&self, tree: &Tree) -> String {
        let loader = match &self.files.loader {
            Loader::Tree(f) => f.shown(tree),
            Loader::Host { path, .. } => path.display().to_string(),
        };
        format!(
            "EFI system partition: {} MiB FAT32 ({} clusters of {} bytes, {} free); loader {loader}, \
             kernel {}, initrd {}; entry loader/entries/{}: options {}",
            self.size() >> 20,
            self.volume.clusters,
            self.volume.cluster_size,
            self.volume.free_clusters,
            self.files.kernel.shown(tree),
            self.files.initrd.shown(tree),
            self.entry.file_name,
            self.entry.options
        )
    }
}

/// Copies a file of the tree to the copier's destination at `at`: its data ranges (holes stay holes), then checks
/// it is still the file scanned.
fn copy_tree_file(f: &TreeFile, tree: &Tree, at: u64, copier: &mut RangeCopier<'_>) -> Result<()> {
    let Kind::File { size, layout, .. } = &f.entry.kind else {
        bail!("{}: not a regular file", display(&f.path()));
    };
    let shown = f.shown(tree);
    let bytes = f.open(tree)?;
    let (src, base) = (bytes.file(), bytes.base());
    for (a, b) in layout.data_ranges(*size) {
        let n = copier
            .copy(src, base + a, at + a, b - a, &mut |_| {})
            .with_context(|| format!("{}: copying", shown))?;
        if n != b - a {
            bail!(
                "{}: changed during the build (it shrank); nothing was written",
                shown
            );
        }
    }
    bytes.check()
}
