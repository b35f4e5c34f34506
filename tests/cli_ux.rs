//! The command line for people with habits: mke2fs's `-b` and `-U` work; other mke2fs and cp
//! letters get a hint naming our option; swapped SOURCE and OUTPUT are called swapped (not
//! "already exists, use --force"); the usage shows the build, serve and generate forms, as the
//! man page does; `--version` names the libext2fs in use; errors name the user's paths and the
//! limit, never our temp files or odd numbers; the summary says, in one size style, what a user
//! needs next (UUID, label, PARTUUID, space for ordinary users), checked with dumpe2fs and sgdisk.

use std::ffi::OsString;
use std::path::Path;

use crate::common::*;

fn args(extra: &[&str], src: &Path, out: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = extra.iter().map(OsString::from).collect();
    a.extend([src.as_os_str().to_owned(), out.as_os_str().to_owned()]);
    a
}

/// A temp dir with a small tree at `src`.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    (tmp, src)
}

#[test]
fn mke2fs_b_and_u_set_the_block_size_and_uuid() {
    let (tmp, src) = setup();
    let out = tmp.path().join("out.img");
    let uuid = "6f2c1a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b";
    run_bin(args(&["-t", "ext4", "-b", "1024", "-U", uuid], &src, &out)).assert_ok();
    let info = with_fs_device(&out, PART_OFFSET, |dev| {
        assert_e2fsck_clean(dev);
        FsInfo::read(dev)
    });
    assert_eq!(info.block_size(), 1024);
    assert_eq!(info.get("Filesystem UUID"), uuid);
}

#[test]
fn other_mke2fs_and_cp_letters_get_a_hint_naming_our_option() {
    let (tmp, src) = setup();
    let out = tmp.path().join("out.img");
    for (extra, want) in [
        (&["-F"][..], "-f (--force)"),
        (&["-d"], "SOURCE OUTPUT"),
        (&["-s", "1G"], "--size SIZE"),
        (&["-o"], "OUTPUT is the last argument"),
        (&["-a"], "no -r, -R or -a is needed"),
    ] {
        let run = run_bin(args(extra, &src, &out));
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{extra:?}\n{}", run.describe());
        assert!(
            !run.stderr.contains("as a value"),
            "clap's tip instead of ours\n{}",
            run.describe()
        );
        assert!(!out.exists());
    }
}

#[test]
fn swapped_source_and_output_are_called_swapped() {
    let (tmp, src) = setup();
    let img = tmp.path().join("disk.img");
    run_bin(args(&["-q"], &src, &img)).assert_ok();
    let image = std::fs::read(&img).unwrap();
    let tree = tree_fingerprint(&src);
    // OUTPUT is the tree (a directory), SOURCE the image; and with --force too.
    for force in [&[][..], &["--force"]] {
        let run = run_bin(args(force, &img, &src));
        run.assert_one_line_error(&["swapped", &img.display().to_string()]);
        assert!(!run.stderr.contains("--force"), "{}", run.describe());
    }
    // SOURCE does not exist, OUTPUT does.
    let new = tmp.path().join("new.img");
    let run = run_bin(args(&[], &new, &img));
    run.assert_one_line_error(&["swapped", &new.display().to_string()]);
    assert_eq!(std::fs::read(&img).unwrap(), image, "the image was changed");
    assert_eq!(tree_fingerprint(&src), tree, "the tree was changed");
    assert!(!new.exists());
}

/// A tree's names and contents, to show it was not touched.
fn tree_fingerprint(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p.clone());
            }
            let data = if ft.is_file() {
                std::fs::read(&p).unwrap_or_default()
            } else {
                Vec::new()
            };
            out.push((p.display().to_string(), data));
        }
    }
    out.sort();
    out
}

