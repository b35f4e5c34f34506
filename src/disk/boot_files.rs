//! What `--efi` takes from the tree, found before anything is built: the boot loader
//! (systemd-boot from the tree, or a host file given with `--efi-loader`), the newest kernel in
//! /boot and its initrd (or `--kernel` and `--initrd`, paths inside the tree), and the
//! distribution's ID and name from os-release. A missing piece is one error saying what to
//! install in the tree.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::source::bytes::{file_bytes, FileBytes};
use crate::source::dirs::Dirs;
use crate::source::find::{lookup, Found};
use crate::source::{display, Entry, Kind, Tree};

/// Where systemd-boot installs its x86-64 binary.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Largest `--efi-loader` read (systemd-boot is about 140 KiB).
const MAX_LOADER: u64 = 64 << 20;
/// Largest os-release read.
const MAX_OS_RELEASE: u64 = 64 << 10;
/// Initrd names for a kernel version V in the kernel's directory: Debian and Ubuntu, Fedora and
/// Arch (dracut, mkinitcpio), SUSE.
const INITRD_NAMES: &[(&str, &str)] = &[
    ("initrd.img-", ""),
    ("initramfs-", ".img"),
    ("initrd-", ".img"),
    ("initrd-", ""),
];

/// `--efi`'s options.
#[derive(Debug, Clone, Default)]
pub struct EfiOptions {
    /// A host file to use as the boot loader instead of the tree's systemd-boot, read
    /// ([`read_host_loader`]).
    pub loader: Option<Loader>,
    /// The kernel's path inside the tree (default: the newest /boot/vmlinuz-VERSION).
    pub kernel: Option<PathBuf>,
    /// The initrd's path inside the tree (default: the kernel version's in its directory).
    pub initrd: Option<PathBuf>,
    /// Added to the entry's `root=PARTUUID=… rw`.
    pub cmdline: Option<String>,
}

/// A regular file of the tree: its entry (copied) and the resolved names from the root to it.
#[derive(Debug, Clone)]
pub struct TreeFile {
    pub entry: Entry,
    pub names: Vec<Vec<u8>>,
}

impl TreeFile {
    fn new(found: &Found, what: &str) -> Result<TreeFile> {
        if !matches!(found.entry.kind, Kind::File { .. }) {
            bail!(
                "{what} {}: not a regular file in the tree",
                display(&found.path())
            );
        }
        Ok(TreeFile {
            entry: found.entry.clone(),
            names: found.names.iter().map(|n| n.to_vec()).collect(),
        })
    }

    /// The path from the tree's root, with a leading `/`.
    pub fn path(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for n in &self.names {
            p.push(b'/');
            p.extend_from_slice(n);
        }
        p
    }

    pub fn size(&self) -> u64 {
        match self.entry.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        }
    }

    /// The sources' directories of the file's directory, walked to from the tree's root as
    /// populating walks them (each checked to be the one scanned).
    pub fn dirs(&self, tree: &Tree) -> Result<Dirs> {
        let mut dirs = Dirs::root(tree);
        let mut rel = Vec::new();
        let mut d = &tree.root;
        for name in &self.names[..self.names.len() - 1] {
            rel.push(b'/');
            rel.extend_from_slice(name);
            let ch = d.children();
            d = ch
                .binary_search_by(|c| (*c.name).cmp(name))
                .map(|i| &ch[i])
                .ok()
                .filter(|c| c.is_dir())
                .with_context(|| format!("{}: not a directory in the tree", display(&rel)))?;
            dirs = dirs.child(tree, d, &rel)?;
        }
        Ok(dirs)
    }

    /// Opens the file's bytes: by name in its source's directory, checked to be the file
    /// scanned, or in its source's spool.
    pub fn open<'a>(&self, tree: &'a Tree) -> Result<FileBytes<'a>> {
        let Kind::File { size, data, .. } = self.entry.kind else {
            bail!("{}: not a regular file", display(&self.path()));
        };
        let dirs = self.dirs(tree)?;
        file_bytes(&self.entry, data, size, &dirs, &tree.origins, &self.path())
    }

    /// The file's path as the user would name it on the host: its source's path (SOURCE, an
    /// `--add` SRC, or an archive's name and the member) and its path there.
    pub fn shown(&self, tree: &Tree) -> String {
        match self.entry.kind {
            Kind::File { data, .. } => tree.origins[data.src() as usize].show(&self.path()),
            _ => display(&self.path()),
        }
    }

    /// All of a small file's bytes (at most `max`).
    fn read_all(&self, tree: &Tree, max: u64) -> Result<Vec<u8>> {
        let size = self.size();
        if size > max {
            bail!("{}: larger than {max} bytes", self.shown(tree));
        }
        let bytes = self.open(tree)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = rustix::io::pread(bytes.fd(), &mut buf[done..], bytes.base() + done as u64)
                .map_err(std::io::Error::from)
                .with_context(|| format!("{}: reading", self.shown(tree)))?;
            if n == 0 {
                bail!("{}: shrank during the build", self.shown(tree));
            }
            done += n;
        }
        Ok(buf)
    }
}

