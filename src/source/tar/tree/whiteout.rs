//! The OCI image spec's whiteouts (image-spec layer.md), applied while an image's layers are
//! read into one tree: a member `DIR/.wh.NAME` hides `DIR/NAME` of the layers below, and
//! `DIR/.wh..wh..opq` hides everything of the layers below in `DIR` (an opaque directory).
//! Neither is an entry itself. A whiteout hides only what lower layers made: what its own layer
//! made stays, whatever the order of the members (a directory its layer lists again stays too,
//! with only that layer's entries in it). Every entry's `dev` is the layer that made it (or
//! listed a directory again), which is how lower is told from same.

use anyhow::Result;

use super::{discard, parent_dir, Builder};
use crate::source::tar::names::Names;
use crate::source::{Entry, Timestamp};

/// The name of an opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of a whiteout's name.
const PREFIX: &[u8] = b".wh.";

impl Builder {
    /// When `comps` (a member's path) names a whiteout, applies it and returns true.
    pub(super) fn whiteout(&mut self, comps: &[&[u8]], t: Timestamp) -> Result<bool> {
        let Some((&name, parents)) = comps.split_last() else {
            return Ok(false);
        };
        if name == OPAQUE {
            // The directory is part of this layer even when no member lists it.
            let Builder {
                root,
                names,
                next_ino,
                layer,
                ..
            } = self;
            let d = parent_dir(root, names, (*layer, next_ino), parents, t)?;
            hide_lower_children(names, d, *layer);
            return Ok(true);
        }
        let Some(hidden) = name.strip_prefix(PREFIX) else {
            return Ok(false);
        };
        // Nothing to hide when the parent is not there (or not a directory).
        let mut cur = &mut self.root;
        for c in parents {
            match self.names.find(cur, c) {
                Some(i) if cur.children()[i].is_dir() => cur = &mut cur.children_mut()[i],
                _ => return Ok(true),
            }
        }
        let Some(i) = self.names.find(cur, hidden) else {
            return Ok(true);
        };
        let e = &mut cur.children_mut()[i];
        if e.meta.dev == self.layer {
            // Made (or listed again) by this layer: only what is below it from lower layers goes.
            if e.is_dir() {
                hide_lower_children(&mut self.names, e, self.layer);
            }
            return Ok(true);
        }
        let gone = cur.children_mut().remove(i);
        discard(&mut self.names, gone);
        self.names.reindex(cur);
        Ok(true)
    }
}

