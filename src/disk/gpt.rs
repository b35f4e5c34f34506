//! GPT bytes: the protective MBR, primary and backup GPT headers and partition entry arrays for a
//! disk of one or more partitions placed back to back from 1 MiB, each starting and ending on a
//! MiB boundary (partition 1 the filesystem; with `--efi`, partition 1 the EFI system partition
//! and partition 2 the filesystem).
//!
//! Hand-written (with the CRCs from `crc32fast`) rather than the `gpt` crate: that crate reads
//! and writes a whole disk through a seekable device, while the disk here never exists as one:
//! these bytes are regions of a [`Disk`](super::Disk), served over NBD or written around
//! partitions whose contents already sit in place.

use uuid::Uuid;

/// Sector size the GPT is laid out for.
pub const SECTOR: u64 = 512;
/// Byte offset of partition 1 (LBA 2048): 1 MiB, the usual alignment.
pub const PARTITION_START: u64 = 1 << 20;
/// Number of entries in the partition entry array.
pub const ENTRY_COUNT: u32 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u32 = 128;
/// Size of the partition entry array (32 sectors).
pub const ENTRIES_BYTES: usize = (ENTRY_COUNT * ENTRY_SIZE) as usize;
/// Sectors at the end of the disk holding the backup entries (32) and backup header (1).
pub const BACKUP_SECTORS: u64 = ENTRIES_BYTES as u64 / SECTOR + 1;
/// Partition type GUID "Linux filesystem data".
pub const LINUX_FS_TYPE: Uuid = Uuid::from_u128(0x0FC6_3DAF_8483_4772_8E79_3D69_D847_7DE4);
/// Partition type GUID "EFI system partition".
pub const ESP_TYPE: Uuid = Uuid::from_u128(0xC12A_7328_F81F_11D2_BA4B_00A0_C93E_C93B);
/// Name given to the filesystem's partition.
pub const PARTITION_NAME: &str = "linux";
/// Name given to the EFI system partition.
pub const ESP_NAME: &str = "esp";

const HEADER_SIZE: u32 = 92;
const FIRST_USABLE_LBA: u64 = 34;
const MIB: u64 = 1 << 20;

/// The disk's GUID and the filesystem partition's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guids {
    pub disk: Uuid,
    pub partition: Uuid,
    /// The filesystem partition's type GUID (Linux filesystem unless --part-type says otherwise).
    pub part_type: Uuid,
    /// The filesystem partition's name (at most 36 UTF-16 code units are stored).
    pub part_name: String,
}

impl Guids {
    /// Fresh random (RFC 4122 version 4) GUIDs, a Linux filesystem partition named "linux".
    pub fn random() -> Guids {
        Guids {
            disk: Uuid::new_v4(),
            partition: Uuid::new_v4(),
            part_type: LINUX_FS_TYPE,
            part_name: PARTITION_NAME.to_string(),
        }
    }

    /// The filesystem partition's entry.
    pub fn entry(&self) -> Entry {
        Entry {
            part_type: self.part_type,
            guid: self.partition,
            name: self.part_name.clone(),
        }
    }
}

/// What a partition entry says besides where the partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub part_type: Uuid,
    /// The partition's unique GUID (what `root=PARTUUID=` names).
    pub guid: Uuid,
    /// At most 36 UTF-16 code units are stored.
    pub name: String,
}

/// Where a partition is on the disk, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub offset: u64,
    /// The partition's size: its contents rounded up to 1 MiB (the tail reads as zeros).
    pub size: u64,
}

/// The partition table bytes of a disk and where things are on it.
#[derive(Debug, Clone)]
pub struct GptLayout {
    /// Bytes for `[0, PARTITION_START)`: protective MBR (LBA 0), primary header (LBA 1), entries (LBA 2..34), zeros.
    pub primary: Vec<u8>,
    /// Backup entry array followed by the backup header: the last 33 sectors of the disk.
    pub backup: Vec<u8>,
    /// Total disk size in bytes.
    pub disk_size: u64,
    /// The partitions, in table order.
    pub partitions: Vec<Placed>,
}

impl GptLayout {
    /// Byte offset on the disk where [`GptLayout::backup`] goes.
    pub fn backup_offset(&self) -> u64 {
        self.disk_size - self.backup.len() as u64
    }
}

/// GUID bytes in GPT's on-disk mixed-endian order (first three fields little-endian).
pub fn guid_to_gpt_bytes(u: &Uuid) -> [u8; 16] {
    u.to_bytes_le()
}

