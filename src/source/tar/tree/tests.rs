//! Tests of the tree builder: replacement in place (also in big directories), hard links across
//! replaced paths, serial inos, deep trees without recursion, the sort; the helpers that make
//! members are shared with the whiteout tests.

use super::*;
use crate::source::Data;

pub(super) fn member(path: &str, kind: MemberKind, mtime: i64) -> Member {
    let t = Timestamp {
        sec: mtime,
        nsec: 0,
    };
    Member {
        path: path.as_bytes().to_vec(),
        kind,
        perm: 0o640,
        uid: 7,
        gid: 8,
        mtime: t,
        atime: t,
        ctime: t,
        xattrs: Vec::new(),
    }
}

pub(super) fn file(size: u64) -> MemberKind {
    MemberKind::File {
        size,
        layout: Layout::Dense,
        data: Data::Spool { src: 0, offset: 0 },
        bytes: size,
    }
}

fn link(target: &str) -> MemberKind {
    MemberKind::HardLink(target.as_bytes().to_vec())
}

pub(super) fn find<'a>(e: &'a Entry, path: &str) -> &'a Entry {
    path.split('/').fold(e, |e, c| {
        let ch = e.children();
        ch.iter()
            .find(|x| &*x.name == c.as_bytes())
            .unwrap_or_else(|| panic!("no {path}"))
    })
}

pub(super) fn names(e: &Entry) -> Vec<String> {
    let v = e.children().iter();
    v.map(|c| String::from_utf8_lossy(&c.name).into_owned())
        .collect()
}

#[test]
fn replacement_in_a_big_directory_keeps_one_sorted_entry_a_name() {
    let mut b = Builder::default();
    let mut want = Vec::new();
    for i in (0..300u64).rev() {
        let k = (i * 7) % 300;
        let name = format!("d/n{k:03}");
        b.add(member(&name, file(k), 1)).unwrap();
        want.push(name[2..].to_string());
    }
    // Over every kind: a file, a directory with children, and a directory kept as such.
    b.add(member("d/n005", MemberKind::Dir, 2)).unwrap();
    b.add(member("d/n005/x", file(1), 2)).unwrap();
    b.add(member("d/n005", MemberKind::Dir, 3)).unwrap();
    b.add(member("d/n006", MemberKind::Dir, 2)).unwrap();
    for i in 0..20 {
        b.add(member(&format!("d/n006/c{i}"), file(1), 2)).unwrap();
    }
    b.add(member("d/n006", MemberKind::Fifo, 4)).unwrap();
    b.add(member("d/n006", MemberKind::Dir, 5)).unwrap();
    let ino = find(&b.root, "d/n006").meta.ino;
    let t = b.finish();
    want.sort();
    assert_eq!(names(find(&t.root, "d")), want);
    let (d5, d6) = (find(&t.root, "d/n005"), find(&t.root, "d/n006"));
    assert_eq!((d5.meta.mtime.sec, names(d5)), (3, vec!["x".to_string()]));
    assert_eq!(
        (d6.meta.mtime.sec, d6.meta.ino, d6.children().len()),
        (5, ino, 0)
    );
    assert_eq!(find(&t.root, "d").meta.nlink, 4);
    assert_eq!(t.entries, 1 + 300 + 1);
    assert_eq!(t.data_bytes, (0..300).sum::<u64>() - 5 - 6 + 1);
}