/// Takes out of directory `d`, at every depth, what layers below `layer` made; directories made
/// or listed by `layer` stay (emptied of lower entries). Without recursion.
fn hide_lower_children(names: &mut Names, d: &mut Entry, layer: u64) {
    let mut stack = vec![d];
    while let Some(d) = stack.pop() {
        let (keep, gone): (Vec<Entry>, Vec<Entry>) = std::mem::take(d.children_mut())
            .into_iter()
            .partition(|c| c.meta.dev == layer);
        for e in gone {
            discard(names, e);
        }
        *d.children_mut() = keep;
        names.reindex(d);
        stack.extend(d.children_mut().iter_mut().filter(|c| c.is_dir()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, find, member, names};
    use super::super::Builder;
    use crate::source::tar::member::MemberKind;

    /// Layers of (path, kind) members, applied in order.
    fn apply(layers: &[&[(&str, MemberKind)]]) -> super::super::Built {
        let mut b = Builder::layered();
        for l in layers {
            b.next_layer();
            for (p, k) in l.iter() {
                b.add(member(p, k.clone(), 1)).unwrap();
            }
        }
        b.finish()
    }

    #[test]
    fn a_whiteout_hides_the_lower_entry_and_is_no_entry_itself() {
        let t = apply(&[
            &[("a/f", file(1)), ("a/g", file(2)), ("d/x/y", file(3))],
            &[
                ("a/.wh.f", file(0)),
                (".wh.d", file(0)),
                ("a/.wh.nothing", file(0)),
            ],
        ]);
        assert_eq!(names(&t.root), ["a"]);
        assert_eq!(names(find(&t.root, "a")), ["g"]);
        assert_eq!((t.entries, t.data_bytes), (2, 2));
    }

    #[test]
    fn a_whiteout_leaves_what_its_own_layer_made() {
        let t = apply(&[
            &[("a/f", file(1)), ("d/old", file(2))],
            // f again, then its whiteout; d listed again with a new file, then d's whiteout.
            &[
                ("a/f", file(5)),
                ("a/.wh.f", file(0)),
                ("d", MemberKind::Dir),
                ("d/new", file(3)),
                (".wh.d", file(0)),
            ],
        ]);
        assert_eq!(names(find(&t.root, "a")), ["f"]);
        assert_eq!(names(find(&t.root, "d")), ["new"]);
        assert_eq!(t.data_bytes, 5 + 3);
    }

    #[test]
    fn an_opaque_directory_keeps_only_its_own_layer() {
        // Markers before and after the layer's own entries; a subdirectory listed again.
        let t = apply(&[
            &[
                ("o/a", file(1)),
                ("o/s/deep", file(2)),
                ("p/b", file(3)),
                ("q", file(9)),
            ],
            &[
                ("o/mine", file(4)),
                ("o/.wh..wh..opq", file(0)),
                ("o/s", MemberKind::Dir),
                ("p/.wh..wh..opq", file(0)),
                ("p/late", file(6)),
                ("n/.wh..wh..opq", file(0)),
            ],
        ]);
        assert_eq!(names(&t.root), ["n", "o", "p", "q"]);
        assert_eq!(names(find(&t.root, "o")), ["mine", "s"]);
        assert!(names(find(&t.root, "o/s")).is_empty());
        assert_eq!(names(find(&t.root, "p")), ["late"]);
        assert_eq!(t.data_bytes, 4 + 6 + 9);
    }

    #[test]
    fn later_layers_replace_and_link_across_layers() {
        let t = apply(&[
            &[("f", file(1)), ("d/x", file(2)), ("r", file(7))],
            // A hard link to a lower file; a file replaced by a directory; a directory by a file.
            &[
                ("l", MemberKind::HardLink(b"r".to_vec())),
                ("f", MemberKind::Dir),
                ("f/in", file(3)),
                ("d", file(4)),
            ],
            &[(".wh.r", file(0))],
        ]);
        assert_eq!(names(&t.root), ["d", "f", "l"]);
        assert_eq!(names(find(&t.root, "f")), ["in"]);
        assert!(!find(&t.root, "d").is_dir());
        // r is hidden; l, its other name, stays (with one name now).
        assert_eq!(find(&t.root, "l").meta.nlink, 1);
        assert_eq!(t.data_bytes, 3 + 4 + 7);
    }

    #[test]
    fn whiteouts_in_a_big_directory_keep_the_name_index_right() {
        let lower: Vec<(String, MemberKind)> =
            (0..40).map(|i| (format!("d/n{i:02}"), file(1))).collect();
        let lower: Vec<(&str, MemberKind)> =
            lower.iter().map(|(p, k)| (p.as_str(), k.clone())).collect();
        let upper: Vec<(String, MemberKind)> = (0..40)
            .step_by(3)
            .map(|i| (format!("d/.wh.n{i:02}"), file(0)))
            .chain([
                ("d/n01".to_string(), file(2)),
                ("d/extra".to_string(), file(1)),
            ])
            .collect();
        let upper: Vec<(&str, MemberKind)> =
            upper.iter().map(|(p, k)| (p.as_str(), k.clone())).collect();
        let t = apply(&[&lower, &upper]);
        let got = names(find(&t.root, "d"));
        let mut want: Vec<String> = (0..40)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("n{i:02}"))
            .chain(["extra".to_string()])
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(t.entries, 1 + want.len() as u64);
    }
}
