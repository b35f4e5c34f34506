//! Helpers for the NBD tests (`tests/nbd_*.rs`): a guard that runs `linuxdisk-mk --serve` until it
//! says it is serving and stops it with SIGTERM on drop (checking the exit status and that the
//! socket is gone), real NBD clients run with timeouts (`nbdinfo`, `nbdcopy`, `qemu-img`; their
//! `--json` output is read with serde_json), and a fingerprint of a source tree (to show that
//! `--cow` never writes to it).
//!
//! `LINUXDISK_MK_NBD_SERVER=tests/nbd/nbdkit-shim.sh` runs the suite against an nbdkit-based stand-in
//! instead of the binary, to check the tests themselves against a known-good server.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{bin_at_epoch, require_root, run_cmd_timeout, wait_timeout, Run, BIN};

/// How long a server may take to build its disk and say it is serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to exit after SIGTERM: a guard against hanging (its own stop
/// takes at most 6 s, src/nbd/server/registry.rs), not a measurement.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one client tool run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// What the server prints on stderr when it is ready, followed by its URI.
pub const SERVING: &str = "linuxdisk-mk: serving ";

/// The distribution's python, which has python3-libnbd (the default `python3` here is a pyenv
/// build without the nbd module).
pub const PYTHON: &str = "/usr/bin/python3";

