//! Fuzzes the tar reader: arbitrary bytes as an archive file (read in place, or through a
//! decoder and a spool when they start with a compression magic). Never a panic; and when the
//! archive is accepted, the tree is one populate can use: names a directory can hold, children
//! sorted and unique, every file's bytes inside the spool file, sparse ranges sorted and inside
//! the file, and the entry and byte totals matching the tree.
//!
//! An input starting with [`GEN`] is not the archive but a recipe for one ([`generate`]):
//! headers with correct checksums, PAX records with correct lengths, GNU long names and sparse
//! blocks, with fuzzed fields and values. Mutating raw bytes rarely gets a PAX record's length
//! and its header's checksum right at once, so this is how PAX values (sizes, sparse maps,
//! times, ACLs) get fuzzed.

#![no_main]

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result as AResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use linuxdisk_mk::source::tar::{read_archive, ArchiveInput, Options};
use linuxdisk_mk::source::{Data, Entry, Kind, Layout, Tree};

struct Dirs {
    dir: PathBuf,
    archive: PathBuf,
    spool: PathBuf,
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> i32;
}

/// Removes the directory when libFuzzer exits (statics are never dropped); a crash leaves it.
extern "C" fn remove_dirs() {
    if let Some(d) = DIRS.get() {
        let _ = std::fs::remove_dir_all(&d.dir);
    }
}

static DIRS: OnceLock<Dirs> = OnceLock::new();

fn dirs() -> &'static Dirs {
    DIRS.get_or_init(|| {
        // In memory when there is a tmpfs: the archive is written for every input.
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("fuzz-tar-")
            .tempdir_in(base)
            .expect("a temp dir")
            .keep();
        let spool = dir.join("spool");
        std::fs::create_dir(&spool).expect("the spool dir");
        // SAFETY: registers a plain function with the C library, once.
        unsafe { atexit(remove_dirs) };
        Dirs {
            archive: dir.join("archive.tar"),
            spool,
            dir,
        }
    })
}

fn check_tree(t: &Tree) {
    assert!(t.root.is_dir() && t.root.name.is_empty());
    let spool_len = t
        .spool(0)
        .expect("a tar tree has a spool")
        .metadata()
        .unwrap()
        .len();
    let (mut entries, mut data_bytes) = (0u64, 0u64);
    let mut inodes = HashSet::new();
    let mut stack: Vec<&Entry> = vec![&t.root];
    while let Some(e) = stack.pop() {
        let children = e.children();
        for w in children.windows(2) {
            assert!(w[0].name < w[1].name, "children not sorted and unique");
        }
        for c in children {
            entries += 1;
            let n = &c.name[..];
            assert!(
                !n.is_empty() && n.len() <= 255 && n != b"." && n != b"..",
                "name {n:?}"
            );
            assert!(!n.contains(&b'/') && !n.contains(&0), "name {n:?}");
            assert!(c.meta.nlink >= 1);
            if let Kind::File { size, layout, data } = &c.kind {
                let Data::Spool { offset, .. } = data else {
                    panic!("a tar file's data is in the spool");
                };
                let end = offset.checked_add(*size).expect("offset + size overflows");
                assert!(
                    end <= spool_len,
                    "file data {offset}+{size} past the spool ({spool_len})"
                );
                let bytes = match layout {
                    Layout::Dense => *size,
                    Layout::Sparse(r) => {
                        let mut prev = 0;
                        for &(a, b) in r {
                            assert!(
                                prev <= a && a < b && b <= *size,
                                "sparse ranges {r:?} in {size}"
                            );
                            prev = b;
                        }
                        r.iter().map(|(a, b)| b - a).sum()
                    }
                };
                if inodes.insert(c.meta.ino) {
                    data_bytes += bytes;
                }
            }
            stack.push(c);
        }
    }
    assert_eq!(entries, t.entries, "entry count");
    assert_eq!(data_bytes, t.data_bytes, "data bytes");
}

/// First byte of an input that is a recipe rather than an archive.
const GEN: u8 = 0xA5;

