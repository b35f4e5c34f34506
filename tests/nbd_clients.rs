//! `linuxdisk-mk --serve` checked with real NBD clients: `nbdinfo --json` (size equal to the image
//! file the same options write, flags, block sizes, meta contexts), `nbdinfo --map` (holes),
//! `nbdcopy --connections=4` to a file then `sgdisk -v`, `e2fsck -fn` and a kernel mount compared
//! entry by entry with the source, `qemu-img info/compare/convert`, TCP on loopback, export names,
//! `--partition none`, `--pidfile`, the socket's mode, and SIGTERM/SIGINT with a client connected.
//!
//! Root only (loop devices, mounts); never skips. See tests/common/nbd.rs for the server guard.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::*;

const CLIENTS: &[&str] = &["nbdinfo", "nbdcopy", "qemu-img", "sgdisk", "e2fsck"];

/// A temp dir holding `src` (built by `tree`) and a socket path.
struct Setup {
    tmp: tempfile::TempDir,
    src: PathBuf,
    sock: PathBuf,
}

impl Setup {
    fn new(tree: impl FnOnce(&Path)) -> Setup {
        require_tools(CLIENTS);
        let (tmp, src) = temp_source(tree);
        let sock = tmp.path().join("nbd.sock");
        Setup { tmp, src, sock }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    /// Serves `src` on the socket with build/serve options `opts`.
    fn serve(&self, opts: &[&str]) -> ServerGuard {
        let mut a: Vec<&OsStr> = vec!["--socket".as_ref(), self.sock.as_os_str()];
        a.extend(opts.iter().map(OsStr::new));
        a.push(self.src.as_os_str());
        ServerGuard::start(a)
    }
}

/// Collects problems so that one run reports everything that is wrong.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, msg: impl Into<String>) {
        if !ok {
            self.0.push(msg.into());
        }
    }
    fn assert_none(self, what: &str, context: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s):\n  {}\n{context}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