/// Disk size for one filesystem partition of `fs_size` bytes: 1 MiB before it, the filesystem
/// rounded up to 1 MiB, and 1 MiB after it (the backup GPT lives in its last 33 sectors).
pub fn disk_size_for(fs_size: u64) -> u64 {
    PARTITION_START + fs_size.div_ceil(MIB) * MIB + MIB
}

/// A partition's size for `content` bytes: rounded up to 1 MiB, so the partition ends on a
/// 1 MiB boundary (sgdisk warns otherwise).
pub fn partition_size_for(content: u64) -> u64 {
    content.div_ceil(MIB) * MIB
}

/// Where partitions holding `contents` bytes each go: back to back from 1 MiB, each rounded up
/// to 1 MiB. The one place that decides partition offsets: a partition's offset depends only on
/// the sizes before it, so a filesystem can be built in place once those are known.
pub fn place(contents: &[u64]) -> Vec<Placed> {
    let mut offset = PARTITION_START;
    contents
        .iter()
        .map(|&c| {
            let p = Placed {
                offset,
                size: partition_size_for(c),
            };
            offset += p.size;
            p
        })
        .collect()
}

/// Lays out a GPT disk whose one partition holds `fs_size` bytes (a non-zero multiple of 512).
pub fn layout(fs_size: u64, guids: &Guids) -> GptLayout {
    layout_parts(guids.disk, &[(guids.entry(), fs_size)])
}

/// Lays out a GPT disk with GUID `disk` whose partitions (at most [`ENTRY_COUNT`]) hold the
/// given numbers of bytes (each a non-zero multiple of 512), placed by [`place`].
pub fn layout_parts(disk: Uuid, parts: &[(Entry, u64)]) -> GptLayout {
    assert!(!parts.is_empty() && parts.len() <= ENTRY_COUNT as usize);
    for (_, size) in parts {
        assert!(
            *size > 0 && size % SECTOR == 0,
            "partition content size {size} is not a non-zero multiple of {SECTOR}"
        );
    }
    let contents: Vec<u64> = parts.iter().map(|p| p.1).collect();
    let placed = place(&contents);
    let end = placed.last().map_or(PARTITION_START, |p| p.offset + p.size);
    let disk_size = end + MIB;
    let total_sectors = disk_size / SECTOR;
    let last_lba = total_sectors - 1;
    let backup_entries_lba = last_lba - 32;

    let entries = entries_array(parts, &placed);
    let entries_crc = crc32fast::hash(&entries);
    let primary_header = header(1, last_lba, 2, last_lba, disk, entries_crc);
    let backup_header = header(last_lba, 1, backup_entries_lba, last_lba, disk, entries_crc);

    let mut primary = vec![0u8; PARTITION_START as usize];
    primary[..512].copy_from_slice(&protective_mbr(total_sectors));
    primary[512..1024].copy_from_slice(&primary_header);
    primary[1024..1024 + ENTRIES_BYTES].copy_from_slice(&entries);

    let mut backup = Vec::with_capacity(BACKUP_SECTORS as usize * SECTOR as usize);
    backup.extend_from_slice(&entries);
    backup.extend_from_slice(&backup_header);

    GptLayout {
        primary,
        backup,
        disk_size,
        partitions: placed,
    }
}