#[test]
fn hard_links_across_a_replaced_path() {
    let mut b = Builder::default();
    b.add(member("a/f", file(10), 1)).unwrap();
    b.add(member("l1", link("a/f"), 1)).unwrap();
    b.add(member("a/l2", link("l1"), 1)).unwrap();
    // `a` becomes a file: `a/f` and `a/l2` go, `l1` keeps the inode.
    b.add(member("a", file(3), 2)).unwrap();
    b.add(member("l3", link("l1"), 2)).unwrap();
    let err = b.add(member("l4", link("a/f"), 2)).unwrap_err();
    assert!(format!("{err:#}").contains("no such entry"), "{err:#}");
    // Over a link: the link goes, and a link over itself changes nothing.
    b.add(member("l5", link("l1"), 2)).unwrap();
    b.add(member("l5", file(4), 3)).unwrap();
    b.add(member("l3", link("./l3"), 3)).unwrap();
    // A name in a directory that is later replaced by one with new children.
    b.add(member("d/f", file(5), 4)).unwrap();
    b.add(member("e", link("d/f"), 4)).unwrap();
    b.add(member("d", MemberKind::Symlink(b"x".to_vec()), 4))
        .unwrap();
    b.add(member("d/g", link("e"), 4)).unwrap_err();
    let t = b.finish();
    assert_eq!(names(&t.root), ["a", "d", "e", "l1", "l3", "l5"]);
    let (l1, l3, e) = (find(&t.root, "l1"), find(&t.root, "l3"), find(&t.root, "e"));
    assert_eq!(
        (l1.meta.ino, l1.meta.nlink, l1.meta.mtime.sec),
        (l3.meta.ino, 2, 1)
    );
    assert_eq!(l3.meta.nlink, 2);
    assert_eq!((e.meta.nlink, find(&t.root, "l5").meta.nlink), (1, 1));
    assert_ne!(e.meta.ino, l1.meta.ino);
    assert_eq!(t.data_bytes, 10 + 3 + 4 + 5);
    assert_eq!(t.entries, 6);
}

#[test]
fn inos_are_serial_in_archive_order() {
    let mut b = Builder::default();
    b.add(member("x/y/f", file(1), 1)).unwrap();
    b.add(member("x/y", MemberKind::Dir, 1)).unwrap();
    b.add(member("g", link("x/y/f"), 1)).unwrap();
    b.add(member("s", MemberKind::Fifo, 1)).unwrap();
    let t = b.finish();
    let ino = |p| find(&t.root, p).meta.ino;
    assert_eq!(t.root.meta.ino, 1);
    assert_eq!(
        [ino("x"), ino("x/y"), ino("x/y/f"), ino("g"), ino("s")],
        [2, 3, 4, 4, 5]
    );
}

#[test]
fn deep_trees_are_built_and_dropped_without_recursion() {
    let deep = "d/".repeat(super::super::path::MAX_DEPTH - 1);
    // On a thread with a small stack, where recursing this deep would overflow.
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || {
            let mut b = Builder::default();
            b.add(member(&format!("{deep}f"), file(1), 1)).unwrap();
            b.add(member(&format!("{deep}g"), link(&format!("{deep}f")), 1))
                .unwrap();
            let t = b.finish();
            assert_eq!((t.entries, t.data_bytes), (8192 + 1, 1));
            let mut e = t.root;
            while let Some(c) = e.children_mut().pop() {
                if c.is_dir() {
                    e = c;
                } else {
                    assert_eq!(c.meta.nlink, 2);
                }
            }
            // Replaced, and dropped with the builder.
            let mut b = Builder::default();
            b.add(member(&format!("{deep}f"), file(1), 1)).unwrap();
            b.add(member("d", file(1), 1)).unwrap();
            b.add(member(&format!("{deep}f"), file(1), 1)).unwrap_err();
            drop(b);
            let mut b = Builder::default();
            b.add(member(&format!("{deep}f"), file(1), 1)).unwrap();
            drop(b);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn sorting_moves_entries_to_their_places() {
    let mut state = 12345u64;
    for n in [0usize, 1, 2, 3, 10, 100, 1000] {
        let mut v: Vec<Entry> = (0..n)
            .map(|i| dir(format!("{i:04}").as_bytes(), Meta::default(), Vec::new()))
            .collect();
        for i in (1..n).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, (state >> 33) as usize % (i + 1));
        }
        sort_by_name(&mut v);
        let got: Vec<String> = v
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into())
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("{i:04}")).collect();
        assert_eq!(got, want);
    }
}
