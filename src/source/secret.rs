//! Whether a tree holds anything that not everyone may read, so that the image of it is made no
//! more readable than the tree: a regular file others may not read, a directory others may not
//! list or enter (what lies below it is theirs to see only through it), an extended attribute of
//! the trusted namespace (only root reads those). Symlinks, devices, FIFOs and sockets hold no
//! content of their own. Each input counts too (SOURCE and every `--add`): an archive others may
//! not read, or a directory merged into the tree (whose own mode the tree does not keep) that
//! they may not list or enter; and what an OCI image layout's reader opened (a blob, a
//! directory on its way) that they may not read, as
//! [`Tree::unreadable`](super::Tree::unreadable) holds it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::open::stat;
use super::{display, Entry, Kind, Origin};

/// The first entry of the tree under `root` (depth first, in name order) whose content others
/// may not read, in words: "PATH is not readable by others (mode 0640)". `source` is how the
/// root is named.
pub fn first_secret(root: &Entry, source: &[u8]) -> Option<String> {
    let mut path = source.to_vec();
    find(root, &mut path)
}

fn find(e: &Entry, path: &mut Vec<u8>) -> Option<String> {
    if let Some(why) = why_secret(e) {
        return Some(format!("{} {why}", display(path)));
    }
    for c in e.children() {
        let len = path.len();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(&c.name);
        let found = find(c, path);
        path.truncate(len);
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Why input `path`, read as `origin`, is not for everyone's eyes, in words; None when it is
/// (or when nothing names it: stdin). A directory is looked at through the descriptor its scan
/// kept; an archive (or image layout) by its path.
pub fn input_secret(path: &Path, origin: &Origin) -> Option<String> {
    match origin {
        Origin::Dir { dir, .. } => {
            let perm = stat(&**dir).ok()?.stx_mode & 0o7777;
            by_mode(perm, true).map(|why| format!("{} {why}", path.display()))
        }
        Origin::File { .. } => None, // its entry is in the tree, mode and all
        Origin::Spool(_) if path.as_os_str() == "-" => None,
        Origin::Spool(_) => host_secret(path, &std::fs::metadata(path).ok()?),
    }
}

/// Why the host file or directory `path`, of metadata `m`, is not for everyone's eyes, in
/// words naming it (a file read whole into the tree, such as an image layout's blob).
pub fn host_secret(path: &Path, m: &std::fs::Metadata) -> Option<String> {
    let perm = (m.permissions().mode() & 0o7777) as u16;
    by_mode(perm, m.is_dir()).map(|why| format!("{} {why}", path.display()))
}

/// Why a file (or, `dir`, a directory) of mode `perm` is not for everyone's eyes.
fn by_mode(perm: u16, dir: bool) -> Option<String> {
    let (read, exec) = (perm & 0o004 != 0, perm & 0o001 != 0);
    match dir {
        false if !read => Some(format!("is not readable by others (mode {perm:04o})")),
        true if !(read && exec) => Some(format!(
            "cannot be listed or entered by others (mode {perm:04o})"
        )),
        _ => None,
    }
}

/// Why entry `e` itself is not for everyone's eyes.
fn why_secret(e: &Entry) -> Option<String> {
    let by_mode = match e.kind {
        Kind::File { .. } => by_mode(e.meta.perm, false),
        Kind::Dir { .. } => by_mode(e.meta.perm, true),
        _ => None,
    };
    by_mode.or_else(|| {
        e.xattrs
            .iter()
            .find(|(name, _)| name.starts_with(b"trusted."))
            .map(|(name, _)| {
                format!(
                    "has extended attribute {}, which only root may read",
                    display(name)
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Data, Layout, Meta, Timestamp};

    fn entry(name: &str, perm: u16, kind: Kind) -> Entry {
        Entry {
            name: name.as_bytes().into(),
            kind,
            meta: Meta::at(Timestamp::default(), perm, 1, 1),
            xattrs: Vec::new(),
        }
    }

    fn file(name: &str, perm: u16) -> Entry {
        let kind = Kind::File {
            size: 1,
            layout: Layout::Dense,
            data: Data::InTree { src: 0 },
        };
        entry(name, perm, kind)
    }

    fn dir(name: &str, perm: u16, children: Vec<Entry>) -> Entry {
        entry(name, perm, Kind::Dir { children })
    }

    #[test]
    fn names_the_first_entry_others_may_not_read() {
        let open = dir("", 0o755, vec![file("a", 0o644), dir("d", 0o755, vec![])]);
        assert_eq!(first_secret(&open, b"src"), None);
        let shadow = dir(
            "",
            0o755,
            vec![dir(
                "etc",
                0o755,
                vec![file("passwd", 0o644), file("shadow", 0o640)],
            )],
        );
        assert_eq!(
            first_secret(&shadow, b"src").unwrap(),
            "src/etc/shadow is not readable by others (mode 0640)"
        );
        let hidden = dir("", 0o755, vec![dir("home", 0o711, vec![file("x", 0o644)])]);
        assert!(first_secret(&hidden, b"src")
            .unwrap()
            .starts_with("src/home cannot be listed"));
        let root = dir("", 0o700, vec![]);
        assert!(first_secret(&root, b"/").unwrap().starts_with("/ cannot"));
        let mut trusted = file("t", 0o644);
        trusted
            .xattrs
            .push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
        let t = dir("", 0o755, vec![entry("l", 0o600, Kind::Fifo), trusted]);
        assert!(first_secret(&t, b"s")
            .unwrap()
            .contains("trusted.overlay.opaque"));
    }
}
