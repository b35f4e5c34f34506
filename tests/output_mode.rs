//! OUTPUT grants no more than the tree (hole 6 of issue 9): an image holds every byte of every
//! file, so when any entry of the tree is not readable by others — a file without read
//! permission for others such as /etc/shadow, a directory others may not list or enter, the
//! archive itself — OUTPUT is created 0600 (less the umask), from the start, and `-v` names one
//! such entry; a replaced OUTPUT loses its group and other permissions. The same for what an
//! `--add` brings: a secret file, an archive others may not read, a directory they may not
//! enter (whose own mode the merged tree does not keep); and for a blob of an OCI image layout.
//! A tree everyone may read still gives 0644 (under umask 022).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Runs the binary under umask 022 (whatever the test runner's), with `args`.
fn run_umask_022(args: &[&Path]) -> Run {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\"", BIN]);
    run_cmd_timeout(cmd, args, Duration::from_secs(300))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small /etc with passwd (0644) and shadow (0640), in a fresh temp dir.
fn etc_tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(src.join("etc/shadow"), b"root:$6$secret:19000::::::\n").unwrap();
    chmod(&src.join("etc/passwd"), 0o644);
    chmod(&src.join("etc/shadow"), 0o640);
    chmod(&src, 0o755);
    chmod(&src.join("etc"), 0o755);
    (tmp, src)
}

#[test]
fn a_file_others_may_not_read_makes_output_0600_and_v_says_which() {
    let (tmp, src) = etc_tree();
    let img = tmp.path().join("disk.img");
    let run = run_umask_022(&[Path::new("-v"), &src, &img]);
    run.assert_ok();
    assert_eq!(mode(&img), 0o600, "{}", run.describe());
    let shadow = format!("{}/etc/shadow", src.display());
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&shadow) && l.contains("0640") && l.contains("owner only")),
        "-v does not say why\n{}",
        run.describe()
    );
    // The same tree with shadow readable by all: an ordinary 0644 file.
    chmod(&src.join("etc/shadow"), 0o644);
    let open = tmp.path().join("open.img");
    run_umask_022(&[&src, &open]).assert_ok();
    assert_eq!(mode(&open), 0o644);
}

#[test]
fn a_directory_others_may_not_enter_makes_output_0600() {
    let (tmp, src) = etc_tree();
    chmod(&src.join("etc/shadow"), 0o644);
    std::fs::create_dir(src.join("root")).unwrap();
    std::fs::write(src.join("root/.bash_history"), b"export TOKEN=...\n").unwrap();
    chmod(&src.join("root/.bash_history"), 0o644);
    chmod(&src.join("root"), 0o700);
    let img = tmp.path().join("disk.img");
    run_umask_022(&[&src, &img]).assert_ok();
    assert_eq!(mode(&img), 0o600);
}

#[test]
fn a_replaced_output_loses_group_and_other_access() {
    let (tmp, src) = etc_tree();
    let img = tmp.path().join("disk.img");
    std::fs::write(&img, b"an older image").unwrap();
    chmod(&img, 0o664);
    run_umask_022(&[Path::new("-f"), &src, &img]).assert_ok();
    assert_eq!(mode(&img), 0o600);
}

/// `tar -C src -cf tar .` (PAX, keeping modes).
fn tar_of(src: &Path, tar: &Path) {
    let (s, t) = (src.to_str().unwrap(), tar.to_str().unwrap());
    tool_ok("tar", ["--format=posix", "-C", s, "-cf", t, "."]);
}

#[test]
fn an_archive_holding_a_secret_file_makes_output_0600() {
    let (tmp, src) = etc_tree();
    let tar = tmp.path().join("etc.tar");
    tar_of(&src, &tar);
    chmod(&tar, 0o644);
    let img = tmp.path().join("disk.img");
    run_umask_022(&[&tar, &img]).assert_ok();
    assert_eq!(mode(&img), 0o600);
    // No secret inside, but the archive itself is its owner's only.
    chmod(&src.join("etc/shadow"), 0o644);
    tar_of(&src, &tar);
    let open = tmp.path().join("open.img");
    run_umask_022(&[&tar, &open]).assert_ok();
    assert_eq!(mode(&open), 0o644);
    chmod(&tar, 0o600);
    let private = tmp.path().join("private.img");
    run_umask_022(&[&tar, &private]).assert_ok();
    assert_eq!(mode(&private), 0o600);
}

