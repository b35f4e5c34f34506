//! TLS as nbdkit does it (`--tls`, `--tls-psk`, `--tls-certificates`, `--tls-verify-peer`),
//! checked with real clients: nbdinfo and nbdcopy with `nbds+unix://alice@/?socket=…&
//! tls-psk-file=…` and `nbds://…?tls-certificates=DIR`, qemu-img with `tls-creds-psk` and
//! `tls-creds-x509`, python3-libnbd with `set_tls_psk_file` and `set_tls_certificates`; every
//! byte they read is compared with the image file written for the same tree. Refused, cleanly,
//! while the server goes on serving others: a plaintext client against `--tls=require`
//! (NBD_REP_ERR_TLS_REQD, on the wire too), a wrong key, an unknown user, a client certificate
//! from another CA or none, a client that does not trust the server's CA, and a client that
//! stalls in the TLS handshake (dropped at the handshake deadline). Keys and certificates are
//! made in the tests with psktool and certtool (tests/common/tls.rs).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::tls::*;
use crate::common::*;

/// A small tree, the image written for it, and a place for keys.
struct Fixture {
    tmp: tempfile::TempDir,
    src: PathBuf,
    image: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        require_tools(&["nbdinfo", "nbdcopy", "qemu-img", "psktool", "certtool"]);
        require_python_nbd();
        let tmp = tempdir();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        build_small_tree(&src);
        let image = tmp.path().join("disk.img");
        write_image_at_epoch(&src, &image);
        Fixture { tmp, src, image }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `--serve -t ext4 OPTS... SRC` under the epoch.
    fn serve(&self, opts: &[&str]) -> ServerGuard {
        let mut args: Vec<&std::ffi::OsStr> = vec!["-t".as_ref(), "ext4".as_ref()];
        args.extend(opts.iter().map(std::ffi::OsStr::new));
        args.push(self.src.as_os_str());
        ServerGuard::start_with_env(&[EPOCH], args)
    }

    /// A PSK file for alice and a server using it on a Unix socket, with `opts` first:
    /// (the PSK file, the socket, the server).
    fn psk_server(&self, opts: &[&str]) -> (PathBuf, PathBuf, ServerGuard) {
        let psk = psk_file(self.tmp.path(), "keys.psk", "alice");
        let sock = self.path("s.sock");
        let mut args = opts.to_vec();
        let (p, s) = (psk.to_str().unwrap(), sock.to_str().unwrap());
        args.extend(["--tls-psk", p, "--socket", s]);
        let srv = self.serve(&args);
        (psk, sock, srv)
    }

    /// Asserts that `file` holds exactly the image's bytes.
    fn assert_image(&self, file: &Path, what: &str) {
        let (got, want) = (
            std::fs::read(file).unwrap(),
            std::fs::read(&self.image).unwrap(),
        );
        assert!(
            got == want,
            "{what}: the bytes read differ from the image file"
        );
    }

    /// nbdcopy of `uri` to a file, compared with the image.
    fn nbdcopy_matches(&self, uri: &str, name: &str) {
        let out = self.path(name);
        nbdcopy(uri, &out, 2);
        self.assert_image(&out, &format!("nbdcopy {uri}"));
        std::fs::remove_file(out).unwrap();
    }

    /// qemu-img convert through `object` (a tls-creds-* object with id tls0) of the NBD
    /// server at `server` (image-opts), compared with the image.
    fn qemu_img_matches(&self, object: &str, server: &str) {
        let out = self.path("qemu.img");
        let opts = format!("driver=nbd,{server},tls-creds=tls0");
        let args = [
            "convert",
            "--object",
            object,
            "--image-opts",
            &opts,
            "-O",
            "raw",
        ];
        let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
        a.push(out.as_os_str());
        client_ok("qemu-img", a);
        self.assert_image(&out, &format!("qemu-img convert {object}"));
        std::fs::remove_file(out).unwrap();
    }

