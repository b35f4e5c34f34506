//! Entry-by-entry comparison of a source tree with a mounted image. Walks both trees in step with
//! directory file descriptors (names as bytes; paths longer than PATH_MAX work) and reports every
//! difference as a human-readable line: entry sets, type, all 12 mode bits, uid, gid, mtime and atime
//! with nanoseconds, size, content, holes, symlink target, rdev, link count, hard-link groups, every
//! xattr (user, trusted, security, system.posix_acl_*), and the root directory's own metadata.
//! ctime is not compared (it cannot be set on the source).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    fstat, lgetxattr, llistxattr, openat, readlinkat, statat, AtFlags, Dir, FileType, Mode, OFlags,
    Stat, CWD,
};

/// Compares `src` with `mnt` and returns every difference found (empty = identical).
pub fn compare_trees(src: &Path, mnt: &Path) -> Vec<String> {
    let mut w = Walker::default();
    let s = open_dir(CWD, src.as_os_str().as_encoded_bytes()).expect("open source root");
    let m = open_dir(CWD, mnt.as_os_str().as_encoded_bytes()).expect("open mount root");
    let (ss, ms) = (fstat(&s).unwrap(), fstat(&m).unwrap());
    w.compare_meta(b"/", &ss, &ms, true);
    // "N/." names the directory itself; plain "N" would be the /proc magic link (l*xattr).
    w.compare_xattrs(b"/", &proc_path(&s, Some(b".")), &proc_path(&m, Some(b".")));
    w.walk(&s, &m, b"", true);
    w.compare_link_groups();
    w.diffs
}

#[derive(Default)]
struct Walker {
    diffs: Vec<String>,
    src_links: HashMap<(u64, u64), BTreeSet<Vec<u8>>>,
    mnt_links: HashMap<u64, BTreeSet<Vec<u8>>>,
}

/// Shows a byte path readably; very long paths are shortened in the middle.
pub fn show(rel: &[u8]) -> String {
    let s = rel.escape_ascii().to_string();
    if s.len() > 240 {
        format!(
            "{}…({} bytes)…{}",
            &s[..100],
            rel.len(),
            &s[s.len() - 100..]
        )
    } else {
        s
    }
}

fn open_dir(at: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    let fl = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    openat(at, name, fl | OFlags::NOATIME, Mode::empty())
        .or_else(|_| openat(at, name, fl, Mode::empty()))
}

/// `/proc/self/fd/N/name`: a short path to an entry of the directory open as `dir`, usable with the
/// path-based (l)xattr calls whatever the entry's real path length.
fn proc_path(dir: &OwnedFd, name: Option<&[u8]>) -> Vec<u8> {
    let mut v = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        v.push(b'/');
        v.extend_from_slice(n);
    }
    v
}

fn names(dir: &OwnedFd) -> BTreeSet<Vec<u8>> {
    Dir::read_from(dir)
        .expect("readdir")
        .map(|e| e.expect("dirent").file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect()
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "char device",
        FileType::BlockDevice => "block device",
        _ => "unknown",
    }
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = rel.to_vec();
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

fn xattrs(path: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut list = vec![0u8; 1 << 16];
    let n = llistxattr(path, &mut list[..]).map_err(|e| format!("listxattr: {e}"))?;
    let mut out = BTreeMap::new();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 1 << 16];
        let len = lgetxattr(path, name, &mut val[..])
            .map_err(|e| format!("getxattr {}: {e}", show(name)))?;
        val.truncate(len);
        out.insert(name.to_vec(), val);
    }
    Ok(out)
}

fn show_val(v: &[u8]) -> String {
    if v.len() > 64 {
        format!("{} bytes ({}…)", v.len(), v[..32].escape_ascii())
    } else {
        format!("{:?}", v.escape_ascii().to_string())
    }
}

impl Walker {
    fn diff(&mut self, rel: &[u8], what: String) {
        let p = if rel.is_empty() {
            "/".to_string()
        } else {
            show(rel)
        };
        self.diffs.push(format!("{p}: {what}"));
    }

