//! Unit tests of the server: listener options, URIs (with TLS too), the pidfile, the connection
//! registry and its limits, the start-up warning about exposure.

use super::listen::{listen, parse_tcp, quote};
use super::*;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

fn opts() -> ServeOptions {
    ServeOptions::default()
}

#[test]
fn tcp_specs() {
    let one = |s: &str| parse_tcp(s).unwrap();
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        one("10809"),
        ("127.0.0.1".into(), vec![a("127.0.0.1:10809")])
    );
    assert_eq!(one("0"), ("127.0.0.1".into(), vec![a("127.0.0.1:0")]));
    assert_eq!(one("[::1]:99"), ("[::1]".into(), vec![a("[::1]:99")]));
    assert_eq!(
        one("127.0.0.2:5"),
        ("127.0.0.2".into(), vec![a("127.0.0.2:5")])
    );
    let (host, addrs) = one("localhost:7");
    assert_eq!(host, "localhost");
    assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
    for (bad, why) in [
        ("", "expected PORT"),
        ("65536", "expected PORT"),
        ("::1:80", "brackets"),
        (":80", "missing address"),
        ("[::1]", "[IPV6-ADDRESS]:PORT"),
        ("[nope]:80", "invalid IPv6"),
        ("127.0.0.1:x", "invalid port"),
        ("127.0.0.1:", "invalid port"),
    ] {
        let err = format!("{:#}", parse_tcp(bad).unwrap_err());
        assert!(err.contains(why) && err.contains("--tcp"), "{bad}: {err}");
    }
}

#[test]
fn uri_quoting_as_nbdkit() {
    assert_eq!(quote(b"/var/tmp/a b/s?#"), "/var/tmp/a%20b/s%3F%23");
    assert_eq!(quote(b"Az09-._~/"), "Az09-._~/");
    assert_eq!(quote(b"\xff%"), "%FF%25");
}

#[test]
fn unix_socket_mode_uri_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x y.sock");
    let o = ServeOptions {
        socket: Some(path.clone()),
        ..opts()
    };
    let bound = listen(&o).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let quoted = quote(path.as_os_str().as_encoded_bytes());
    assert_eq!(bound.uri("", None), format!("nbd+unix:///?socket={quoted}"));
    assert_eq!(
        bound.uri("a/b c", None),
        format!("nbd+unix:///a/b%20c?socket={quoted}")
    );
    assert_eq!(bound.unix_path().as_deref(), path.to_str());
    assert_eq!(bound.tcp_port(), None);
    // The umask is back: a file made now has the usual mode.
    assert!(std::fs::File::create(dir.path().join("f")).is_ok());
    assert!(UnixStream::connect(&path).is_ok());

    // An existing path is refused, and left alone.
    let err = format!("{:#}", listen(&o).unwrap_err());
    assert!(
        err.contains("already exists") && err.contains("x y.sock"),
        "{err}"
    );
    drop(bound);
    assert!(!path.exists());
    std::fs::write(&path, b"mine").unwrap();
    assert!(listen(&o).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"mine");
}

#[test]
fn socket_replaced_by_someone_else_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let bound = listen(&ServeOptions {
        socket: Some(path.clone()),
        ..opts()
    })
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"other").unwrap();
    drop(bound);
    assert_eq!(std::fs::read(&path).unwrap(), b"other");
}

