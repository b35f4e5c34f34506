//! Source files that change between the scan and the copy: grown, shrunk, rewritten in place
//! (same size, also with the modification time put back), replaced by another file, removed,
//! swapped for a FIFO or a device. The scan planned one inode, size, mtime and ctime; the copy
//! finds others: the build stops with one line naming the file and leaves nothing in OUTPUT's
//! directory — never an image with bytes the plan did not describe — and never opens what was
//! swapped in (opening a FIFO or a device can block or have side effects: read-ahead and copy
//! both look before they open). The same holds for a file of an `--add` directory. Each change
//! is made while the build is held (through fanotify, `common::opens`) in its first open of a
//! source file: after the scan, before the copy reaches the changed file, every time.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::opens::{Gate, Watch};
use crate::common::*;

/// Where the changing file is: in SOURCE, or in a directory given with `--add` (merged at /).
#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    Source,
    Added,
}

/// Two files that the copy reaches in this order: `a-guard` in SOURCE, then `zz-changing` (64
/// KiB, last modified in 2001, so that rewriting it changes its time whatever the clock's
/// granularity) in SOURCE or in an added directory. Returns SOURCE and the added directory.
fn source(dir: &Path, changing_in: In) -> (std::path::PathBuf, std::path::PathBuf) {
    let (src, add) = (dir.join("src"), dir.join("add"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&add).unwrap();
    std::fs::write(src.join("a-guard"), vec![b'g'; 4096]).unwrap();
    let changing = match changing_in {
        In::Source => src.join("zz-changing"),
        In::Added => add.join("zz-changing"),
    };
    std::fs::write(&changing, vec![b'a'; 64 << 10]).unwrap();
    entries::set_entry_times(&changing, (1_000_000_000, 0), (1_000_000_000, 0));
    (src, add)
}

/// Builds `src` (with `--add` of the other directory when the changing file is there) with -v,
/// holding the build when it first opens `a-guard`: the scan never opens a file that has data
/// and no holes, so the scan is over, and the copy has not reached `zz-changing`. There `change`
/// is applied to `zz-changing` and the build let go. Asserts the one-line error naming the file
/// and an empty output directory.
fn build_changing(change: impl FnOnce(&Path)) {
    build_changing_with(In::Source, change);
}

/// [`build_changing`] with the changing file `changing_in`, returning what `change` returned
/// once the build has ended (and the temp dir holding the source).
fn build_changing_with<T>(
    changing_in: In,
    change: impl FnOnce(&Path) -> T,
) -> (T, tempfile::TempDir) {
    let tmp = tempdir();
    let (src, add) = source(tmp.path(), changing_in);
    let changing = match changing_in {
        In::Source => src.join("zz-changing"),
        In::Added => add.join("zz-changing"),
    };
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let gate = Gate::opens(&src.join("a-guard"));
    let img = out.join("disk.img");
    let mut args = vec!["-v".as_ref(), src.as_os_str(), img.as_os_str()];
    if changing_in == In::Added {
        args.extend(["--add".as_ref(), add.as_os_str()]);
    }
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(child.stderr.take().unwrap());
    let held = gate.wait_for(child.id());
    // -v reported the end of the scan before the build opened a file.
    lines.wait_for("reporting the scan", |l| l.contains(" entries, "));
    let kept = change(&changing);
    drop(held);
    drop(gate);
    // Bounded: a build that opened a FIFO swapped in without O_NONBLOCK would wait for ever.
    let Some(status) = wait_timeout(&mut child, Duration::from_secs(120)) else {
        let _ = child.kill();
        panic!("the build did not end after the change: {:#?}", lines.all());
    };
    let said = lines.all();
    // -v's lines, then the error: one line naming the file.
    assert_eq!(status.code(), Some(1), "{said:#?}");
    let named = changing.display().to_string();
    let naming: Vec<&String> = said.iter().filter(|l| l.contains(&named)).collect();
    assert!(
        naming.len() == 1 && said.last() == naming.first().copied(),
        "want one last line naming the file: {said:#?}"
    );
    assert!(
        dir_names(&out).is_empty(),
        "left in the output directory: {:?}",
        dir_names(&out)
    );
    (kept, tmp)
}

/// Opens `f` for writing (keeping its bytes) and applies `change` to it.
fn write_to(f: &Path, change: impl FnOnce(&std::fs::File) -> std::io::Result<()>) {
    let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    change(&file).unwrap();
}

#[test]
fn a_file_grown_after_the_scan_stops_the_build_naming_it() {
    build_changing(|f| write_to(f, |file| file.write_all_at(b"more", 64 << 10)));
}

#[test]
fn a_file_shrunk_after_the_scan_stops_the_build_naming_it() {
    build_changing(|f| write_to(f, |file| file.set_len(1000)));
}

#[test]
fn a_file_rewritten_in_place_after_the_scan_stops_the_build_naming_it() {
    // Same size, same inode, other bytes: the modification time tells.
    build_changing(|f| write_to(f, |file| file.write_all_at(b"bbbb", 0)));
}

#[test]
fn a_file_replaced_after_the_scan_stops_the_build_naming_it() {
    build_changing(|f| {
        let new = f.with_extension("new");
        std::fs::write(&new, vec![b'b'; 64 << 10]).unwrap();
        std::fs::rename(&new, f).unwrap();
    });
}

#[test]
fn a_file_removed_after_the_scan_stops_the_build_naming_it() {
    build_changing(|f| std::fs::remove_file(f).unwrap());
}

/// Rewrites the start of `f` in place and puts its modification time back: same size, same
/// inode, same modification time; only the change time tells, and nobody can set that back.
fn rewrite_keeping_mtime(f: &Path) {
    let before = std::fs::metadata(f).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    file.write_all_at(b"bbbb", 0).unwrap();
    let mtime = (before.mtime(), before.mtime_nsec());
    entries::set_entry_times(f, mtime, mtime);
    assert_eq!(std::fs::metadata(f).unwrap().mtime(), before.mtime());
}

#[test]
fn a_file_rewritten_with_its_mtime_put_back_stops_the_build_naming_it() {
    build_changing(rewrite_keeping_mtime);
}

/// Replaces `f` by a node of type `ft` (a FIFO, or /dev/null's numbers for a character device)
/// and watches it for opens.
fn swap_for(f: &Path, ft: rustix::fs::FileType) -> (Watch, std::path::PathBuf) {
    std::fs::remove_file(f).unwrap();
    let dev = rustix::fs::makedev(1, 3);
    let mode = rustix::fs::Mode::from_raw_mode(0o666);
    rustix::fs::mknodat(rustix::fs::CWD, f, ft, mode, dev).unwrap();
    (Watch::opens(f), f.to_path_buf())
}

/// The node the build was given instead of a file was never opened; the watch does see an open
/// (a control: it is the observable).
fn assert_never_opened(((watch, node), _tmp): ((Watch, std::path::PathBuf), tempfile::TempDir)) {
    assert!(
        !watch.opened(),
        "{} was opened by the build",
        node.display()
    );
    let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK;
    let _fd = rustix::fs::open(&node, flags, rustix::fs::Mode::empty()).unwrap();
    assert!(
        watch.opened(),
        "the watch missed an open of {}",
        node.display()
    );
}

#[test]
fn a_file_swapped_for_a_fifo_stops_the_build_without_opening_it() {
    assert_never_opened(build_changing_with(In::Source, |f| {
        swap_for(f, rustix::fs::FileType::Fifo)
    }));
}

#[test]
fn a_file_swapped_for_a_device_stops_the_build_without_opening_it() {
    assert_never_opened(build_changing_with(In::Source, |f| {
        swap_for(f, rustix::fs::FileType::CharacterDevice)
    }));
}

#[test]
fn a_file_of_an_added_directory_swapped_for_a_device_stops_the_build_without_opening_it() {
    assert_never_opened(build_changing_with(In::Added, |f| {
        swap_for(f, rustix::fs::FileType::CharacterDevice)
    }));
}

#[test]
fn a_file_of_an_added_directory_rewritten_with_its_mtime_put_back_stops_the_build_naming_it() {
    build_changing_with(In::Added, rewrite_keeping_mtime);
}
