//! Fuzzes the GPT writer round trip: a disk for a fuzzed filesystem size (any non-zero multiple
//! of 512 up to 2^60, ext4's largest with 4 KiB blocks) and fuzzed GUIDs, partition type and
//! name, read back sector by sector through `Disk::read_at` (what the image writer and the NBD
//! server serve) by an independent parser written here, after the UEFI specification (2.10,
//! chapter 5): protective MBR, both headers and their CRCs, the entry array, the one partition.
//! Any mismatch panics.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use linuxdisk_mk::disk::gpt::{self, Guids};
use linuxdisk_mk::disk::part_types::{self, PART_TYPES};
use linuxdisk_mk::disk::Disk;
use uuid::Uuid;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// CRC-32 (IEEE 802.3, reflected, as UEFI uses), table-driven, independent of crc32fast.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A GUID from its on-disk form: the first three fields little-endian, the rest as stored.
fn guid_at(b: &[u8], o: usize) -> Uuid {
    let g = &b[o..o + 16];
    let mut be = [0u8; 16];
    be[0..4].copy_from_slice(&[g[3], g[2], g[1], g[0]]);
    be[4..6].copy_from_slice(&[g[5], g[4]]);
    be[6..8].copy_from_slice(&[g[7], g[6]]);
    be[8..16].copy_from_slice(&g[8..16]);
    Uuid::from_bytes(be)
}

fn read(disk: &Disk, lba: u64, sectors: u64) -> Vec<u8> {
    let mut v = vec![0u8; (sectors * SECTOR) as usize];
    disk.read_at(&mut v, lba * SECTOR)
        .expect("reading the disk");
    v
}

/// What a header says, after its own checks.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Parses and checks the header at `lba` and its entry array; returns it and the entries.
fn header(disk: &Disk, lba: u64, last_lba: u64) -> (Header, Vec<u8>) {
    let h = read(disk, lba, 1);
    assert_eq!(&h[0..8], b"EFI PART", "signature at LBA {lba}");
    assert_eq!(u32_at(&h, 8), 0x0001_0000, "revision");
    let size = u32_at(&h, 12) as usize;
    assert_eq!(size, 92, "header size");
    let mut copy = h[..size].to_vec();
    copy[16..20].fill(0);
    assert_eq!(u32_at(&h, 16), crc32(&copy), "header CRC at LBA {lba}");
    assert_eq!(u32_at(&h, 20), 0, "reserved");
    assert!(h[size..].iter().all(|&b| b == 0), "header tail not zero");
    let hd = Header {
        my_lba: u64_at(&h, 24),
        alternate_lba: u64_at(&h, 32),
        first_usable: u64_at(&h, 40),
        last_usable: u64_at(&h, 48),
        disk_guid: guid_at(&h, 56),
        entries_lba: u64_at(&h, 72),
        count: u32_at(&h, 80),
        entry_size: u32_at(&h, 84),
        entries_crc: u32_at(&h, 88),
    };
    assert_eq!(hd.my_lba, lba, "my LBA");
    assert!(
        hd.entry_size >= 128 && hd.entry_size.is_power_of_two(),
        "{hd:?}"
    );
    assert!(hd.count >= 1, "{hd:?}");
    let bytes = hd.count as u64 * hd.entry_size as u64;
    // UEFI: at least 16 KiB reserved for the array.
    assert!(bytes >= 16384, "{hd:?}");
    let sectors = bytes.div_ceil(SECTOR);
    assert!(
        hd.first_usable <= hd.last_usable && hd.last_usable < last_lba,
        "{hd:?}"
    );
    // The array lies outside the usable range and clear of both headers.
    let (a, b) = (hd.entries_lba, hd.entries_lba + sectors - 1);
    assert!(a >= 2 && b < last_lba, "{hd:?}");
    assert!(
        b < hd.first_usable || a > hd.last_usable,
        "entries overlap usable LBAs {hd:?}"
    );
    let entries = read(disk, hd.entries_lba, sectors);
    let entries = entries[..bytes as usize].to_vec();
    assert_eq!(
        hd.entries_crc,
        crc32(&entries),
        "entry array CRC of LBA {lba}'s header"
    );
    (hd, entries)
}