    fn walk(&mut self, s: &OwnedFd, m: &OwnedFd, rel: &[u8], is_root: bool) {
        let sn = names(s);
        let mut mn = names(m);
        if is_root && !sn.contains(&b"lost+found"[..]) {
            mn.remove(&b"lost+found"[..]);
        }
        // Hard-link groups are recorded over every name of each side, matched or not.
        for n in &sn {
            if let Ok(st) = statat(s, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory && st.st_nlink > 1 {
                    self.src_links
                        .entry((st.st_dev, st.st_ino))
                        .or_default()
                        .insert(join(rel, n));
                }
            }
        }
        for n in &mn {
            if let Ok(st) = statat(m, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory && st.st_nlink > 1 {
                    self.mnt_links
                        .entry(st.st_ino)
                        .or_default()
                        .insert(join(rel, n));
                }
            }
        }
        for n in sn.difference(&mn) {
            self.diff(&join(rel, n), "missing from the image".into());
        }
        for n in mn.difference(&sn) {
            self.diff(&join(rel, n), "in the image but not in the source".into());
        }
        for n in sn.intersection(&mn) {
            self.entry(s, m, rel, n);
        }
    }

    fn entry(&mut self, s: &OwnedFd, m: &OwnedFd, rel: &[u8], name: &[u8]) {
        let path = join(rel, name);
        let (ss, ms) = match (
            statat(s, name, AtFlags::SYMLINK_NOFOLLOW),
            statat(m, name, AtFlags::SYMLINK_NOFOLLOW),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => return self.diff(&path, format!("stat failed: source {a:?}, image {b:?}")),
        };
        let (st, mt) = (
            FileType::from_raw_mode(ss.st_mode),
            FileType::from_raw_mode(ms.st_mode),
        );
        if st != mt {
            return self.diff(
                &path,
                format!(
                    "type {} in source, {} in image",
                    type_name(st),
                    type_name(mt)
                ),
            );
        }
        self.compare_meta(&path, &ss, &ms, false);
        self.compare_xattrs(&path, &proc_path(s, Some(name)), &proc_path(m, Some(name)));
        match st {
            FileType::Directory => match (open_dir(s.as_fd(), name), open_dir(m.as_fd(), name)) {
                (Ok(sd), Ok(md)) => self.walk(&sd, &md, &path, false),
                (a, b) => self.diff(
                    &path,
                    format!("cannot open directory: source {a:?}, image {b:?}"),
                ),
            },
            FileType::Symlink => {
                let a = readlinkat(s, name, Vec::new()).map(|c| c.into_bytes());
                let b = readlinkat(m, name, Vec::new()).map(|c| c.into_bytes());
                if a != b {
                    let f = |r: &rustix::io::Result<Vec<u8>>| match r {
                        Ok(v) => show(v),
                        Err(e) => format!("error {e}"),
                    };
                    self.diff(
                        &path,
                        format!("symlink target {} in source, {} in image", f(&a), f(&b)),
                    );
                }
            }
            FileType::RegularFile => self.compare_content(s, m, &path, name, &ss, &ms),
            FileType::CharacterDevice | FileType::BlockDevice if ss.st_rdev != ms.st_rdev => {
                let (a, b) = (ss.st_rdev, ms.st_rdev);
                let f = |d| format!("{}:{}", rustix::fs::major(d), rustix::fs::minor(d));
                self.diff(&path, format!("rdev {} in source, {} in image", f(a), f(b)));
            }
            _ => {}
        }
    }

    fn compare_meta(&mut self, path: &[u8], s: &Stat, m: &Stat, is_root: bool) {
        let mut d = Vec::new();
        if s.st_mode & 0o7777 != m.st_mode & 0o7777 {
            d.push(format!(
                "mode {:04o} in source, {:04o} in image",
                s.st_mode & 0o7777,
                m.st_mode & 0o7777
            ));
        }
        if s.st_uid != m.st_uid {
            d.push(format!("uid {} in source, {} in image", s.st_uid, m.st_uid));
        }
        if s.st_gid != m.st_gid {
            d.push(format!("gid {} in source, {} in image", s.st_gid, m.st_gid));
        }
        let (sm, mm) = ((s.st_mtime, s.st_mtime_nsec), (m.st_mtime, m.st_mtime_nsec));
        if sm != mm {
            d.push(format!(
                "mtime {}.{:09} in source, {}.{:09} in image",
                sm.0, sm.1, mm.0, mm.1
            ));
        }
        let (sa, ma) = ((s.st_atime, s.st_atime_nsec), (m.st_atime, m.st_atime_nsec));
        if sa != ma {
            d.push(format!(
                "atime {}.{:09} in source, {}.{:09} in image",
                sa.0, sa.1, ma.0, ma.1
            ));
        }
        let is_dir = FileType::from_raw_mode(s.st_mode) == FileType::Directory;
        if !is_dir && !is_root {
            if s.st_size != m.st_size {
                d.push(format!(
                    "size {} in source, {} in image",
                    s.st_size, m.st_size
                ));
            }
            if s.st_nlink != m.st_nlink {
                d.push(format!(
                    "link count {} in source, {} in image",
                    s.st_nlink, m.st_nlink
                ));
            }
        }
        for x in d {
            self.diff(path, x);
        }
    }

