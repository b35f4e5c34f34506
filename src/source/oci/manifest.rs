//! Choosing the image and its layers from an image's JSON: an OCI layout's `oci-layout` and
//! `index.json` (nested indexes and Docker manifest lists too) down to the manifest for the
//! platform wanted, or a `docker save` archive's `manifest.json`; then the config (its
//! `rootfs.diff_ids`) and the layer descriptors. Everything read is checked against its digest;
//! media types and JSON shapes that are not understood are errors, never guesses.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::platform::Platform;
use super::store::{Digest, Store};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Layer media types: OCI (plain, gzip, zstd; distributable or not) and Docker's.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
/// How deep indexes may nest.
const MAX_NESTING: usize = 4;

/// A file of the image to read: where it is, and what it must hash to (when that is known).
#[derive(Debug, Clone)]
pub struct Blob {
    pub path: String,
    pub digest: Option<Digest>,
    pub size: Option<u64>,
}

impl Blob {
    fn of(d: &Descriptor) -> Blob {
        Blob {
            path: d.digest.blob_path(),
            digest: Some(d.digest.clone()),
            size: Some(d.size),
        }
    }

    /// For messages: the digest, else the path.
    pub fn name(&self) -> String {
        match &self.digest {
            Some(d) => format!("blob {d}"),
            None => format!("'{}'", self.path),
        }
    }
}

/// The image chosen: its layers, bottom first, and the digests of their uncompressed bytes.
#[derive(Debug)]
pub struct Image {
    pub layers: Vec<Blob>,
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
}

/// An OCI content descriptor.
#[derive(Debug, Clone)]
struct Descriptor {
    media_type: Option<String>,
    digest: Digest,
    size: u64,
    platform: Option<Platform>,
    /// `org.opencontainers.image.ref.name`, for messages.
    ref_name: Option<String>,
}

fn descriptor(v: &Value) -> Result<Descriptor> {
    let digest = v["digest"]
        .as_str()
        .context("a descriptor without a digest")?;
    let digest = Digest::parse(digest)?;
    let size = v["size"]
        .as_u64()
        .with_context(|| format!("descriptor of {digest}: no size"))?;
    let platform = match &v["platform"] {
        Value::Null => None,
        p => Some(Platform {
            os: p["os"].as_str().unwrap_or_default().to_string(),
            arch: p["architecture"].as_str().unwrap_or_default().to_string(),
            variant: p["variant"].as_str().map(str::to_string),
        }),
    };
    Ok(Descriptor {
        media_type: v["mediaType"].as_str().map(str::to_string),
        digest,
        size,
        platform,
        ref_name: v["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(str::to_string),
    })
}

fn json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not valid JSON"))
}

