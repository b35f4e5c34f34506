//! The server under hostile and heavy clients: 200 clients sending garbage after the greeting, a
//! connect/disconnect storm, clients that vanish mid-request, 64 clients reading at random (every
//! byte checked against the image file written for the same tree), clients SIGKILLed with 32 MiB
//! reads in flight, and clients that stall mid-handshake (dropped after the 10 s deadline). The
//! server keeps serving others, its memory stays bounded and its threads return to their count
//! once the clients leave. The python clients are tests/nbd/load.py (python3-libnbd).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::common::entries::Rng;
use crate::common::nbd::*;
use crate::common::*;

/// The server's memory bound under any clients (issue 6).
const RSS_LIMIT_KIB: u64 = 200 * 1024;
/// Worker threads per connection (src/nbd/session.rs), plus the connection's own thread.
const THREADS_PER_CONNECTION: u64 = 1 + 4;
/// Builds and serves under this epoch: the served disk is byte-identical to the image file.
const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// (VmRSS in KiB, thread count) of a process, from /proc.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server alive");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Waits (bounded) until the server's thread count falls to at most `want`.
fn threads_settle(pid: u32, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = rss_and_threads(pid).1;
        if t <= want || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A quiet server of a small tree on a Unix socket: (its temp dir, the server, the socket, the
/// disk size as nbdinfo prints it).
fn small_server() -> (tempfile::TempDir, ServerGuard, std::path::PathBuf, String) {
    require_tools(&["nbdinfo"]);
    let dir = tempdir();
    let src = dir.path().join("src");
    build_small_tree(&src);
    let sock = dir.path().join("s.sock");
    let server = ServerGuard::start([
        "-q".as_ref(),
        "--socket".as_ref(),
        sock.as_os_str(),
        "--pidfile".as_ref(),
        dir.path().join("pid").as_os_str(),
        src.as_os_str(),
    ]);
    let size = client_ok("nbdinfo", ["--size", unix_uri(&sock, "").as_str()]);
    (dir, server, sock, size)
}

#[test]
fn garbage_clients_and_storms_leave_the_server_serving_and_bounded() {
    let (_dir, server, sock, size) = small_server();
    let (pid, uri) = (server.pid(), unix_uri(&sock, ""));
    let (_, base_threads) = rss_and_threads(pid);

    // 200 clients at once: read the greeting, then send garbage (a bad option magic, huge
    // lengths) and hold the connection open a moment.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut c = UnixStream::connect(&sock).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).expect("greeting");
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        let _ = c.write_all(&garbage);
        held.push(c);
    }
    // Meanwhile a well-behaved client is served.
    assert_eq!(client_ok("nbdinfo", ["--size", uri.as_str()]), size);
    let (rss, _) = rss_and_threads(pid);
    assert!(rss < 200 * 1024, "RSS {rss} KiB with 200 garbage clients");
    drop(held);

    // Connect/disconnect storm, some closing mid-greeting, some mid-request.
    for i in 0..500 {
        let mut c = UnixStream::connect(&sock).expect("connect");
        match i % 3 {
            0 => {}
            1 => {
                let mut b = [0u8; 4];
                let _ = c.read(&mut b);
            }
            _ => {
                // Past the greeting: client flags, then a truncated option.
                let mut g = [0u8; 18];
                let _ = c.read_exact(&mut g);
                let _ = c.write_all(&3u32.to_be_bytes());
                let _ = c.write_all(b"IHAVEOPT\0\0\0\x07\0\0\0\x40trunc");
            }
        }
    }
    assert_eq!(client_ok("nbdinfo", ["--size", uri.as_str()]), size);
    let threads = threads_settle(pid, base_threads);
    assert!(
        threads <= base_threads,
        "threads {threads} after clients left (before: {base_threads})"
    );
    let (rss, _) = rss_and_threads(pid);
    assert!(rss < 200 * 1024, "RSS {rss} KiB after the storm");
    assert!(!server.describe().is_empty());
}

/// A served tree of ~100 MiB (random data, many small files, a sparse file with holes) and the
/// image file `linuxdisk-mk` writes for the same tree, byte-identical to the served disk.
struct Twin {
    // Declared first, so dropped (stopped) before the directory holding its socket is removed.
    server: ServerGuard,
    image: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Twin {
    fn new() -> Twin {
        require_tools(&["nbdinfo"]);
        require_python_nbd();
        let tmp = tempdir();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        build_sized_tree(&src, 300, 88 * MIB);
        let sparse = std::fs::File::create(src.join("sparse")).unwrap();
        sparse.set_len(40 * MIB).unwrap();
        let mut rng = Rng::new(66);
        for at in [0, 3 * MIB + 4095, 17 * MIB, 40 * MIB - 70_000] {
            sparse.write_all_at(&rng.bytes(70_000), at).unwrap();
        }
        drop(sparse);
        let image = tmp.path().join("disk.img");
        let mut cmd = Command::new(BIN);
        cmd.env(EPOCH.0, EPOCH.1);
        let args = [
            "-q".as_ref(),
            "-t".as_ref(),
            "ext4".as_ref(),
            src.as_os_str(),
        ];
        run_cmd_timeout(cmd, args.iter().chain([&image.as_os_str()]), TOOL_TIMEOUT).assert_ok();
        let sock = tmp.path().join("s.sock");
        let pidfile = tmp.path().join("pid");
        let server = ServerGuard::start_with_env(
            &[EPOCH],
            args.into_iter().chain([
                "--socket".as_ref(),
                sock.as_os_str(),
                "--pidfile".as_ref(),
                pidfile.as_os_str(),
            ]),
        );
        Twin {
            server,
            image,
            _tmp: tmp,
        }
    }

    fn uri(&self) -> &str {
        self.server.uri()
    }

    /// tests/nbd/load.py ARGS (see its doc) with a generous timeout; asserts exit 0 and returns
    /// its summary line (`reads=... bytes=... mismatches=0 errors=0`).
    fn load(&self, args: &[&str]) -> String {
        let mut a = vec![load_py().into_os_string()];
        a.extend(args.iter().map(Into::into));
        let r = run_cmd_timeout(Command::new(PYTHON), a, Duration::from_secs(300));
        assert!(
            r.status.success(),
            "load.py {args:?}: {}\n{}\n{}\n{}",
            r.status,
            r.stdout,
            r.stderr,
            self.server.describe()
        );
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("reads="))
            .unwrap_or_default();
        line.to_owned()
    }

    /// The whole served disk read in 4 MiB pieces equals the image file.
    fn verify(&self) -> String {
        self.load(&["verify", self.uri(), self.image.to_str().unwrap()])
    }
}

fn load_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nbd/load.py")
}

