//! Reading ahead of the copy: while populating copies one file at a time, a second thread walks
//! the tree in the same order and asks the kernel to start reading the next files
//! (`posix_fadvise(WILLNEED)`, which returns once the reads are queued), at most a window of
//! bytes ahead. A cold tree of many small files is then read with many requests in flight instead
//! of one at a time. Purely an optimisation: anything that fails here is ignored (populating
//! reads, checks and reports every file itself).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::Advice;

use super::open::{open_dir, open_file, Stamp};
use super::{Data, Entry, Kind};

/// How far ahead of the copy reading may run, in bytes of file data.
pub const WINDOW: u64 = 128 << 20;
/// Files with more data than this are left to the kernel's sequential read-ahead.
pub const LARGEST: u64 = 4 << 20;

/// Where the copy is: the number of regular-file entries it has reached, in tree order
/// (depth first, children in order, hard links counted each time), and whether it has finished.
#[derive(Default)]
pub struct Position {
    files: AtomicU64,
    done: AtomicBool,
}

impl Position {
    /// The copy has reached one more regular-file entry.
    pub fn advance(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// The copy is over (finished or failed): reading ahead stops.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Calls [`Position::finish`] when dropped, so that reading ahead stops however the copy ends.
pub struct FinishOnDrop<'a>(pub &'a Position);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Reads ahead of `pos` through the tree under `root` (the source root's directory); returns
/// when the whole tree has been asked for or the copy has finished.
pub fn run(root: BorrowedFd<'_>, tree: &Entry, pos: &Position, window: u64) {
    let mut walk = Walk {
        pos,
        window,
        largest: LARGEST.min(window),
        next: 0,
        ahead: VecDeque::new(),
        ahead_bytes: 0,
    };
    let _ = walk.dir(root, tree);
}

struct Walk<'a> {
    pos: &'a Position,
    window: u64,
    /// Larger files are not read ahead.
    largest: u64,
    /// Index of the next regular-file entry, in the copy's order.
    next: u64,
    /// Files asked for that the copy has not reached: (index, bytes).
    ahead: VecDeque<(u64, u64)>,
    ahead_bytes: u64,
}

/// Stop walking (the copy has finished).
struct Done;

impl Walk<'_> {
    fn dir(&mut self, fd: BorrowedFd<'_>, d: &Entry) -> Result<(), Done> {
        for c in d.children() {
            match &c.kind {
                Kind::Dir { .. } => {
                    if let Ok(sub) = open_dir(fd, &c.name, (c.meta.dev, c.meta.ino)) {
                        self.dir(sub.as_fd(), c)?;
                    } else {
                        self.skip_files(c);
                    }
                }
                Kind::File { size, layout, data } => {
                    let index = self.next;
                    self.next += 1;
                    // Nothing to read ahead, or the copy has got there first.
                    if *data != Data::InTree
                        || *size == 0
                        || index < self.pos.files.load(Ordering::Relaxed)
                    {
                        continue;
                    }
                    let ranges = layout.data_ranges(*size);
                    let bytes: u64 = ranges.iter().map(|(s, e)| e - s).sum();
                    // A large file is read sequentially, where the kernel's own read-ahead
                    // does as well; asking for it here only competes with the copy.
                    if bytes > self.largest {
                        continue;
                    }
                    self.wait_for_room(bytes)?;
                    // Only the file scanned, never what replaced it (see `open`).
                    let stamp = Stamp::of_entry(&c.meta, *size);
                    if let Ok(f) = open_file(fd, &c.name, &stamp) {
                        for (s, e) in ranges {
                            let len = std::num::NonZeroU64::new(e - s);
                            let _ = rustix::fs::fadvise(&f, s, len, Advice::WillNeed);
                        }
                    }
                    self.ahead.push_back((index, bytes));
                    self.ahead_bytes += bytes;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts the files below a directory that could not be opened (the copy will fail there).
    fn skip_files(&mut self, d: &Entry) {
        for c in d.children() {
            match c.kind {
                Kind::Dir { .. } => self.skip_files(c),
                Kind::File { .. } => self.next += 1,
                _ => {}
            }
        }
    }

    /// Waits until `bytes` more fit in the window ahead of the copy.
    fn wait_for_room(&mut self, bytes: u64) -> Result<(), Done> {
        loop {
            if self.pos.done.load(Ordering::Relaxed) {
                return Err(Done);
            }
            let reached = self.pos.files.load(Ordering::Relaxed);
            while let Some(&(i, b)) = self.ahead.front() {
                if i >= reached {
                    break;
                }
                self.ahead.pop_front();
                self.ahead_bytes -= b;
            }
            if self.ahead_bytes + bytes <= self.window || self.ahead.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags};

    fn tree_of(files: usize) -> (tempfile::TempDir, super::super::Tree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for i in 0..files {
            let p = dir.path().join(if i % 2 == 0 { "sub" } else { "." });
            std::fs::write(p.join(format!("f{i}")), vec![1u8; 1000]).unwrap();
        }
        let tree = super::super::scan(dir.path(), Default::default(), &mut || {}).unwrap();
        (dir, tree)
    }

    #[test]
    fn stops_at_the_window_until_the_copy_moves_or_finishes() {
        let (dir, tree) = tree_of(6);
        let root = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let pos = Position::default();
        std::thread::scope(|s| {
            // A window of one file: the walk must wait for the copy after the first.
            let walker = s.spawn(|| run(root.as_fd(), &tree.root, &pos, 1000));
            std::thread::sleep(Duration::from_millis(100));
            assert!(!walker.is_finished(), "read ahead beyond its window");
            for _ in 0..3 {
                pos.advance();
            }
            std::thread::sleep(Duration::from_millis(50));
            assert!(!walker.is_finished(), "read ahead beyond its window");
            pos.finish();
            walker.join().unwrap();
        });
        // A window larger than the tree: the walk ends by itself.
        let pos = Position::default();
        run(root.as_fd(), &tree.root, &pos, 1 << 20);
    }
}