/// The usage forms: what `Usage:` shows, one per line.
fn usage_forms(text: &str) -> Vec<String> {
    let start = text.find("Usage: ").expect("a usage") + "Usage: ".len();
    text[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn usage_shows_the_build_serve_and_generate_forms_as_the_man_page() {
    let want = [
        "linuxdisk-mk [OPTIONS] SOURCE OUTPUT",
        "linuxdisk-mk --serve [SERVE OPTIONS] [OPTIONS] SOURCE",
        "linuxdisk-mk --generate KIND",
    ];
    let help = run_bin(["--help"]);
    help.assert_ok();
    assert_eq!(usage_forms(&help.stdout), want, "--help");
    let missing = run_bin(["only-a-source"]);
    missing.assert_code(2);
    assert_eq!(usage_forms(&missing.stderr), want, "a usage error");
    // The man page's SYNOPSIS: the same three, roff markup removed.
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/linuxdisk-mk.1"))
        .unwrap();
    let synopsis: String = man
        .lines()
        .skip_while(|l| *l != ".SH SYNOPSIS")
        .skip(1)
        .take_while(|l| !l.starts_with(".SH"))
        .map(|l| l.trim_start_matches(".B ").trim_start_matches(".I "))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("\\-", "-")
        .replace("\\fI", "")
        .replace("\\fR", "");
    let forms: Vec<String> = synopsis
        .split(".br")
        .map(|f| f.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(forms, want, "man SYNOPSIS: {synopsis:?}");
}

#[test]
fn version_names_the_libext2fs_in_use() {
    let run = run_bin(["--version"]);
    run.assert_ok();
    // mke2fs reports the library it loaded ("Using EXT2FS Library version 1.47.0").
    let mke2fs = tool("mke2fs", ["-V"]).out;
    let lib = mke2fs
        .split("EXT2FS Library version ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("mke2fs -V names no library version: {mke2fs}"))
        .trim_end_matches(',');
    let want = format!(
        "linuxdisk-mk {} (libext2fs {lib}, ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        run.stdout.starts_with(&want),
        "{want:?}\n{}",
        run.describe()
    );
    assert_eq!(run.stdout.trim().lines().count(), 1, "{}", run.describe());
}

#[test]
fn errors_name_the_users_paths_and_limits_not_temp_files() {
    let (tmp, src) = setup();
    let out = tmp.path().join("p.img");
    // /var/tmp is ext4 here: files of at most 16 TiB.
    let run = run_bin(args(&["-t", "ext4", "--size", "1P"], &src, &out));
    run.assert_one_line_error(&["p.img", "1.0 PiB", "File too large", "16.0 TiB"]);
    for bad in [".tmp", "1073741825M"] {
        assert!(!run.stderr.contains(bad), "{bad:?}\n{}", run.describe());
    }
    assert_eq!(dir_names(tmp.path()).len(), 1, "only src is left");
    // ext2 cannot address it: the limit is named.
    let run = run_bin(args(&["--size", "100T"], &src, &out));
    run.assert_one_line_error(&["100T", "16.0 TiB at most"]);
    // A pidfile that cannot be written names the pidfile, not its temp file.
    let pidfile = tmp.path().join("no-dir/server.pid");
    let run = run_bin([
        OsString::from("--serve"),
        "--run".into(),
        "true".into(),
        "--pidfile".into(),
        pidfile.clone().into(),
        src.clone().into(),
    ]);
    run.assert_one_line_error(&[&pidfile.display().to_string()]);
    assert!(
        !run.stderr.contains("linuxdisk-mk-pid"),
        "{}",
        run.describe()
    );
}

#[test]
fn summary_says_uuid_label_partuuid_and_space_for_ordinary_users() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_sized_tree(&src, 30, 5 * MIB);
    let out = tmp.path().join("out.img");
    let run = run_bin(args(
        &["-t", "ext4", "-L", "rootfs", "--size", "+16M"],
        &src,
        &out,
    ));
    run.assert_ok();
    let info = with_fs_device(&out, PART_OFFSET, FsInfo::read);
    let gpt = check_gpt(&out);
    let said = &run.stderr;
    // What df shows ordinary users (the root reserve and ext4's own reserve left out).
    let available = {
        let mnt = mount_image(&out, PART_OFFSET);
        let st = rustix::fs::statvfs(mnt.path()).unwrap();
        st.f_bavail * st.f_frsize
    };
    let one_decimal = |n: u64| {
        let (v, unit) = match n {
            n if n >= 1 << 30 => (n as f64 / (1u64 << 30) as f64, "GiB"),
            n if n >= 1 << 20 => (n as f64 / (1u64 << 20) as f64, "MiB"),
            n => (n as f64 / 1024.0, "KiB"),
        };
        format!("{v:.1} {unit}")
    };
    for want in [
        format!("UUID={}", info.get("Filesystem UUID")),
        "LABEL=rootfs".to_string(),
        format!("PARTUUID={}", gpt.part_guid.to_lowercase()),
        format!("{} available to ordinary users", one_decimal(available)),
        format!(
            "a {} GPT disk",
            one_decimal(std::fs::metadata(&out).unwrap().len())
        ),
        format!("ext4 filesystem: {}", one_decimal(info.size_bytes())),
    ] {
        assert!(said.contains(&want), "the summary lacks {want:?}\n{said}");
    }
    // One style: every size is NUMBER.D UNIT; no "7M", "329K" or bare byte offsets.
    for w in said.split_whitespace() {
        let w = w.trim_end_matches([',', ';', ':']);
        let digits = w.trim_end_matches(['K', 'M', 'G', 'T']);
        assert!(
            !(digits.len() < w.len() && digits.parse::<u64>().is_ok()),
            "a size in another style: {w:?}\n{said}"
        );
    }
}
