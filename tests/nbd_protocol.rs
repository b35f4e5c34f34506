//! NBD protocol behaviour of `linuxdisk-mk --serve`, checked by tests/nbd/protocol.py with
//! python3-libnbd (strict mode off, so that bad requests reach the server) and a raw socket: error
//! replies (out of range, offset+length overflow, over 32 MiB, EPERM for writes on a read-only
//! export, the connection going on), block status (a walk of the whole disk, REQ_ONE, zero extents
//! really zero), a client without structured replies, 8 concurrent clients with requests in flight,
//! option haggling (LIST, INFO, LIST_META_CONTEXT, unknown names, ABORT), and on the wire: unknown
//! options (ERR_UNSUP), unknown commands and flags (EINVAL), bad magic, a stalled client.
//!
//! Each test serves a small tree in a 64 MiB ext4 disk, copies it with nbdcopy as the reference
//! bytes, then runs one group of checks; the script reports every problem it finds.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::*;

fn protocol_check(checks: &[&str], export_name: &str) {
    require_tools(&["nbdcopy"]);
    require_python_nbd();
    let (tmp, src) = temp_source(build_small_tree);
    let sock = tmp.path().join("nbd.sock");
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
