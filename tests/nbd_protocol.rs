//! NBD protocol behaviour of `linuxdisk-mk --serve`, checked by tests/nbd/protocol.py with
//! python3-libnbd (strict mode off, so that bad requests reach the server) and a raw socket: error
//! replies (out of range, offset+length overflow, over 32 MiB, EPERM for writes on a read-only
//! export, the connection going on), block status (a walk of the whole disk, REQ_ONE, zero extents
//! really zero), a client without structured replies, 8 concurrent clients with requests in flight,
//! option haggling (LIST, INFO, LIST_META_CONTEXT, unknown names, ABORT), and on the wire: unknown
//! options (ERR_UNSUP), unknown commands and flags (EINVAL), bad magic, a stalled client. And
//! requests past the end of a `--cow` export: ENOSPC for writes, EINVAL for the rest, as nbdkit.
//!
//! Each test serves a small tree in a 64 MiB ext4 disk, copies it with nbdcopy as the reference
//! bytes, then runs one group of checks; the script reports every problem it finds.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::*;

/// A small tree in a temp dir, and the path for the server's socket there.
fn small_tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    require_python_nbd();
    let (tmp, src) = temp_source(build_small_tree);
    let sock = tmp.path().join("nbd.sock");
    (tmp, src, sock)
}

fn protocol_check(checks: &[&str], export_name: &str) {
    require_tools(&["nbdcopy"]);
    let (tmp, src, sock) = small_tree();
    let srv = ServerGuard::start([
        "--socket".as_ref(),
        sock.as_os_str(),
        "--export-name".as_ref(),
        export_name.as_ref(),
        "-t".as_ref(),
        "ext4".as_ref(),
        "--size".as_ref(),
        "64M".as_ref(),
        src.as_os_str(),
    ]);
    let copy = tmp.path().join("copy.img");
    nbdcopy(srv.uri(), &copy, 4);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nbd/protocol.py");
    let mut args = vec![
        script.into_os_string(),
        srv.uri().into(),
        copy.into_os_string(),
    ];
    args.extend(checks.iter().map(Into::into));
    let r = run_cmd_timeout(Command::new(PYTHON), args, Duration::from_secs(200));
    assert!(
        r.status.success(),
        "protocol.py {}: {}\n{}\n{}",
        checks.join(" "),
        r.status,
        r.stdout,
        r.stderr
    );
    drop(srv);
}

#[test]
fn error_replies_einval_and_eperm() {
    protocol_check(&["errors"], "");
}

#[test]
fn block_status_walk_and_req_one() {
    protocol_check(&["block_status"], "");
}

#[test]
fn client_without_structured_replies() {
    protocol_check(&["no_structured"], "");
}

#[test]
fn eight_concurrent_clients_read_identical_bytes() {
    protocol_check(&["concurrent"], "");
}

#[test]
fn option_haggling_in_opt_mode() {
    protocol_check(&["opt"], "");
}

#[test]
fn option_haggling_with_an_export_name() {
    protocol_check(&["opt"], "disk-1");
}

#[test]
fn raw_wire_unknown_options_commands_bad_magic_stalled_client() {
    protocol_check(&["raw"], "");
}

/// Requests past the end of a writable (`--cow`) export, sent by python3-libnbd with its own
/// range checks off: writes and write-zeroes are ENOSPC (the protocol document's SHOULD),
/// reads, trims and cache EINVAL, the connection goes on; nbdkit's memory plugin of the same
/// size answers the same, checked side by side.
#[test]
fn requests_past_the_end_under_cow_answer_as_nbdkit_enospc_for_writes() {
    require_tools(&["nbdkit"]);
    let (_tmp, src, sock) = small_tree();
    let srv = ServerGuard::start([
        "--cow".as_ref(),
        "--socket".as_ref(),
        sock.as_os_str(),
        src.as_os_str(),
    ]);
    let script = r#"
import errno, nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)  # let the bad requests reach the server
h.connect_uri(sys.argv[1])
size = h.get_size()
print("size", size)
def expect(what, fn):
    try:
        fn()
        print(what, "ok")
    except nbd.Error as e:
        print(what, errno.errorcode.get(e.errnum, e.errnum))
expect("pwrite at the end", lambda: h.pwrite(b"x" * 4096, size))
expect("pwrite across the end", lambda: h.pwrite(b"x" * 4096, size - 512))
expect("pwrite at 2^63", lambda: h.pwrite(b"x" * 512, 2**63))
expect("zero past the end", lambda: h.zero(4096, size))
expect("trim past the end", lambda: h.trim(4096, size))
expect("pread past the end", lambda: h.pread(4096, size))
expect("cache past the end", lambda: h.cache(4096, size))
expect("pwrite of the last 4 KiB", lambda: h.pwrite(b"y" * 4096, size - 4096))
print("read back", h.pread(4096, size - 4096) == b"y" * 4096)
h.shutdown()
"#;
    let ours = run_cmd_timeout(
        Command::new(PYTHON),
        ["-c", script, srv.uri()],
        Duration::from_secs(120),
    );
    assert!(ours.status.success(), "{}", show_run(PYTHON, &ours));
    let size: u64 = ours.stdout.lines().next().unwrap()[5..].parse().unwrap();
    let want = [
        "pwrite at the end ENOSPC",
        "pwrite across the end ENOSPC",
        "pwrite at 2^63 ENOSPC",
        "zero past the end ENOSPC",
        "trim past the end EINVAL",
        "pread past the end EINVAL",
        "cache past the end EINVAL",
        "pwrite of the last 4 KiB ok",
        "read back True",
    ];
    let got: Vec<&str> = ours.stdout.lines().skip(1).collect();
    assert_eq!(got, want, "{}", show_run(PYTHON, &ours));
    // nbdkit, serving a writable disk of the same size, answers the same.
    let nbdkit_run = format!("{PYTHON} -c '{}' \"$uri\"", script.replace('\'', "'\\''"));
    let theirs = run_cmd_timeout(
        Command::new("nbdkit"),
        ["-U", "-", "memory", &size.to_string(), "--run", &nbdkit_run],
        Duration::from_secs(120),
    );
    assert!(theirs.status.success(), "{}", show_run("nbdkit", &theirs));
    assert_eq!(theirs.stdout, ours.stdout, "nbdkit answers differently");
    drop(srv);
}