#[test]
fn tcp_listener_and_uri() {
    let bound = listen(&ServeOptions {
        tcp: Some("127.0.0.1:0".into()),
        ..opts()
    })
    .unwrap();
    let port = bound.tcp_port().unwrap();
    assert_ne!(port, 0);
    assert_eq!(bound.uri("", None), format!("nbd://127.0.0.1:{port}"));
    assert_eq!(
        bound.uri("e x", None),
        format!("nbd://127.0.0.1:{port}/e%20x")
    );
    assert_eq!(bound.unix_path(), None);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    let err = format!(
        "{:#}",
        listen(&ServeOptions {
            tcp: Some(format!("127.0.0.1:{port}")),
            ..opts()
        })
        .unwrap_err()
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn run_without_listener_gets_a_private_socket() {
    let bound = listen(&ServeOptions {
        run: Some("true".into()),
        ..opts()
    })
    .unwrap();
    let path = PathBuf::from(bound.unix_path().unwrap());
    let dir = path.parent().unwrap().to_path_buf();
    assert!(path.ends_with("socket"));
    assert!(dir.starts_with(crate::cleanup::temp_dir()));
    assert!(dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("linuxdisk-mk"));
    assert!(path.exists());
    drop(bound);
    assert!(!path.exists() && !dir.exists());
}

#[test]
fn pidfile_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pid");
    std::fs::write(&p, b"stale").unwrap();
    write_pidfile(&p).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("{}\n", std::process::id())
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let err = format!(
        "{:#}",
        write_pidfile(&dir.path().join("no/pid")).unwrap_err()
    );
    assert!(err.contains("no/pid"), "{err}");
}

#[test]
fn registry_ends_connections_and_forgets_them() {
    let reg = Arc::new(Registry::new(8));
    let (a, mut b) = UnixStream::pair().unwrap();
    let id = reg.add(&Stream::Unix(a.try_clone().unwrap())).unwrap();
    assert_eq!(reg.len(), 1);
    // A "connection" that reads until EOF, then answers and ends.
    let reg2 = Arc::clone(&reg);
    let t = std::thread::spawn(move || {
        let _gone = Deregister(&reg2, id);
        let mut a = a;
        let mut sink = Vec::new();
        io::Read::read_to_end(&mut a, &mut sink).unwrap();
        a.write_all(b"last reply").unwrap();
    });
    b.write_all(b"request").unwrap();
    assert_eq!(reg.close_all(), 0);
    t.join().unwrap();
    let mut got = Vec::new();
    io::Read::read_to_end(&mut b, &mut got).unwrap();
    assert_eq!(got, b"last reply");
    assert_eq!(reg.len(), 0);
    // Closing: no more connections.
    let (c, _d) = UnixStream::pair().unwrap();
    assert!(reg.add(&Stream::Unix(c)).is_none());
}

#[test]
fn stop_wakes_the_accept_loop() {
    let stop = Arc::new(Stop::new().unwrap());
    let bound = listen(&ServeOptions {
        tcp: Some("127.0.0.1:0".into()),
        ..opts()
    })
    .unwrap();
    let export: Arc<dyn Export> = Arc::new(crate::nbd::export::MemExport::new(vec![0; 512], false));
    let shared = Arc::new(Shared {
        export,
        info: ExportInfo::default(),
        tls: None,
        conns: Arc::new(Registry::new(8)),
    });
    let s2 = Arc::clone(&stop);
    let looping = crate::testing::Spawned::new(move || accept_loop(&bound, &s2, &shared));
    // Asleep in poll(2), with no client: only the stop's wake-up can end it.
    looping.wait_until_blocked("the accept loop");
    stop.trigger();
    looping.join("the accept loop after the stop");
}

#[test]
fn registry_counts_sessions_and_makes_room_among_handshakes() {
    let reg = Registry::new(2);
    let n = registry::MIN_HANDSHAKES + 2;
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..=n).map(|_| UnixStream::pair().unwrap()).collect();
    let add = |i: usize| {
        reg.add(&Stream::Unix(pairs[i].0.try_clone().unwrap()))
            .unwrap()
    };
    let mut ids: Vec<u64> = (0..2).map(add).collect();
    // Two sessions at most; a third client past its handshake is refused, and stays in it.
    reg.establish(ids[0]).unwrap();
    reg.establish(ids[0]).unwrap(); // again: already one
    reg.establish(ids[1]).unwrap();
    ids.extend((2..n).map(add));
    let e = reg.establish(ids[2]).unwrap_err();
    assert!(
        e.contains("maximum of 2") && e.contains("--max-connections"),
        "{e}"
    );
    assert_eq!(reg.counts(), (registry::MIN_HANDSHAKES, 2));
    // The handshake group is full: the next client pushes out the oldest still in it (id 2),
    // whose socket is shut down; sessions are never pushed out.
    let last = &pairs[n];
    let new = reg.add(&Stream::Unix(last.0.try_clone().unwrap())).unwrap();
    assert!(reg.was_evicted(ids[2]) && !reg.was_evicted(ids[0]) && !reg.was_evicted(new));
    let mut b = [0u8; 1];
    assert_eq!(
        io::Read::read(&mut &pairs[2].1, &mut b).unwrap(),
        0,
        "shut down"
    );
    assert!(reg.establish(ids[2]).is_err());
    // A session that ends makes room for another.
    reg.remove(ids[0]);
    reg.establish(ids[3]).unwrap();
    reg.remove(ids[2]);
    assert_eq!(reg.counts(), (registry::MIN_HANDSHAKES - 1, 2));
}

#[test]
fn serve_with_run_returns_the_commands_status_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let seen = dir.path().join("seen");
    let export: Arc<dyn Export> =
        Arc::new(crate::nbd::export::MemExport::new(vec![0; 4096], false));
    let o = ServeOptions {
        run: Some(format!(
            "test -S \"$unixsocket\" && cat '{}' > '{}' && echo \"$unixsocket\" >> '{}'; exit 3",
            pidfile.display(),
            seen.display(),
            seen.display()
        )),
        pidfile: Some(pidfile.clone()),
        quiet: true,
        ..opts()
    };
    assert_eq!(serve(export, &o).unwrap(), 3);
    let seen = std::fs::read_to_string(&seen).unwrap();
    let (pid, socket) = seen.split_once('\n').unwrap();
    assert_eq!(pid, std::process::id().to_string());
    let socket = Path::new(socket.trim_end());
    assert!(!socket.exists() && !socket.parent().unwrap().exists());
    // The pidfile stays, as nbdkit leaves it.
    assert!(pidfile.exists());
}
