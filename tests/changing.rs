//! Source files that change between the scan and the copy: grown, shrunk, rewritten in place
//! (same size), replaced by another file, removed. The scan planned one inode, size and mtime;
//! the copy finds others: the build stops with one line naming the file and leaves nothing in
//! OUTPUT's directory — never an image with bytes the plan did not describe.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A source with 3,000 small files that sort before `zz-changing`, so that the copy reaches it
/// well after the scan saw it.
fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("f{i:05}")), format!("file {i}\n")).unwrap();
    }
    std::fs::write(src.join("zz-changing"), vec![b'a'; 64 << 10]).unwrap();
    src
}

/// Builds `src` with -v and, as soon as the scan is reported done, applies `change` once to
/// `src/zz-changing` (the copy reaches it after 3,000 other files); asserts the one-line error
/// naming the file and an empty output directory.
fn build_changing(change: impl FnOnce(&Path)) {
    let tmp = tempdir();
    let src = source(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "-v".as_ref(),
            src.as_os_str(),
            out.join("disk.img").as_os_str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let scanned = line.contains(" entries, ");
        said.push(line);
        if scanned {
            break;
        }
    }
    change(&src.join("zz-changing"));
    said.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    // -v's lines, then the error: one line naming the file.
    assert_eq!(status.code(), Some(1), "{said:#?}");
    let naming: Vec<&String> = said.iter().filter(|l| l.contains("zz-changing")).collect();
    assert!(
        naming.len() == 1 && said.last() == naming.first().copied(),
        "want one last line naming the file: {said:#?}"
    );
    assert!(
        dir_names(&out).is_empty(),
        "left in the output directory: {:?}",
        dir_names(&out)
    );
}

#[test]
fn a_file_grown_after_the_scan_stops_the_build_naming_it() {
    build_changing(|f| {
        let file = std::fs::OpenOptions::new().append(true).open(f).unwrap();
        file.write_all_at(b"more", 0).unwrap();
    });
}

#[test]
fn a_file_shrunk_after_the_scan_stops_the_build_naming_it() {
    build_changing(|f| {
        let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
        file.set_len(1000).unwrap();
    });
}

#[test]
fn a_file_rewritten_in_place_after_the_scan_stops_the_build_naming_it() {
    // Same size, same inode, other bytes: the modification time tells.
    build_changing(|f| {
        std::thread::sleep(Duration::from_millis(10));
        let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
        file.write_all_at(b"bbbb", 0).unwrap();
    });
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
