//! `--json` and `--dry-run` for scripts: the JSON object describes what was made, every figure
//! checked with real tools (dumpe2fs, sgdisk, the file's size, nbdinfo); `--dry-run` writes
//! nothing and prints the figures the real build then makes (the same object, without output);
//! with `--serve`, the object (with the URI) is printed once the server listens, before `--run`.

use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;

use crate::common::nbd::{client_ok, require_tools};
use crate::common::*;

/// Runs the binary with `env` and `args`; asserts success; stdout parsed as one JSON object.
fn json_run(env: &[(&str, &str)], args: &[OsString]) -> (Value, Run) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.envs(env.iter().copied());
    let run = run_cmd_timeout(cmd, args, std::time::Duration::from_secs(300));
    run.assert_ok();
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "one line\n{}",
        run.describe()
    );
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON: {e}\n{}", run.describe()));
    (v, run)
}

fn args(extra: &[&str], src: &Path, out: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = extra.iter().map(OsString::from).collect();
    a.extend([src.as_os_str().to_owned(), out.as_os_str().to_owned()]);
    a
}

fn sized_tree(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    build_sized_tree(&src, 60, 12 * MIB);
    src
}

#[test]
fn json_describes_what_was_made() {
    let tmp = tempdir();
    let src = sized_tree(tmp.path());
    let out = tmp.path().join("out.img");
    let (v, run) = json_run(
        &[],
        &args(&["-t", "ext4", "-L", "data", "--json"], &src, &out),
    );
    assert!(run.stderr.contains("wrote "), "the summary stays on stderr");
    let info = with_fs_device(&out, PART_OFFSET, |dev| {
        assert_e2fsck_clean(dev);
        FsInfo::read(dev)
    });
    let gpt = check_gpt(&out);
    let bs = info.block_size();
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k}: {v}"))
            .to_string()
    };
    assert_eq!(s("output"), out.display().to_string());
    assert_eq!(n("disk_size"), std::fs::metadata(&out).unwrap().len());
    assert_eq!(s("partition_table"), "gpt");
    assert_eq!(n("partition_offset"), gpt.first_sector * 512);
    assert_eq!(
        n("partition_size"),
        (gpt.last_sector - gpt.first_sector + 1) * 512
    );
    assert_eq!(s("partition_guid"), gpt.part_guid.to_lowercase());
    assert_eq!(s("partition_type"), gpt.type_guid.to_lowercase());
    assert_eq!(s("disk_guid"), gpt.disk_guid.to_lowercase());
    assert_eq!(s("fs_type"), "ext4");
    assert_eq!(n("fs_size"), info.size_bytes());
    assert_eq!(n("block_size"), bs);
    assert_eq!(n("blocks"), info.num("Block count"));
    assert_eq!(n("inodes"), info.num("Inode count"));
    assert_eq!(n("free_inodes"), info.num("Free inodes"));
    assert_eq!(n("free_bytes"), info.num("Free blocks") * bs);
    // What df shows ordinary users: free blocks less the root reserve and, on ext4, the
    // kernel's own reserve.
    let mnt = mount_image(&out, PART_OFFSET);
    let st = rustix::fs::statvfs(mnt.path()).unwrap();
    assert_eq!(n("available_bytes"), st.f_bavail * st.f_frsize);
    drop(mnt);
    assert_eq!(s("uuid"), info.get("Filesystem UUID"));
    assert_eq!(s("label"), "data");
    assert_eq!(n("file_bytes"), 12 * MIB);
    // The tree's entries: every file and directory below the root.
    assert_eq!(n("entries"), 60 + 10);
    assert!(
        v["elapsed_seconds"].as_f64().is_some_and(|t| t > 0.0),
        "{v}"
    );
}

/// The object without what differs between two runs by nature.
fn figures(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    o.remove("output");
    o.remove("elapsed_seconds");
    v
}

#[test]
fn dry_run_writes_nothing_and_predicts_the_build() {
    let tmp = tempdir();
    let src = sized_tree(tmp.path());
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("disk.img");
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    for extra in [
        &["-t", "ext4", "-L", "root"][..],
        &["-t", "ext2", "--size", "+20M", "-N", "3000"],
        &["-t", "ext3", "--partition", "none", "--block-size", "1024"],
        &["-t", "ext4", "--size", "64M"],
    ] {
        let mut dry: Vec<&str> = extra.to_vec();
        dry.extend(["--dry-run", "--json"]);
        let (planned, run) = json_run(&epoch, &args(&dry, &src, &out));
        assert!(dir_names(&out_dir).is_empty(), "{extra:?}: a dry run wrote");
        assert!(planned.get("output").is_none(), "{extra:?}: {planned}");
        assert!(run.stderr.contains("would write"), "{}", run.describe());
        let mut real: Vec<&str> = extra.to_vec();
        real.push("--json");
        let (made, _) = json_run(&epoch, &args(&real, &src, &out));
        assert_eq!(figures(planned), figures(made), "{extra:?}");
        std::fs::remove_file(&out).unwrap();
    }
    // Without SOURCE_DATE_EPOCH the identifiers are drawn at build time: unknown in a dry run.
    let (planned, _) = json_run(&[], &args(&["-n", "--json"], &src, &out));
    for k in ["uuid", "disk_guid", "partition_guid"] {
        assert!(planned[k].is_null(), "{k}: {planned}");
    }
    assert!(dir_names(&out_dir).is_empty());
}

#[test]
fn json_with_serve_is_printed_once_listening_before_run() {
    require_tools(&["nbdinfo"]);
    let tmp = tempdir();
    let src = sized_tree(tmp.path());
    // Captive: the object comes first on stdout, then what the command printed.
    let run = run_bin([
        OsString::from("--serve"),
        "--json".into(),
        "--run".into(),
        r#"nbdinfo --size "$uri""#.into(),
        src.clone().into(),
    ]);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.describe());
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert!(
        v["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("nbd+unix:///")),
        "{v}"
    );
    assert!(v.get("output").is_none(), "{v}");
    assert_eq!(lines[1], v["disk_size"].to_string(), "{}", run.describe());
    // On a socket: the object is there while the server serves.
    let socket = tmp.path().join("s.sock");
    let mut child = std::process::Command::new(BIN)
        .args(["--serve", "--json", "-q", "--socket"])
        .arg(&socket)
        .arg(&src)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = Lines::of(child.stdout.take().unwrap());
    let line = out.wait_for("with the JSON object", |l| l.starts_with('{'));
    let v: Value = serde_json::from_str(&line).unwrap();
    let uri = v["uri"].as_str().unwrap().to_string();
    assert_eq!(uri, format!("nbd+unix:///?socket={}", socket.display()));
    let size = client_ok("nbdinfo", ["--size", uri.as_str()]);
    assert_eq!(size.trim(), v["disk_size"].to_string());
    assert_eq!(v["fs_type"], "ext2");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = wait_timeout(&mut child, std::time::Duration::from_secs(60)).expect("stops");
    assert!(status.success(), "{status}");
}