const TYPES: &[u8] = b"0\x0012345676LKxXgSVMDN";
const PATHS: &[&[u8]] = &[
    b"a",
    b"a/b",
    b"./a",
    b"a/",
    b"a/b/c",
    b"./",
    b".",
    b"..",
    b"../x",
    b"/abs",
    b"a//b/./c",
    b"",
    b"a\x00b",
    b"dir/",
    b"f",
];
const KEYS: &[&[u8]] = &[
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"mtime",
    b"atime",
    b"ctime",
    b"SCHILY.devmajor",
    b"SCHILY.devminor",
    b"SCHILY.acl.access",
    b"SCHILY.acl.default",
    b"SCHILY.xattr.user.x",
    b"SCHILY.xattr.system.posix_acl_access",
    b"SCHILY.xattr.security.capability",
    b"SCHILY.xattr.user.",
    b"SCHILY.xattr.other",
    b"GNU.sparse.major",
    b"GNU.sparse.minor",
    b"GNU.sparse.name",
    b"GNU.sparse.realsize",
    b"GNU.sparse.size",
    b"GNU.sparse.map",
    b"GNU.sparse.offset",
    b"GNU.sparse.numbytes",
    b"comment",
    b"hdrcharset",
];
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"511",
    b"512",
    b"4096",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551104",
    b"18446744073709550592",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-1",
    b"1.5",
    b"-1.000000001",
    b"1.",
    b"00",
    b"",
];
const ACLS: &[&[u8]] = &[
    b"user::rwx,group::r-x,other::r--",
    b"user::rwx,user:1000:r--,group::r-x,mask::r-x,other::---",
    b"user::rwx,user:root:rwx:0,group::---,mask::rwx,other::---",
    b"u::rw-\ng::r--\no::---\n#effective:r--",
    b"user::rwx,user:4294967295:r--,group::r-x,other::---",
];

fn pick<'a>(u: &mut Unstructured, list: &[&'a [u8]]) -> AResult<&'a [u8]> {
    Ok(list[u.choose_index(list.len())?])
}

fn bytes_or<'a>(u: &mut Unstructured<'a>, list: &[&'a [u8]], max: usize) -> AResult<Vec<u8>> {
    Ok(if u.ratio(3, 4)? {
        pick(u, list)?.to_vec()
    } else {
        let n = u.int_in_range(0..=max)?;
        u.bytes(n.min(u.len()))?.to_vec()
    })
}

/// A number as a PAX value: a listed edge case, any u64, or a comma list (sparse maps).
fn number(u: &mut Unstructured) -> AResult<Vec<u8>> {
    Ok(match u.int_in_range(0u8..=5)? {
        0..=2 => pick(u, NUMBERS)?.to_vec(),
        3 => u.arbitrary::<u64>()?.to_string().into_bytes(),
        4 => u.int_in_range(0u64..=70000)?.to_string().into_bytes(),
        _ => {
            let n = u.int_in_range(0..=6)?;
            let mut v = Vec::new();
            for i in 0..n {
                if i > 0 {
                    v.push(b',');
                }
                v.extend(number_small(u)?);
            }
            v
        }
    })
}

fn number_small(u: &mut Unstructured) -> AResult<Vec<u8>> {
    Ok(if u.ratio(1, 4)? {
        pick(u, NUMBERS)?.to_vec()
    } else {
        u.int_in_range(0u64..=70000)?.to_string().into_bytes()
    })
}

/// A numeric header field of `width` bytes, mostly an octal number up to `max`.
fn field(u: &mut Unstructured, width: usize, max: u64) -> AResult<Vec<u8>> {
    let small = u.int_in_range(0..=max)?;
    field_of(u, width, small)
}

