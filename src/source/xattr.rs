//! Reading an entry's extended attributes without following symlinks and without opening it:
//! `llistxattr`/`lgetxattr` on `/proc/self/fd/DIRFD/NAME`, a short path whatever the depth.

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs as rfs;
use rustix::io::Errno;

use super::Xattr;

/// The short path naming `name` inside the directory `dir` (or `dir` itself).
pub fn proc_path(dir: &OwnedFd, name: Option<&[u8]>) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n);
    }
    p
}

/// Every attribute of the file at `path`, sorted by name. A final symlink is followed only with
/// `follow` (used for the `/proc/self/fd/N` magic link naming the root directory itself).
/// A filesystem without xattr support yields none.
pub fn read(path: &[u8], follow: bool) -> std::io::Result<Vec<Xattr>> {
    let list_query = |p: &[u8]| {
        if follow {
            rfs::listxattr_query(p)
        } else {
            rfs::llistxattr_query(p)
        }
    };
    let list = |p: &[u8], b: &mut [u8]| {
        if follow {
            rfs::listxattr(p, b)
        } else {
            rfs::llistxattr(p, b)
        }
    };
    let get_query = |p: &[u8], n: &[u8]| {
        if follow {
            rfs::getxattr_query(p, n)
        } else {
            rfs::lgetxattr_query(p, n)
        }
    };
    let get = |p: &[u8], n: &[u8], b: &mut [u8]| {
        if follow {
            rfs::getxattr(p, n, b)
        } else {
            rfs::lgetxattr(p, n, b)
        }
    };
    let names = loop {
        let n = match list_query(path) {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match list(path, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                break buf;
            }
            Err(Errno::RANGE) => continue, // grew meanwhile
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let value = loop {
            let n = match get_query(path, name) {
                Ok(n) => n,
                Err(Errno::NODATA) => break None, // removed meanwhile
                Err(e) => return Err(e.into()),
            };
            let mut v = vec![0u8; n];
            match get(path, name, &mut v[..]) {
                Ok(len) => {
                    v.truncate(len);
                    break Some(v);
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}
