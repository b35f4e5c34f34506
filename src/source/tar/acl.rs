//! POSIX ACLs from their text form (`SCHILY.acl.access` / `SCHILY.acl.default`, as written by
//! acl_to_text: `user::rwx,user:1234:r-x,group::r-x,mask::rwx,other::r--`, commas or newlines)
//! to the value of the Linux `system.posix_acl_access` / `system.posix_acl_default` xattr: a
//! version-2 header (u32 LE), then (tag u16, perm u16, id u32) entries sorted by tag then id.
//! Qualifiers are numeric ids, star's `user:NAME:rwx:ID` form, or names looked up in the host's
//! /etc/passwd and /etc/group (as tar extraction would).

use anyhow::{bail, Context, Result};

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// One parsed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AclEntry {
    tag: u16,
    id: u32,
    perm: u16,
}

/// The ACL's xattr value, or None for an access ACL that only repeats the mode (the kernel
/// stores no attribute for those). An empty text is no ACL.
pub fn to_xattr(text: &[u8], access: bool) -> Result<Option<Vec<u8>>> {
    let mut entries = parse(text)?;
    if entries.is_empty() {
        return Ok(None);
    }
    entries.sort();
    validate(&entries)?;
    if access && entries.len() == 3 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(4 + 8 * entries.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for e in &entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    Ok(Some(out))
}

fn parse(text: &[u8]) -> Result<Vec<AclEntry>> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        // Comments (`#effective:r--`) run to the end of the line.
        let line = match line.iter().position(|&b| b == b'#') {
            Some(i) => &line[..i],
            None => line,
        };
        for item in line.split(|&b| b == b',') {
            let item: Vec<u8> = item
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if item.is_empty() {
                continue;
            }
            out.push(
                entry(&item)
                    .with_context(|| format!("ACL entry {:?}", String::from_utf8_lossy(&item)))?,
            );
        }
    }
    Ok(out)
}

fn entry(item: &[u8]) -> Result<AclEntry> {
    let f: Vec<&[u8]> = item.split(|&b| b == b':').collect();
    let (tag, qual, perms, extra) = match f.as_slice() {
        [t, p] => (*t, &b""[..], *p, None),
        [t, q, p] => (*t, *q, *p, None),
        [t, q, p, id] => (*t, *q, *p, Some(*id)),
        _ => bail!("not TAG:QUALIFIER:PERMS"),
    };
    let perm = perms_of(perms)?;
    let (obj, named, db) = match tag {
        b"user" | b"u" => (USER_OBJ, USER, "/etc/passwd"),
        b"group" | b"g" => (GROUP_OBJ, GROUP, "/etc/group"),
        b"mask" | b"m" => (MASK, MASK, ""),
        b"other" | b"o" => (OTHER, OTHER, ""),
        _ => bail!("unknown tag"),
    };
    if qual.is_empty() {
        return Ok(AclEntry {
            tag: obj,
            id: UNDEFINED_ID,
            perm,
        });
    }
    if obj == MASK || obj == OTHER {
        bail!("a qualifier on a mask or other entry");
    }
    let id = match extra {
        Some(id) => number(id)?,
        None if qual.iter().all(u8::is_ascii_digit) => number(qual)?,
        None => lookup(db, qual)?,
    };
    Ok(AclEntry {
        tag: named,
        id,
        perm,
    })
}

fn perms_of(p: &[u8]) -> Result<u16> {
    let mut perm = 0;
    for &c in p {
        perm |= match c {
            b'r' => 4,
            b'w' => 2,
            b'x' => 1,
            b'-' => 0,
            _ => bail!("invalid permissions"),
        };
    }
    Ok(perm)
}

fn number(s: &[u8]) -> Result<u32> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&n| n != UNDEFINED_ID)
        .context("invalid id")
}

