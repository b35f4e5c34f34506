//! The FAT32 writer checked by dosfstools' `fsck.fat -n` and mtools (`mdir`, `mtype`), which
//! read the volume with their own code: names, sizes, times and every byte of content.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use super::*;

fn opts() -> Options {
    Options {
        volume_id: 0x1234_ABCD,
        label: *b"ESP        ",
        hidden_sectors: 2048,
        time: DosTime::from_unix(1_700_000_000),
    }
}

fn file(name: &str, content: Vec<u8>, t: i64) -> Node<Vec<u8>> {
    Node::File {
        name: name.into(),
        time: DosTime::from_unix(t),
        len: content.len() as u64,
        data: content,
    }
}

fn dir(name: &str, children: Vec<Node<Vec<u8>>>) -> Node<Vec<u8>> {
    Node::Dir {
        name: name.into(),
        time: DosTime::from_unix(1_600_000_000),
        children,
    }
}

/// Writes the volume's pieces into a new file.
fn write(v: &Volume<Vec<u8>>, path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(v.size).unwrap();
    let mut end = 0;
    for p in &v.pieces {
        assert!(p.offset >= end, "pieces overlap or are out of order");
        let bytes = match &p.what {
            What::Bytes(b) | What::File(b) => b,
        };
        assert_eq!(bytes.len() as u64, p.len);
        f.write_all_at(bytes, p.offset).unwrap();
        end = p.offset + p.len;
    }
    assert!(end <= v.size);
}

fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

fn sample() -> Vec<Node<Vec<u8>>> {
    let many: Vec<_> = (0..40)
        .map(|i| {
            file(
                &format!("entry number {i} with a long name.conf"),
                vec![b'x'; i],
                1_650_000_000,
            )
        })
        .collect();
    vec![
        dir(
            "EFI",
            vec![dir(
                "BOOT",
                vec![file("BOOTX64.EFI", patterned(140_891, 1), 1_700_000_000)],
            )],
        ),
        dir(
            "loader",
            vec![
                file("loader.conf", b"timeout 0\n".to_vec(), 1_700_000_000),
                dir("entries", many),
            ],
        ),
        dir(
            "debian",
            vec![dir(
                "6.1.0-50-amd64",
                vec![
                    file("linux", patterned(3_000_001, 2), 1_700_000_000),
                    file("initrd", patterned(5_000_000, 3), 1_700_000_000),
                    file("empty", Vec::new(), 1_700_000_000),
                ],
            )],
        ),
    ]
}

