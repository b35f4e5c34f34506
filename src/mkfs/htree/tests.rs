//! The htree builder checked against the structure the kernel's dx_probe and e2fsck expect:
//! every name found by its hash, leaves sorted and tiled, limits and tails in place, the
//! planner's bound never short.

use super::*;
use ext2fs::{DirHash, HashVersion};
use std::collections::BTreeMap;

/// The blocks of the index of `entries`, in logical order (each made exactly once).
fn indexed_blocks(
    ino: Ino,
    parent: Ino,
    entries: &[Child],
    p: &IndexParams,
    hash: &dyn Fn(&[u8]) -> NameHash,
) -> Option<Vec<Vec<u8>>> {
    let index = Index::plan(&entries, p, hash)?;
    let mut blocks: Vec<Option<Vec<u8>>> = vec![None; index.blocks() as usize];
    index
        .write(ino, parent, &entries, p, &mut |lblk, b| {
            let slot = &mut blocks[lblk as usize];
            assert!(slot.is_none(), "block {lblk} made twice");
            *slot = Some(b.to_vec());
            Ok(())
        })
        .unwrap();
    Some(
        blocks
            .into_iter()
            .map(|b| b.expect("every block made"))
            .collect(),
    )
}

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// The (hash, block) entries of a dx block whose countlimit is at `at`, checking its limit;
/// the first entry's hash is `lo`.
fn dx_entries(b: &[u8], at: usize, p: &IndexParams, lo: u32) -> Vec<(u32, u32)> {
    let (limit, count) = (u16_at(b, at), u16_at(b, at + 2));
    assert_eq!(limit, (p.bs() - at - p.dx_tail()) / 8);
    assert!(count >= 1 && count <= limit, "count {count} limit {limit}");
    let e: Vec<(u32, u32)> = (0..count)
        .map(|i| {
            (
                if i == 0 { lo } else { u32_at(b, at + 8 * i) },
                u32_at(b, at + 8 * i + 4),
            )
        })
        .collect();
    assert!(e.windows(2).all(|w| w[0].0 <= w[1].0), "dx hashes decrease");
    if p.csum {
        assert!(
            b[at + 8 * limit..].iter().all(|&x| x == 0),
            "dx_tail space used"
        );
    }
    e
}

/// A leaf's live records (name -> (inode, type)), checking that the records tile the block.
fn leaf(b: &[u8], p: &IndexParams) -> Vec<(Vec<u8>, Ino, u8)> {
    let (mut o, mut out) = (0, Vec::new());
    while o < p.usable() {
        let (ino, rl, nl) = (u32_at(b, o), u16_at(b, o + 4), b[o + 6] as usize);
        assert!(
            rl >= rec_len(nl) && rl % 4 == 0 && nl > 0 && ino != 0,
            "bad record at {o}"
        );
        out.push((b[o + 8..o + 8 + nl].to_vec(), ino, b[o + 7]));
        o += rl;
    }
    assert_eq!(o, p.usable());
    if p.csum {
        assert_eq!(&b[o..o + 8], &[0, 0, 0, 0, 12, 0, 0, 0xDE]);
    }
    out
}