/// The id of `name` in an /etc/passwd-style file (NAME:x:ID:...).
fn lookup(db: &str, name: &[u8]) -> Result<u32> {
    let text = std::fs::read(db).unwrap_or_default();
    text.split(|&b| b == b'\n')
        .map(|l| l.split(|&b| b == b':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| number(f[2]).ok())
        .with_context(|| format!("no {} in {db}", String::from_utf8_lossy(name)))
}

/// The kernel's rules (posix_acl_valid): one of each *_OBJ and OTHER, at most one mask (needed
/// with named entries), no id twice.
fn validate(sorted: &[AclEntry]) -> Result<()> {
    let count = |t| sorted.iter().filter(|e| e.tag == t).count();
    for (t, name) in [
        (USER_OBJ, "user::"),
        (GROUP_OBJ, "group::"),
        (OTHER, "other::"),
    ] {
        if count(t) != 1 {
            bail!("invalid ACL: needs exactly one {name} entry");
        }
    }
    if count(MASK) > 1 {
        bail!("invalid ACL: more than one mask entry");
    }
    if count(MASK) == 0 && count(USER) + count(GROUP) > 0 {
        bail!("invalid ACL: named entries need a mask entry");
    }
    if sorted
        .windows(2)
        .any(|w| w[0].tag == w[1].tag && w[0].id == w[1].id)
    {
        bail!("invalid ACL: an id appears twice");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (t, p, i) in entries {
            v.extend(t.to_le_bytes());
            v.extend(p.to_le_bytes());
            v.extend(i.to_le_bytes());
        }
        v
    }

    #[test]
    fn text_forms_give_sorted_binary() {
        let want = le(&[
            (USER_OBJ, 6, UNDEFINED_ID),
            (USER, 7, 1234),
            (GROUP_OBJ, 4, UNDEFINED_ID),
            (GROUP, 5, 2345),
            (MASK, 7, UNDEFINED_ID),
            (OTHER, 4, UNDEFINED_ID),
        ]);
        let texts: [&[u8]; 3] = [
            b"user::rw-\nuser:1234:rwx\ngroup::r--\ngroup:2345:r-x\nmask::rwx\nother::r--\n",
            b"u::rw-,other::r--,mask::rwx,g:2345:r-x,group::r--,u:1234:rwx\t#effective:rwx\n",
            b"user::rw-,user:someone:rwx:1234,group::r--,group:x:r-x:2345,mask:rwx,other:r--",
        ];
        for t in texts {
            assert_eq!(to_xattr(t, true).unwrap(), Some(want.clone()), "{t:?}");
        }
    }

    #[test]
    fn minimal_access_acls_are_no_attribute_but_default_ones_are_kept() {
        let t = b"user::rwx,group::r-x,other::r-x";
        assert_eq!(to_xattr(t, true).unwrap(), None);
        assert!(to_xattr(t, false).unwrap().is_some());
        assert_eq!(to_xattr(b"", false).unwrap(), None);
    }

    #[test]
    fn invalid_acls_are_refused() {
        for t in [
            &b"user::rwx,user:5:rwx,group::r-x,other::---"[..], // no mask
            b"user::rwx,group::r-x",                            // no other
            b"user::rwz,group::r-x,other::---",
            b"user::rwx,user:5:r,user:5:w,group::r-x,mask::rwx,other::---",
            b"user::rwx,group::r-x,other:7:---",
            b"user::rwx,group::r-x,other::---,bogus::rwx",
            b"user::rwx,user:no-such-user-here:rwx,group::r-x,mask::rwx,other::---",
        ] {
            assert!(
                to_xattr(t, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(t)
            );
        }
    }

    /// The kernel's own encoding, read back with getfattr after setfacl, is what we produce.
    #[test]
    fn matches_setfacl_and_getfattr() {
        let dir = tempfile::Builder::new()
            .prefix("ldmk-acl-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let f = dir.path().join("f");
        std::fs::create_dir(&f).unwrap();
        let run = |args: &[&str]| {
            let o = std::process::Command::new(args[0])
                .args(&args[1..])
                .arg(&f)
                .output()
                .unwrap_or_else(|e| panic!("{}: {e} (install acl and attr)", args[0]));
            assert!(o.status.success(), "{args:?}: {o:?}");
            o.stdout
        };
        let access =
            "user::rwx,user:1234:rwx,user:7:r--,group::r-x,group:2345:-w-,mask::rwx,other::r-x";
        let default = "user::rwx,user:99:r-x,group::r-x,mask::r-x,other::---";
        run(&["setfacl", "-m", access]);
        run(&["setfacl", "-d", "-m", default]);
        let got = run(&["getfattr", "--only-values", "-n", "system.posix_acl_access"]);
        assert_eq!(to_xattr(access.as_bytes(), true).unwrap(), Some(got));
        let got = run(&[
            "getfattr",
            "--only-values",
            "-n",
            "system.posix_acl_default",
        ]);
        assert_eq!(to_xattr(default.as_bytes(), false).unwrap(), Some(got));
    }
}