    /// python3-libnbd with TLS required: `kind` psk (`keys` a PSK file, user alice) or x509
    /// (`keys` a certificates directory); `at` a socket path or a TCP port. Reads ranges and
    /// compares them with the image; returns what the script printed or its error.
    fn python(&self, kind: &str, keys: &Path, at: &str) -> Run {
        let script = r#"
import nbd, sys
kind, keys, at, image = sys.argv[1:5]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
if kind == "psk":
    h.set_tls_psk_file(keys)
    h.set_tls_username("alice")
else:
    h.set_tls_certificates(keys)
if at.startswith("/"):
    h.connect_unix(at)
else:
    h.connect_tcp("127.0.0.1", at)
img = open(image, "rb").read()
size = h.get_size()
assert size == len(img), (size, len(img))
for off in range(0, size, max(1, size // 7)):
    n = min(1 << 20, size - off)
    assert h.pread(n, off) == img[off:off + n], "bytes differ at %d" % off
print("read over TLS:", h.get_tls_negotiated())
h.shutdown()
"#;
        let args = [
            "-c".as_ref(),
            script.as_ref(),
            kind.as_ref(),
            keys.as_os_str(),
            at.as_ref(),
            self.image.as_os_str(),
        ];
        run_cmd_timeout(Command::new(PYTHON), args, TOOL_TIMEOUT)
    }

    fn python_ok(&self, kind: &str, keys: &Path, at: &str) {
        let r = self.python(kind, keys, at);
        assert!(
            r.status.success() && r.stdout.contains("read over TLS: True"),
            "python3-libnbd over TLS ({kind})\n{}",
            show_run(PYTHON, &r)
        );
    }
}

/// Runs a client that must fail; returns its stderr.
fn client_fails<const N: usize>(prog: &str, args: [&str; N], srv: &ServerGuard) -> String {
    let r = client(prog, args);
    assert!(
        !r.status.success(),
        "{prog} should have been refused\n{}\n{}",
        show_run(prog, &r),
        srv.describe()
    );
    r.stderr
}

#[test]
fn psk_nbdinfo_nbdcopy_qemu_img_and_python_read_the_disk() {
    let f = Fixture::new();
    let (psk, sock, srv) = f.psk_server(&[]);
    // The URI the server prints is one libnbd uses as it is.
    let uri = srv.uri().to_string();
    let want = format!(
        "nbds+unix://alice@/?socket={}&tls-psk-file={}",
        sock.display(),
        psk.display()
    );
    assert_eq!(uri, want, "{}", srv.describe());
    let size = std::fs::metadata(&f.image).unwrap().len();
    assert_eq!(
        client_ok("nbdinfo", ["--size", &uri]).trim(),
        size.to_string()
    );
    f.nbdcopy_matches(&uri, "nbdcopy.img");
    // qemu reads keys.psk from a directory, with the user name given apart.
    let qdir = f.path("qemu-psk");
    std::fs::create_dir(&qdir).unwrap();
    std::fs::copy(&psk, qdir.join("keys.psk")).unwrap();
    let object = format!(
        "tls-creds-psk,id=tls0,endpoint=client,dir={},username=alice",
        qdir.display()
    );
    f.qemu_img_matches(&object, &format!("path={}", sock.display()));
    f.python_ok("psk", &psk, sock.to_str().unwrap());
    assert!(
        !srv.stderr().contains("warning"),
        "no exposure warning on a Unix socket with TLS\n{}",
        srv.describe()
    );
}

#[test]
fn x509_with_verified_client_certificates_over_tcp() {
    let f = Fixture::new();
    let pki = pki(f.tmp.path(), "ca1");
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}");
    let srv = f.serve(&[
        "--tcp",
        &tcp,
        "--tls-certificates",
        pki.to_str().unwrap(),
        "--tls-verify-peer",
    ]);
    let uri = srv.uri().to_string();
    assert_eq!(
        uri,
        format!(
            "nbds://127.0.0.1:{port}/?tls-certificates={}",
            pki.display()
        )
    );
    assert!(
        !srv.stderr().contains("warning"),
        "verified clients over TLS: no exposure warning\n{}",
        srv.describe()
    );
    client_ok("nbdinfo", ["--size", &uri]);
    f.nbdcopy_matches(&uri, "nbdcopy.img");
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=client,dir={}",
        pki.display()
    );
    f.qemu_img_matches(&object, &format!("host=127.0.0.1,port={port}"));
    f.python_ok("x509", &pki, &port.to_string());
}

