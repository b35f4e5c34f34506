//! A write-once FAT32 volume, laid out in one pass from a small tree of directories and files:
//! the EFI system partition's filesystem. The result is a list of pieces — metadata bytes
//! (boot sectors, FSInfo, both FATs, directories) and, for each file, the offset where its bytes
//! go, contiguous and 4 KiB-aligned — that the caller turns into disk regions, copied or served
//! from the source as any file data; everything between them reads as zeros.
//!
//! Hand-written rather than the `fatfs` crate (0.3.6, January 2023): fatfs formats and fills a
//! volume through a Read+Write+Seek device one cluster at a time and chooses where files go, so
//! their bytes would have to pass through it (no copy_file_range, no `--lazy` serving straight
//! from the tree, the whole FAT written as data rather than left as holes) and its times come
//! from a `'static` clock. Writing a fixed tree once is small: no allocation after the fact, no
//! deletion, no fragmentation. Names follow Microsoft's FAT specification (fatgen103): a short
//! 8.3 name for every entry plus long-name (VFAT) entries when the name is not upper-case 8.3.
//!
//! FAT32 with at least 65,525 clusters, as the UEFI specification asks of a system partition
//! (FAT12/16 are for removable media) and as firmware (EDK2/OVMF) and Microsoft's specification
//! tell the FAT type: by the cluster count alone. Clusters of 512 bytes up to 260 MiB, 4 KiB
//! above, as mkfs.fat and Microsoft's table choose.

use std::collections::HashSet;

use anyhow::{bail, Result};

/// Sector size of the volume.
pub const SECTOR: u64 = 512;
/// FAT32's smallest cluster count: with fewer, firmware takes the volume for FAT16.
pub const MIN_CLUSTERS: u64 = 65_525;
/// FAT32's largest cluster count (cluster numbers are 28 bits, the top ones reserved).
const MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
const RESERVED_MIN: u64 = 32;
const FATS: u64 = 2;
/// File data (and the data region) start on this boundary, so that copies can share extents.
const ALIGN: u64 = 4096;
const END_OF_CHAIN: u32 = 0x0FFF_FFFF;
const ENTRY: usize = 32;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;

/// A time as FAT stores it: a date from 1980 to 2107 and a time of day to two seconds, with no
/// time zone (UTC here, as Linux's vfat reads it by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DosTime {
    pub date: u16,
    pub time: u16,
}

impl DosTime {
    /// Seconds since the Unix epoch, clamped to FAT's range (1980-01-01 to 2107-12-31).
    pub fn from_unix(sec: i64) -> DosTime {
        const MIN: i64 = 315_532_800; // 1980-01-01 00:00:00
        const MAX: i64 = 4_354_819_198; // 2107-12-31 23:59:58
        let sec = sec.clamp(MIN, MAX);
        let (days, secs) = (sec.div_euclid(86_400), sec.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        DosTime {
            date: (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16,
            time: (((secs / 3600) as u16) << 11)
                | ((((secs / 60) % 60) as u16) << 5)
                | ((secs % 60) / 2) as u16,
        }
    }
}

/// Year, month (1-12), day (1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// An entry of the tree to write; `T` says where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Node<T> {
    Dir {
        name: String,
        time: DosTime,
        children: Vec<Node<T>>,
    },
    File {
        name: String,
        time: DosTime,
        len: u64,
        data: T,
    },
}

impl<T> Node<T> {
    fn name(&self) -> &str {
        match self {
            Node::Dir { name, .. } | Node::File { name, .. } => name,
        }
    }
}

/// The volume's identity and where it sits.
#[derive(Debug, Clone)]
pub struct Options {
    /// The volume serial number.
    pub volume_id: u32,
    /// The volume label, in the boot sector and as the root directory's label entry.
    pub label: [u8; 11],
    /// Sectors before the volume on its disk (the partition's first LBA).
    pub hidden_sectors: u32,
    /// The time of the root directory's label entry.
    pub time: DosTime,
}

/// What goes at a piece's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What<T> {
    Bytes(Vec<u8>),
    /// A file's bytes `0..len`.
    File(T),
}

/// `len` bytes at `offset` in the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<T> {
    pub offset: u64,
    pub len: u64,
    pub what: What<T>,
}

/// A laid-out volume: its size and its non-zero pieces, sorted by offset and not overlapping.
#[derive(Debug, Clone)]
pub struct Volume<T> {
    pub size: u64,
    pub pieces: Vec<Piece<T>>,
    pub cluster_size: u64,
    pub clusters: u64,
    pub free_clusters: u64,
}

