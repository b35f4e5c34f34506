//! Opening a scanned entry again, never anything else: a directory by name in its (already
//! checked) parent, refused unless it has the device and inode the scan saw; a regular file first
//! as a path only (`O_PATH`: no driver's open, no FIFO handshake, no controlling terminal),
//! refused unless it is a regular file with everything the scan saw (device, inode, size,
//! modification and change time), and only then opened for reading through `/proc/self/fd` (the
//! inode already checked, not the name again) with `O_NOCTTY | O_NONBLOCK`. A FIFO or device
//! swapped in for a file is never opened, and a file rewritten in place is noticed even when its
//! modification time was put back: no user can set a change time.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use super::{Meta, Timestamp};

/// What a regular file was when scanned: enough to tell that a descriptor still is that file,
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl Stamp {
    /// A regular file of `size` bytes as the scan saw it.
    pub fn of_entry(m: &Meta, size: u64) -> Stamp {
        let (dev, ino) = m.host_id();
        Stamp {
            dev,
            ino,
            size,
            mtime: m.mtime,
            ctime: m.ctime,
        }
    }

    /// A file as `statx` sees it now.
    pub fn of(st: &rfs::Statx) -> Stamp {
        let t = |t: rfs::StatxTimestamp| Timestamp {
            sec: t.tv_sec,
            nsec: t.tv_nsec,
        };
        Stamp {
            dev: dev_of(st),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime: t(st.stx_mtime),
            ctime: t(st.stx_ctime),
        }
    }

    /// How `now` differs from this stamp, in words; None when it does not.
    pub fn what_changed(&self, now: &Stamp) -> Option<String> {
        if (now.dev, now.ino) != (self.dev, self.ino) {
            Some("it was replaced by another file".to_string())
        } else if now.size != self.size {
            Some(format!("it was {} bytes, now {}", self.size, now.size))
        } else if now.mtime != self.mtime {
            Some("it was modified".to_string())
        } else if now.ctime != self.ctime {
            Some("it was modified, or its owner, mode or links changed".to_string())
        } else {
            None
        }
    }
}

/// The device number the scanner uses (statx's major and minor, not the packed `st_dev`).
pub fn dev_of(st: &rfs::Statx) -> u64 {
    (st.stx_dev_major as u64) << 32 | st.stx_dev_minor as u64
}

/// `statx` of an open descriptor (a path-only one too).
pub fn stat(fd: impl AsFd) -> rustix::io::Result<rfs::Statx> {
    rfs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
}

/// Why an entry was not opened again.
#[derive(Debug)]
pub enum Refused {
    /// A system call failed.
    Os(Errno),
    /// It is no longer the entry scanned: how it differs.
    Changed(String),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Refused {
        Refused::Os(e)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Os(e) => write!(f, "{}", std::io::Error::from(*e)),
            Refused::Changed(why) => f.write_str(why),
        }
    }
}

/// Opens directory `name` of `parent` without following a symlink, refused unless it has
/// device and inode `id` (as scanned).
pub fn open_dir(parent: impl AsFd, name: &[u8], id: (u64, u64)) -> Result<OwnedFd, Refused> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = stat(&fd)?;
    if (dev_of(&st), st.stx_ino) != id {
        return Err(Refused::Changed(
            "it was replaced by another directory".to_string(),
        ));
    }
    Ok(fd)
}

/// Opens regular file `name` of `parent` for reading, refused unless it still is the file
/// `want` describes (see the module's doc: nothing but a regular file with the scanned device
/// and inode is ever opened). The checks are made on the path-only descriptor, which names the
/// inode then opened: a change after them is for the reader to notice, checking again after
/// reading.
pub fn open_file(parent: impl AsFd, name: &[u8], want: &Stamp) -> Result<OwnedFd, Refused> {
    let path = rfs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = stat(&path)?;
    let ft = FileType::from_raw_mode(st.stx_mode as u32);
    if ft != FileType::RegularFile {
        return Err(Refused::Changed(format!("it is now {}", kind_name(ft))));
    }
    if let Some(why) = want.what_changed(&Stamp::of(&st)) {
        return Err(Refused::Changed(why));
    }
    reopen(&path)
}

/// Opens for reading the inode a path-only descriptor names, through its link in
/// `/proc/self/fd` (which names the inode, not the path it was found by; the directory is
/// opened once).
fn reopen(path: &OwnedFd) -> Result<OwnedFd, Refused> {
    static FDS: OnceLock<Result<OwnedFd, Errno>> = OnceLock::new();
    let fds = FDS.get_or_init(|| {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rfs::open("/proc/self/fd", flags, Mode::empty())
    });
    let fds = fds.as_ref().map_err(|e| {
        Refused::Changed(format!(
            "/proc/self/fd: {} (is /proc mounted?)",
            std::io::Error::from(*e)
        ))
    })?;
    rfs::openat(
        fds,
        path.as_raw_fd().to_string().as_str(),
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Refused::Os)
}

/// A file type in words, for messages.
pub fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn stamp_of(path: &std::path::Path) -> Stamp {
        Stamp::of(
            &rfs::statx(
                rfs::CWD,
                path,
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::BASIC_STATS,
            )
            .unwrap(),
        )
    }

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn opens_the_file_scanned_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let want = stamp_of(&p);
        let root = dir_fd(dir.path());
        let f = std::fs::File::from(open_file(&root, b"f", &want).unwrap());
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 2).unwrap();
        assert_eq!(&buf, b"2345");
        // A FIFO in its place is refused without being opened (a blocking open would hang).
        std::fs::remove_file(&p).unwrap();
        rfs::mknodat(rfs::CWD, &p, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let e = open_file(&root, b"f", &want).unwrap_err().to_string();
        assert_eq!(e, "it is now a FIFO");
        // Another file by the same name.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"0123456789").unwrap();
        let e = open_file(&root, b"f", &want).unwrap_err().to_string();
        assert!(e.contains("replaced"), "{e}");
        // A symlink is not followed.
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert!(open_file(&root, b"f", &want).is_err());
    }

    #[test]
    fn a_rewrite_with_its_mtime_put_back_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let want = stamp_of(&p);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"X", 0).unwrap();
        let mtime = rfs::Timespec {
            tv_sec: want.mtime.sec,
            tv_nsec: want.mtime.nsec as _,
        };
        let times = rfs::Timestamps {
            last_access: mtime,
            last_modification: mtime,
        };
        rfs::utimensat(rfs::CWD, &p, &times, AtFlags::empty()).unwrap();
        let now = stamp_of(&p);
        assert_eq!((now.size, now.mtime), (want.size, want.mtime));
        let root = dir_fd(dir.path());
        let e = open_file(&root, b"f", &want).unwrap_err().to_string();
        assert!(e.contains("modified"), "{e}");
    }

    #[test]
    fn a_directory_must_be_the_one_scanned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let st = stamp_of(&dir.path().join("d"));
        let root = dir_fd(dir.path());
        open_dir(&root, b"d", (st.dev, st.ino)).unwrap();
        std::fs::rename(dir.path().join("d"), dir.path().join("old")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let e = open_dir(&root, b"d", (st.dev, st.ino))
            .unwrap_err()
            .to_string();
        assert!(e.contains("another directory"), "{e}");
    }
}