#[test]
fn run_gives_a_uri_that_libnbd_clients_use_as_it_is() {
    let f = Fixture::new();
    let psk = psk_file(f.tmp.path(), "keys.psk", "alice");
    let pki = pki(f.tmp.path(), "ca1");
    let out = f.path("run.img");
    let cmd = format!(
        "nbdinfo --size \"$uri\" && nbdcopy \"$uri\" '{}' && echo \"uri=$uri\"",
        out.display()
    );
    let tcp = format!("127.0.0.1:{}", free_port());
    for keys in [
        vec!["--tls-psk", psk.to_str().unwrap()],
        vec![
            "--tls-certificates",
            pki.to_str().unwrap(),
            "--tls-verify-peer",
        ],
        vec!["--tls-certificates", pki.to_str().unwrap(), "--tcp", &tcp],
    ] {
        let mut args = vec!["--serve", "-t", "ext4", "--run", &cmd];
        args.extend_from_slice(&keys);
        args.push(f.src.to_str().unwrap());
        let r = run_cmd_timeout(bin_at_epoch(), args, TOOL_TIMEOUT);
        r.assert_ok();
        assert!(r.stdout.contains("uri=nbds"), "{keys:?}\n{}", r.describe());
        f.assert_image(&out, &format!("--run with {keys:?}"));
        std::fs::remove_file(&out).unwrap();
    }
}

/// Reads one option reply: (option, reply type, data).
fn option_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).expect("an option reply");
    assert_eq!(h[..8], 0x0003_e889_0455_65a9u64.to_be_bytes());
    let word = |i: usize| u32::from_be_bytes(h[i..i + 4].try_into().unwrap());
    let mut data = vec![0u8; word(16) as usize];
    s.read_exact(&mut data).unwrap();
    (word(8), word(12), data)
}

/// Sends option `opt` with `data`.
fn send_option(s: &mut UnixStream, opt: u32, data: &[u8]) {
    let mut v = b"IHAVEOPT".to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
}

/// Connects, reads the greeting, sends the fixed-newstyle + no-zeroes flags.
fn raw_client(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).expect("greeting");
    assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s
}

/// Reads until the server closes the connection; returns how many bytes came first.
fn read_to_close(s: &mut UnixStream) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return n,
            Err(e) => panic!("the server kept the connection open ({e})"),
        }
    }
}

const TLS_REQD: u32 = (1 << 31) + 5;

#[test]
fn plaintext_clients_against_require_get_tls_reqd_and_others_are_served() {
    let f = Fixture::new();
    let (_, sock, srv) = f.psk_server(&["--tls=require"]);
    let plain = unix_uri(&sock, "");
    let err = client_fails("nbdinfo", ["--size", &plain], &srv);
    assert!(err.contains("requires TLS"), "nbdinfo said: {err}");
    // On the wire: INFO, LIST, STRUCTURED_REPLY and an unknown option are answered
    // NBD_REP_ERR_TLS_REQD, the connection goes on, and ABORT is acknowledged.
    let mut s = raw_client(&sock);
    for (opt, data) in [
        (6u32, &[0u8, 0, 0, 0, 0, 0][..]),
        (3, &[]),
        (8, &[]),
        (99, b"x"),
    ] {
        send_option(&mut s, opt, data);
        let (o, kind, msg) = option_reply(&mut s);
        assert_eq!(
            (o, kind),
            (opt, TLS_REQD),
            "{}",
            String::from_utf8_lossy(&msg)
        );
    }
    send_option(&mut s, 2, &[]);
    assert_eq!(option_reply(&mut s).1, 1, "ABORT is acknowledged");
    // NBD_OPT_EXPORT_NAME cannot be refused: the server closes the connection, sending nothing.
    let mut s = raw_client(&sock);
    send_option(&mut s, 1, b"");
    assert_eq!(
        read_to_close(&mut s),
        0,
        "nothing may follow EXPORT_NAME without TLS"
    );
    // Meanwhile a client with the key is served.
    client_ok("nbdinfo", ["--size", srv.uri()]);
    f.nbdcopy_matches(srv.uri(), "after.img");
}

#[test]
fn a_wrong_psk_or_an_unknown_user_is_refused_and_others_are_served() {
    let f = Fixture::new();
    let (psk, sock, srv) = f.psk_server(&[]);
    let wrong = wrong_key(&psk, f.tmp.path());
    let bob = psk_file(f.tmp.path(), "bob.psk", "bob");
    let uri = |user: &str, file: &Path| {
        format!(
            "nbds+unix://{user}@/?socket={}&tls-psk-file={}",
            sock.display(),
            file.display()
        )
    };
    client_fails("nbdinfo", ["--size", &uri("alice", &wrong)], &srv);
    client_fails("nbdinfo", ["--size", &uri("bob", &bob)], &srv);
    let r = f.python("psk", &wrong, sock.to_str().unwrap());
    assert!(
        !r.status.success(),
        "python3-libnbd with a wrong key was served\n{}",
        show_run(PYTHON, &r)
    );
    // Each refusal is one line on the server's stderr; the server goes on.
    srv.wait_logged("TLS handshake", 3);
    client_ok("nbdinfo", ["--size", srv.uri()]);
    f.python_ok("psk", &psk, sock.to_str().unwrap());
}