/// Where the reserved sectors, FATs and clusters of a volume of a given size are.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    total_sectors: u64,
    sectors_per_cluster: u64,
    reserved: u64,
    fat_sectors: u64,
    clusters: u64,
}

impl Geometry {
    /// The geometry of a `size`-byte volume, or None when it cannot be FAT32.
    fn new(size: u64) -> Option<Geometry> {
        let cluster_size = if size <= 260 << 20 { 512 } else { ALIGN };
        let total_sectors = size / SECTOR;
        let spc = cluster_size / SECTOR;
        // A FAT for every cluster the whole volume could hold: a little more than needed, which
        // is allowed (only a FAT too small for the clusters is an error).
        let fat_sectors = ((total_sectors / spc + 2) * 4).div_ceil(SECTOR);
        let mut reserved = RESERVED_MIN;
        while (reserved + FATS * fat_sectors) * SECTOR % ALIGN != 0 {
            reserved += 1;
        }
        let meta = reserved + FATS * fat_sectors;
        let clusters = total_sectors.checked_sub(meta)? / spc;
        if !(MIN_CLUSTERS..=MAX_CLUSTERS).contains(&clusters) || total_sectors > u32::MAX as u64 {
            return None;
        }
        Some(Geometry {
            total_sectors,
            sectors_per_cluster: spc,
            reserved,
            fat_sectors,
            clusters,
        })
    }

    fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }

    /// Byte offset of cluster `c` (the first data cluster is 2).
    fn cluster_offset(&self, c: u64) -> u64 {
        (self.reserved + FATS * self.fat_sectors + (c - 2) * self.sectors_per_cluster) * SECTOR
    }
}

/// The smallest volume, in whole MiB, that holds `root` with at least `spare` bytes of free
/// clusters.
pub fn size_for<T: Clone>(root: &[Node<T>], spare: u64) -> Result<u64> {
    let mib = 1u64 << 20;
    let mut size = (MIN_CLUSTERS * SECTOR).div_ceil(mib) * mib;
    loop {
        if let Some(g) = Geometry::new(size) {
            let flat = Flat::new(root, &g)?;
            if flat.used + spare.div_ceil(g.cluster_size()) <= g.clusters {
                return Ok(size);
            }
            // Grow by what is missing, at least 1 MiB.
            let missing = (flat.used + spare.div_ceil(g.cluster_size())) - g.clusters;
            size += (missing * g.cluster_size()).div_ceil(mib).max(1) * mib;
        } else {
            size += mib;
        }
        if size > u32::MAX as u64 * SECTOR {
            bail!("the EFI system partition's files are too large for a FAT32 volume");
        }
    }
}