#[test]
fn a_secret_in_an_added_source_makes_output_0600() {
    let (tmp, secret) = etc_tree();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(base.join("readme"), b"open to all").unwrap();
    chmod(&base, 0o755);
    chmod(&base.join("readme"), 0o644);
    let build = |name: &str, add: &Path| {
        let img = tmp.path().join(name);
        let run = run_umask_022(&[Path::new("-v"), Path::new("--add"), add, &base, &img]);
        run.assert_ok();
        (mode(&img), run)
    };
    // A 0640 file in the added tree.
    let (m, run) = build("file.img", &secret);
    assert_eq!(m, 0o600, "{}", run.describe());
    assert!(run.stderr.contains("etc/shadow"), "{}", run.describe());
    // Everything readable: 0644.
    chmod(&secret.join("etc/shadow"), 0o644);
    assert_eq!(build("open.img", &secret).0, 0o644);
    // The added directory itself closed to others, merged at / (the root keeps SOURCE's mode).
    chmod(&secret, 0o700);
    let (m, run) = build("closed.img", &secret);
    assert_eq!(m, 0o600, "{}", run.describe());
    assert!(
        run.stderr.contains("cannot be listed or entered"),
        "{}",
        run.describe()
    );
    // An archive others may not read.
    chmod(&secret, 0o755);
    let tar = tmp.path().join("etc.tar");
    tar_of(&secret, &tar);
    chmod(&tar, 0o600);
    assert_eq!(build("archive.img", &tar).0, 0o600);
}

#[test]
fn a_blob_of_an_image_layout_others_may_not_read_makes_output_0600() {
    use crate::common::oci::{Compression, Layout, Meta, TarWriter, META};
    let tmp = tempdir();
    let layout = Layout::new(&tmp.path().join("layout"));
    let tar = TarWriter::default()
        .dir(
            "etc",
            Meta {
                mode: 0o755,
                ..META
            },
        )
        .file("etc/motd", META, b"hello\n")
        .finish();
    let layer = layout.layer(&tar, Compression::Gzip);
    let blob = layout.dir.join(layer.blob.path());
    let m = layout.image(&[layer], "linux/amd64");
    layout.index(&[m]);
    for p in [
        &layout.dir,
        &layout.dir.join("blobs"),
        &layout.dir.join("blobs/sha256"),
    ] {
        chmod(p, 0o755);
    }
    for e in std::fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        chmod(&e.unwrap().path(), 0o644);
    }
    chmod(&layout.dir.join("index.json"), 0o644);
    chmod(&layout.dir.join("oci-layout"), 0o644);
    // Builds image `name` of `args` under umask 022 with -v: its mode, and the run.
    let build = |name: &str, args: &[&Path]| {
        let img = tmp.path().join(name);
        let mut args = [&[Path::new("-v")][..], args].concat();
        args.push(&img);
        let run = run_umask_022(&args);
        run.assert_ok();
        (mode(&img), run)
    };
    assert_eq!(build("open.img", &[&layout.dir]).0, 0o644);
    // The layer's blob is its owner's only: so is the image of it.
    chmod(&blob, 0o600);
    let named = format!("{} is not readable by others (mode 0600)", blob.display());
    let (m, run) = build("private.img", &[&layout.dir]);
    assert!(
        m == 0o600 && run.stderr.contains(&named),
        "mode {m:04o}\n{}",
        run.describe()
    );
    // The same blob as a symlink (the layout reader follows it) to that file kept elsewhere.
    let kept = tmp.path().join("kept-blob");
    std::fs::rename(&blob, &kept).unwrap();
    std::os::unix::fs::symlink(&kept, &blob).unwrap();
    let (m, run) = build("linked.img", &[&layout.dir]);
    assert!(
        m == 0o600 && run.stderr.contains(&named),
        "mode {m:04o}\n{}",
        run.describe()
    );
    // The blob readable again, but a directory on its way closed to others.
    chmod(&kept, 0o644);
    let sha256 = layout.dir.join("blobs/sha256");
    chmod(&sha256, 0o711);
    let named = format!("{} cannot be listed or entered by others", sha256.display());
    let (m, run) = build("closed.img", &[&layout.dir]);
    assert!(
        m == 0o600 && run.stderr.contains(&named),
        "mode {m:04o}\n{}",
        run.describe()
    );
    // The same image as an `--add` SRC over an open tree.
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    chmod(&base, 0o755);
    let (m, run) = build("added.img", &[Path::new("--add"), &layout.dir, &base]);
    assert!(
        m == 0o600 && run.stderr.contains(&named),
        "mode {m:04o}\n{}",
        run.describe()
    );
}
