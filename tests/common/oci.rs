//! Container images for the tests, written by hand as the OCI image spec describes them: layer
//! tars (GNU tar of a tree, or members written here one by one: whiteouts, opaque markers, hard
//! links to lower layers), compressed or not, stored as `blobs/sha256/HEX` with their digests,
//! a config with the layers' diff_ids, a manifest, and an `index.json` naming one image or
//! several (one per platform, or through a nested index). Turned into an OCI archive with tar
//! and into a `docker save` archive with skopeo; unpacked for reference with umoci.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::tool_ok;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The ref name every test image is tagged with (umoci and skopeo need one).
pub const TAG: &str = "test";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A blob written to the layout: its descriptor.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Blob {
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    /// Where the blob lies below the layout directory.
    pub fn path(&self) -> String {
        format!("blobs/sha256/{}", self.digest.trim_start_matches("sha256:"))
    }
}

/// A layer: its blob and the digest of its uncompressed tar.
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Makes `dir` with its `oci-layout` file and an empty blob store.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Stores `bytes` as a blob of `media_type`.
    pub fn blob(&self, bytes: &[u8], media_type: &str) -> Blob {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let b = Blob {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
        };
        std::fs::write(self.dir.join(b.path()), bytes).unwrap();
        b
    }

    /// Stores the tar `tar` as a layer, compressed as asked.
    pub fn layer(&self, tar: &[u8], c: Compression) -> Layer {
        let (bytes, media_type) = match c {
            Compression::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                (
                    e.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(tar, 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        Layer {
            blob: self.blob(&bytes, media_type),
            diff_id: format!("sha256:{}", sha256_hex(tar)),
        }
    }

    /// Stores the tar file `tar` as a gzip-compressed layer, streamed (for big trees).
    pub fn layer_file(&self, tar: &Path) -> Layer {
        let tmp = self.dir.join("blobs/incoming");
        let out = HashingWriter::new(std::fs::File::create(&tmp).unwrap());
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        let mut uncompressed = HashingWriter::new(std::io::sink());
        let mut f = std::fs::File::open(tar).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            gz.write_all(&buf[..n]).unwrap();
            uncompressed.write_all(&buf[..n]).unwrap();
        }
        let out = gz.finish().unwrap();
        let blob = Blob {
            digest: format!("sha256:{}", out.hex()),
            size: out.n,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
        };
        std::fs::rename(&tmp, self.dir.join(blob.path())).unwrap();
        Layer {
            blob,
            diff_id: format!("sha256:{}", uncompressed.hex()),
        }
    }

    /// Stores a config and a manifest for `layers` (bottom first) on `platform` (OS/ARCH or
    /// OS/ARCH/VARIANT); returns the manifest's descriptor, with the platform.
    pub fn image(&self, layers: &[Layer], platform: &str) -> Value {
        let p: Vec<&str> = platform.split('/').collect();
        let mut config = json!({
            "architecture": p[1],
            "os": p[0],
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let mut plat = json!({"os": p[0], "architecture": p[1]});
        if let Some(v) = p.get(2) {
            config["variant"] = json!(v);
            plat["variant"] = json!(v);
        }
        let config = self.blob(config.to_string().as_bytes(), OCI_CONFIG);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
        });
        let m = self.blob(manifest.to_string().as_bytes(), OCI_MANIFEST);
        let mut d = m.descriptor();
        d["platform"] = plat;
        d
    }

    /// Writes `index.json` listing `manifests`, each tagged [`TAG`] (umoci and skopeo find the
    /// image by it; give one manifest when they are to read it).
    pub fn index(&self, manifests: &[Value]) {
        let tagged: Vec<Value> = manifests
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m["annotations"] = json!({"org.opencontainers.image.ref.name": TAG});
                m
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": tagged});
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// Stores an index blob listing `manifests` (a multi-platform image) and returns its
    /// descriptor, to be listed in `index.json`.
    pub fn nested_index(&self, manifests: &[Value]) -> Value {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.blob(index.to_string().as_bytes(), OCI_INDEX)
            .descriptor()
    }

    /// The layout as an OCI archive: a tar of the directory.
    pub fn archive(&self, out: &Path) {
        tool_ok(
            "tar",
            [
                OsStr::new("-C"),
                self.dir.as_os_str(),
                OsStr::new("-cf"),
                out.as_os_str(),
                OsStr::new("."),
            ],
        );
    }

    /// The image tagged [`TAG`] as a `docker save` archive, written by skopeo.
    pub fn docker_archive(&self, out: &Path) {
        let from = format!("oci:{}:{TAG}", self.dir.display());
        let to = format!("docker-archive:{}:example/{TAG}:latest", out.display());
        tool_ok("skopeo", ["--insecure-policy", "copy", "-q", &from, &to]);
    }

    /// `umoci unpack` of the image tagged [`TAG`] into `bundle` (as root: owners and devices
    /// as in the layers); returns its rootfs.
    pub fn umoci_unpack(&self, bundle: &Path) -> PathBuf {
        let image = format!("{}:{TAG}", self.dir.display());
        tool_ok(
            "umoci",
            [
                OsStr::new("unpack"),
                OsStr::new("--image"),
                OsStr::new(&image),
                bundle.as_os_str(),
            ],
        );
        bundle.join("rootfs")
    }
}

/// `path` gzip-compressed into `path.gz`.
pub fn gzip_file(path: &Path) -> PathBuf {
    let out = PathBuf::from(format!("{}.gz", path.display()));
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&out).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut e).unwrap();
    e.finish().unwrap();
    out
}

