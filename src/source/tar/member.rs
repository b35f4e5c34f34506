//! One archive member as the tree builder takes it: its raw path, what it is, and its metadata
//! (permissions, numeric owner, times with nanoseconds, extended attributes with POSIX ACLs),
//! from the header and the PAX records that override it.

use anyhow::{bail, Context, Result};

use super::acl;
use super::header::Header;
use super::pax::Extended;
use crate::source::Timestamp;
use crate::source::{display, Data, Layout, Xattr};

pub struct Member {
    /// As in the archive (not normalised).
    pub path: Vec<u8>,
    pub kind: MemberKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    /// Sorted by name.
    pub xattrs: Vec<Xattr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    File {
        size: u64,
        layout: Layout,
        data: Data,
        /// Data bytes (holes excluded).
        bytes: u64,
    },
    Dir,
    Symlink(Vec<u8>),
    /// A hard link to the earlier member at this path.
    HardLink(Vec<u8>),
    CharDev(u32, u32),
    BlockDev(u32, u32),
    Fifo,
}

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// The member of header `h` with the extended records `ext` applied.
pub fn build(h: &Header, ext: &Extended, path: Vec<u8>, kind: MemberKind) -> Result<Member> {
    let id = |v: Option<u64>, header: Result<u64>, what: &str| -> Result<u32> {
        let v = v.map_or(header, Ok)?;
        u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .with_context(|| format!("{what} {v} does not fit 32 bits"))
    };
    let uid = id(ext.uid, h.uid(), "uid")?;
    let gid = id(ext.gid, h.gid(), "gid")?;
    let mtime = match ext.mtime {
        Some(t) => t,
        None => Timestamp {
            sec: h.mtime()?,
            nsec: 0,
        },
    };
    let (gnu_atime, gnu_ctime) = h.gnu_times()?;
    let or_header = |t: Option<Timestamp>, sec: i64| {
        t.unwrap_or(if sec != 0 {
            Timestamp { sec, nsec: 0 }
        } else {
            mtime
        })
    };
    let xattrs = xattrs(ext)?;
    Ok(Member {
        path,
        kind,
        perm: (h.mode()? & 0o7777) as u16,
        uid,
        gid,
        mtime,
        atime: or_header(ext.atime, gnu_atime),
        ctime: or_header(ext.ctime, gnu_ctime),
        xattrs,
    })
}

/// The `SCHILY.xattr.*` attributes plus the `SCHILY.acl.*` ACLs as their Linux xattrs (an ACL
/// that came as a binary `system.posix_acl_*` xattr too is taken from that), sorted by name.
fn xattrs(ext: &Extended) -> Result<Vec<Xattr>> {
    let mut out: Vec<Xattr> = Vec::with_capacity(ext.xattrs.len() + 2);
    for (name, value) in &ext.xattrs {
        if !storable(name) {
            bail!(
                "extended attribute '{}' cannot be stored on ext2/3/4",
                display(name)
            );
        }
        out.push((name.clone(), value.clone()));
    }
    for (text, name, access) in [
        (&ext.acl_access, ACL_ACCESS, true),
        (&ext.acl_default, ACL_DEFAULT, false),
    ] {
        let Some(text) = text else { continue };
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(v) = acl::to_xattr(text, access)
            .with_context(|| format!("SCHILY.acl.{}", if access { "access" } else { "default" }))?
        {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// The namespaces ext2/3/4 store (what a directory source can hold too).
fn storable(name: &[u8]) -> bool {
    [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
        || name == ACL_ACCESS
        || name == ACL_DEFAULT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(storable(b"user.x"));
        assert!(storable(b"security.capability"));
        assert!(storable(b"system.posix_acl_default"));
        assert!(!storable(b"user."));
        assert!(!storable(b"system.nfs4_acl"));
        assert!(!storable(b"other"));
    }

    #[test]
    fn acl_text_becomes_an_xattr_unless_given_as_binary() {
        let mut ext = Extended {
            acl_access: Some(b"user::rwx,user:5:r--,group::---,mask::r--,other::---".to_vec()),
            acl_default: Some(b"user::rwx,group::---,other::---".to_vec()),
            ..Extended::default()
        };
        let x = xattrs(&ext).unwrap();
        let names: Vec<&[u8]> = x.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [ACL_ACCESS, ACL_DEFAULT]);
        ext.xattrs = vec![(ACL_ACCESS.to_vec(), b"given".to_vec())];
        let x = xattrs(&ext).unwrap();
        assert_eq!(x[0], (ACL_ACCESS.to_vec(), b"given".to_vec()));
        ext.xattrs = vec![(b"system.nfs4_acl".to_vec(), vec![])];
        assert!(xattrs(&ext).unwrap_err().to_string().contains("nfs4"));
    }
}
