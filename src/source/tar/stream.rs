//! The archive as a sequence of members: reads header blocks, folds the extension records (GNU
//! long names `L`/`K`, PAX `x`/`g`, old GNU sparse extension blocks) into the member they
//! describe, and places each regular file's bytes: either where they already are in an
//! uncompressed archive file (no copy), or copied into the spool file at their logical offsets
//! (holes of sparse files, and runs of zero blocks, left as holes). Either way every file's
//! bytes are read once here, and its all-zero filesystem blocks become holes in its layout
//! ([`DataMap`]).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::header::{is_zero, padding, sparse_pairs, GnuSparse, Header, BLOCK};
use super::member::{self, Member, MemberKind};
use super::pax::{self, Extended};
use super::sparse;
use crate::source::zeros::DataMap;
use crate::source::{display, Data, Layout};

/// Largest extension record (long name, PAX header) accepted: far beyond any real path or
/// xattr set, small enough to hold in memory.
const MAX_EXTENSION: u64 = 8 << 20;
/// Largest member size accepted (a PAX `size` may say anything): what a file offset can hold,
/// so that skipping a member's data plus its padding cannot overflow.
const MAX_SIZE: u64 = i64::MAX as u64;
/// Files start in the spool on this boundary, so that their holes are the spool's holes (and
/// a filesystem block of theirs, at most this big, is one of the spool's).
const SPOOL_ALIGN: u64 = 4096;
const COPY_BUF: usize = 1 << 20;

/// Returned (as the error) by an in-place reader that met a sparse file: its data is not laid
/// out at logical offsets in the archive, so the archive must be read again into a spool.
#[derive(Debug)]
pub struct NeedSpool;

impl std::fmt::Display for NeedSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sparse file needs the archive copied into a spool file")
    }
}

impl std::error::Error for NeedSpool {}

enum Src {
    File(BufReader<File>),
    Stream(BufReader<Box<dyn Read>>),
}

/// Where regular files' bytes end up.
enum Dest {
    /// In the archive file itself, of `len` bytes.
    InPlace { len: u64 },
    /// Copied into `file` (in directory `dir`), whose used part ends at `end`.
    Spool { file: File, dir: PathBuf, end: u64 },
}

/// How a reader looks at file data.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The filesystem's block size: all-zero blocks of this size become holes.
    pub block: u32,
}

pub struct Reader {
    src: Src,
    dest: Dest,
    /// Bytes of (decompressed) archive consumed so far.
    pos: u64,
    global: Extended,
    /// The last member's path, for errors between members.
    last: Option<Vec<u8>>,
    buf: Vec<u8>,
    opts: Options,
}

impl Reader {
    /// Reads an uncompressed archive file, leaving file data where it is.
    pub fn in_place(file: File, opts: Options) -> io::Result<Reader> {
        let len = file.metadata()?.len();
        Ok(Reader::new(
            Src::File(BufReader::with_capacity(64 << 10, file)),
            Dest::InPlace { len },
            opts,
        ))
    }

    /// Reads a stream (decompressed already), copying file data into `spool` (made in `dir`)
    /// after its first `end` bytes (already used: another layer of an image).
    pub fn spooled(r: Box<dyn Read>, spool: File, dir: PathBuf, end: u64, opts: Options) -> Reader {
        Reader::new(
            Src::Stream(BufReader::with_capacity(256 << 10, r)),
            Dest::Spool {
                file: spool,
                dir,
                end,
            },
            opts,
        )
    }

    fn new(src: Src, dest: Dest, opts: Options) -> Reader {
        Reader {
            src,
            dest,
            pos: 0,
            global: Extended::default(),
            last: None,
            buf: Vec::new(),
            opts,
        }
    }

    /// After the end-of-archive marker: the file the tree's data lives in (the archive, or the
    /// spool sized to cover every file) and where its used part ends. A stream is read to its
    /// end first, so that a damaged compressed tail is still an error.
    pub fn finish(self) -> Result<(File, u64)> {
        match (self.src, self.dest) {
            (Src::File(r), Dest::InPlace { len }) => Ok((r.into_inner(), len)),
            (mut src, Dest::Spool { file, dir, end }) => {
                if let Src::Stream(r) = &mut src {
                    io::copy(r, &mut io::sink()).context("reading the end of the archive")?;
                }
                file.set_len(end)
                    .with_context(|| format!("{}: sizing the spool file", dir.display()))?;
                Ok((file, end))
            }
            _ => unreachable!("an in-place reader reads a file"),
        }
    }