#[test]
fn nbdinfo_json_size_flags_block_sizes_and_contexts() {
    let s = Setup::new(build_small_tree);
    let opts = ["-t", "ext4", "-L", "served"];
    let file_size = build_image(&opts, &s.src, &s.path("file.img"));
    let srv = s.serve(&opts);
    let uri_want = unix_uri(&s.sock, "");
    assert_eq!(
        srv.uri(),
        uri_want,
        "the URI printed on stderr\n{}",
        srv.describe()
    );
    let j = nbdinfo_json(srv.uri());
    let mut p = Problems::default();
    p.check(
        j["protocol"] == "newstyle-fixed",
        format!("protocol {}, want newstyle-fixed", j["protocol"]),
    );
    p.check(j["structured"] == true, "structured replies not negotiated");
    let exports = j["exports"].as_array().map_or(&[][..], Vec::as_slice);
    p.check(
        exports.len() == 1,
        format!("{} exports, want 1", exports.len()),
    );
    if let Some(e) = exports.first() {
        let num = |k: &str| e[k].as_u64();
        let flag = |k: &str| e[k].as_bool();
        p.check(
            num("export-size") == Some(file_size),
            format!(
                "export-size {:?}, but the same options write a {file_size}-byte image file",
                num("export-size")
            ),
        );
        for (k, want) in [
            ("is_read_only", true),
            ("can_multi_conn", true),
            ("can_cache", true),
            ("can_df", true),
            ("can_trim", false),
            ("can_zero", false),
            ("can_flush", false),
        ] {
            p.check(
                flag(k) == Some(want),
                format!("{k} = {:?}, want {want}", flag(k)),
            );
        }
        for (k, want) in [
            ("block_size_minimum", 1),
            ("block_size_preferred", 4096),
            ("block_size_maximum", 32 << 20),
        ] {
            p.check(
                num(k) == Some(want),
                format!("{k} = {:?}, want {want}", num(k)),
            );
        }
        let ctx: Vec<&str> = e["contexts"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        p.check(
            ctx.contains(&"base:allocation"),
            format!("contexts {ctx:?} lack base:allocation"),
        );
        p.check(
            e["export-name"] == "",
            format!("export-name {}, want \"\"", e["export-name"]),
        );
    }
    p.assert_none("nbdinfo --json", &format!("{j:?}\n{}", srv.describe()));
}

#[test]
fn nbdinfo_map_shows_holes_in_padding_and_free_space() {
    let s = Setup::new(|src| {
        build_small_tree(src);
        let f = std::fs::File::create(src.join("sparse")).unwrap();
        f.set_len(100 * MIB).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 65536], 50 * MIB).unwrap();
    });
    let srv = s.serve(&["-t", "ext4", "--size", "256M"]);
    let map = nbd_map(srv.uri());
    let size: u64 = client_ok("nbdinfo", ["--size", srv.uri()])
        .trim()
        .parse()
        .unwrap();
    let shown = format!("{map:#?}\n{}", srv.describe());
    let mut p = Problems::default();
    let mut at = 0;
    for e in &map {
        p.check(
            e.offset == at && e.len > 0,
            format!("extent {e:?} does not follow on at {at}"),
        );
        at = e.offset + e.len;
    }
    p.check(
        at == size,
        format!("the map ends at {at}, the disk at {size}"),
    );
    let hole = |e: &MapExtent| e.flags & 3 == 3;
    let data: u64 = map.iter().filter(|e| e.flags == 0).map(|e| e.len).sum();
    p.check(
        map.iter().any(hole),
        "no hole,zero extent at all: the map says all data (as nbdkit linuxdisk does)",
    );
    p.check(
        data < size / 4,
        format!("{data} of {size} bytes reported as data (a 256M disk holding ~1 MiB)"),
    );
    // The GPT's padding between the primary table (ends at 16.5 KiB) and partition 1 (1 MiB).
    let padding: Vec<&MapExtent> = map
        .iter()
        .filter(|e| e.offset < PART_OFFSET && e.offset + e.len > 64 << 10)
        .collect();
    p.check(
        padding.len() == 1 && hole(padding[0]),
        format!("[64 KiB, 1 MiB) (GPT padding) is not within one hole,zero extent: {padding:?}"),
    );
    let biggest = map.iter().filter(|e| hole(e)).map(|e| e.len).max();
    p.check(
        biggest.unwrap_or(0) >= 128 * MIB,
        format!("largest hole {biggest:?} bytes: free space of a 256M fs should be >= 128 MiB"),
    );
    // Metadata is data: the protective MBR and the superblock.
    for off in [0, PART_OFFSET + 1024] {
        let e = map
            .iter()
            .find(|e| e.offset <= off && off < e.offset + e.len);
        p.check(
            e.is_some_and(|e| e.flags & 2 == 0),
            format!("offset {off} (MBR / superblock) reported as {e:?}"),
        );
    }
    p.assert_none("nbdinfo --map", &shown);
}

/// The full tree: nbdcopy with 4 connections, then GPT, fsck and the kernel's view of every entry.
#[test]
fn nbdcopy_of_the_served_disk_holds_the_full_tree_exactly() {
    let s = Setup::new(build_full_tree);
    let srv = s.serve(&["-t", "ext4", "-L", "nbdcopy"]);
    let copy = s.path("copy.img");
    nbdcopy(srv.uri(), &copy, 4);
    let mut p = Problems::default();
    match gpt_info(&copy) {
        Err(e) => p.check(false, e),
        Ok(g) => {
            p.check(
                g.partitions == 1 && g.first_sector == 2048,
                format!("partitions: {g:?}"),
            );
            p.check(g.type_guid == LINUX_FS_GUID, format!("type GUID: {g:?}"));
        }
    }
    with_fs_device(&copy, PART_OFFSET, |dev| {
        if let Some(e) = e2fsck_problem(dev) {
            p.check(false, e);
        }
        p.check(FsInfo::read(dev).label() == "nbdcopy", "label");
    });
    let mnt = mount_image(&copy, PART_OFFSET);
    let diffs = compare_trees(&s.src, mnt.path());
    drop(mnt);
    let n = diffs.len();
    p.0.extend(diffs.into_iter().take(200));
    p.check(
        n <= 200,
        format!("... and {} more differences", n.saturating_sub(200)),
    );
    p.assert_none(
        "nbdcopy --connections=4 of the served disk",
        &srv.describe(),
    );
}

