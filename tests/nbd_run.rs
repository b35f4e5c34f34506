//! `linuxdisk-mk --serve --run CMD` (captive mode) and socket activation: CMD's exit status becomes
//! ours; CMD's environment holds `uri`, `nbd`, `unixsocket`, `port`, `exportname` as nbdkit sets
//! them (private socket, `--socket`, `--tcp`, `--export-name`); `nbdinfo -- [ linuxdisk-mk --serve
//! DIR ]` and `nbdcopy -- [ ... ]` work; `--cow` lets qemu-io and nbdsh write and read back (across
//! connections, zeroing and trimming too) while the source tree stays untouched and the next server
//! starts clean; a read-only export refuses qemu-io's writes.
//!
//! Root only; never skips. See tests/common/nbd.rs.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::*;

/// A whole `--run` session: the server, CMD, and the exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn setup() -> (tempfile::TempDir, PathBuf) {
    require_tools(&["nbdinfo", "nbdcopy", "nbdsh", "qemu-io", "e2fsck"]);
    let (tmp, src) = temp_source(build_small_tree);
    (tmp, src)
}

/// Runs `linuxdisk-mk --serve OPTS... SRC` to completion (bounded), as a user would.
fn serve_run(opts: &[&OsStr], src: &Path) -> Run {
    let mut a: Vec<&OsStr> = vec!["--serve".as_ref()];
    a.extend_from_slice(opts);
    a.push(src.as_os_str());
    run_cmd_timeout(Command::new(server_bin()), a, RUN_TIMEOUT)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn run_exits_with_the_commands_status() {
    let (_tmp, src) = setup();
    for code in [3, 0, 1, 42] {
        let r = serve_run(&[os("--run"), os(&format!("exit {code}"))], &src);
        assert_eq!(
            r.code(),
            Some(code),
            "--run 'exit {code}'\n{}",
            r.describe()
        );
    }
}

/// `NAME=value` lines of `env`, for the five variables.
fn env_vars(file: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("--run wrote no {}: {e}", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| ["uri", "nbd", "unixsocket", "port", "exportname"].contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// CMD writes `env` and `nbdinfo --size "$uri"` to files; returns the variables and the size.
fn run_env(listen: &[OsString], src: &Path, dir: &Path) -> (BTreeMap<String, String>, String, Run) {
    let env = dir.join("env.txt");
    let size = dir.join("size.txt");
    let cmd = format!(
        "env > '{}' && nbdinfo --size \"$uri\" > '{}'",
        env.display(),
        size.display()
    );
    let mut opts: Vec<&OsStr> = listen.iter().map(OsString::as_os_str).collect();
    opts.extend([os("-t"), os("ext4"), os("--run"), os(&cmd)]);
    let r = serve_run(&opts, src);
    r.assert_ok();
    let size = std::fs::read_to_string(&size).unwrap_or_default();
    (env_vars(&env), size.trim().to_owned(), r)
}

#[test]
fn run_environment_private_socket() {
    let (tmp, src) = setup();
    let want = build_image(&["-t", "ext4"], &src, &tmp.path().join("f.img"));
    let (v, size, r) = run_env(&[], &src, tmp.path());
    let shown = format!("{v:#?}\n{}", r.describe());
    let sock = v.get("unixsocket").cloned().unwrap_or_default();
    assert!(
        sock.starts_with('/'),
        "$unixsocket {sock:?} is not a path\n{shown}"
    );
    let uri = format!("nbd+unix:///?socket={sock}");
    assert_eq!(v.get("uri"), Some(&uri), "$uri\n{shown}");
    assert_eq!(v.get("nbd"), Some(&uri), "$nbd (same as $uri)\n{shown}");
    assert_eq!(v.get("exportname").map(String::as_str), Some(""), "{shown}");
    assert_eq!(
        v.get("port").map(String::as_str).unwrap_or(""),
        "",
        "{shown}"
    );
    assert_eq!(size, want.to_string(), "nbdinfo --size \"$uri\"\n{shown}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the private socket {sock} outlived the server\n{shown}"
    );
}

#[test]
fn run_environment_named_socket_and_export_name() {
    let (tmp, src) = setup();
    let sock = tmp.path().join("named.sock");
    let listen = [
        "--socket".into(),
        sock.clone().into(),
        "--export-name".into(),
        "foo".into(),
    ];
    let (v, size, r) = run_env(&listen, &src, tmp.path());
    let shown = format!("{v:#?}\n{}", r.describe());
    let s = sock.to_str().unwrap();
    let uri = format!("nbd+unix:///foo?socket={s}");
    assert_eq!(v.get("uri"), Some(&uri), "$uri\n{shown}");
    assert_eq!(v.get("nbd"), Some(&uri), "$nbd\n{shown}");
    assert_eq!(v.get("unixsocket").map(String::as_str), Some(s), "{shown}");
    assert_eq!(
        v.get("exportname").map(String::as_str),
        Some("foo"),
        "{shown}"
    );
    assert!(
        size.parse::<u64>().is_ok(),
        "nbdinfo --size: {size:?}\n{shown}"
    );
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "--socket left behind after --run\n{shown}"
    );
}

#[test]
fn run_environment_tcp() {
    let (tmp, src) = setup();
    let port = free_port();
    let listen = ["--tcp".into(), format!("127.0.0.1:{port}").into()];
    let (v, size, r) = run_env(&listen, &src, tmp.path());
    let shown = format!("{v:#?}\n{}", r.describe());
    let uri = v.get("uri").cloned().unwrap_or_default();
    let base = format!("nbd://127.0.0.1:{port}");
    assert!(
        uri == base || uri == format!("{base}/"),
        "$uri {uri:?}, want {base}\n{shown}"
    );
    assert_eq!(v.get("nbd"), Some(&uri), "$nbd\n{shown}");
    assert_eq!(
        v.get("port").map(String::as_str),
        Some(port.to_string().as_str()),
        "{shown}"
    );
    assert_eq!(
        v.get("unixsocket").map(String::as_str).unwrap_or(""),
        "",
        "{shown}"
    );
    assert!(
        size.parse::<u64>().is_ok(),
        "nbdinfo --size: {size:?}\n{shown}"
    );
}

#[test]
fn socket_activation_with_nbdinfo_and_nbdcopy() {
    let (tmp, src) = setup();
    let want = build_image(&["-t", "ext4"], &src, &tmp.path().join("f.img"));
    let bin = server_bin();
    let activated = |tool: &str, pre: &[&str], post: &[&OsStr]| -> String {
        let mut a: Vec<&OsStr> = pre.iter().map(OsStr::new).collect();
        a.extend([
            os("--"),
            os("["),
            bin.as_os_str(),
            os("--serve"),
            os("-t"),
            os("ext4"),
        ]);
        a.extend([src.as_os_str(), os("]")]);
        a.extend_from_slice(post);
        client_ok(tool, a)
    };
    let size = activated("nbdinfo", &["--size"], &[]);
    assert_eq!(size.trim(), want.to_string(), "nbdinfo --size -- [ ... ]");
    let text = activated("nbdinfo", &["--json"], &[]);
    let j = json("nbdinfo --json", &text);
    assert_eq!(
        j["exports"][0]["is_read_only"].as_bool(),
        Some(true),
        "{text}"
    );
    let copy = tmp.path().join("copy.img");
    activated("nbdcopy", &[], &[copy.as_os_str()]);
    with_fs_device(&copy, PART_OFFSET, assert_e2fsck_clean);
}

/// The --cow session: qemu-io and nbdsh write, read back, zero and trim, across connections.
const COW_SCRIPT: &str = r#"set -ex
qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k' "$uri"
qemu-io -f raw -r -c 'read -P 0xab 0 64k' "$uri"
qemu-io -f raw -c 'write -P 0xcd 1M 8k' -c 'write -z 1M 4k' -c 'read -P 0 1M 4k' -c 'read -P 0xcd 1028k 4k' "$uri"
qemu-io -f raw -c 'write -P 0xef 2M 64k' -c 'discard 2M 64k' -c 'read -P 0 2M 64k' "$uri"
PYENV_VERSION=system nbdsh -u "$uri" -c '
assert not h.is_read_only()
h.pwrite(b"\x5a" * 4096, 3 * 2**20 + 512)
h.flush()
assert h.pread(4096, 3 * 2**20 + 512) == b"\x5a" * 4096
assert h.pread(4096, 0) == b"\xab" * 4096
if h.can_zero():  # (the flags themselves are checked through nbdinfo --json)
    h.zero(1000, 3 * 2**20 + 1000)
    assert h.pread(4096, 3 * 2**20 + 512) == b"\x5a" * 488 + bytes(1000) + b"\x5a" * 2608
if h.can_trim():
    h.pwrite(b"\x77" * 8192, 4 * 2**20)
    h.trim(8192, 4 * 2**20)
    h.pread(8192, 4 * 2**20)
'
nbdinfo --json "$uri" > "$OUT/cow.json"
nbdcopy "$uri" "$OUT/cow.img"
"#;

#[test]
fn cow_writes_read_back_and_never_reach_the_source() {
    let (tmp, src) = setup();
    let before = tree_fingerprint(&src);
    let mut cmd = Command::new(server_bin());
    cmd.env("OUT", tmp.path());
    let r = run_cmd_timeout(
        cmd,
        [
            os("--serve"),
            os("--cow"),
            os("-t"),
            os("ext4"),
            os("--run"),
            os(COW_SCRIPT),
            src.as_os_str(),
        ],
        RUN_TIMEOUT,
    );
    assert!(
        r.status.success() && !r.stderr.contains("Pattern verification failed"),
        "--cow write-then-read session failed\n{}",
        r.describe()
    );
    // Data and source first, flags after, so that one run reports all of it.
    let mut problems = Vec::new();
    let copy = std::fs::read(tmp.path().join("cow.img")).unwrap();
    if !copy[..65536].iter().all(|&b| b == 0xab) {
        problems.push("nbdcopy of the --cow disk: the first 64k are not 0xab".to_owned());
    }
    if !copy[(1 << 20)..(1 << 20) + 4096].iter().all(|&b| b == 0) {
        problems.push("nbdcopy of the --cow disk: the zeroed 4k at 1M are not zero".to_owned());
    }
    if tree_fingerprint(&src) != before {
        problems.push("--cow changed the source tree".to_owned());
    }
    let text = std::fs::read_to_string(tmp.path().join("cow.json")).unwrap();
    let e = &json("nbdinfo --json", &text)["exports"][0];
    for (k, want) in [
        ("is_read_only", false),
        ("can_flush", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_multi_conn", true),
    ] {
        let got = e[k].as_bool();
        if got != Some(want) {
            problems.push(format!("--cow: nbdinfo says {k} = {got:?}, want {want}"));
        }
    }
    assert!(
        problems.is_empty(),
        "--cow: {}\n{text}\n{}",
        problems.join("\n  "),
        r.describe()
    );

    // A new server starts from the tree again: the protective MBR is back.
    let fresh = tmp.path().join("fresh.img");
    let cmd = format!("nbdcopy \"$uri\" '{}'", fresh.display());
    serve_run(
        &[os("--cow"), os("-t"), os("ext4"), os("--run"), os(&cmd)],
        &src,
    )
    .assert_ok();
    let fresh = std::fs::read(&fresh).unwrap();
    assert_eq!(
        &fresh[510..512],
        &[0x55, 0xaa],
        "MBR signature of a fresh --cow server"
    );
    assert!(
        fresh[..512].iter().any(|&b| b != 0xab),
        "writes survived the server"
    );
    with_fs_device(
        &tmp.path().join("fresh.img"),
        PART_OFFSET,
        assert_e2fsck_clean,
    );
}

#[test]
fn read_only_export_refuses_qemu_io_writes() {
    let (tmp, src) = setup();
    let before = tree_fingerprint(&src);
    let copy = tmp.path().join("after.img");
    let cmd = format!(
        "qemu-io -f raw -c 'write -P 0xab 0 64k' \"$uri\"; echo \"qemu-io: $?\" >&2; \
         nbdcopy \"$uri\" '{}'",
        copy.display()
    );
    let r = serve_run(&[os("--run"), os(&cmd)], &src);
    r.assert_ok();
    assert!(
        !r.stderr.contains("qemu-io: 0") && !r.stdout.contains("wrote 65536"),
        "qemu-io wrote to a read-only export\n{}",
        r.describe()
    );
    let data = std::fs::read(&copy).unwrap();
    assert_eq!(&data[510..512], &[0x55, 0xaa], "MBR after a refused write");
    assert!(
        data[..512].iter().any(|&b| b != 0xab),
        "the write reached the disk"
    );
    assert_eq!(tree_fingerprint(&src), before, "source tree changed");
}