#[test]
fn fsck_fat_and_mtools_read_back_every_file() {
    let root = sample();
    let size = size_for(&root, 1 << 20).unwrap();
    let v = layout(&root, size, &opts()).unwrap();
    assert!(v.clusters >= MIN_CLUSTERS);
    assert!(v.free_clusters * v.cluster_size >= 1 << 20);
    for p in &v.pieces {
        if let What::File(_) = p.what {
            assert_eq!(p.offset % 4096, 0, "file data is 4 KiB-aligned");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("esp.img");
    write(&v, &img);
    let fsck = tool(Command::new("fsck.fat").arg("-n").arg("-v").arg(&img));
    assert!(fsck.contains("2 FATs, 32 bit entries"), "{fsck}");
    let i = img.to_str().unwrap();
    let listing = tool(Command::new("mdir").args(["-/", "-a", "-i", i, "::/"]));
    for name in [
        "BOOTX64  EFI",
        "loader.conf",
        "6.1.0-50-amd64",
        "entry number 39 with a long name.conf",
    ] {
        assert!(listing.contains(name), "mdir lists no {name}:\n{listing}");
    }
    assert!(listing.contains("Volume in drive : is ESP"), "{listing}");
    assert!(listing.contains("1234-ABCD"), "{listing}");
    let check = |path: &str, want: &[u8]| {
        let out = Command::new("mtype")
            .args(["-i", i, &format!("::{path}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "mtype {path}");
        assert!(out.stdout == want, "{path}: content differs");
    };
    check("/EFI/BOOT/BOOTX64.EFI", &patterned(140_891, 1));
    check("/debian/6.1.0-50-amd64/linux", &patterned(3_000_001, 2));
    check("/debian/6.1.0-50-amd64/initrd", &patterned(5_000_000, 3));
    check(
        "/loader/entries/entry number 7 with a long name.conf",
        b"xxxxxxx",
    );
    check("/debian/6.1.0-50-amd64/empty", b"");
    // Times: 2023-11-14 22:13:20 UTC is written as 22:13 on 2023-11-14.
    let l = tool(Command::new("mdir").args(["-i", i, "::/loader"]));
    assert!(
        l.contains("2023-11-14  22:13") || l.contains("2023-11-14 22:13"),
        "{l}"
    );
}

#[test]
fn size_is_fat32s_minimum_for_little_and_grows_with_content() {
    let small = vec![file("A", vec![1], 0)];
    let s = size_for(&small, 0).unwrap();
    assert_eq!(s, 33 << 20);
    let g = Geometry::new(s).unwrap();
    assert!(g.clusters >= MIN_CLUSTERS);
    assert!(
        Geometry::new(32 << 20).is_none(),
        "32 MiB cannot be FAT32 with 512-byte clusters"
    );
    let big = vec![file("B", vec![0; 50 << 20], 0)];
    let s = size_for(&big, 5 << 20).unwrap();
    let v = layout(&big, s, &opts()).unwrap();
    assert!(v.free_clusters * v.cluster_size >= 5 << 20);
    assert!(size_for(&big, 8 << 20).unwrap() > s - (1 << 20));
    assert!(layout(&big, 40 << 20, &opts()).is_err());
}

#[test]
fn above_260_mib_clusters_are_4_kib() {
    let g = Geometry::new(300 << 20).unwrap();
    assert_eq!(g.cluster_size(), 4096);
    assert_eq!(Geometry::new(200 << 20).unwrap().cluster_size(), 512);
    assert_eq!(g.cluster_offset(2) % 4096, 0);
}

#[test]
fn dos_times() {
    let t = DosTime::from_unix(0);
    assert_eq!((t.date, t.time), ((1 << 5) | 1, 0), "clamped to 1980-01-01");
    // 2000-02-29 12:34:56
    let t = DosTime::from_unix(951_827_696);
    assert_eq!(t.date, (20 << 9) | (2 << 5) | 29);
    assert_eq!(t.time, (12 << 11) | (34 << 5) | 28);
    let t = DosTime::from_unix(i64::MAX);
    assert_eq!(t.date, (127 << 9) | (12 << 5) | 31);
}

#[test]
fn short_names_and_their_long_names() {
    let mut taken = HashSet::new();
    assert_eq!(
        short_name("BOOTX64.EFI", &mut taken),
        (*b"BOOTX64 EFI", false)
    );
    assert_eq!(
        short_name("loader.conf", &mut taken),
        (*b"LOADER~1CON", true)
    );
    assert_eq!(short_name("loader", &mut taken), (*b"LOADER     ", true));
    assert_eq!(short_name("Loader", &mut taken), (*b"LOADER~1   ", true));
    assert_eq!(
        short_name("6.1.0-50-amd64", &mut taken),
        (*b"61~1    0-5", true)
    );
    assert_eq!(
        short_name("6.1.0-50-amd64x", &mut taken),
        (*b"61~2    0-5", true)
    );
    assert_eq!(short_name("a+b", &mut taken), (*b"A_B~1      ", true));
    for bad in ["", ".", "..", "a/b", "a:b", "x.", "tab\there"] {
        assert!(check_long_name(bad).is_err(), "{bad:?}");
    }
    // A long name's entries: the checksum of the short name, the name in 13-unit parts.
    let e = long_entries("loader.conf", b"LOADER~1CON");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0][0], 0x41);
    assert_eq!(e[0][11], 0x0F);
    assert_eq!(&e[0][1..3], &[b'l', 0]);
    assert_eq!(&e[0][24..26], &[b'f', 0], "the 11th unit");
    assert_eq!(&e[0][28..30], &[0, 0], "the terminator");
    assert_eq!(&e[0][30..32], &[0xFF; 2], "padding");
}

#[test]
fn names_clashing_without_case_are_refused() {
    let root = vec![file("a", vec![], 0), file("A", vec![], 0)];
    assert!(layout(&root, 40 << 20, &opts()).is_err());
}