/// Checks the whole structure of directory 12 in directory 2, and looks every name up as the kernel's dx_probe and
/// htree_next_block do. Returns the index depth.
fn check(
    blocks: &[Vec<u8>],
    p: &IndexParams,
    entries: &[Child],
    h: &dyn Fn(&[u8]) -> NameHash,
) -> u8 {
    let r = &blocks[0];
    assert_eq!(
        (u32_at(r, 0), u16_at(r, 4), &r[6..9]),
        (12, 12, &[1, FileType::Directory.dirent_byte(), b'.'][..])
    );
    assert_eq!(
        (u32_at(r, 12), u16_at(r, 16), &r[18..22]),
        (
            2,
            p.bs() - 12,
            &[2, FileType::Directory.dirent_byte(), b'.', b'.'][..]
        )
    );
    assert_eq!(&r[24..32], &[0, 0, 0, 0, p.hash_version, 8, r[30], 0]);
    let levels = r[30];
    let top = dx_entries(r, ROOT_ENTRIES, p, 0);
    // (start hash, leaf block) over the whole index, in order.
    let mut index = Vec::new();
    let mut nodes = 0;
    for (i, &(lo, blk)) in top.iter().enumerate() {
        if levels == 0 {
            index.push((lo, blk));
            continue;
        }
        nodes += 1;
        let n = &blocks[blk as usize];
        assert_eq!((u32_at(n, 0), u16_at(n, 4), n[6]), (0, p.bs(), 0));
        let e = dx_entries(n, NODE_ENTRIES, p, lo);
        if i + 1 < top.len() {
            assert_eq!(e.len(), p.node_limit(), "only the last node is partly full");
        }
        index.extend(e);
    }
    assert!(index.windows(2).all(|w| w[0].0 <= w[1].0));
    let leaf_blocks: Vec<u32> = index.iter().map(|e| e.1).collect();
    assert_eq!(leaf_blocks, (1..=index.len() as u32).collect::<Vec<_>>());
    assert_eq!(
        blocks.len(),
        1 + index.len() + nodes,
        "every block is in the index once"
    );
    let mut seen = BTreeMap::new();
    for (j, &(lo, blk)) in index.iter().enumerate() {
        let hi = index.get(j + 1).map_or(u64::MAX, |e| (e.0 & !1) as u64);
        let mut prev = (0, 0);
        for (name, ino, ft) in leaf(&blocks[blk as usize], p) {
            let hm = h(&name);
            assert!(hm >= prev, "leaf {blk} is not sorted by hash");
            prev = hm;
            let x = hm.0 as u64;
            assert!(x >= (lo & !1) as u64 && (x < hi || (x == hi && index[j + 1].0 & 1 == 1)));
            assert!(seen.insert(name, (ino, ft, j)).is_none(), "a name twice");
        }
    }
    assert_eq!(seen.len(), entries.len());
    for &(name, ino, ft) in entries {
        let &(i, t, at) = seen.get(name).expect("every name is in a leaf");
        assert_eq!((i, t), (ino, ft.dirent_byte()));
        // dx_probe: the last entry whose stored hash is <= the name's hash.
        let x = h(name).0;
        let mut j = index.partition_point(|e| e.0 <= x) - 1;
        while j != at {
            j += 1;
            assert!(
                j < index.len() && index[j].0 & !1 == x,
                "lookup of {name:?} fails"
            );
        }
    }
    levels
}

fn names(n: usize, long: bool) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match long {
            true => format!("{i:06}-{}", "long-name-".repeat(i % 25)).into_bytes(),
            false => format!("file-{i}").into_bytes(),
        })
        .collect()
}

fn children(names: &[Vec<u8>]) -> Vec<Child<'_>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (&n[..], 100 + i as u32, FileType::Regular))
        .collect()
}

fn build(bs: u32, csum: bool, n: usize, long: bool) -> (u8, usize) {
    let hash = DirHash::new(HashVersion::HALF_MD4, false, [7, 8, 9, 10]).unwrap();
    let p = IndexParams {
        block_size: bs,
        csum,
        hash_version: hash.root_version(),
    };
    let names = names(n, long);
    let entries = children(&names);
    let h = |n: &[u8]| hash.hash(n);
    let blocks = indexed_blocks(12, 2, &entries, &p, &h).expect("indexed");
    assert!(blocks.iter().all(|b| b.len() == bs as usize));
    let mut bound = BlockBound::default();
    entries.iter().for_each(|e| bound.add(e.0.len()));
    assert!(
        bound.blocks(bs, csum) >= blocks.len() as u64,
        "the plan's bound is short"
    );
    assert!(
        bound.blocks(bs, csum) <= blocks.len() as u64 * 3 / 2 + 2,
        "the bound is loose"
    );
    (check(&blocks, &p, &entries, &h), blocks.len())
}

