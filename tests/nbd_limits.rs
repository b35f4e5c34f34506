//! Who can hold the server's places (issue 9, hole 2). `--max-connections N` bounds the clients
//! in the transmission phase: with N silent clients connected, the next is refused with a
//! message naming the option, and served once one leaves. Under `--tls=require`, clients
//! without the key never get that far: 1,100 of them holding TCP connections (silent after the
//! greeting, or stalled inside the TLS handshake) do not keep a client with the key from being
//! served at once; the server drops the oldest handshakes to make room and says so. Serving TCP
//! without TLS (or with optional TLS, or certificates without --tls-verify-peer) prints one line
//! saying that anyone who can reach the port can read the disk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::nbd::*;
use crate::common::tls::*;
use crate::common::*;

/// A python3-libnbd client that connects, reads, says "connected" and stays until killed.
fn holder(uri: &str) -> ChildGuard {
    let mut child = Command::new(PYTHON)
        .args([
            "-c",
            "import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nh.pread(4096, 0)\n\
             print('connected', flush=True)\nsys.stdin.read()",
            uri,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {PYTHON} (python3-libnbd): {e}"));
    Lines::of(child.stdout.take().unwrap()).wait_for("from a libnbd client", |l| l == "connected");
    ChildGuard(child)
}

#[test]
fn silent_clients_fill_max_connections_and_the_next_is_refused_by_name() {
    require_tools(&["nbdinfo"]);
    require_python_nbd();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let sock = tmp.path().join("s.sock");
    let sock_s = sock.to_str().unwrap();
    let srv = ServerGuard::start([
        "--max-connections",
        "2",
        "--socket",
        sock_s,
        src.to_str().unwrap(),
    ]);
    let uri = srv.uri().to_string();
    let first = holder(&uri);
    let _second = holder(&uri);
    // Refused by policy (NBD_REP_ERR_POLICY), and the server says why in one line.
    let r = client("nbdinfo", ["--size", &uri]);
    assert!(
        !r.status.success() && r.stderr.contains("policy"),
        "a third client while 2 are served (--max-connections 2)\n{}\n{}",
        show_run("nbdinfo", &r),
        srv.describe()
    );
    let log = srv.wait_logged("refused", 1);
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(
        refused.len() == 1 && refused[0].contains("maximum of 2 clients (--max-connections)"),
        "{log}"
    );
    // One leaves: its place is free again (polled: the server notices the close).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client("nbdinfo", ["--size", &uri]);
        if r.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place of a client that left was not freed\n{}",
            show_run("nbdinfo", &r)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Raises this process's descriptor limit to `n` if it is lower (1,100 sockets).
fn allow_descriptors(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current.is_some_and(|c| c < n) {
        l.current = Some(n.min(l.maximum.unwrap_or(n)));
        setrlimit(Resource::Nofile, l).expect("raise RLIMIT_NOFILE");
    }
}

/// A TCP client without the key: reads the greeting, and then either stays silent or asks
/// for TLS and stalls inside the TLS handshake. Returns the socket (to hold) and whether it
/// got as far as it meant to (an older one may already have been dropped to make room).
fn keyless(port: u16, stall_in_tls: bool) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut greeting = [0u8; 18];
    if s.read_exact(&mut greeting).is_err() {
        return (s, false);
    }
    if !stall_in_tls {
        return (s, true);
    }
    let mut starttls = 3u32.to_be_bytes().to_vec();
    starttls.extend_from_slice(b"IHAVEOPT\0\0\0\x05\0\0\0\0");
    let mut ack = [0u8; 20];
    let ok = s.write_all(&starttls).is_ok()
        && s.read_exact(&mut ack).is_ok()
        && s.write_all(&[0x16, 0x03, 0x01]).is_ok();
    (s, ok)
}

#[test]
fn clients_without_the_key_cannot_lock_out_a_client_with_it() {
    require_tools(&["nbdinfo", "psktool"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let psk = psk_file(tmp.path(), "keys.psk", "alice");
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}");
    // The default --max-connections (1024), as in the attack.
    let srv = ServerGuard::start([
        "--tcp",
        &tcp,
        "--tls-psk",
        psk.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let size = client_ok("nbdinfo", ["--size", srv.uri()]);
    allow_descriptors(4096);
    let held: Vec<(TcpStream, bool)> = (0..1100).map(|i| keyless(port, i % 2 == 1)).collect();
    let reached = held.iter().filter(|(_, ok)| *ok).count();
    // All 1,100 are still connected (from our side): the client with the key is served now.
    assert_eq!(
        client_ok("nbdinfo", ["--size", srv.uri()]),
        size,
        "a client with the key while 1,100 without it hold connections"
    );
    let log = srv.wait_logged("dropped during its handshake to make room", 1);
    assert!(
        log.contains("dropped during its handshake to make room"),
        "the server did not say it dropped handshakes to make room ({reached} of 1,100 keyless \
         clients reached their stall)\n{}",
        srv.describe()
    );
    drop(held);
    client_ok("nbdinfo", ["--size", srv.uri()]);
}

#[test]
fn tcp_without_authenticating_tls_warns_that_anyone_can_read_the_disk() {
    require_tools(&["nbdinfo", "psktool", "certtool"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    let psk = psk_file(tmp.path(), "keys.psk", "alice");
    let pki = pki(tmp.path(), "ca");
    let (psk, pki) = (psk.to_str().unwrap(), pki.to_str().unwrap());
    let warning = "anyone who can reach this port can read the disk";
    let sock = tmp.path().join("s.sock");
    for (opts, warns) in [
        (vec![], true),
        (vec!["--tls=on", "--tls-psk", psk], true),
        (vec!["--tls-certificates", pki], true),
        (vec!["--tls-psk", psk], false),
        (vec!["--tls-certificates", pki, "--tls-verify-peer"], false),
    ] {
        let tcp = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--tcp", &tcp];
        args.extend_from_slice(&opts);
        args.push(src.to_str().unwrap());
        let mut srv = ServerGuard::start(&args);
        srv.stop();
        let log = srv.stderr();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(warning)).collect();
        assert_eq!(lines.len(), usize::from(warns), "{opts:?}\n{log}");
        if warns {
            assert!(lines[0].contains(&tcp), "the warning names the port\n{log}");
        }
    }
    // A Unix socket (mode 0600) is not reachable by others: no warning.
    let mut srv = ServerGuard::start(["--socket", sock.to_str().unwrap(), src.to_str().unwrap()]);
    srv.stop();
    assert!(!srv.stderr().contains(warning), "{}", srv.describe());
}