    /// The next member, or None at the end-of-archive marker.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let start = self.pos;
            let block = self.block().map_err(|e| self.header_error(start, e))?;
            let Some(block) = block else {
                if start == 0 {
                    bail!("empty input, not a tar archive");
                }
                let e = anyhow::anyhow!("truncated: no end-of-archive marker");
                return Err(self.header_error(start, e));
            };
            if is_zero(&block) {
                if long_name.is_some() || long_link.is_some() || !local.is_empty() {
                    bail!("corrupt archive: an extended header at the end has no entry");
                }
                return Ok(None);
            }
            let h = Header::parse(&block).map_err(|e| self.header_error(start, e))?;
            let size = h.size().map_err(|e| self.header_error(start, e))?;
            let what = |t| format!("entry '{}': {t}", display(&h.path()));
            match h.typeflag() {
                b'L' => {
                    long_name = Some(trim_nul(
                        self.read_extension(size).context(what("GNU long name"))?,
                    ))
                }
                b'K' => {
                    long_link = Some(trim_nul(
                        self.read_extension(size).context(what("GNU long link"))?,
                    ))
                }
                b'x' | b'X' => {
                    let data = self.read_extension(size).context(what("PAX header"))?;
                    local.extend(pax::records(&data).with_context(|| what("PAX header"))?);
                }
                b'g' => {
                    let data = self
                        .read_extension(size)
                        .context(what("PAX global header"))?;
                    let mut recs =
                        pax::records(&data).with_context(|| what("PAX global header"))?;
                    // Per-file keywords make no sense for every member: ignored, as libarchive does.
                    recs.retain(|(k, _)| {
                        !matches!(&k[..], b"path" | b"linkpath" | b"size")
                            && !k.starts_with(b"GNU.sparse.")
                    });
                    self.global
                        .apply(&recs)
                        .with_context(|| what("PAX global header"))?;
                }
                b'V' => self
                    .skip(size + padding(size))
                    .with_context(|| what("volume label"))?,
                b'M' | b'N' => bail!(what(
                    "multi-volume or old GNU long-name records are not supported"
                )),
                _ => {
                    let m = self.member(&h, size, long_name, long_link, &local);
                    return m.map(Some);
                }
            }
        }
    }

    fn header_error(&self, at: u64, e: anyhow::Error) -> anyhow::Error {
        match &self.last {
            None if at == 0 => anyhow::anyhow!("not a tar archive ({e} at byte 0)"),
            None => anyhow::anyhow!("{e} at byte {at}"),
            Some(p) => anyhow::anyhow!("{e} at byte {at}, after entry '{}'", display(p)),
        }
    }

    /// Builds the member of header `h` (after its extension records) and places its data.
    fn member(
        &mut self,
        h: &Header,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Member> {
        let mut ext = self.global.clone();
        let applied = ext.apply(local);
        let mut path = ext.path.clone().or(long_name).unwrap_or_else(|| h.path());
        if let Some(n) = &ext.sparse.name {
            path = n.clone();
        }
        self.last = Some(path.clone());
        let res = applied.and_then(|()| {
            let link = ext
                .linkpath
                .clone()
                .or(long_link)
                .unwrap_or_else(|| h.link_name());
            let size = ext.size.unwrap_or(size);
            if size > MAX_SIZE {
                bail!("corrupt header (size {size} is beyond the largest file)");
            }
            let kind = self.kind(h, &path, link, size, &ext)?;
            member::build(h, &ext, path.clone(), kind)
        });
        res.with_context(|| format!("entry '{}'", display(&path)))
    }

    fn kind(
        &mut self,
        h: &Header,
        path: &[u8],
        link: Vec<u8>,
        size: u64,
        ext: &Extended,
    ) -> Result<MemberKind> {
        let skip_data = |r: &mut Self| r.skip(size + padding(size));
        Ok(match h.typeflag() {
            b'0' | 0 | b'7' if path.ends_with(b"/") => {
                skip_data(self)?;
                MemberKind::Dir
            }
            b'S' => {
                let GnuSparse {
                    mut map,
                    extended: mut more,
                    real_size: real,
                } = h.gnu_sparse()?;
                while more {
                    let b = self.block()?.context("truncated inside the sparse map")?;
                    map.extend(sparse_pairs(&b[..504], 21)?);
                    more = b[504] != 0;
                }
                self.sparse_file(map, ext.sparse.real_size.unwrap_or(real), size)?
            }
            b'1' => {
                skip_data(self)?;
                MemberKind::HardLink(link)
            }
            b'2' => {
                skip_data(self)?;
                MemberKind::Symlink(link)
            }
            t @ (b'3' | b'4') => {
                skip_data(self)?;
                let major = ext.dev_major.map_or_else(|| h.dev_major(), Ok)?;
                let minor = ext.dev_minor.map_or_else(|| h.dev_minor(), Ok)?;
                if major > 0xfff || minor > 0xf_ffff {
                    bail!("device number {major}:{minor} is beyond Linux's 12:20 bits");
                }
                let (major, minor) = (major as u32, minor as u32);
                if t == b'3' {
                    MemberKind::CharDev(major, minor)
                } else {
                    MemberKind::BlockDev(major, minor)
                }
            }
            b'5' | b'D' => {
                skip_data(self)?;
                MemberKind::Dir
            }
            b'6' => {
                skip_data(self)?;
                MemberKind::Fifo
            }
            // Regular files; POSIX says unknown types are extracted as regular files too.
            _ if ext.sparse.present() => {
                let real = ext
                    .sparse
                    .real_size
                    .context("sparse file without its real size")?;
                if ext.sparse.major == Some(1) {
                    let (map, used) = self.v1_map(size)?;
                    self.sparse_file(map, real, size - used)?
                } else {
                    let map = ext
                        .sparse
                        .map
                        .clone()
                        .context("sparse file without its map")?;
                    self.sparse_file(map, real, size)?
                }
            }
            _ => self.dense_file(size)?,
        })
    }

    /// Reads the PAX 1.0 sparse map at the start of the data; returns it and the blocks used.
    fn v1_map(&mut self, size: u64) -> Result<(sparse::Map, u64)> {
        let mut map = sparse::V1Map::default();
        let mut read = 0u64;
        loop {
            if read >= size.min(MAX_EXTENSION) {
                bail!("corrupt sparse map (longer than the data)");
            }
            let b = self.block()?.context("truncated inside the sparse map")?;
            read += BLOCK as u64;
            if let Some((map, _)) = map.feed(&b)? {
                if read > size {
                    bail!("corrupt sparse map (longer than the data)");
                }
                return Ok((map, read));
            }
        }
    }

    fn dense_file(&mut self, size: u64) -> Result<MemberKind> {
        let mut map = DataMap::new(self.opts.block, size);
        let offset = match &mut self.dest {
            Dest::InPlace { len } => {
                if self.pos + size > *len {
                    bail!("truncated: the archive ends inside this file's data");
                }
                let offset = self.pos;
                self.read_data(0, size, None, &mut map)?;
                offset
            }
            Dest::Spool { end, .. } => {
                let base = place(end, size)?;
                self.read_data(0, size, Some(base), &mut map)?;
                base
            }
        };
        self.skip(padding(size))?;
        Ok(file_kind(size, map.finish(), offset))
    }

    fn sparse_file(&mut self, map: Vec<(u64, u64)>, real: u64, stored: u64) -> Result<MemberKind> {
        let layout = sparse::layout(&map, real, stored)?;
        let Dest::Spool { end, .. } = &mut self.dest else {
            if layout == Layout::Dense {
                return self.dense_file(stored);
            }
            return Err(NeedSpool.into());
        };
        let base = place(end, real)?;
        let mut data = DataMap::new(self.opts.block, real);
        for &(off, len) in &map {
            self.read_data(off, len, Some(base + off), &mut data)?;
        }
        self.skip(padding(stored))?;
        Ok(file_kind(real, data.finish(), base))
    }

    /// Reads `n` bytes of the archive, the file's bytes from offset `at`, into `map`; with
    /// `spool`, writes them at that offset in the spool, leaving all-zero blocks unwritten.
    fn read_data(
        &mut self,
        mut at: u64,
        mut n: u64,
        mut spool: Option<u64>,
        map: &mut DataMap,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(COPY_BUF, 0);
        let res = (|| {
            while n > 0 {
                let want = n.min(COPY_BUF as u64) as usize;
                let got = self.read_full(&mut buf[..want])?;
                if got < want {
                    bail!("truncated: the archive ends inside this file's data");
                }
                let chunk = &buf[..want];
                match (spool, &self.dest) {
                    (Some(to), Dest::Spool { file, dir, .. }) => map
                        .feed(at, chunk, &mut |s, e| {
                            file.write_all_at(&chunk[s..e], to + s as u64)
                        })
                        .with_context(|| {
                            format!("writing to the spool file in {}", dir.display())
                        })?,
                    _ => map.feed(at, chunk, &mut |_, _| Ok(()))?,
                }
                at += want as u64;
                n -= want as u64;
                spool = spool.map(|s| s + want as u64);
            }
            Ok(())
        })();
        self.buf = buf;
        res
    }

    /// The data of an extension record, which must be small.
    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            bail!("{size} bytes, more than the {MAX_EXTENSION} accepted");
        }
        let mut v = vec![0u8; size as usize];
        if self.read_full(&mut v)? < v.len() {
            bail!("truncated: the archive ends inside this record");
        }
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next block; None at the end of the input (exactly at a block boundary).
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut b = [0u8; BLOCK];
        match self.read_full(&mut b)? {
            0 => Ok(None),
            BLOCK => Ok(Some(b)),
            _ => bail!("truncated: the archive ends inside a {BLOCK}-byte block"),
        }
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let r = match &mut self.src {
                Src::File(f) => f.read(&mut buf[n..]),
                Src::Stream(s) => s.read(&mut buf[n..]),
            };
            match r {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the archive"),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let skipped = match &mut self.src {
            // Past the end of the file (any n over i64::MAX is) is the truncation error below.
            Src::File(f) => match i64::try_from(n) {
                Ok(by) => {
                    f.seek_relative(by).context("reading the archive")?;
                    n
                }
                Err(_) => 0,
            },
            Src::Stream(s) => {
                io::copy(&mut s.take(n), &mut io::sink()).context("reading the archive")?
            }
        };
        self.pos += skipped;
        if skipped < n {
            bail!("truncated: the archive ends inside this entry's data");
        }
        Ok(())
    }
}