/// Over TCP: libnbd 1.14 checks the server's certificate only there (over a Unix socket it
/// accepts any, with nbdkit too), and the client that distrusts the server must refuse it.
#[test]
fn certificates_from_another_ca_are_refused_both_ways_and_others_are_served() {
    let f = Fixture::new();
    let (ca1, ca2) = (pki(f.tmp.path(), "ca1"), pki(f.tmp.path(), "ca2"));
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}");
    let srv = f.serve(&[
        "--tls-certificates",
        ca1.to_str().unwrap(),
        "--tls-verify-peer",
        "--tcp",
        &tcp,
    ]);
    let uri = |dir: &Path| format!("nbds://{tcp}/?tls-certificates={}", dir.display());
    // A client certificate from another CA; no client certificate at all.
    let foreign = client_dir(f.tmp.path(), "foreign-cert", &ca1, Some(&ca2));
    let anonymous = client_dir(f.tmp.path(), "no-cert", &ca1, None);
    // A client that trusts only another CA (refuses the server's certificate).
    let distrustful = client_dir(f.tmp.path(), "other-trust", &ca2, Some(&ca1));
    // The server refuses the first two and says so, one line each; the third refuses the
    // server (the server may see only the connection close).
    for (i, dir) in [&foreign, &anonymous].into_iter().enumerate() {
        client_fails("nbdinfo", ["--size", &uri(dir)], &srv);
        srv.wait_logged("TLS handshake", i + 1);
    }
    let err = client_fails("nbdinfo", ["--size", &uri(&distrustful)], &srv);
    assert!(err.contains("certificate"), "nbdinfo said: {err}");
    let r = f.python("x509", &foreign, &port.to_string());
    assert!(
        !r.status.success(),
        "python3-libnbd with a foreign certificate was served\n{}",
        show_run(PYTHON, &r)
    );
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=client,dir={}",
        foreign.display()
    );
    let opts = format!("driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0");
    let q = client(
        "qemu-img",
        ["info", "--object", &object, "--image-opts", &opts],
    );
    assert!(
        !q.status.success(),
        "qemu-img with a foreign certificate was served\n{}",
        show_run("qemu-img", &q)
    );
    // The server says why, once per refused client, and goes on serving.
    let log = srv.wait_logged("certificate", 1);
    assert!(
        log.contains("certificate"),
        "the server's refusals do not say what was wrong with the certificate\n{log}"
    );
    let good = client_dir(f.tmp.path(), "good", &ca1, Some(&ca1));
    f.nbdcopy_matches(&uri(&good), "good.img");
    f.python_ok("x509", &good, &port.to_string());
}

#[test]
fn tls_on_serves_clients_with_and_without_tls() {
    let f = Fixture::new();
    let (psk, sock, srv) = f.psk_server(&["--tls=on"]);
    // The printed URI is the plaintext one (as nbdkit writes it for --tls=on).
    assert_eq!(srv.uri(), unix_uri(&sock, ""));
    f.nbdcopy_matches(srv.uri(), "plain.img");
    let tls = format!(
        "nbds+unix://alice@/?socket={}&tls-psk-file={}",
        sock.display(),
        psk.display()
    );
    f.nbdcopy_matches(&tls, "tls.img");
    f.python_ok("psk", &psk, sock.to_str().unwrap());
}

#[test]
fn a_client_stalled_in_the_tls_handshake_is_dropped_at_the_deadline() {
    let f = Fixture::new();
    let (_, sock, srv) = f.psk_server(&[]);
    // STARTTLS, acknowledged; then the first bytes of a TLS record, and nothing more.
    let mut s = raw_client(&sock);
    send_option(&mut s, 5, &[]);
    let (opt, kind, _) = option_reply(&mut s);
    assert_eq!((opt, kind), (5, 1), "STARTTLS is acknowledged");
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    // While it stalls, another client is served.
    client_ok("nbdinfo", ["--size", srv.uri()]);
    assert_eq!(
        read_to_close(&mut s),
        0,
        "the server sent nothing to the stalled client"
    );
    srv.wait_logged("handshake not done within 10 s", 1);
    client_ok("nbdinfo", ["--size", srv.uri()]);
}