/// A writer that hashes (SHA-256) and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    h: Sha256,
    n: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            h: Sha256::new(),
            n: 0,
        }
    }

    fn hex(&self) -> String {
        self.h
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// [`tar_of_dir`] into the file `out`.
pub fn tar_file_of_dir(dir: &Path, out: &Path) {
    tool_ok(
        "tar",
        [
            OsStr::new("--xattrs"),
            OsStr::new("--xattrs-include=*"),
            OsStr::new("--acls"),
            OsStr::new("--format=posix"),
            OsStr::new("--numeric-owner"),
            OsStr::new("-C"),
            dir.as_os_str(),
            OsStr::new("-cf"),
            out.as_os_str(),
            OsStr::new("."),
        ],
    );
}

/// GNU tar's archive of the tree at `dir` as a layer is made (PAX, numeric owners, every xattr
/// and ACL; holes stored as zeros, as image builders store them).
pub fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--format=posix",
            "--numeric-owner",
            "-C",
        ])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .expect("run tar");
    let err = String::from_utf8_lossy(&out.stderr);
    let unexpected: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("socket ignored"))
        .collect();
    assert!(
        out.status.code() == Some(0) && unexpected.is_empty(),
        "tar of {}: {err}",
        dir.display()
    );
    out.stdout
}

/// A tar written member by member (what a layer's whiteouts and links need): ustar headers,
/// each after a PAX record giving its atime, as GNU tar's PAX archives have one; in 2099, so
/// that reading the unpacked files (umoci hashes them) never changes it under relatime.
#[derive(Default)]
pub struct TarWriter {
    bytes: Vec<u8>,
}

/// One member's metadata.
#[derive(Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

pub const META: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 1_600_000_000,
};

impl TarWriter {
    fn member(&mut self, path: &str, flag: u8, m: Meta, link: &str, data: &[u8]) -> &mut Self {
        let rec = format!(
            " atime={}\n",
            super::entries::ATIME_BASE as u64 + m.mtime % 1000
        );
        let mut len = rec.len() + 1;
        while len != rec.len() + len.to_string().len() {
            len = rec.len() + len.to_string().len();
        }
        let pax = format!("{len}{rec}");
        assert_eq!(pax.len(), len, "PAX record length");
        self.header("PaxHeaders/x", b'x', META, "", pax.as_bytes());
        self.header(path, flag, m, link, data)
    }

    fn header(&mut self, path: &str, flag: u8, m: Meta, link: &str, data: &[u8]) -> &mut Self {
        assert!(path.len() < 100 && link.len() < 100, "short names only");
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        let octal = |f: &mut [u8], v: u64| {
            let s = format!("{:0w$o}", v, w = f.len() - 1);
            f[..s.len()].copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], m.mode as u64);
        octal(&mut h[108..116], m.uid as u64);
        octal(&mut h[116..124], m.gid as u64);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], m.mtime);
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
        self
    }

    pub fn dir(&mut self, path: &str, m: Meta) -> &mut Self {
        self.member(path, b'5', m, "", b"")
    }

    pub fn file(&mut self, path: &str, m: Meta, data: &[u8]) -> &mut Self {
        self.member(path, b'0', m, "", data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.member(
            path,
            b'2',
            Meta {
                mode: 0o777,
                ..META
            },
            target,
            b"",
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.member(path, b'1', META, target, b"")
    }

    /// `DIR/.wh.NAME`: hides DIR/NAME of the layers below.
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let path = format!("{dir}.wh.{name}");
        self.member(&path, b'0', META, "", b"")
    }

    /// `DIR/.wh..wh..opq`: DIR hides what the layers below have in it.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let path = format!("{dir}.wh..wh..opq");
        self.member(&path, b'0', META, "", b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.bytes);
        v.resize(v.len() + 1024, 0);
        v
    }
}