/// The image for `want` in an OCI image layout (`oci-layout` and `index.json` at its root).
pub fn oci(store: &Store, want: &Platform) -> Result<Image> {
    let layout = json(&store.read_small("oci-layout", None)?, "oci-layout")?;
    match layout["imageLayoutVersion"].as_str() {
        Some(v) if v.starts_with("1.") => {}
        v => bail!("oci-layout: image layout version {v:?} is not supported (1.x)"),
    }
    let index = json(&store.read_small("index.json", None)?, "index.json")?;
    let mut found = Vec::new();
    manifests(store, &index, None, 0, &mut found).context("index.json")?;
    let mut matching: Vec<(Descriptor, Value, Platform)> = Vec::new();
    let mut seen = Vec::new();
    for (d, platform) in found {
        if platform.as_ref().is_some_and(|p| !want.matches(p)) {
            seen.push(platform.expect("checked").to_string());
            continue;
        }
        let what = format!("manifest {}", d.digest);
        let m = json(
            &store
                .read_small(&d.digest.blob_path(), Some(&d.digest))
                .context(what.clone())?,
            &what,
        )?;
        let config = config_of(store, &m).with_context(|| what.clone())?;
        let p = platform_of(&config);
        if !want.matches(&p) {
            seen.push(p.to_string());
            continue;
        }
        if !matching.iter().any(|(x, _, _)| x.digest == d.digest) {
            matching.push((d, m, p));
        }
    }
    let (d, m, platform) = match matching.len() {
        1 => matching.pop().expect("one"),
        0 if seen.is_empty() => bail!("index.json lists no image manifest"),
        0 => {
            seen.sort();
            seen.dedup();
            bail!(
                "no image for {want} (it has {}); choose one with --platform",
                seen.join(", ")
            )
        }
        n => {
            let names: Vec<String> = matching
                .iter()
                .map(|(d, _, _)| d.ref_name.clone().unwrap_or_else(|| d.digest.to_string()))
                .collect();
            bail!(
                "{n} different images for {want} ({}): keep one in index.json",
                names.join(", ")
            )
        }
    };
    let what = format!("manifest {}", d.digest);
    let config = config_of(store, &m).with_context(|| what.clone())?;
    let mut layers = Vec::new();
    for l in m["layers"]
        .as_array()
        .with_context(|| format!("{what}: no layers"))?
    {
        let l = descriptor(l).with_context(|| what.clone())?;
        let mt = l.media_type.as_deref().unwrap_or("");
        if !LAYER_TYPES.contains(&mt) {
            bail!(
                "{what}: layer {} has media type '{mt}', which is not a tar layer this reads",
                l.digest
            );
        }
        layers.push(Blob::of(&l));
    }
    let diff_ids = diff_ids(&config, layers.len()).with_context(|| what.clone())?;
    Ok(Image {
        layers,
        diff_ids,
        platform,
    })
}

/// Every image manifest `index` lists (through nested indexes), with the platform its
/// descriptor gives.
fn manifests(
    store: &Store,
    index: &Value,
    platform: Option<&Platform>,
    depth: usize,
    out: &mut Vec<(Descriptor, Option<Platform>)>,
) -> Result<()> {
    if depth > MAX_NESTING {
        bail!("indexes nested more than {MAX_NESTING} deep");
    }
    let list = index["manifests"].as_array().context("no manifests list")?;
    for v in list {
        let d = descriptor(v)?;
        let p = d.platform.clone().or_else(|| platform.cloned());
        match d.media_type.as_deref() {
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => out.push((d, p)),
            Some(OCI_INDEX | DOCKER_LIST) => {
                let what = format!("index {}", d.digest);
                let sub = json(
                    &store
                        .read_small(&d.digest.blob_path(), Some(&d.digest))
                        .context(what.clone())?,
                    &what,
                )?;
                manifests(store, &sub, p.as_ref(), depth + 1, out).context(what)?;
            }
            // Anything else (signatures, attestations, other artifacts) is no image.
            _ => {}
        }
    }
    Ok(())
}

/// The config a manifest names, read and checked.
fn config_of(store: &Store, manifest: &Value) -> Result<Value> {
    match manifest["schemaVersion"].as_u64() {
        Some(2) => {}
        v => bail!("schema version {v:?} is not supported (2)"),
    }
    let d = descriptor(&manifest["config"]).context("its config")?;
    let what = format!("config {}", d.digest);
    if store_size(store, &d.digest.blob_path())? != d.size {
        bail!(
            "{what} is not {} bytes as its descriptor says: corrupt",
            d.size
        );
    }
    json(
        &store
            .read_small(&d.digest.blob_path(), Some(&d.digest))
            .context(what.clone())?,
        &what,
    )
}

fn store_size(store: &Store, path: &str) -> Result<u64> {
    Ok(store.open(path)?.1)
}

/// The platform a config describes.
fn platform_of(config: &Value) -> Platform {
    Platform {
        os: config["os"].as_str().unwrap_or("?").to_string(),
        arch: config["architecture"].as_str().unwrap_or("?").to_string(),
        variant: config["variant"].as_str().map(str::to_string),
    }
}