/// A numeric header field of `width` bytes: `small` in octal, or any number in octal or GNU
/// base-256, or raw bytes.
fn field_of(u: &mut Unstructured, width: usize, small: u64) -> AResult<Vec<u8>> {
    let mut f = match u.int_in_range(0u8..=15)? {
        0..=12 => format!("{:0w$o}\0", small, w = width - 1).into_bytes(),
        13 => format!(
            "{:o}",
            u.arbitrary::<u64>()? & ((1 << (3 * (width - 1))) - 1)
        )
        .into_bytes(),
        14 => {
            // Base-256: a marker byte, then the number's low width-1 bytes, sign-extended.
            let v: i64 = u.arbitrary()?;
            let wide = (v as i128).to_be_bytes();
            let mut f = wide[16 - width..].to_vec();
            f[0] = if v < 0 { 0xff } else { 0x80 };
            if !u.ratio(7, 8)? {
                f[1] ^= 1;
            }
            f
        }
        _ => u.bytes(width.min(u.len()))?.to_vec(),
    };
    f.resize(width, 0);
    Ok(f)
}

/// A header block with a correct (unsigned or signed) checksum, or now and then a wrong one.
/// (Rare choices are `!u.ratio(..)`: a recipe that has run out makes the usual one.)
fn header(u: &mut Unstructured, typ: u8, name: &[u8], size: u64) -> AResult<[u8; 512]> {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    b[100..108].copy_from_slice(&field(u, 8, 0o7777)?);
    b[108..116].copy_from_slice(&field(u, 8, 70000)?);
    b[116..124].copy_from_slice(&field(u, 8, 70000)?);
    b[124..136].copy_from_slice(&field_of(u, 12, size)?);
    b[136..148].copy_from_slice(&field(u, 12, 0o77777777777)?);
    b[156] = typ;
    let link = bytes_or(u, PATHS, 100)?;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    match u.int_in_range(0u8..=3)? {
        0 | 1 => b[257..265].copy_from_slice(b"ustar\x0000"),
        2 => b[257..265].copy_from_slice(b"ustar  \x00"),
        _ => {}
    }
    b[329..337].copy_from_slice(&field(u, 8, 0o7777)?);
    b[337..345].copy_from_slice(&field(u, 8, 0o7777777)?);
    if &b[257..263] == b"ustar\0" && u.ratio(1, 4)? {
        let p = bytes_or(u, PATHS, 155)?;
        let l = p.len().min(155);
        b[345..345 + l].copy_from_slice(&p[..l]);
    } else if &b[257..263] == b"ustar " {
        // GNU: atime, ctime, then the old sparse map, its extension flag and the real size.
        b[345..357].copy_from_slice(&field(u, 12, 0o77777777777)?);
        b[357..369].copy_from_slice(&field(u, 12, 0o77777777777)?);
        for i in 0..u.int_in_range(0usize..=4)? {
            let o = 386 + 24 * i;
            b[o..o + 12].copy_from_slice(&field(u, 12, 70000)?);
            b[o + 12..o + 24].copy_from_slice(&field(u, 12, 4096)?);
        }
        b[482] = !u.ratio(3, 4)? as u8;
        b[483..495].copy_from_slice(&field(u, 12, 70000)?);
    }
    b[148..156].fill(b' ');
    let sum: u64 = if !u.ratio(7, 8)? {
        b.iter().map(|&c| c as i8 as i64).sum::<i64>() as u64
    } else {
        b.iter().map(|&c| c as u64).sum()
    };
    let sum = if !u.ratio(31, 32)? { sum ^ 1 } else { sum };
    b[148..156].copy_from_slice(format!("{:06o}\0 ", sum & 0o777777).as_bytes());
    Ok(b)
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(512), 0);
}

/// One PAX record, its length right.
fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = [key, b"=", value, b"\n"].concat();
    let mut n = body.len() + 2;
    while n.to_string().len() + 1 + body.len() != n {
        n += 1;
    }
    [format!("{n} ").as_bytes(), &body].concat()
}

/// Builds an archive from the recipe: a sequence of members, extension records, raw bytes,
/// and (mostly) the end-of-archive marker.
fn generate(u: &mut Unstructured) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = generate_into(u, &mut out); // the recipe ran out: what is made so far
    if u.ratio(7, 8).unwrap_or(true) {
        out.extend([0u8; 1024]);
    }
    out
}