/// The boot loader's bytes: from the tree, or a host file read once.
#[derive(Debug, Clone)]
pub enum Loader {
    Tree(TreeFile),
    Host {
        path: PathBuf,
        bytes: Arc<[u8]>,
        mtime: i64,
    },
}

/// Everything `--efi` takes from the tree.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub loader: Loader,
    pub kernel: TreeFile,
    pub initrd: TreeFile,
    /// The kernel's version (from its name `vmlinuz-VERSION`, or the name itself).
    pub version: String,
    /// os-release's ID and PRETTY_NAME, when the tree has one.
    pub os_id: Option<String>,
    pub pretty_name: Option<String>,
}

/// Finds the boot loader, kernel, initrd and os-release in `tree` (scanned from `source`).
pub fn find(tree: &Tree, opts: &EfiOptions) -> Result<BootFiles> {
    let loader = match &opts.loader {
        Some(l) => l.clone(),
        None => match lookup(tree, SYSTEMD_BOOT.as_bytes())? {
            Some(f) => Loader::Tree(TreeFile::new(&f, "the boot loader")?),
            None => bail!(
                "the tree has no {SYSTEMD_BOOT}: install systemd-boot in it, or give --efi-loader"
            ),
        },
    };
    let kernel = match &opts.kernel {
        Some(p) => in_tree(tree, p, "--kernel")?,
        None => newest_kernel(tree)?,
    };
    let kernel_name = String::from_utf8_lossy(kernel.names.last().expect("a file has a name"));
    let version = kernel_name
        .strip_prefix("vmlinuz-")
        .unwrap_or(&kernel_name)
        .to_string();
    let initrd = match &opts.initrd {
        Some(p) => in_tree(tree, p, "--initrd")?,
        None => initrd_for(tree, &kernel, &version)?,
    };
    let (os_id, pretty_name) = os_release(tree)?;
    Ok(BootFiles {
        loader,
        kernel,
        initrd,
        version,
        os_id,
        pretty_name,
    })
}

/// `--kernel` or `--initrd`: a regular file at that path in the tree.
fn in_tree(tree: &Tree, path: &Path, option: &str) -> Result<TreeFile> {
    let bytes = path.as_os_str().as_encoded_bytes();
    match lookup(tree, bytes)? {
        Some(f) => TreeFile::new(&f, option),
        None => bail!("{option} {}: no such file in the tree", path.display()),
    }
}

/// The newest `/boot/vmlinuz-VERSION` (versions compared as `sort -V` does).
fn newest_kernel(tree: &Tree) -> Result<TreeFile> {
    let mut best: Option<(String, TreeFile)> = None;
    if let Some(boot) = lookup(tree, b"/boot")?.filter(|b| b.entry.is_dir()) {
        for c in boot.entry.children() {
            let name = String::from_utf8_lossy(&c.name);
            let Some(v) = name.strip_prefix("vmlinuz-") else {
                continue;
            };
            let mut path = boot.path();
            path.extend_from_slice(b"/");
            path.extend_from_slice(&c.name);
            let Some(f) = lookup(tree, &path)? else {
                continue; // a dangling symlink
            };
            if !matches!(f.entry.kind, Kind::File { .. }) {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(b, _)| version_cmp(v, b) == Ordering::Greater)
            {
                best = Some((v.to_string(), TreeFile::new(&f, "the kernel")?));
            }
        }
    }
    match best {
        Some((_, f)) => Ok(f),
        None => bail!(
            "the tree has no kernel (no /boot/vmlinuz-VERSION): install one in it (Debian: \
             linux-image-amd64), or give --kernel"
        ),
    }
}

