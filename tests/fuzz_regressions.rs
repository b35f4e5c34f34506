//! Inputs that crashed a fuzz target (fuzz/, run by scripts/fuzz.sh), and the variants of them
//! that reading the failing code turned up, kept here so that they stay fixed. Each is a file in
//! tests/fuzz-regressions/; the tables say what each one broke.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use linuxdisk_mk::cli::Cli;
use linuxdisk_mk::disk::part_types::parse as parse_part_type;
use linuxdisk_mk::source::tar::Options;
use linuxdisk_mk::source::{read_archive, ArchiveInput};

fn input(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(name)
}

/// Tar archives the reader must refuse with one line naming the problem, quickly: before the
/// fix each one overflowed u64 arithmetic on a member's size (a panic in a debug build; in a
/// release build a wrapped offset, and for `seeks-back` an endless loop over the same headers).
const TAR_REFUSED: &[(&str, &str)] = &[
    // Found by the `tar` target: a PAX `size=18446744073709551615` on a regular file (in-place
    // reader: archive position + size).
    (
        "tar-pax-size-u64-max-file.tar",
        "size 18446744073709551615 is beyond the largest file",
    ),
    // The same size on a symlink (its data skipped: size + padding).
    (
        "tar-pax-size-u64-max-symlink.tar",
        "size 18446744073709551615 is beyond the largest file",
    ),
    // size = 2^64 - 1536 on a symlink: skipping it was a seek of -1536 bytes, back to the PAX
    // header, read again and again.
    (
        "tar-pax-size-seeks-back.tar",
        "size 18446744073709550080 is beyond the largest file",
    ),
    // Three sparse files of 2^63 bytes each (no data): their places in the spool file add up
    // past 2^64.
    (
        "tar-sparse-sizes-past-2-64.tar",
        "the files' sizes add up to more than 2^64 bytes",
    ),
];

#[test]
fn tar_archives_refused_without_panic_or_hang() {
    for &(name, want) in TAR_REFUSED {
        let path = input(name);
        let spool = tempfile::tempdir().unwrap();
        let dir = spool.path().to_path_buf();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let res = read_archive(
                ArchiveInput::Path(path),
                &dir,
                Options { block: 4096 },
                &mut || {},
            );
            let _ = tx.send(res.map(|_| ()).map_err(|e| format!("{e:#}")));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Err(msg)) => {
                assert!(msg.contains(want), "{name}: {msg}");
                assert!(!msg.contains('\n'), "{name}: {msg:?}");
            }
            Ok(Ok(())) => panic!("{name}: accepted"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: the reader panicked"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: still reading after 60 s"),
        }
    }
}

/// Found by the `gpt` target on its first input (empty, so every GUID byte zero): the nil GUID
/// was taken as `--part-type`, which makes partition 1's entry an unused one: a disk without
/// a partition.
#[test]
fn gpt_nil_part_type_is_refused() {
    for s in [
        "00000000-0000-0000-0000-000000000000",
        "00000000000000000000000000000000",
        "{00000000-0000-0000-0000-000000000000}",
        "urn:uuid:00000000-0000-0000-0000-000000000000",
    ] {
        let e = parse_part_type(s).expect_err(s);
        assert!(e.contains("unused GPT entry"), "{s}: {e}");
        let args = ["linuxdisk-mk", "--part-type", s, "dir", "out.img"];
        assert!(Cli::parse_from_args(args).is_err(), "{s} accepted");
    }
    let linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    assert!(parse_part_type(linux).is_ok_and(|g| !g.is_nil()));
}
