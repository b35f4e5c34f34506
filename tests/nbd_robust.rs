//! The server under hostile clients: 200 clients sending garbage after the greeting, a
//! connect/disconnect storm, and clients that vanish mid-request; the server keeps serving
//! others, its memory stays bounded and its threads return to their count once they leave.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::nbd::*;
use common::*;

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

#[test]
fn garbage_clients_and_storms_leave_the_server_serving_and_bounded() {
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
    let pid = server.pid();
    let uri = unix_uri(&sock, "");
    let size = client_ok("nbdinfo", ["--size", uri.as_str()]);
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