    fn compare_xattrs(&mut self, path: &[u8], sp: &[u8], mp: &[u8]) {
        let (sx, mx) = match (xattrs(sp), xattrs(mp)) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                return self.diff(
                    path,
                    format!("xattrs unreadable: source {a:?}, image {b:?}"),
                )
            }
        };
        for (k, v) in &sx {
            match mx.get(k) {
                None => self.diff(path, format!("xattr {} missing from the image", show(k))),
                Some(w) if w != v => self.diff(
                    path,
                    format!(
                        "xattr {} is {} in source, {} in image",
                        show(k),
                        show_val(v),
                        show_val(w)
                    ),
                ),
                _ => {}
            }
        }
        for k in mx.keys().filter(|k| !sx.contains_key(*k)) {
            self.diff(
                path,
                format!("xattr {} in the image but not in the source", show(k)),
            );
        }
    }

    fn compare_content(
        &mut self,
        s: &OwnedFd,
        m: &OwnedFd,
        path: &[u8],
        name: &[u8],
        ss: &Stat,
        ms: &Stat,
    ) {
        // Holes stay holes: a sparse source file must not be (nearly) fully allocated in the image.
        let (sa, ma) = (ss.st_blocks as u64 * 512, ms.st_blocks as u64 * 512);
        let size = ss.st_size as u64;
        if sa + (64 << 10) < size && ma > sa + (1 << 20) {
            self.diff(
                path,
                format!(
                    "holes filled: {sa} bytes allocated in source, {ma} in image (size {size})"
                ),
            );
        }
        let open = |d: &OwnedFd| {
            let fl = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            openat(d, name, fl | OFlags::NOATIME, Mode::empty())
                .or_else(|_| openat(d, name, fl, Mode::empty()))
                .map(File::from)
        };
        let (mut a, mut b) = match (open(s), open(m)) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => return self.diff(path, format!("cannot open: source {a:?}, image {b:?}")),
        };
        let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut off = 0u64;
        loop {
            let na = read_full(&mut a, &mut ba);
            let nb = read_full(&mut b, &mut bb);
            let (na, nb) = match (na, nb) {
                (Ok(x), Ok(y)) => (x, y),
                (x, y) => {
                    return self.diff(
                        path,
                        format!("read error at {off}: source {x:?}, image {y:?}"),
                    )
                }
            };
            let n = na.min(nb);
            if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
                return self.diff(path, format!("content differs at byte {}", off + i as u64));
            }
            if na != nb {
                return self.diff(
                    path,
                    format!("content length differs after byte {}", off + n as u64),
                );
            }
            if na == 0 {
                break;
            }
            off += na as u64;
        }
    }

    fn compare_link_groups(&mut self) {
        let sg: BTreeSet<BTreeSet<Vec<u8>>> = self.src_links.values().cloned().collect();
        let mg: BTreeSet<BTreeSet<Vec<u8>>> = self.mnt_links.values().cloned().collect();
        let fmt = |g: &BTreeSet<Vec<u8>>| {
            let v: Vec<String> = g.iter().take(5).map(|p| show(p)).collect();
            format!(
                "{{{}{}}} ({} names)",
                v.join(", "),
                if g.len() > 5 { ", …" } else { "" },
                g.len()
            )
        };
        let mut d = Vec::new();
        for g in sg.difference(&mg) {
            d.push(format!(
                "hard-link group {} of the source is not one inode in the image",
                fmt(g)
            ));
        }
        for g in mg.difference(&sg) {
            d.push(format!(
                "hard-link group {} of the image is not one inode in the source",
                fmt(g)
            ));
        }
        for x in d {
            self.diff(b"(hard links)", x);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
