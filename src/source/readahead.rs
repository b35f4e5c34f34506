//! Reading ahead of the copy: while populating copies one file at a time, a second thread walks
//! the tree in the same order and asks the kernel to start reading the next files
//! (`posix_fadvise(WILLNEED)`, which returns once the reads are queued), at most a window of
//! bytes ahead. A cold tree of many small files is then read with many requests in flight instead
//! of one at a time. It walks the sources' directories as populating does ([`Dirs`]) and opens
//! only what the scan saw ([`super::open`]). Purely an optimisation: anything that fails here is
//! ignored (populating reads, checks and reports every file itself).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use rustix::fs::Advice;

use super::dirs::{host_name, Dirs};
use super::open::{open_file, Stamp};
use super::{Data, Entry, Kind, Tree};

/// How far ahead of the copy reading may run, in bytes of file data.
pub const WINDOW: u64 = 128 << 20;
/// Files with more data than this are left to the kernel's sequential read-ahead.
pub const LARGEST: u64 = 4 << 20;

/// Where the copy is, and a condition variable that wakes the reading ahead when it moves.
#[derive(Default)]
pub struct Position {
    copy: Mutex<Copy>,
    moved: Condvar,
}

/// The number of regular-file entries the copy has reached, in tree order (depth first,
/// children in order, hard links counted each time), whether it has finished, and whether
/// reading ahead is waiting for it to move.
#[derive(Default)]
struct Copy {
    files: u64,
    done: bool,
    waited_on: bool,
}

impl Position {
    /// The copy has reached one more regular-file entry.
    pub fn advance(&self) {
        let mut copy = self.lock();
        copy.files += 1;
        self.wake(copy);
    }

    /// The copy is over (finished or failed): reading ahead stops.
    pub fn finish(&self) {
        let mut copy = self.lock();
        copy.done = true;
        self.wake(copy);
    }

    /// Wakes reading ahead if it waits (the copy calls this once a file: no system call when
    /// nobody waits).
    fn wake(&self, copy: MutexGuard<'_, Copy>) {
        let waited_on = copy.waited_on;
        drop(copy);
        if waited_on {
            self.moved.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Copy> {
        // The counters are consistent whatever panicked while holding the lock.
        crate::sync::lock(&self.copy)
    }
}

/// Calls [`Position::finish`] when dropped, so that reading ahead stops however the copy ends.
pub struct FinishOnDrop<'a>(pub &'a Position);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Reads ahead of `pos` through `tree`'s files in its directory sources; returns when the whole
/// tree has been asked for or the copy has finished.
pub fn run(tree: &Tree, pos: &Position, window: u64) {
    let mut walk = Walk {
        tree,
        pos,
        window,
        largest: LARGEST.min(window),
        next: 0,
        ahead: VecDeque::new(),
        ahead_bytes: 0,
    };
    let _ = walk.dir(&Dirs::root(tree), &tree.root, &mut Vec::new());
}

struct Walk<'a> {
    tree: &'a Tree,
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
    /// Reads ahead below directory `d` (at `rel` in the tree), whose sources' directories are
    /// `dirs`.
    fn dir(&mut self, dirs: &Dirs, d: &Entry, rel: &mut Vec<u8>) -> Result<(), Done> {
        for c in d.children() {
            let len = rel.len();
            rel.push(b'/');
            rel.extend_from_slice(&c.name);
            let r = self.entry(dirs, c, rel);
            rel.truncate(len);
            r?;
        }
        Ok(())
    }

    fn entry(&mut self, dirs: &Dirs, c: &Entry, rel: &mut Vec<u8>) -> Result<(), Done> {
        match &c.kind {
            Kind::Dir { .. } => match dirs.child(self.tree, c, rel) {
                Ok(sub) => self.dir(&sub, c, rel)?,
                Err(_) => self.skip_files(c),
            },
            Kind::File { size, layout, data } => {
                let index = self.next;
                self.next += 1;
                // Nothing to read ahead (or in a spool, read in order anyway), or the copy has
                // got there first.
                let Data::InTree { src } = *data else {
                    return Ok(());
                };
                let Some(dir) = dirs.get(src) else {
                    return Ok(());
                };
                if *size == 0 || index < self.pos.lock().files {
                    return Ok(());
                }
                let ranges = layout.data_ranges(*size);
                let bytes: u64 = ranges.iter().map(|(s, e)| e - s).sum();
                // A large file is read sequentially, where the kernel's own read-ahead does as
                // well; asking for it here only competes with the copy.
                if bytes > self.largest {
                    return Ok(());
                }
                self.wait_for_room(bytes)?;
                // Only the file scanned, never what replaced it (see `open`).
                let name = host_name(&self.tree.origins[src as usize], &c.name);
                if let Ok(f) = open_file(dir, name, &Stamp::of_entry(&c.meta, *size)) {
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

    /// Waits until `bytes` more fit in the window ahead of the copy (woken each time the copy
    /// moves on).
    fn wait_for_room(&mut self, bytes: u64) -> Result<(), Done> {
        let mut copy = self.pos.lock();
        loop {
            if copy.done {
                return Err(Done);
            }
            while let Some(&(i, b)) = self.ahead.front() {
                if i >= copy.files {
                    break;
                }
                self.ahead.pop_front();
                self.ahead_bytes -= b;
            }
            if self.ahead_bytes + bytes <= self.window || self.ahead.is_empty() {
                return Ok(());
            }
            copy.waited_on = true;
            copy = self.pos.moved.wait(copy).unwrap_or_else(|e| e.into_inner());
            copy.waited_on = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Spawned;
    use std::sync::Arc;

    /// A scanned tree of `files` files of 1000 bytes, open, with a copy that has not started.
    struct Fixture {
        tree: super::super::Tree,
        pos: Position,
        _dir: tempfile::TempDir,
    }

    fn fixture(files: usize) -> Arc<Fixture> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for i in 0..files {
            let p = dir.path().join(if i % 2 == 0 { "sub" } else { "." });
            std::fs::write(p.join(format!("f{i}")), vec![1u8; 1000]).unwrap();
        }
        let tree = super::super::scan(dir.path(), Default::default(), &mut || {}).unwrap();
        Arc::new(Fixture {
            tree,
            pos: Position::default(),
            _dir: dir,
        })
    }

    /// Reads ahead through the fixture's tree with a window of `window` bytes, on a thread.
    fn walk(f: &Arc<Fixture>, window: u64) -> Spawned<()> {
        let f = Arc::clone(f);
        Spawned::new(move || run(&f.tree, &f.pos, window))
    }

    /// With a window of one file, reading ahead waits for the copy after the first file, goes
    /// on as the copy moves, and ends by itself once the copy has reached the last file.
    #[test]
    fn waits_at_the_window_and_goes_on_as_the_copy_moves() {
        let f = fixture(6);
        let walker = walk(&f, 1000);
        walker.wait_until_blocked("reading ahead with the copy at the first file");
        for _ in 0..5 {
            f.pos.advance();
        }
        // The copy is at the last of 6 files: it fits, and the walk is over.
        walker.join("reading ahead with the copy at the last file");
    }

    #[test]
    fn finishing_the_copy_ends_a_waiting_walk() {
        let f = fixture(6);
        let walker = walk(&f, 1000);
        walker.wait_until_blocked("reading ahead at its window");
        f.pos.finish();
        walker.join("reading ahead after the copy finished");
    }

    #[test]
    fn a_window_larger_than_the_tree_ends_by_itself() {
        let f = fixture(6);
        run(&f.tree, &f.pos, 1 << 20);
    }
}