fn protective_mbr(total_sectors: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    let p = &mut mbr[446..462];
    p[0] = 0x00; // not bootable
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    p[4] = 0xEE; // GPT protective
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // CHS end: beyond CHS range
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = (total_sectors - 1).min(0xFFFF_FFFF) as u32;
    p[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

fn entries_array(parts: &[(Entry, u64)], placed: &[Placed]) -> Vec<u8> {
    let mut entries = vec![0u8; ENTRIES_BYTES];
    for (((entry, _), p), e) in parts
        .iter()
        .zip(placed)
        .zip(entries.chunks_exact_mut(ENTRY_SIZE as usize))
    {
        let first = p.offset / SECTOR;
        let last = first + p.size / SECTOR - 1;
        e[0..16].copy_from_slice(&guid_to_gpt_bytes(&entry.part_type));
        e[16..32].copy_from_slice(&guid_to_gpt_bytes(&entry.guid));
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[48..56].copy_from_slice(&0u64.to_le_bytes()); // attributes
        for (i, unit) in entry.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    entries
}

fn header(
    my_lba: u64,
    alternate_lba: u64,
    entries_lba: u64,
    last_lba: u64,
    disk: Uuid,
    entries_crc: u32,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
    // 16..20: header CRC, filled in below; 20..24 reserved.
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&FIRST_USABLE_LBA.to_le_bytes());
    h[48..56].copy_from_slice(&(last_lba - BACKUP_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(&guid_to_gpt_bytes(&disk));
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// Bitwise CRC-32 (IEEE, reflected), independent of crc32fast.
    fn crc32_ref(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn check_header_crcs(h: &[u8], entries: &[u8]) {
        let mut copy = h[..92].to_vec();
        copy[16..20].fill(0);
        assert_eq!(u32_at(h, 16), crc32_ref(&copy), "header CRC");
        assert_eq!(u32_at(h, 88), crc32_ref(entries), "entries CRC");
    }

    #[test]
    fn crcs_match_an_independent_implementation() {
        assert_eq!(crc32_ref(b"123456789"), 0xCBF4_3926);
        let l = layout(10 << 20, &Guids::random());
        let entries = &l.primary[1024..1024 + ENTRIES_BYTES];
        check_header_crcs(&l.primary[512..1024], entries);
        check_header_crcs(&l.backup[ENTRIES_BYTES..], &l.backup[..ENTRIES_BYTES]);
    }

    #[test]
    fn guid_byte_order() {
        assert_eq!(
            guid_to_gpt_bytes(&LINUX_FS_TYPE),
            [
                0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
                0x7D, 0xE4
            ]
        );
        let g = Guids::random();
        let l = layout(4096, &g);
        let e = &l.primary[1024..1024 + 128];
        assert_eq!(&e[0..16], &guid_to_gpt_bytes(&LINUX_FS_TYPE));
        assert_eq!(&e[16..32], &g.partition.to_bytes_le());
        assert_eq!(&l.primary[512 + 56..512 + 72], &g.disk.to_bytes_le());
        assert_eq!(g.disk.get_version_num(), 4);
        assert_eq!(g.partition.get_variant(), uuid::Variant::RFC4122);
        let name: Vec<u8> = "linux".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(&e[56..66], &name[..]);
        assert!(e[66..128].iter().all(|&b| b == 0));
    }

    #[test]
    fn partition_geometry_and_alignment() {
        for fs_size in [4096u64, 1 << 20, (5 << 20) + 4096, 3 << 30] {
            let l = layout(fs_size, &Guids::random());
            let (partition_offset, partition_size) = (l.partitions[0].offset, l.partitions[0].size);
            assert_eq!(l.primary.len() as u64, PARTITION_START);
            assert_eq!(partition_offset % (1 << 20), 0);
            assert_eq!(partition_offset, 2048 * 512);
            assert_eq!(partition_size, fs_size.div_ceil(1 << 20) << 20);
            assert_eq!(
                partition_size % (1 << 20),
                0,
                "partition ends on a MiB boundary"
            );
            assert_eq!(l.disk_size % (1 << 20), 0);
            assert!(l.disk_size >= PARTITION_START + fs_size + (1 << 20));
            let e = &l.primary[1024..];
            assert_eq!(u64_at(e, 32), 2048);
            assert_eq!(u64_at(e, 40), 2048 + partition_size / 512 - 1);
            let last_lba = l.disk_size / 512 - 1;
            let h = &l.primary[512..1024];
            assert_eq!(&h[0..8], b"EFI PART");
            assert_eq!(u32_at(h, 8), 0x0001_0000);
            assert_eq!(u32_at(h, 12), 92);
            assert_eq!(u64_at(h, 24), 1);
            assert_eq!(u64_at(h, 32), last_lba);
            assert_eq!(u64_at(h, 40), 34);
            assert_eq!(u64_at(h, 48), last_lba - 33);
            assert!(u64_at(e, 40) <= last_lba - 33);
            assert_eq!(u64_at(h, 72), 2);
            assert_eq!((u32_at(h, 80), u32_at(h, 84)), (128, 128));
            // Protective MBR.
            let mbr = &l.primary[..512];
            assert_eq!(mbr[446 + 4], 0xEE);
            assert_eq!(u32_at(mbr, 446 + 8), 1);
            assert_eq!(
                u32_at(mbr, 446 + 12) as u64,
                (l.disk_size / 512 - 1).min(0xFFFF_FFFF)
            );
            assert_eq!(&mbr[510..512], &[0x55, 0xAA]);
        }
    }

    #[test]
    fn backup_header_and_entries() {
        let l = layout(7 << 20, &Guids::random());
        let last_lba = l.disk_size / 512 - 1;
        assert_eq!(l.backup.len(), 33 * 512);
        assert_eq!(l.backup_offset(), (last_lba - 32) * 512);
        assert_eq!(
            &l.backup[..ENTRIES_BYTES],
            &l.primary[1024..1024 + ENTRIES_BYTES]
        );
        let h = &l.backup[ENTRIES_BYTES..];
        let p = &l.primary[512..1024];
        assert_eq!(u64_at(h, 24), last_lba);
        assert_eq!(u64_at(h, 32), 1);
        assert_eq!(u64_at(h, 72), last_lba - 32);
        // Everything else in the headers is identical.
        assert_eq!(&h[40..72], &p[40..72]);
        assert_eq!(&h[80..92], &p[80..92]);
    }

    #[test]
    fn partitions_follow_each_other_on_mib_boundaries() {
        let disk = Uuid::new_v4();
        let esp = Entry {
            part_type: ESP_TYPE,
            guid: Uuid::new_v4(),
            name: ESP_NAME.into(),
        };
        let root = Guids::random().entry();
        let l = layout_parts(
            disk,
            &[(esp.clone(), (40 << 20) + 512), (root.clone(), 7 << 20)],
        );
        assert_eq!(
            l.partitions,
            vec![
                Placed {
                    offset: 1 << 20,
                    size: 41 << 20
                },
                Placed {
                    offset: 42 << 20,
                    size: 7 << 20
                }
            ]
        );
        assert_eq!(l.disk_size, 50 << 20);
        let e = &l.primary[1024..];
        for (i, (entry, p)) in [(&esp, l.partitions[0]), (&root, l.partitions[1])]
            .into_iter()
            .enumerate()
        {
            let e = &e[i * 128..];
            assert_eq!(&e[0..16], &guid_to_gpt_bytes(&entry.part_type));
            assert_eq!(&e[16..32], &guid_to_gpt_bytes(&entry.guid));
            assert_eq!(u64_at(e, 32), p.offset / 512);
            assert_eq!(u64_at(e, 40), (p.offset + p.size) / 512 - 1);
        }
        assert!(e[256..ENTRIES_BYTES].iter().all(|&b| b == 0));
        check_header_crcs(&l.primary[512..1024], &e[..ENTRIES_BYTES]);
        assert_eq!(
            place(&[1, 1 << 20, 1])
                .iter()
                .map(|p| p.offset)
                .collect::<Vec<_>>(),
            [1 << 20, 2 << 20, 3 << 20]
        );
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new("sgdisk")
            .args(args)
            .output()
            .expect("running sgdisk (package gdisk)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sgdisk {args:?} failed: {text}");
        text
    }

    #[test]
    fn sgdisk_accepts_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let g = Guids::random();
        let l = layout((9 << 20) + 8192, &g);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(l.disk_size).unwrap();
        f.write_all_at(&l.primary, 0).unwrap();
        f.write_all_at(&l.backup, l.backup_offset()).unwrap();
        drop(f);
        let p = path.to_str().unwrap();
        let verify = run(&["-v", p]);
        assert!(verify.contains("No problems found"), "{verify}");
        assert!(!verify.contains("Caution"), "sgdisk cautions: {verify}");
        let info = run(&["-i", "1", p]).to_uppercase();
        assert!(
            info.contains("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            "{info}"
        );
        assert!(info.contains("LINUX FILESYSTEM"), "{info}");
        let guid = g.partition.hyphenated().to_string().to_uppercase();
        assert!(info.contains(&guid), "{info}");
        assert!(info.contains("FIRST SECTOR: 2048"), "{info}");
        assert!(info.contains("'LINUX'"), "{info}");
    }

    #[test]
    fn sgdisk_accepts_two_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let esp = Entry {
            part_type: ESP_TYPE,
            guid: Uuid::new_v4(),
            name: ESP_NAME.into(),
        };
        let l = layout_parts(
            Uuid::new_v4(),
            &[(esp.clone(), 33 << 20), (Guids::random().entry(), 5 << 20)],
        );
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(l.disk_size).unwrap();
        f.write_all_at(&l.primary, 0).unwrap();
        f.write_all_at(&l.backup, l.backup_offset()).unwrap();
        drop(f);
        let p = path.to_str().unwrap();
        let verify = run(&["-v", p]);
        assert!(verify.contains("No problems found"), "{verify}");
        assert!(!verify.contains("Caution"), "sgdisk cautions: {verify}");
        let info = run(&["-i", "1", p]).to_uppercase();
        assert!(
            info.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{info}"
        );
        assert!(info.contains("EFI SYSTEM PARTITION"), "{info}");
        assert!(
            info.contains(&esp.guid.hyphenated().to_string().to_uppercase()),
            "{info}"
        );
        assert!(info.contains("'ESP'"), "{info}");
        let info = run(&["-i", "2", p]).to_uppercase();
        assert!(info.contains("FIRST SECTOR: 69632"), "{info}");
        assert!(info.contains("'LINUX'"), "{info}");
    }
}