/// Samples a process's RSS and thread count every 50 ms until stopped: (peak RSS KiB, peak threads).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = (0, 0);
            while !s.load(Ordering::Relaxed) {
                let (rss, threads) = rss_and_threads(pid);
                peak = (peak.0.max(rss), peak.1.max(threads));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

#[test]
fn sixty_four_clients_read_verified_bytes_and_the_server_returns_to_its_baseline() {
    let twin = Twin::new();
    let pid = twin.server.pid();
    let image = twin.image.to_str().unwrap();
    let size = client_ok("nbdinfo", ["--size", twin.uri()]);
    assert_eq!(
        size.trim(),
        std::fs::metadata(&twin.image).unwrap().len().to_string(),
        "served size differs from the image file's"
    );
    let (base_rss, base_threads) = rss_and_threads(pid);
    // Two rounds of 64 clients: the first warms the allocator up (glibc keeps freed buffers in
    // its arenas), the second must not add to what the first left.
    let mut after = Vec::new();
    for (round, seconds) in [(1, "5"), (2, "12")] {
        let sampler = Sampler::start(pid);
        let seed = round.to_string();
        let summary = twin.load(&["readers", twin.uri(), image, "64", seconds, &seed]);
        let (peak_rss, peak_threads) = sampler.finish();
        let threads = threads_settle(pid, base_threads);
        let (rss, _) = rss_and_threads(pid);
        eprintln!(
            "round {round}: 64 clients x {seconds} s: {summary}; threads {base_threads} -> peak \
             {peak_threads} -> {threads}; RSS {base_rss} -> peak {peak_rss} -> {rss} KiB"
        );
        assert!(
            peak_threads >= base_threads + 64,
            "round {round}: peak thread count {peak_threads}: the 64 clients were not served at \
             once (baseline {base_threads})"
        );
        assert!(
            peak_threads <= base_threads + 64 * THREADS_PER_CONNECTION,
            "round {round}: {peak_threads} threads for 64 connections (baseline {base_threads}, \
             at most {THREADS_PER_CONNECTION} per connection)"
        );
        assert!(
            threads <= base_threads,
            "round {round}: {threads} threads after the clients left (before: {base_threads})"
        );
        assert!(
            rss < RSS_LIMIT_KIB,
            "round {round}: RSS {rss} KiB after the clients left"
        );
        // Read buffers are unmapped once the last client has gone: memory comes back down.
        assert!(
            rss <= base_rss + 32 * 1024,
            "round {round}: RSS {rss} KiB after the clients left, {base_rss} KiB before they came"
        );
        after.push(rss);
    }
    assert!(
        after[1] <= after[0] + 32 * 1024,
        "RSS grew from {} KiB after round 1 to {} KiB after round 2 (baseline {base_rss} KiB)",
        after[0],
        after[1]
    );
    assert_eq!(client_ok("nbdinfo", ["--size", twin.uri()]), size);
}

/// Waits (bounded) for `line` on a child's stdout (read by a thread into `lines`).
fn wait_for_line(lines: &mpsc::Receiver<String>, line: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l == line => return,
            Ok(_) => {}
            Err(e) => panic!("{what}: no {line:?} line ({e:?})"),
        }
    }
}