/// The config's `rootfs.diff_ids`, one per layer.
fn diff_ids(config: &Value, layers: usize) -> Result<Vec<Digest>> {
    let ids = config["rootfs"]["diff_ids"]
        .as_array()
        .context("config: no rootfs.diff_ids")?;
    if ids.len() != layers {
        bail!("config: {} diff_ids for {layers} layers", ids.len());
    }
    ids.iter()
        .map(|v| Digest::parse(v.as_str().context("config: a diff_id is not a string")?))
        .collect()
}

/// The image for `want` in a `docker save` (or `podman save`) archive: `manifest.json`, a list
/// of images each with its config file and layer files. Files named by digest (`blobs/sha256/…`,
/// or a config `HEX.json`) are checked against it; every layer against the config's diff_ids.
pub fn docker(store: &Store, want: &Platform) -> Result<Image> {
    let list = json(&store.read_small("manifest.json", None)?, "manifest.json")?;
    let list = list.as_array().context("manifest.json is not a list")?;
    let mut matching = Vec::new();
    let mut seen = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let what = format!("manifest.json, image {}", i + 1);
        let config_path = m["Config"]
            .as_str()
            .with_context(|| format!("{what}: no Config"))?;
        let config = Blob {
            path: config_path.to_string(),
            digest: digest_in_name(config_path),
            size: None,
        };
        let config = json(
            &store
                .read_small(&config.path, config.digest.as_ref())
                .with_context(|| format!("{what}: {}", config.name()))?,
            config_path,
        )?;
        let platform = platform_of(&config);
        if !want.matches(&platform) {
            seen.push(platform.to_string());
            continue;
        }
        let paths = m["Layers"]
            .as_array()
            .with_context(|| format!("{what}: no Layers"))?;
        let mut layers = Vec::new();
        for p in paths {
            let p = p
                .as_str()
                .with_context(|| format!("{what}: a layer is not a path"))?;
            layers.push(Blob {
                path: p.to_string(),
                digest: digest_in_name(p),
                size: None,
            });
        }
        let diff_ids = diff_ids(&config, layers.len()).with_context(|| what.clone())?;
        let tags = m["RepoTags"].as_array().map(|t| {
            t.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        });
        matching.push((
            Image {
                layers,
                diff_ids,
                platform,
            },
            tags.unwrap_or_else(|| what.clone()),
        ));
    }
    match matching.len() {
        1 => Ok(matching.pop().expect("one").0),
        0 if seen.is_empty() => bail!("manifest.json lists no image"),
        0 => bail!(
            "no image for {want} (it has {}); choose one with --platform",
            seen.join(", ")
        ),
        n => {
            let names: Vec<String> = matching.into_iter().map(|(_, t)| t).collect();
            bail!(
                "{n} images for {want} ({}): save one image only",
                names.join("; ")
            )
        }
    }
}

/// Whether the store's `manifest.json` is a `docker save` image list (a non-empty list of
/// objects with a `Config`), not any file that happens to have that name.
pub fn is_docker_list(store: &Store) -> bool {
    let Ok(bytes) = store.read_small("manifest.json", None) else {
        return false;
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Array(a)) => !a.is_empty() && a.iter().all(|m| m["Config"].is_string()),
        _ => false,
    }
}

/// The digest a file's name gives: `blobs/ALG/HEX`, or `HEX.json` (a config in the old format).
fn digest_in_name(path: &str) -> Option<Digest> {
    if let Some(rest) = path.strip_prefix("blobs/") {
        let (alg, hex) = rest.split_once('/')?;
        return Digest::parse(&format!("{alg}:{hex}")).ok();
    }
    let hex = path.strip_suffix(".json")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_in_file_names() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{hex}")).unwrap().hex,
            hex
        );
        assert_eq!(
            digest_in_name(&format!("{hex}.json")).unwrap().algorithm,
            "sha256"
        );
        assert!(digest_in_name(&format!("{hex}/layer.tar")).is_none());
        assert!(digest_in_name("blobs/sha256/../x").is_none());
    }
}