struct Input {
    fs_size: u64,
    guids: Guids,
}

fn input(u: &mut Unstructured) -> Result<Option<Input>> {
    let sectors = match u.int_in_range(0u8..=3)? {
        0 => u.int_in_range(1u64..=8 << 11)?, // up to 8 MiB
        1 => u.int_in_range(1u64..=1 << 33)?, // up to 4 TiB
        2 => u.int_in_range(1u64..=1 << 51)?, // up to 2^60 bytes
        _ => (1u64 << u.int_in_range(0u32..=51)?) // powers of two, and next to them
            .saturating_add_signed(u.int_in_range(-2i64..=2)?)
            .clamp(1, 1 << 51),
    };
    let disk = Uuid::from_bytes(u.arbitrary()?);
    let partition = Uuid::from_bytes(u.arbitrary()?);
    // --part-type: a name from the table or a GUID, through the option's own parser.
    let type_arg = if u.arbitrary()? {
        PART_TYPES[u.choose_index(PART_TYPES.len())?]
            .0
            .to_uppercase()
    } else {
        Uuid::from_bytes(u.arbitrary()?).hyphenated().to_string()
    };
    let Ok(part_type) = part_types::parse(&type_arg) else {
        return Ok(None); // refused on the command line
    };
    let part_name: String = u.arbitrary()?;
    if part_name.contains('\0') {
        return Ok(None); // a command-line argument cannot hold a NUL
    }
    Ok(Some(Input {
        fs_size: sectors * SECTOR,
        guids: Guids {
            disk,
            partition,
            part_type,
            part_name,
        },
    }))
}