/// Panics (saying what to install) unless [`PYTHON`] can import nbd: the tests never skip.
pub fn require_python_nbd() {
    let py = Command::new(PYTHON)
        .args(["-c", "import nbd"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
    assert!(
        py.status.success(),
        "{PYTHON} cannot import nbd: apt-get install python3-libnbd\n{}",
        String::from_utf8_lossy(&py.stderr)
    );
}

/// Writes `image` with `linuxdisk-mk -q -t ext4 SRC IMAGE` under [`EPOCH`](super::EPOCH): the
/// disk that `--serve -t ext4 SRC` under the same epoch serves, byte for byte.
pub fn write_image_at_epoch(src: &Path, image: &Path) {
    let args = [
        OsStr::new("-q"),
        OsStr::new("-t"),
        OsStr::new("ext4"),
        src.as_os_str(),
        image.as_os_str(),
    ];
    run_cmd_timeout(bin_at_epoch(), args, TOOL_TIMEOUT).assert_ok();
}

/// The server under test: the binary, or `$LINUXDISK_MK_NBD_SERVER` (a stand-in, see the module doc).
pub fn server_bin() -> PathBuf {
    match std::env::var_os("LINUXDISK_MK_NBD_SERVER").filter(|p| !p.is_empty()) {
        Some(p) => std::fs::canonicalize(&p)
            .unwrap_or_else(|e| panic!("LINUXDISK_MK_NBD_SERVER={p:?}: {e}")),
        None => PathBuf::from(BIN),
    }
}

/// Panics (root first, then each missing program with the Debian package to install) unless the
/// tests can run: they never skip.
pub fn require_tools(tools: &[&str]) {
    require_root();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for t in tools {
        let found = std::env::split_paths(&path).any(|d| d.join(t).is_file());
        let pkg = match *t {
            "nbdinfo" | "nbdcopy" | "nbdsh" => "libnbd-bin (and python3-libnbd)",
            "nbdkit" => "nbdkit",
            "qemu-img" | "qemu-io" => "qemu-utils",
            "qemu-system-x86_64" => "qemu-system-x86",
            "sgdisk" => "gdisk",
            "psktool" | "certtool" => "gnutls-bin",
            _ => "the package that provides it",
        };
        assert!(found, "{t} is not installed: apt-get install {pkg}");
    }
}

/// `nbd+unix:///EXPORT?socket=PATH`, as nbdkit writes it.
pub fn unix_uri(socket: &Path, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", socket.display())
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A running `linuxdisk-mk --serve`; stopped with SIGTERM when dropped. Unless the test is already
/// failing, the drop also asserts exit status 0 and that the `--socket` path is gone.
pub struct ServerGuard {
    child: Child,
    args: Vec<OsString>,
    socket: Option<PathBuf>,
    uri: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// The value after `opt` in `args`.
fn arg_after(args: &[OsString], opt: &str) -> Option<OsString> {
    args.iter()
        .position(|a| a == opt)
        .and_then(|i| args.get(i + 1).cloned())
}

impl ServerGuard {
    /// Starts `linuxdisk-mk --serve ARGS...` and waits (bounded) until it prints its URI or, with
    /// `-q`, until its `--pidfile` is written (without one: until `--socket` accepts a connection). Panics with its stderr if it exits first.
    pub fn start<I, S>(args: I) -> ServerGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_with_env(&[], args)
    }

    /// Like [`ServerGuard::start`], with extra environment variables (e.g. `SOURCE_DATE_EPOCH`,
    /// so that the served disk is byte-identical to the image file written for the same tree).
    pub fn start_with_env<I, S>(env: &[(&str, &str)], args: I) -> ServerGuard
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut full: Vec<OsString> = vec!["--serve".into()];
        full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        let socket = arg_after(&full, "--socket").map(PathBuf::from);
        let mut child = Command::new(server_bin())
            .args(&full)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_bin().display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut g = ServerGuard {
            child,
            args: full,
            socket,
            uri: String::new(),
            stderr,
            reader: Some(reader),
            status: None,
        };
        g.wait_ready();
        g
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let err = self.stderr();
            if let Some(line) = err.lines().find_map(|l| l.strip_prefix(SERVING)) {
                // The whole line must have arrived.
                if err.contains(&format!("{SERVING}{line}\n")) {
                    self.uri = line.trim().to_owned();
                    return;
                }
            }
            let pidfile = arg_after(&self.args, "--pidfile").map(PathBuf::from);
            let pid_written = pidfile
                .is_some_and(|p| std::fs::read_to_string(p).is_ok_and(|t| !t.trim().is_empty()));
            if let Some(s) = &self.socket {
                // -q: the pidfile says ready; without one, a probe connection does.
                let quiet_ready = || {
                    if arg_after(&self.args, "--pidfile").is_some() {
                        pid_written
                    } else {
                        std::os::unix::net::UnixStream::connect(s).is_ok()
                    }
                };
                if !self.prints_uri() && quiet_ready() {
                    let export = arg_after(&self.args, "--export-name").unwrap_or_default();
                    self.uri = unix_uri(s, &export.to_string_lossy());
                    return;
                }
            }
            if let Some(st) = self.child.try_wait().expect("wait for server") {
                self.status = Some(st);
                panic!(
                    "the server exited ({st}) before serving\n{}",
                    self.describe()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "the server did not say it was serving within {START_TIMEOUT:?}\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Does the server announce itself (no `-q`)?
    fn prints_uri(&self) -> bool {
        !self.args.iter().any(|a| a == "-q" || a == "--quiet")
    }

    /// The URI the server printed (or, with `-q`, the one its socket implies).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server printed on stderr so far (all of it once it has exited: the reader
    /// is given up to 2 s to drain the pipe).
    pub fn stderr(&self) -> String {
        if self.status.is_some() {
            if let Some(r) = &self.reader {
                let start = Instant::now();
                while !r.is_finished() && start.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (bounded: only a stuck server reaches the bound) until the server's stderr has
    /// `count` lines containing `what`; its stderr then. A line about a client is written as the
    /// server's thread for it goes on, which may be after the client has seen its answer.
    pub fn wait_logged(&self, what: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.stderr();
            if log.lines().filter(|l| l.contains(what)).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not log {count} x {what:?}\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The command line and stderr, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "server: {} {:?}\n  stderr: {}",
            server_bin().display(),
            self.args,
            self.stderr()
        )
    }

    /// Sends `sig` and waits (up to STOP_TIMEOUT) for the exit status. Panics (after SIGKILL)
    /// if the server is still running then.
    pub fn signal_and_wait(&mut self, sig: rustix::process::Signal) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, sig);
        match wait_timeout(&mut self.child, STOP_TIMEOUT) {
            Some(st) => {
                self.status = Some(st);
                st
            }
            None => {
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
                panic!(
                    "the server was still running {STOP_TIMEOUT:?} after {sig:?} (killed)\n{}",
                    self.describe()
                );
            }
        }
    }

    /// SIGTERM, then asserts: exit 0, socket removed.
    pub fn stop(&mut self) {
        let st = self.signal_and_wait(rustix::process::Signal::TERM);
        assert!(
            st.success(),
            "the server exited with {st} after SIGTERM (want 0)\n{}",
            self.describe()
        );
        if let Some(s) = &self.socket {
            assert!(
                std::fs::symlink_metadata(s).is_err(),
                "the server left its socket {} behind after SIGTERM\n{}",
                s.display(),
                self.describe()
            );
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if self.status.is_none() {
                let pid = rustix::process::Pid::from_child(&self.child);
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                if wait_timeout(&mut self.child, STOP_TIMEOUT).is_none() {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                }
            }
            return;
        }
        self.stop();
    }
}

/// A helper process (e.g. a client holding a connection), killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `prog ARGS` with TOOL_TIMEOUT (a hang fails the test, it does not stall the suite).
pub fn client<I, S>(prog: &str, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_cmd_timeout(Command::new(prog), args, TOOL_TIMEOUT)
}

/// How a client run went, for assertion messages.
pub fn show_run(prog: &str, r: &Run) -> String {
    format!(
        "{prog} {:?}\n  status: {}\n  stdout: {}\n  stderr: {}",
        r.args, r.status, r.stdout, r.stderr
    )
}

/// Runs a client that must succeed; returns its stdout.
pub fn client_ok<I, S>(prog: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let r = client(prog, args);
    assert!(
        r.status.success(),
        "{} failed\n{}",
        prog,
        show_run(prog, &r)
    );
    r.stdout
}

/// The JSON that `what` printed, parsed (a panic shows it when it is not JSON).
pub fn json(what: &str, text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} printed bad JSON ({e}):\n{text}"))
}

/// `nbdinfo --json URI`, parsed.
pub fn nbdinfo_json(uri: &str) -> serde_json::Value {
    json("nbdinfo --json", &client_ok("nbdinfo", ["--json", uri]))
}

/// One line of `nbdinfo --map`: offset, length, NBD_STATE_* flags (1 = hole, 2 = zero), words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapExtent {
    pub offset: u64,
    pub len: u64,
    pub flags: u32,
    pub desc: String,
}

/// `nbdinfo --map URI` (base:allocation), parsed.
pub fn nbd_map(uri: &str) -> Vec<MapExtent> {
    let out = client_ok("nbdinfo", ["--map", uri]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| -> u64 {
                w.get(i)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad nbdinfo --map line {l:?}"))
            };
            MapExtent {
                offset: num(0),
                len: num(1),
                flags: num(2) as u32,
                desc: w[3..].join(" "),
            }
        })
        .collect()
}

/// `nbdcopy --connections=N URI DEST`.
pub fn nbdcopy(uri: &str, dest: &Path, connections: u32) {
    client_ok(
        "nbdcopy",
        [
            OsStr::new(&format!("--connections={connections}")),
            OsStr::new(uri),
            dest.as_os_str(),
        ],
    );
}

/// Every entry under `dir` with its type, mode, owner, size, ns mtime, content or link target: equal
/// fingerprints before and after mean the tree was not touched.
pub fn tree_fingerprint(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!("-> {:?}", std::fs::read_link(&p).unwrap())
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            format!("{} bytes, sum {:x}", data.len(), fnv(&data))
        } else if ft.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            stack.extend(names);
            "dir".into()
        } else {
            format!("special {}", ft.is_socket())
        };
        out.push(format!(
            "{}: {:o} {}:{} {}.{} {what}",
            p.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
