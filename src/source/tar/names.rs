//! Finding a directory's child by name while an archive is read, for little memory per entry:
//! a directory of up to [`SMALL`] children is searched name by name; a bigger one has an
//! open-addressing table (linear probing, kept by the directory's ino) of its children's
//! positions and one byte of each name's hash, 5 bytes a slot, at most 3/4 full (about 9 bytes
//! an entry), rebuilt from the names when it grows. A match is confirmed on the name itself;
//! names are hashed with a random key, so an archive cannot choose colliding names.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use anyhow::{bail, Result};

use crate::source::Entry;

/// Directories with up to this many children are searched by name, without an index.
pub const SMALL: usize = 8;

/// The name indexes of the directories being built, by directory ino.
#[derive(Default)]
pub struct Names {
    hasher: RandomState,
    tables: HashMap<u64, Table>,
}

struct Table {
    /// Child position + 1; 0 for a free slot.
    slots: Vec<u32>,
    /// The top byte of the name's hash, for each slot.
    tags: Vec<u8>,
}

impl Names {
    /// The position of `dir`'s child called `name`.
    pub fn find(&self, dir: &Entry, name: &[u8]) -> Option<usize> {
        let children = dir.children();
        if children.len() <= SMALL {
            return children.iter().position(|c| *c.name == *name);
        }
        let t = &self.tables[&dir.meta.ino];
        let h = self.hash(name);
        let (mask, tag) = (t.slots.len() - 1, (h >> 56) as u8);
        let mut i = h as usize & mask;
        loop {
            let s = t.slots[i] as usize;
            if s == 0 {
                return None;
            }
            if t.tags[i] == tag && *children[s - 1].name == *name {
                return Some(s - 1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `e` (whose name `dir` does not have yet) as `dir`'s last child; its position.
    pub fn push(&mut self, dir: &mut Entry, e: Entry) -> Result<usize> {
        let children = dir.children_mut();
        let pos = children.len();
        if pos >= u32::MAX as usize {
            bail!("more than {} entries in one directory", u32::MAX - 1);
        }
        children.push(e);
        let n = children.len();
        if n <= SMALL {
            return Ok(pos);
        }
        let (ino, children) = (dir.meta.ino, dir.children());
        let h = self.hash(&children[pos].name);
        if let Some(t) = self.tables.get_mut(&ino) {
            if n * 4 <= t.slots.len() * 3 {
                t.insert(h, pos);
                return Ok(pos);
            }
        }
        // Made or grown: rebuilt from the names, the old table freed first.
        self.reindex(dir);
        Ok(pos)
    }

    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    /// Makes `dir`'s index again after children were taken out of it (their positions moved).
    pub fn reindex(&mut self, dir: &Entry) {
        self.tables.remove(&dir.meta.ino);
        let children = dir.children();
        if children.len() <= SMALL {
            return;
        }
        let size = (2 * children.len()).next_power_of_two();
        let mut t = Table {
            slots: vec![0; size],
            tags: vec![0; size],
        };
        for (p, c) in children.iter().enumerate() {
            t.insert(self.hash(&c.name), p);
        }
        self.tables.insert(dir.meta.ino, t);
    }

    /// Drops the index of the directory `ino` (being discarded).
    pub fn forget(&mut self, ino: u64) {
        self.tables.remove(&ino);
    }
}

impl Table {
    fn insert(&mut self, h: u64, pos: usize) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = pos as u32 + 1;
        self.tags[i] = (h >> 56) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Kind, Meta};

    fn entry(name: &[u8]) -> Entry {
        Entry {
            name: Box::from(name),
            kind: Kind::Dir {
                children: Vec::new(),
            },
            meta: Meta {
                ino: 5,
                ..Meta::default()
            },
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn every_child_is_found_as_the_index_grows() {
        let (mut names, mut d) = (Names::default(), entry(b""));
        let name = |i: usize| format!("n{}", i * 7919 % 2000).into_bytes();
        for i in 0..1000 {
            assert_eq!(names.find(&d, &name(i)), None);
            assert_eq!(names.push(&mut d, entry(&name(i))).unwrap(), i);
            for j in [0, i / 3, i / 2, i] {
                assert_eq!(names.find(&d, &name(j)), Some(j), "{i} {j}");
            }
            assert_eq!(names.tables.len(), usize::from(i >= SMALL));
        }
        assert!((0..1000).all(|i| names.find(&d, &name(i)) == Some(i)));
        assert_eq!(names.find(&d, b"n1"), None); // 1 = i * 7919 % 2000 has no i < 1000
        let t = &names.tables[&5];
        assert_eq!((t.slots.len(), t.tags.len()), (2048, 2048));
        assert_eq!(t.slots.iter().filter(|&&s| s != 0).count(), 1000);
        names.forget(5);
        assert!(names.tables.is_empty());
    }
}
