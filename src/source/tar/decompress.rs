//! Compression of an archive, recognised from its first bytes (never its name): gzip, xz,
//! bzip2, zstd or none; and the decoder for each. Concatenated streams (pigz, pbzip2, pixz,
//! `cat a.gz b.gz`) are read through to the end.

use std::io::{self, Read};

use anyhow::{bail, Result};

/// How many leading bytes [`detect`] looks at.
pub const MAGIC_LEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }
}

/// The compression the archive's first bytes (up to [`MAGIC_LEN`]) announce. Formats that are
/// recognised but not read (lzip, lzma, lz4, compress) are an error naming them.
pub fn detect(magic: &[u8]) -> Result<Compression> {
    let starts = |m: &[u8]| magic.starts_with(m);
    Ok(if starts(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if starts(b"BZh") {
        Compression::Bzip2
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if starts(b"LZIP") {
        bail!("lzip-compressed archives are not supported (use gzip, xz, bzip2 or zstd)")
    } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
        bail!("lz4-compressed archives are not supported (use gzip, xz, bzip2 or zstd)")
    } else if starts(&[0x1f, 0x9d]) || starts(&[0x1f, 0xa0]) {
        bail!("compress (.Z) archives are not supported (use gzip, xz, bzip2 or zstd)")
    } else if starts(&[0x5d, 0, 0]) {
        bail!("lzma-compressed archives are not supported (use gzip, xz, bzip2 or zstd)")
    } else {
        Compression::None
    })
}

/// A reader of the decompressed bytes of `r`; its errors say which decoder failed.
pub fn decoder(c: Compression, r: Box<dyn Read>) -> Result<Box<dyn Read>> {
    let inner: Box<dyn Read> = match c {
        Compression::None => return Ok(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    };
    Ok(Box::new(Named { inner, c }))
}

/// Prefixes a decoder's errors with its format (`gzip data: unexpected end of file`).
struct Named {
    inner: Box<dyn Read>,
    c: Compression,
}

impl Read for Named {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                e
            } else {
                io::Error::new(e.kind(), format!("{} data: {e}", self.c.name()))
            }
        })
    }
}

/// Reads up to [`MAGIC_LEN`] bytes from `r` (fewer only at its end) and returns them with a
/// reader that yields them again followed by the rest of `r`.
pub fn peek(mut r: Box<dyn Read>) -> io::Result<(Vec<u8>, Box<dyn Read>)> {
    let mut magic = Vec::with_capacity(MAGIC_LEN);
    (&mut r).take(MAGIC_LEN as u64).read_to_end(&mut magic)?;
    let again = io::Cursor::new(magic.clone()).chain(r);
    Ok((magic, Box::new(again)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tool(prog: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut c = std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        let mut stdin = c.stdin.take().unwrap();
        let data = input.to_vec();
        let w = std::thread::spawn(move || stdin.write_all(&data));
        let out = c.wait_with_output().unwrap();
        w.join().unwrap().unwrap();
        assert!(out.status.success(), "{prog} failed");
        out.stdout
    }

    fn roundtrip(compressed: Vec<u8>) -> (Compression, Vec<u8>) {
        let (magic, r) = peek(Box::new(io::Cursor::new(compressed))).unwrap();
        let c = detect(&magic).unwrap();
        let mut out = Vec::new();
        decoder(c, r).unwrap().read_to_end(&mut out).unwrap();
        (c, out)
    }

    #[test]
    fn every_compressor_is_detected_from_its_bytes_and_decoded() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for (prog, want) in [
            ("gzip", Compression::Gzip),
            ("xz", Compression::Xz),
            ("bzip2", Compression::Bzip2),
            ("zstd", Compression::Zstd),
        ] {
            let z = tool(prog, &["-c"], &plain);
            let (c, out) = roundtrip(z.clone());
            assert_eq!(c, want, "{prog}");
            assert!(out == plain, "{prog}: decoded bytes differ");
            // Two concatenated streams decode to both halves.
            let (_, out) = roundtrip([z.clone(), z].concat());
            assert!(
                out == [plain.clone(), plain.clone()].concat(),
                "{prog}: multi"
            );
        }
        let (c, out) = roundtrip(plain.clone());
        assert_eq!((c, out == plain), (Compression::None, true));
    }

    #[test]
    fn short_and_unsupported_inputs() {
        assert_eq!(detect(b"").unwrap(), Compression::None);
        assert_eq!(detect(b"\x1f").unwrap(), Compression::None);
        assert_eq!(detect(b"ustar").unwrap(), Compression::None);
        assert!(detect(b"LZIP\x01")
            .unwrap_err()
            .to_string()
            .contains("lzip"));
        assert!(detect(&[0x1f, 0x9d, 0x90]).is_err());
    }

    #[test]
    fn truncated_compressed_streams_are_errors() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for prog in ["gzip", "xz", "bzip2", "zstd"] {
            let z = tool(prog, &["-c"], &plain);
            let cut = z[..z.len() - 10].to_vec();
            let (magic, r) = peek(Box::new(io::Cursor::new(cut))).unwrap();
            let mut out = Vec::new();
            let res = decoder(detect(&magic).unwrap(), r)
                .unwrap()
                .read_to_end(&mut out);
            assert!(
                res.is_err(),
                "{prog}: a truncated stream read without error"
            );
        }
    }
}