#[test]
fn clients_killed_with_32_mib_reads_in_flight_leave_the_server_serving() {
    let twin = Twin::new();
    let pid = twin.server.pid();
    client_ok("nbdinfo", ["--size", twin.uri()]);
    let (base_rss, base_threads) = rss_and_threads(pid);
    let sampler = Sampler::start(pid);
    let mut rng = Rng::new(20);
    for i in 0..20 {
        // 8 reads of 32 MiB in flight (256 MiB asked, the server holds 64 MiB per connection);
        // killed right after sending them, or once data flows, at a random moment.
        let mut child = Command::new(PYTHON)
            .arg(load_py())
            .args(["hog", twin.uri(), "8"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}"));
        let out = child.stdout.take().unwrap();
        let hog = ChildGuard(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let when = if i % 2 == 0 { "submitted" } else { "reading" };
        wait_for_line(&lines, when, &format!("client {i}"));
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        drop(hog); // SIGKILL, then reaped
    }
    let threads = threads_settle(pid, base_threads);
    let (peak_rss, peak_threads) = sampler.finish();
    let summary = twin.verify();
    let (rss, _) = rss_and_threads(pid);
    eprintln!(
        "20 clients killed mid-read; then {summary}; threads {base_threads} -> peak \
         {peak_threads} -> {threads}; RSS {base_rss} -> peak {peak_rss} -> {rss} KiB"
    );
    assert!(
        threads <= base_threads,
        "{threads} threads after the killed clients left (before: {base_threads})"
    );
    assert!(
        rss < RSS_LIMIT_KIB,
        "RSS {rss} KiB after the killed clients"
    );
    assert!(
        rss <= base_rss + 32 * 1024,
        "RSS {rss} KiB after 20 killed clients, {base_rss} KiB before"
    );
}

/// A raw client that stalls in the handshake; returns how long the server took to close it.
fn stalled_handshake(sock: &Path, stage: u32) -> Duration {
    let start = Instant::now();
    let mut c = UnixStream::connect(sock).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if stage >= 1 {
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).expect("greeting");
        c.write_all(&3u32.to_be_bytes()).unwrap();
    }
    if stage >= 2 {
        // An option header trickled a byte a second: no single read waits long, the deadline
        // still holds.
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"IHAVEOPT\0\0\0\x07\0\0\0\x40" {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    }
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!(
                "stage {stage}: the server kept a stalled handshake open {:?} ({e})",
                start.elapsed()
            ),
        }
    }
}

#[test]
fn clients_stalled_mid_handshake_are_dropped_after_the_deadline_while_others_are_served() {
    let (_dir, server, sock, size) = small_server();
    let (pid, uri) = (server.pid(), unix_uri(&sock, ""));
    let (_, base_threads) = rss_and_threads(pid);
    // Silent before the greeting is read, silent after the client flags, trickling an option.
    let stalled: Vec<_> = (0..3)
        .map(|stage| {
            let s = sock.clone();
            std::thread::spawn(move || stalled_handshake(&s, stage))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(client_ok("nbdinfo", ["--size", uri.as_str()]), size);
    let held = rss_and_threads(pid).1;
    assert!(
        held >= base_threads + 3,
        "{held} threads with 3 stalled clients (baseline {base_threads})"
    );
    for (stage, t) in stalled.into_iter().enumerate() {
        let took = t.join().expect("stalled client");
        // Measured from before connect: never shorter than the server's own 10 s.
        assert!(
            took >= Duration::from_secs(9),
            "stage {stage}: dropped after {took:?}, before the 10 s handshake deadline"
        );
        eprintln!("stalled handshake, stage {stage}: closed by the server after {took:?}");
    }
    let threads = threads_settle(pid, base_threads);
    assert!(
        threads <= base_threads,
        "{threads} threads after the stalled clients were dropped (before: {base_threads})"
    );
    assert_eq!(client_ok("nbdinfo", ["--size", uri.as_str()]), size);
    assert!(!server.describe().is_empty());
}