fn fs_file() -> Arc<std::fs::File> {
    static F: OnceLock<Arc<std::fs::File>> = OnceLock::new();
    F.get_or_init(|| Arc::new(tempfile::tempfile().expect("a temp file")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some(Input { fs_size, guids })) = input(&mut Unstructured::new(data)) else {
        return;
    };
    let layout = gpt::layout(fs_size, &guids);
    let disk = Disk::partitioned(fs_file(), fs_size, &guids);

    // Sizes: the disk ends on a MiB boundary, with at least 1 MiB after the partition.
    let size = disk.size();
    assert_eq!(size, gpt::disk_size_for(fs_size));
    assert_eq!(size, layout.disk_size);
    assert_eq!(size % MIB, 0, "disk size {size}");
    assert_eq!(disk.partition_offset(), MIB);
    assert_eq!(layout.partition_offset, MIB);
    assert_eq!(layout.partition_size, gpt::partition_size_for(fs_size));
    assert_eq!(disk.partition_size(), layout.partition_size);
    let total = size / SECTOR;
    let last_lba = total - 1;

    // Protective MBR.
    let mbr = read(&disk, 0, 1);
    assert_eq!(&mbr[510..], &[0x55, 0xAA], "MBR signature");
    assert!(
        mbr[..446].iter().all(|&b| b == 0),
        "boot code / disk signature"
    );
    let p = &mbr[446..462];
    assert_eq!(p[0], 0, "boot indicator");
    assert_eq!(&p[1..4], &[0x00, 0x02, 0x00], "starting CHS");
    assert_eq!(p[4], 0xEE, "OS type");
    assert_eq!(&p[5..8], &[0xFF, 0xFF, 0xFF], "ending CHS");
    assert_eq!(u32_at(p, 8), 1, "starting LBA");
    let want = if total - 1 > u32::MAX as u64 {
        u32::MAX
    } else {
        (total - 1) as u32
    };
    assert_eq!(u32_at(p, 12), want, "size in LBA");
    assert!(
        mbr[462..510].iter().all(|&b| b == 0),
        "other MBR partitions"
    );

    // Primary header, then the backup it points to, which mirrors it.
    let (prim, entries) = header(&disk, 1, last_lba);
    assert_eq!(prim.alternate_lba, last_lba, "primary's alternate LBA");
    assert_eq!(prim.entries_lba, 2);
    assert_eq!(prim.disk_guid, guids.disk);
    let (back, back_entries) = header(&disk, prim.alternate_lba, last_lba);
    assert_eq!(back.alternate_lba, 1, "backup's alternate LBA");
    assert_eq!(entries, back_entries, "backup entry array");
    assert!(
        back.entries_lba > back.last_usable,
        "backup array inside the usable range"
    );
    assert_eq!(
        back,
        Header {
            my_lba: last_lba,
            alternate_lba: 1,
            entries_lba: back.entries_lba,
            ..prim
        }
    );
    // What sgdisk and the kernel expect of a disk made to be written: the arrays right
    // after the primary header and right before the backup one, 1 MiB alignment usable.
    let array_sectors = (prim.count as u64 * prim.entry_size as u64).div_ceil(SECTOR);
    assert_eq!(back.entries_lba + array_sectors, last_lba);
    assert_eq!(prim.first_usable, 2 + array_sectors);
    assert_eq!(prim.last_usable, back.entries_lba - 1);

    // The partitions: exactly one used entry, the first.
    let es = prim.entry_size as usize;
    let used: Vec<usize> = (0..prim.count as usize)
        .filter(|i| entries[i * es..i * es + 16].iter().any(|&b| b != 0))
        .collect();
    assert_eq!(used, [0], "used entries");
    for i in 1..prim.count as usize {
        assert!(
            entries[i * es..(i + 1) * es].iter().all(|&b| b == 0),
            "entry {i}"
        );
    }
    let e = &entries[..es];
    assert_eq!(guid_at(e, 0), guids.part_type, "type GUID");
    assert_ne!(guid_at(e, 0), Uuid::nil(), "an unused entry");
    assert_eq!(guid_at(e, 16), guids.partition, "unique GUID");
    let (first, last) = (u64_at(e, 32), u64_at(e, 40));
    assert!(first <= last, "first {first} last {last}");
    assert!(
        first >= prim.first_usable && last <= prim.last_usable,
        "partition {first}..={last}"
    );
    assert_eq!(first * SECTOR, disk.partition_offset(), "partition start");
    assert_eq!((first * SECTOR) % MIB, 0, "start not MiB-aligned");
    assert_eq!(((last + 1) * SECTOR) % MIB, 0, "end not MiB-aligned");
    let psize = (last - first + 1) * SECTOR;
    assert_eq!(psize, disk.partition_size(), "partition size");
    assert!(
        psize >= fs_size && psize - fs_size < MIB,
        "partition {psize} for {fs_size}"
    );
    assert_eq!(u64_at(e, 48), 0, "attributes");
    let units: Vec<u16> = (0..36).map(|i| u16_at(e, 56 + 2 * i)).collect();
    let n = units.iter().position(|&c| c == 0).unwrap_or(36);
    assert!(units[n..].iter().all(|&c| c == 0), "name padding");
    assert!(e[128..].iter().all(|&b| b == 0), "entry tail");
    let name: Vec<u16> = guids.part_name.encode_utf16().collect();
    if name.len() <= 36 {
        // What --part-label accepts is stored whole and reads back as itself.
        let back = String::from_utf16(&units[..n]).expect("the name is valid UTF-16");
        assert_eq!(back, guids.part_name, "partition name");
    } else {
        assert_eq!(&units[..], &name[..36], "a long name's first 36 code units");
    }

    // The partition's bytes are the filesystem's (zeros here), the gap after it zeros too.
    let tail = read(&disk, last + 1, 1);
    assert!(tail.iter().all(|&b| b == 0));
    let gap = read(&disk, prim.first_usable, 1);
    assert!(gap.iter().all(|&b| b == 0));
    assert!(read(&disk, back.entries_lba - 1, 1).iter().all(|&b| b == 0));
});