#[test]
fn one_level_at_1k_and_4k_with_and_without_csum() {
    for (bs, n) in [(1024, 1000), (4096, 1000), (4096, 30_000)] {
        for csum in [false, true] {
            assert_eq!(build(bs, csum, n, false).0, 0, "bs {bs} n {n}");
            assert_eq!(build(bs, csum, n / 4, true).0, 0);
        }
    }
}

#[test]
fn two_levels_at_1k_and_4k() {
    // 200,000 short names at 1 KiB: ~4,000 leaves under ~32 dx_nodes.
    let (levels, blocks) = build(1024, true, 200_000, false);
    assert_eq!(levels, 1);
    assert!(blocks > 3000, "{blocks}");
    assert_eq!(build(1024, false, 20_000, false).0, 1);
    for csum in [false, true] {
        assert_eq!(build(4096, csum, 30_000, true).0, 1);
    }
}

#[test]
fn small_directories_stay_linear() {
    let hash = DirHash::new(HashVersion::HALF_MD4, false, [0; 4]).unwrap();
    let h = |n: &[u8]| hash.hash(n);
    for (bs, csum) in [(1024, false), (1024, true), (4096, true)] {
        let p = IndexParams {
            block_size: bs,
            csum,
            hash_version: 1,
        };
        let usable = p.usable();
        // Names of 8 bytes take 16-byte records: fill the block exactly, then one more.
        let fit = (usable - 24) / 16;
        let names: Vec<Vec<u8>> = (0..=fit).map(|i| format!("n{i:07}").into_bytes()).collect();
        let entries = children(&names);
        assert!(indexed_blocks(12, 2, &entries[..fit], &p, &h).is_none());
        let mut bound = BlockBound::default();
        entries[..fit].iter().for_each(|e| bound.add(e.0.len()));
        assert_eq!(bound.blocks(bs, csum), 1);
        let blocks = indexed_blocks(12, 2, &entries, &p, &h).expect("two linear blocks' worth");
        assert_eq!(check(&blocks, &p, &entries, &h), 0);
        assert_eq!(blocks.len(), 3, "root and two leaves at 80%");
    }
}

#[test]
fn equal_hashes_spanning_leaves_are_marked_as_continuations() {
    // A bad hash: 600 names share each of a few values, so runs span many leaves.
    let h = |n: &[u8]| ((n.len() as u32 % 3) * 0x1000_0000, 0);
    let names = names(3000, false);
    let entries = children(&names);
    for csum in [false, true] {
        let p = IndexParams {
            block_size: 1024,
            csum,
            hash_version: 1,
        };
        let blocks = indexed_blocks(12, 2, &entries, &p, &h).unwrap();
        check(&blocks, &p, &entries, &h);
        let starts: Vec<u32> = (1..u16_at(&blocks[0], ROOT_ENTRIES + 2))
            .map(|i| u32_at(&blocks[0], ROOT_ENTRIES + 8 * i))
            .collect();
        assert!(starts.iter().filter(|&&s| s & 1 == 1).count() > 10);
    }
}

#[test]
fn too_many_leaves_for_one_level_falls_back_to_linear() {
    let h = |n: &[u8]| (u32::from_le_bytes(n[..4].try_into().unwrap()) & !1, 0);
    let p = IndexParams {
        block_size: 1024,
        csum: true,
        hash_version: 1,
    };
    // 255-byte names: 3 per leaf; 123 × 126 leaves need ~46,500 names.
    let names: Vec<Vec<u8>> = (0..47_000u32)
        .map(|i| [&(i * 2).to_le_bytes()[..], &[b'x'; 251]].concat())
        .collect();
    assert!(indexed_blocks(12, 2, &children(&names), &p, &h).is_none());
    assert!(indexed_blocks(12, 2, &children(&names[..40_000]), &p, &h).is_some());
}