/// The initrd of kernel `version` in the kernel's directory.
fn initrd_for(tree: &Tree, kernel: &TreeFile, version: &str) -> Result<TreeFile> {
    let mut dir = Vec::new();
    for n in &kernel.names[..kernel.names.len() - 1] {
        dir.push(b'/');
        dir.extend_from_slice(n);
    }
    let names: Vec<String> = INITRD_NAMES
        .iter()
        .map(|(pre, post)| format!("{pre}{version}{post}"))
        .collect();
    for n in &names {
        let mut p = dir.clone();
        p.push(b'/');
        p.extend_from_slice(n.as_bytes());
        if let Some(f) = lookup(tree, &p)? {
            return TreeFile::new(&f, "the initrd");
        }
    }
    bail!(
        "the tree has {} but no initrd for it ({} in {}): install an initramfs generator in it \
         (initramfs-tools or dracut), or give --initrd",
        display(&kernel.path()),
        names.join(", "),
        display(if dir.is_empty() { b"/" } else { &dir })
    )
}

/// ID and PRETTY_NAME from /etc/os-release or /usr/lib/os-release, when present.
fn os_release(tree: &Tree) -> Result<(Option<String>, Option<String>)> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        let Some(f) = lookup(tree, p.as_bytes())? else {
            continue;
        };
        if !matches!(f.entry.kind, Kind::File { .. }) {
            continue;
        }
        let text = TreeFile::new(&f, p)?.read_all(tree, MAX_OS_RELEASE)?;
        let text = String::from_utf8_lossy(&text);
        return Ok((value(&text, "ID"), value(&text, "PRETTY_NAME")));
    }
    Ok((None, None))
}

/// The value of `key` in os-release text (shell-like `KEY=value`, quotes removed).
fn value(text: &str, key: &str) -> Option<String> {
    let line = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()?;
    let v = line.trim();
    let v = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q)?.strip_suffix(*q))
        .unwrap_or(v);
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Some(out)
}

/// `--efi-loader`: a host file, read once (so it cannot change under the build).
pub fn read_host_loader(path: &Path) -> Result<Loader> {
    use std::io::Read;
    let shown = || format!("--efi-loader {}", path.display());
    let f = std::fs::File::open(path).with_context(shown)?;
    let meta = f.metadata().with_context(shown)?;
    if !meta.is_file() {
        bail!("{}: not a regular file", shown());
    }
    let mut bytes = Vec::new();
    f.take(MAX_LOADER + 1)
        .read_to_end(&mut bytes)
        .with_context(shown)?;
    if bytes.len() as u64 > MAX_LOADER {
        bail!("{}: larger than {MAX_LOADER} bytes", shown());
    }
    if !bytes.starts_with(b"MZ") {
        bail!("{}: not an EFI (PE) executable", shown());
    }
    use std::os::unix::fs::MetadataExt;
    Ok(Loader::Host {
        path: path.to_path_buf(),
        bytes: bytes.into(),
        mtime: meta.mtime(),
    })
}

/// Compares versions as `sort -V` does, near enough: runs of digits by value, other runs
/// byte by byte.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        if a.is_empty() || b.is_empty() {
            return a.len().cmp(&b.len());
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (da, db) = (digits(a), digits(b));
        let ord = if da > 0 && db > 0 {
            let na = trim_zeros(&a[..da]);
            let nb = trim_zeros(&b[..db]);
            na.len().cmp(&nb.len()).then(na.cmp(nb))
        } else {
            a[0].cmp(&b[0])
        };
        if ord != Ordering::Equal {
            return ord;
        }
        let step = if da > 0 && db > 0 { (da, db) } else { (1, 1) };
        a = &a[step.0..];
        b = &b[step.1..];
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_sort_v() {
        let mut v = vec![
            "6.1.0-9-amd64",
            "6.1.0-50-amd64",
            "6.10.0-1-amd64",
            "5.19.0-1-amd64",
            "6.1.0-10-amd64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.19.0-1-amd64",
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.1.0-50-amd64",
                "6.10.0-1-amd64"
            ]
        );
        assert_eq!(version_cmp("6.1", "6.1.0"), Ordering::Less);
        assert_eq!(version_cmp("007", "7"), Ordering::Equal);
    }

    #[test]
    fn os_release_values() {
        let t = "NAME=\"Debian GNU/Linux\"\nID=debian\nPRETTY_NAME='Debian \\\"12\\\"'\n";
        assert_eq!(value(t, "ID").as_deref(), Some("debian"));
        assert_eq!(value(t, "PRETTY_NAME").as_deref(), Some("Debian \"12\""));
        assert_eq!(value(t, "VERSION_ID"), None);
        assert_eq!(value("IDX=1\n", "ID"), None);
    }
}