#[test]
fn qemu_img_info_compare_and_convert() {
    let s = Setup::new(build_small_tree);
    let srv = s.serve(&["-t", "ext3"]);
    let uri = srv.uri().to_owned();
    let size: u64 = client_ok("nbdinfo", ["--size", &uri])
        .trim()
        .parse()
        .unwrap();
    let info = client_ok("qemu-img", ["info", "--output=json", &uri]);
    let j = json("qemu-img info", &info);
    assert_eq!(j["format"].as_str(), Some("raw"), "qemu-img info: {info}");
    assert_eq!(
        j["virtual-size"].as_u64(),
        Some(size),
        "qemu-img info virtual-size: {info}"
    );
    let copy = s.path("copy.img");
    nbdcopy(&uri, &copy, 4);
    let copy_s = copy.to_str().unwrap();
    client_ok(
        "qemu-img",
        ["compare", "-f", "raw", "-F", "raw", copy_s, &uri],
    );
    let qcow = s.path("disk.qcow2");
    let qcow_s = qcow.to_str().unwrap();
    client_ok(
        "qemu-img",
        ["convert", "-f", "raw", "-O", "qcow2", &uri, qcow_s],
    );
    client_ok(
        "qemu-img",
        ["compare", "-f", "qcow2", "-F", "raw", qcow_s, copy_s],
    );
    client_ok(
        "qemu-img",
        ["compare", "-f", "qcow2", "-F", "raw", qcow_s, &uri],
    );
    // Control: compare does see a difference of one byte (in the superblock's area).
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", PART_OFFSET + 1100).unwrap();
    drop(f);
    let r = client(
        "qemu-img",
        ["compare", "-f", "raw", "-F", "raw", copy_s, &uri],
    );
    assert_eq!(
        r.status.code(),
        Some(1),
        "qemu-img compare missed a changed byte\n{}",
        show_run("qemu-img", &r)
    );
}

/// Is `port` listening on 127.0.0.1 only (per /proc/net/tcp{,6})?
fn listening_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines().skip(1) {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() > 3 && w[3] == "0A" && w[1].ends_with(&format!(":{port:04X}")) {
                out.push(w[1].to_owned());
            }
        }
    }
    out
}

#[test]
fn tcp_listener_on_loopback() {
    let s = Setup::new(build_small_tree);
    let opts = ["-t", "ext4"];
    let file_size = build_image(&opts, &s.src, &s.path("file.img"));
    for (arg, want) in [|p: u16| format!("127.0.0.1:{p}"), |p: u16| format!("{p}")]
        .iter()
        .map(|f| {
            let port = free_port();
            (f(port), port)
        })
    {
        let mut a: Vec<&OsStr> = vec!["--tcp".as_ref(), arg.as_ref()];
        a.extend(opts.iter().map(OsStr::new));
        a.push(s.src.as_os_str());
        let srv = ServerGuard::start(a);
        let uri = format!("nbd://127.0.0.1:{want}");
        assert!(
            srv.uri() == uri || srv.uri() == format!("{uri}/"),
            "--tcp {arg}: printed URI {:?}, want {uri}\n{}",
            srv.uri(),
            srv.describe()
        );
        let size = client_ok("nbdinfo", ["--size", &uri]);
        assert_eq!(size.trim(), file_size.to_string(), "--tcp {arg}: size");
        let addrs = listening_addresses(want);
        assert_eq!(
            addrs,
            [format!("0100007F:{want:04X}")],
            "--tcp {arg}: want one listener on 127.0.0.1 only\n{}",
            srv.describe()
        );
        let copy = s.path("tcp.img");
        nbdcopy(&uri, &copy, 4);
        client_ok(
            "qemu-img",
            ["compare", "-f", "raw", "-F", "raw"]
                .into_iter()
                .chain([copy.to_str().unwrap(), uri.as_str()]),
        );
    }
}

#[test]
fn export_name_is_required_to_match() {
    let s = Setup::new(build_small_tree);
    let srv = s.serve(&["--export-name", "foo"]);
    assert_eq!(srv.uri(), unix_uri(&s.sock, "foo"), "printed URI");
    let good = client_ok("nbdinfo", ["--size", &unix_uri(&s.sock, "foo")]);
    assert!(good.trim().parse::<u64>().is_ok(), "nbdinfo --size: {good}");
    // (A client asking for "" is not checked: the protocol lets a server map it to its one export.)
    for other in ["bar", "fo", "foo/"] {
        let r = client("nbdinfo", ["--size", &unix_uri(&s.sock, other)]);
        assert!(
            !r.status.success(),
            "a client asking for export {other:?} of an export named foo succeeded\n{}\n{}",
            show_run("nbdinfo", &r),
            srv.describe()
        );
    }
}