/// Reserves `len` bytes in the spool after `end` (aligned); returns where they start.
fn place(end: &mut u64, len: u64) -> Result<u64> {
    let Some((base, new_end)) = end
        .checked_next_multiple_of(SPOOL_ALIGN)
        .and_then(|b| Some((b, b.checked_add(len)?)))
    else {
        bail!("the files' sizes add up to more than 2^64 bytes");
    };
    *end = new_end;
    Ok(base)
}

/// The bytes before the first NUL (GNU long names are NUL-terminated).
fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

/// A regular file of `size` bytes laid out as `layout`, its bytes at `offset` in the spool.
fn file_kind(size: u64, layout: Layout, offset: u64) -> MemberKind {
    let bytes = layout.data_bytes(size);
    MemberKind::File {
        size,
        layout,
        data: Data::Spool { src: 0, offset },
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_stay_holes_in_the_spool() {
        let f = tempfile::tempfile_in("/var/tmp").unwrap();
        let mut data = vec![0u8; 5 * 4096];
        data[4096 + 7] = 1;
        data[4 * 4096] = 2;
        // After a first file of 100 bytes: this one starts at 4096 in the spool.
        let mut a = super::super::testutil::Ar::new();
        a.file("first", &[1u8; 100]).file("f", &data);
        let a = a.end();
        let r = Reader::spooled(
            Box::new(std::io::Cursor::new(a)),
            f.try_clone().unwrap(),
            "/var/tmp".into(),
            0,
            Options { block: 4096 },
        );
        let mut r = r;
        r.next_member().unwrap().unwrap();
        let m = r.next_member().unwrap().unwrap();
        let MemberKind::File {
            layout,
            data: Data::Spool { offset, .. },
            bytes,
            ..
        } = m.kind
        else {
            panic!()
        };
        assert_eq!(offset, 4096);
        assert_eq!(layout, Layout::Sparse(vec![(4096, 8192), (16384, 20480)]));
        assert_eq!(bytes, 8192);
        assert!(r.next_member().unwrap().is_none());
        let (f, end) = r.finish().unwrap();
        assert_eq!(end, 6 * 4096);
        let mut back = vec![0u8; 5 * 4096];
        f.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        use std::os::unix::fs::MetadataExt;
        assert!(f.metadata().unwrap().blocks() * 512 <= 3 * 4096);
    }
}
