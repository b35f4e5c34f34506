//! Container images as a source: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/`), an OCI archive (a tar of one) or a `docker save` / `podman save` archive
//! (`manifest.json` and layer tars), told by their contents. The manifest for the platform
//! wanted is chosen ([`manifest`]), each blob checked against its digest before it is read
//! ([`store`]), and the layers (plain, gzip or zstd tars) read bottom first by the tar reader
//! into one tree with the OCI whiteouts, their files' bytes spooled (all-zero blocks left as
//! holes), as a tar stream is. Nothing is extracted to disk, so no privilege is needed.

pub mod manifest;
pub mod platform;
pub mod store;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use self::platform::Platform;
use self::store::{Hashing, Store};
use super::tar::{self, Layers};
use super::{Kind, Tree};

/// How images are read.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Where the spool file is made (TMPDIR).
    pub tmpdir: PathBuf,
    pub tar: tar::Options,
    /// `--platform`: which image of a multi-platform index.
    pub platform: Platform,
}

/// Whether `dir` is an OCI image layout (holds the files `oci-layout` and `index.json`).
pub fn is_layout(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

/// Reads the image in the OCI image layout `dir`. Errors start with the directory's name.
pub fn read_layout(dir: &Path, opts: &ImageOptions, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    let name = dir.display().to_string();
    let store = Store::Dir(dir.to_path_buf(), Default::default());
    let mut read = || {
        let image = manifest::oci(&store, &opts.platform)?;
        layers(&store, &image, name.clone(), opts, on_entry)
    };
    let mut tree = read().map_err(|e| anyhow::anyhow!("{name}: {e:#}"))?;
    if let Store::Dir(_, unreadable) = store {
        tree.unreadable = unreadable.into_inner();
    }
    Ok(tree)
}

/// When the archive read into `archive` (named `name`) is an OCI archive or a `docker save`
/// archive, the image in it; else `archive` itself.
pub fn from_archive(
    archive: Tree,
    name: &str,
    opts: &ImageOptions,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let has = |n: &[u8]| {
        archive
            .root
            .children()
            .iter()
            .any(|c| &*c.name == n && matches!(c.kind, Kind::File { .. }))
    };
    let oci = has(b"oci-layout") && has(b"index.json");
    if !oci && !has(b"manifest.json") {
        return Ok(archive);
    }
    let store = Store::Archive(&archive);
    let mut read = || {
        let image = if oci {
            manifest::oci(&store, &opts.platform)?
        } else {
            // A tree that merely has a manifest.json at its top is no image: only a list is.
            if !manifest::is_docker_list(&store) {
                return Ok(None);
            }
            manifest::docker(&store, &opts.platform)?
        };
        layers(&store, &image, name.to_string(), opts, on_entry).map(Some)
    };
    match read() {
        Ok(Some(tree)) => Ok(tree),
        Ok(None) => Ok(archive),
        Err(e) => Err(anyhow::anyhow!("{name}: {e:#}")),
    }
}

/// Reads the image's layers, bottom first, into one tree.
fn layers(
    store: &Store,
    image: &manifest::Image,
    name: String,
    opts: &ImageOptions,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let mut tree = Layers::new(&opts.tmpdir, opts.tar)?;
    let n = image.layers.len();
    for (i, blob) in image.layers.iter().enumerate() {
        let what = format!("layer {} of {n} ({})", i + 1, blob.name());
        let open = || {
            store
                .open(&blob.path)
                .with_context(|| format!("{what} is missing"))
        };
        if let Some(d) = &blob.digest {
            let (mut r, size) = open()?;
            d.check(&mut r, blob.size.unwrap_or(size), &what)?;
        }
        let (r, _) = open()?;
        let r = tar::decoded(r).with_context(|| what.clone())?;
        let r: Box<dyn std::io::Read> = match image.diff_ids.get(i) {
            Some(d) => Box::new(Hashing::new(r, d.clone(), what.clone())),
            None => r,
        };
        tree.add(r, on_entry).with_context(|| what.clone())?;
    }
    tree.finish(name)
}