#[test]
fn partition_none_serves_the_bare_filesystem() {
    let s = Setup::new(build_small_tree);
    let opts = ["-t", "ext4", "--partition", "none", "-L", "bare"];
    let file_size = build_image(&opts, &s.src, &s.path("file.img"));
    let srv = s.serve(&opts);
    let copy = s.path("copy.img");
    nbdcopy(srv.uri(), &copy, 4);
    let len = std::fs::metadata(&copy).unwrap().len();
    assert_eq!(len, file_size, "served size vs the --partition none file");
    assert_e2fsck_clean(&copy);
    let info = FsInfo::read(&copy);
    assert_eq!(info.size_bytes(), len, "filesystem size = disk size");
    assert_eq!(info.label(), "bare");
    assert_image_holds(&copy, 0, &s.src, "--partition none");
}

#[test]
fn pidfile_and_socket_mode() {
    let s = Setup::new(build_small_tree);
    let pidfile = s.path("server.pid");
    let srv = s.serve(&["--pidfile", pidfile.to_str().unwrap()]);
    let text = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("no pidfile once serving: {e}\n{}", srv.describe()));
    assert_eq!(
        text.trim(),
        srv.pid().to_string(),
        "pidfile content\n{}",
        srv.describe()
    );
    let m = std::fs::symlink_metadata(&s.sock).unwrap();
    assert!(
        m.file_type().is_socket(),
        "{} is not a socket",
        s.sock.display()
    );
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o600,
        "socket mode {:o}",
        m.permissions().mode()
    );
}

/// A -q server prints nothing, yet serves (the guard waits for the socket instead).
#[test]
fn quiet_server_prints_nothing() {
    let s = Setup::new(build_small_tree);
    let pidfile = s.path("quiet.pid");
    let mut srv = s.serve(&["-q", "--pidfile", pidfile.to_str().unwrap()]);
    client_ok("nbdinfo", ["--size", srv.uri()]);
    srv.stop();
    assert_eq!(srv.stderr(), "", "-q server printed something");
}

/// SIGTERM and SIGINT with no client: exit 0, socket removed (the guard's stop checks).
#[test]
fn sigterm_and_sigint_exit_0_and_remove_the_socket() {
    let s = Setup::new(build_small_tree);
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut srv = s.serve(&[]);
        client_ok("nbdinfo", ["--size", srv.uri()]);
        let st = srv.signal_and_wait(sig);
        assert!(
            st.success(),
            "{sig:?}: exit {st}, want 0\n{}",
            srv.describe()
        );
        srv.stop(); // checks the socket is gone
    }
}

/// SIGTERM (and SIGINT) while clients are connected: exit 0 with every connection ended in order
/// (none given up on), socket removed.
#[test]
fn sigterm_with_clients_connected_exits_0_and_removes_the_socket() {
    let s = Setup::new(build_small_tree);
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut srv = s.serve(&[]);
        // One client in the transmission phase (idle), one that only read the greeting.
        let mut holder = ChildGuard(
            Command::new(PYTHON)
                .args([
                    "-c",
                    "import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\n\
                 h.pread(4096, 0)\nprint('connected', flush=True)\nsys.stdin.read()",
                    srv.uri(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {PYTHON} (python3-libnbd): {e}")),
        );
        Lines::of(holder.0.stdout.take().unwrap())
            .wait_for("from the libnbd client", |l| l == "connected");
        let mut raw = std::os::unix::net::UnixStream::connect(&s.sock).expect("connect");
        raw.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut greeting = [0u8; 18];
        raw.read_exact(&mut greeting).expect("greeting");
        let st = srv.signal_and_wait(sig);
        assert!(
            st.success(),
            "{sig:?} with clients connected: exit {st}, want 0\n{}",
            srv.describe()
        );
        assert!(
            !srv.stderr().contains("did not finish"),
            "{sig:?}: the server gave up on connections instead of ending them\n{}",
            srv.describe()
        );
        drop(holder);
        srv.stop(); // checks the socket is gone
    }
}
