//! Stopping: once `--run`'s command has ended, or on SIGTERM, the server exits 0 with its
//! socket (and `--run`'s private directory) gone, having served a disk with real data in it.
//! The deletion of its temp files is left to a helper that outlives it, so the exit does not
//! wait for the filesystem to free them; the time from the command's end (or the signal) to
//! the exit is printed for the record, never asserted.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::entries::Rng;
use crate::common::nbd::*;
use crate::common::*;

/// A tree whose disk holds 4 x 32 MiB of random data (so the temp file is worth deleting).
fn data_tree(dir: &std::path::Path) {
    std::fs::create_dir(dir).unwrap();
    let mut rng = Rng::new(9);
    for i in 0..4 {
        std::fs::write(dir.join(format!("f{i}")), rng.bytes(32 << 20)).unwrap();
    }
}

#[test]
fn the_server_exits_0_once_runs_command_ends_with_its_private_socket_gone() {
    require_tools(&["nbdinfo"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    data_tree(&src);
    let tmpdir = tmp.path().join("tmpdir");
    std::fs::create_dir(&tmpdir).unwrap();
    // The command prints its socket, is served, then tells us it is ending.
    let mut child = Command::new(BIN)
        .args(["--serve", "-q", "--run"])
        .arg("echo \"$unixsocket\"; nbdinfo --size \"$uri\" >/dev/null && echo ending")
        .arg(&src)
        .env("TMPDIR", &tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start linuxdisk-mk");
    let mut lines = Lines::of(child.stdout.take().unwrap());
    let socket = lines.wait_for("naming the socket", |l| l.starts_with('/'));
    lines.wait_for("saying the command ends", |l| l == "ending");
    let ended = Instant::now();
    let status = wait_timeout(&mut child, STOP_TIMEOUT).expect("the server did not exit");
    let took = ended.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status}\n{err}");
    assert!(
        !std::path::Path::new(&socket).exists(),
        "the private socket {socket} is left"
    );
    let left: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    eprintln!("--run: the server exited {took:?} after its command's last line");
}

#[test]
fn the_server_exits_0_on_sigterm_with_its_socket_gone() {
    require_tools(&["nbdinfo"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    data_tree(&src);
    let sock = tmp.path().join("s.sock");
    let mut srv = ServerGuard::start(["--socket", sock.to_str().unwrap(), src.to_str().unwrap()]);
    client_ok("nbdcopy", [srv.uri(), "null:"]);
    let sent = Instant::now();
    srv.stop(); // SIGTERM; asserts exit 0 and the socket removed
    eprintln!("SIGTERM: the server exited within {:?}", sent.elapsed());
}