fn generate_into(u: &mut Unstructured, out: &mut Vec<u8>) -> AResult<()> {
    while !u.is_empty() && out.len() < 60_000 {
        match u.int_in_range(0u8..=7)? {
            // A member: its header and data.
            0..=2 => {
                let typ = TYPES[u.choose_index(TYPES.len())?];
                let name = bytes_or(u, PATHS, 100)?;
                let len = u.int_in_range(0usize..=2048)?.min(u.len());
                let size = if u.ratio(7, 8)? {
                    len as u64
                } else {
                    u.arbitrary()?
                };
                out.extend(header(u, typ, &name, size)?);
                if !u.ratio(3, 4)? {
                    // A PAX 1.0 sparse map at the start of the data.
                    let n = u.int_in_range(0usize..=4)?;
                    out.extend(format!("{n}\n").as_bytes());
                    for _ in 0..2 * n {
                        out.extend(number_small(u)?);
                        out.push(b'\n');
                    }
                    pad(out);
                }
                out.extend(u.bytes(len.min(u.len()))?);
                if u.ratio(15, 16)? {
                    pad(out);
                }
            }
            // PAX extended (x) or global (g) header.
            3 | 4 => {
                let mut data = Vec::new();
                for _ in 0..u.int_in_range(1..=4)? {
                    let key = bytes_or(u, KEYS, 30)?;
                    let value = if !u.ratio(7, 8)? {
                        bytes_or(u, PATHS, 300)?
                    } else if key.starts_with(b"SCHILY.acl") {
                        pick(u, ACLS)?.to_vec()
                    } else if key.ends_with(b"path") || key.ends_with(b"name") {
                        bytes_or(u, PATHS, 300)?
                    } else {
                        number(u)?
                    };
                    data.extend(record(&key, &value));
                }
                let typ = if !u.ratio(3, 4)? { b'g' } else { b'x' };
                out.extend(header(u, typ, b"PaxHeader", data.len() as u64)?);
                out.extend(data);
                pad(out);
            }
            // GNU long name or long link.
            5 => {
                let typ = if u.arbitrary()? { b'L' } else { b'K' };
                let mut name = bytes_or(u, PATHS, 600)?;
                if !u.ratio(3, 4)? {
                    name = name.repeat(u.int_in_range(1..=300)?);
                }
                name.push(0);
                out.extend(header(u, typ, b"././@LongLink", name.len() as u64)?);
                out.extend(name);
                pad(out);
            }
            // An old GNU sparse extension block.
            6 => {
                let mut b = [0u8; 512];
                for i in 0..u.int_in_range(0usize..=21)? {
                    let o = 24 * i;
                    b[o..o + 12].copy_from_slice(&field(u, 12, 70000)?);
                    b[o + 12..o + 24].copy_from_slice(&field(u, 12, 4096)?);
                }
                b[504] = !u.ratio(3, 4)? as u8;
                out.extend(b);
            }
            // Raw bytes.
            _ => {
                let n = u.int_in_range(0usize..=600)?.min(u.len());
                out.extend(u.bytes(n)?);
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let d = dirs();
    let generated;
    let data = if data.first() == Some(&GEN) {
        generated = generate(&mut Unstructured::new(&data[1..]));
        &generated[..]
    } else {
        data
    };
    let mut f = std::fs::File::create(&d.archive).expect("writing the archive");
    f.write_all(data).expect("writing the archive");
    drop(f);
    // To turn a crashing recipe into the archive it makes (for a regression test):
    //   TAR_FUZZ_DUMP=out.tar cargo fuzz run tar artifacts/tar/crash-...
    if let Some(out) = std::env::var_os("TAR_FUZZ_DUMP") {
        std::fs::write(out, data).expect("writing TAR_FUZZ_DUMP");
    }
    let res = read_archive(
        ArchiveInput::Path(d.archive.clone()),
        &d.spool,
        Options { block: 4096 },
        &mut || {},
    );
    match res {
        Ok(tree) => check_tree(&tree),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains('\n'), "error on more than one line: {msg:?}");
        }
    }
    // The spool is an unlinked file: nothing is left behind in its directory.
    let left = std::fs::read_dir(&d.spool).unwrap().count();
    assert_eq!(left, 0, "files left in the spool directory");
});