/// Lays out a `size`-byte volume (a multiple of 512) holding `root`.
pub fn layout<T: Clone>(root: &[Node<T>], size: u64, opts: &Options) -> Result<Volume<T>> {
    let Some(g) = Geometry::new(size) else {
        bail!("{size} bytes cannot hold a FAT32 volume of at least {MIN_CLUSTERS} clusters");
    };
    let flat = Flat::new(root, &g)?;
    if flat.used > g.clusters {
        bail!(
            "the EFI system partition's files need {} clusters of {} bytes; a {size}-byte volume has {}",
            flat.used,
            g.cluster_size(),
            g.clusters
        );
    }
    let cs = g.cluster_size();
    // The FAT: chains for every run, the rest free.
    let mut fat = vec![0u32; flat.next as usize];
    fat[0] = 0x0FFF_FFF8;
    fat[1] = END_OF_CHAIN;
    for n in &flat.nodes {
        for c in n.first..n.first + n.clusters {
            fat[c as usize] = if c + 1 == n.first + n.clusters {
                END_OF_CHAIN
            } else {
                c + 1
            };
        }
    }
    let fat_bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
    let taken: u64 = flat.nodes.iter().map(|n| n.clusters as u64).sum();
    // Alignment gaps between files are free clusters too.
    let free = g.clusters - taken;

    let mut pieces = Vec::new();
    let reserved = reserved_sectors(&g, opts, free, flat.next);
    pieces.push(Piece {
        offset: 0,
        len: reserved.len() as u64,
        what: What::Bytes(reserved),
    });
    for i in 0..FATS {
        pieces.push(Piece {
            offset: (g.reserved + i * g.fat_sectors) * SECTOR,
            len: fat_bytes.len() as u64,
            what: What::Bytes(fat_bytes.clone()),
        });
    }
    // Directories: allocated first, back to back from cluster 2.
    let dir_clusters: u64 = flat
        .nodes
        .iter()
        .filter(|n| n.is_dir())
        .map(|n| n.clusters as u64)
        .sum();
    let mut dirs = vec![0u8; (dir_clusters * cs) as usize];
    for (i, n) in flat.nodes.iter().enumerate() {
        if n.is_dir() {
            let at = ((n.first as u64 - 2) * cs) as usize;
            let bytes = flat.directory(i, opts);
            dirs[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
    pieces.push(Piece {
        offset: g.cluster_offset(2),
        len: dirs.len() as u64,
        what: What::Bytes(dirs),
    });
    for n in &flat.nodes {
        if let Some(Node::File { len, data, .. }) = n.node {
            if *len > 0 {
                pieces.push(Piece {
                    offset: g.cluster_offset(n.first as u64),
                    len: *len,
                    what: What::File(data.clone()),
                });
            }
        }
    }
    Ok(Volume {
        size: g.total_sectors * SECTOR,
        pieces,
        cluster_size: cs,
        clusters: g.clusters,
        free_clusters: free,
    })
}

/// Boot sector, FSInfo and their backups at sectors 6 and 7: the reserved area's first 8
/// sectors (the rest of it reads as zeros).
fn reserved_sectors(g: &Geometry, opts: &Options, free: u64, next: u32) -> Vec<u8> {
    let mut b = [0u8; 512];
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    b[3..11].copy_from_slice(b"MSWIN4.1");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(g.reserved as u16).to_le_bytes());
    b[16] = FATS as u8;
    // 17..19 root entries and 19..21 total sectors (16-bit): 0 on FAT32.
    b[21] = 0xF8; // fixed disk
                  // 22..24 FAT size (16-bit): 0 on FAT32.
    b[24..26].copy_from_slice(&32u16.to_le_bytes()); // sectors per track
    b[26..28].copy_from_slice(&64u16.to_le_bytes()); // heads
    b[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    b[32..36].copy_from_slice(&(g.total_sectors as u32).to_le_bytes());
    b[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
    // 40..42 flags (0: FATs mirrored), 42..44 version 0.0.
    b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root directory cluster
    b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    b[64] = 0x80; // drive number
    b[66] = 0x29; // extended boot signature: the next three fields are valid
    b[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    b[71..82].copy_from_slice(&opts.label);
    b[82..90].copy_from_slice(b"FAT32   ");
    b[510] = 0x55;
    b[511] = 0xAA;

    let mut info = [0u8; 512];
    info[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    info[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    info[488..492].copy_from_slice(&(free as u32).to_le_bytes());
    info[492..496].copy_from_slice(&next.to_le_bytes()); // where to look for a free cluster
    info[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());

    let mut out = vec![0u8; 8 * SECTOR as usize];
    for base in [0, 6] {
        out[base * 512..][..512].copy_from_slice(&b);
        out[(base + 1) * 512..][..512].copy_from_slice(&info);
    }
    out
}

/// One node of the tree with what the layout decided for it.
struct FlatNode<'a, T> {
    /// None for the root directory, which has no entry of its own.
    node: Option<&'a Node<T>>,
    /// Index of the parent directory (0, the root, for the root itself).
    parent: usize,
    children: Vec<usize>,
    /// The short name and whether long-name entries precede it.
    short: [u8; 11],
    long: bool,
    first: u32,
    clusters: u32,
}

impl<T> FlatNode<'_, T> {
    fn is_dir(&self) -> bool {
        matches!(self.node, None | Some(Node::Dir { .. }))
    }

    fn name(&self) -> &str {
        self.node.map_or("", |n| n.name())
    }
}

/// The tree in pre-order (index 0 is the root), with names and clusters assigned.
struct Flat<'a, T> {
    nodes: Vec<FlatNode<'a, T>>,
    /// Clusters taken, alignment gaps included.
    used: u64,
    /// The first cluster after the last one taken.
    next: u32,
}

impl<'a, T> Flat<'a, T> {
    fn new(root: &'a [Node<T>], g: &Geometry) -> Result<Flat<'a, T>> {
        let mut f = Flat {
            nodes: vec![FlatNode {
                node: None,
                parent: 0,
                children: Vec::new(),
                short: [b' '; 11],
                long: false,
                first: 0,
                clusters: 0,
            }],
            used: 0,
            next: 2,
        };
        f.add_children(0, root)?;
        let cs = g.cluster_size();
        // Directories first, back to back from cluster 2 (the root is 2), then each file
        // aligned to ALIGN bytes.
        for i in 0..f.nodes.len() {
            if f.nodes[i].is_dir() {
                let entries: usize = (if i == 0 { 1 } else { 2 })
                    + f.nodes[i]
                        .children
                        .iter()
                        .map(|&c| 1 + f.long_entries(c))
                        .sum::<usize>();
                let n = ((entries * ENTRY) as u64).div_ceil(cs).max(1);
                f.take(i, n)?;
            }
        }
        for i in 0..f.nodes.len() {
            if let Some(Node::File { len, name, .. }) = f.nodes[i].node {
                if *len > u32::MAX as u64 {
                    bail!("{name}: {len} bytes is more than a FAT file holds (4 GiB - 1)");
                }
                if *len > 0 {
                    while g.cluster_offset(f.next as u64) % ALIGN != 0 {
                        f.next += 1;
                    }
                    f.take(i, len.div_ceil(cs))?;
                }
            }
        }
        f.used = f.next as u64 - 2;
        Ok(f)
    }

    fn take(&mut self, i: usize, n: u64) -> Result<()> {
        let n = u32::try_from(n).ok().filter(|&n| n < MAX_CLUSTERS as u32);
        let Some(n) = n else {
            bail!("too many clusters for FAT32");
        };
        self.nodes[i].first = self.next;
        self.nodes[i].clusters = n;
        self.next = self
            .next
            .checked_add(n)
            .filter(|&x| (x as u64) < MAX_CLUSTERS)
            .ok_or_else(|| anyhow::anyhow!("too many clusters for FAT32"))?;
        Ok(())
    }

    fn add_children(&mut self, parent: usize, children: &'a [Node<T>]) -> Result<()> {
        let mut taken = HashSet::new();
        let mut seen = HashSet::new();
        for c in children {
            let name = c.name();
            check_long_name(name)?;
            if !seen.insert(name.to_uppercase()) {
                bail!("{name}: two entries of one FAT directory with this name");
            }
            let (short, long) = short_name(name, &mut taken);
            let i = self.nodes.len();
            self.nodes.push(FlatNode {
                node: Some(c),
                parent,
                children: Vec::new(),
                short,
                long,
                first: 0,
                clusters: 0,
            });
            self.nodes[parent].children.push(i);
            if let Node::Dir { children, .. } = c {
                self.add_children(i, children)?;
            }
        }
        Ok(())
    }

    fn long_entries(&self, i: usize) -> usize {
        let n = &self.nodes[i];
        if n.long {
            n.name().encode_utf16().count().div_ceil(13)
        } else {
            0
        }
    }

    /// The bytes of directory `i`: `.` and `..` (the root: its label), then each child's
    /// long-name entries and short entry.
    fn directory(&self, i: usize, opts: &Options) -> Vec<u8> {
        let d = &self.nodes[i];
        let mut out = Vec::new();
        if i == 0 {
            out.extend_from_slice(&short_entry(&opts.label, ATTR_VOLUME_ID, opts.time, 0, 0));
        } else {
            let time = d.node.map_or(opts.time, node_time);
            let mut dot = [b' '; 11];
            dot[0] = b'.';
            out.extend_from_slice(&short_entry(&dot, ATTR_DIRECTORY, time, d.first, 0));
            dot[1] = b'.';
            let parent = if d.parent == 0 {
                0
            } else {
                self.nodes[d.parent].first
            };
            out.extend_from_slice(&short_entry(&dot, ATTR_DIRECTORY, time, parent, 0));
        }
        for &c in &d.children {
            let n = &self.nodes[c];
            if n.long {
                for e in long_entries(n.name(), &n.short) {
                    out.extend_from_slice(&e);
                }
            }
            let Some(node) = n.node else { continue };
            let (attr, size) = match node {
                Node::Dir { .. } => (ATTR_DIRECTORY, 0),
                Node::File { len, .. } => (ATTR_ARCHIVE, *len as u32),
            };
            out.extend_from_slice(&short_entry(&n.short, attr, node_time(node), n.first, size));
        }
        out
    }
}

fn node_time<T>(n: &Node<T>) -> DosTime {
    match n {
        Node::Dir { time, .. } | Node::File { time, .. } => *time,
    }
}

/// A 32-byte short directory entry.
fn short_entry(name: &[u8; 11], attr: u8, t: DosTime, first: u32, size: u32) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0..11].copy_from_slice(name);
    e[11] = attr;
    // 12: case flags (unused: long names keep the case), 13: creation time's 10 ms units.
    e[14..16].copy_from_slice(&t.time.to_le_bytes()); // created
    e[16..18].copy_from_slice(&t.date.to_le_bytes());
    e[18..20].copy_from_slice(&t.date.to_le_bytes()); // accessed
    e[20..22].copy_from_slice(&((first >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&t.time.to_le_bytes()); // written
    e[24..26].copy_from_slice(&t.date.to_le_bytes());
    e[26..28].copy_from_slice(&(first as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

mod names;
#[cfg(test)]
mod tests;

use names::{check_long_name, long_entries, short_name};
