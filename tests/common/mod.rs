//! Shared harness for the integration tests: run the `linuxdisk-mk` binary, check its images with real
//! tools (`sgdisk -v`, `e2fsck -fn`, `dumpe2fs -h`: `checks`), plus the tree builder (`tree`), the
//! entry-by-entry comparator (`compare`) and loop-device / mount guards (`mount`).
//!
//! The tests run as root (CI does) and never skip: without root they panic with a clear message.

pub mod boot;
pub mod checks;
pub mod compare;
pub mod debian;
pub mod entries;
pub mod mount;
pub mod nbd;
pub mod oci;
pub mod opens;
pub mod terminal;
pub mod tls;
pub mod tree;

pub use checks::{
    assert_e2fsck_clean, check_gpt, e2fsck_problem, gpt_info, mke2fs_d, with_fs_device, FsInfo,
};
pub use compare::compare_trees;
pub use mount::{mount_image, LoopDev, MountGuard, TmpfsMount};
pub use tree::{
    build_full_tree, build_full_tree_with, build_sized_tree, build_small_tree, FullTree,
};

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_linuxdisk-mk");
/// Byte offset of partition 1 in a GPT image (LBA 2048).
pub const PART_OFFSET: u64 = 1 << 20;
/// GPT type GUID of a Linux filesystem partition, as sgdisk prints it.
pub const LINUX_FS_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const MIB: u64 = 1 << 20;

/// Panics unless running as root: these tests need mknod, chown, losetup and mount.
pub fn require_root() {
    if !rustix::process::geteuid().is_root() {
        panic!(
            "linuxdisk-mk integration tests must run as root (they create devices, chown to \
             arbitrary ids, set trusted.* xattrs, and use losetup/mount); run `cargo test` as root"
        );
    }
}

/// A fresh private directory under /var/tmp (never tmpfs /tmp: images are large and sparse).
pub fn tempdir() -> tempfile::TempDir {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("ldmk-test-")
        .tempdir_in("/var/tmp")
        .expect("create temp dir in /var/tmp");
    // The trees' atimes lie in the future so that relatime never bumps them while the source is
    // read; under strictatime every read would change them and the atime comparisons would fail.
    use rustix::fs::StatVfsMountFlags as F;
    let flags = rustix::fs::statvfs(dir.path())
        .expect("statvfs /var/tmp")
        .f_flag;
    assert!(
        flags.intersects(F::RELATIME | F::NOATIME),
        "/var/tmp is mounted with strictatime: reading a source tree would change its atimes; \
         remount it relatime (the default) or noatime to run these tests"
    );
    dir
}

/// A fresh [`tempdir`] holding a source tree, `src`, that `make` fills.
pub fn temp_source(make: impl FnOnce(&Path)) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("create src");
    make(&src);
    (tmp, src)
}

/// What a run of the binary produced.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<OsString>,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "linuxdisk-mk {:?}\n  status: {}\n  stdout: {}\n  stderr: {}",
            self.args, self.status, self.stdout, self.stderr
        )
    }
    /// Asserts exit status 0.
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code(),
            Some(0),
            "expected success\n{}",
            self.describe()
        );
        self
    }
    /// Asserts the given exit code.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit {code}\n{}",
            self.describe()
        );
        self
    }
    /// Asserts a runtime error: exit 1 and exactly one non-empty line on stderr that contains every
    /// string in `mentions` (e.g. the path concerned).
    pub fn assert_one_line_error(&self, mentions: &[&str]) -> &Self {
        self.assert_code(1);
        let msg = self.stderr.trim_end_matches('\n');
        assert!(
            !msg.trim().is_empty(),
            "error message is empty\n{}",
            self.describe()
        );
        assert!(
            !msg.contains('\n'),
            "error message is not exactly one line\n{}",
            self.describe()
        );
        for m in mentions {
            assert!(
                msg.contains(m),
                "error message does not mention {m:?}\n{}",
                self.describe()
            );
        }
        self
    }
}

/// Runs the binary with a generous timeout (so a hang fails the test instead of the whole CI job).
pub fn run_bin<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_bin_timeout(args, Duration::from_secs(300))
}

/// The `SOURCE_DATE_EPOCH` of reproducible builds (2023-11-14 22:13:20 UTC): under it the same
/// tree makes a byte-identical image, and a served disk is the image file written.
pub const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// The binary, to run under [`EPOCH`].
pub fn bin_at_epoch() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env(EPOCH.0, EPOCH.1);
    cmd
}

/// `setpriv` set to run the binary as nobody (65534:65534, no groups); add the binary's
/// arguments. The binary is handed over open, as descriptor 3, and run as `/proc/self/fd/3`:
/// nobody need not reach it through the build directory (which may be under a 0700 home), and
/// no copy of it is written (exec refuses a file that is open for writing anywhere, and a child
/// forked meanwhile by another test thread holds the copy's descriptor until it execs).
pub fn as_nobody() -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let bin = std::fs::File::open(BIN).unwrap_or_else(|e| panic!("open {BIN}: {e}"));
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "/proc/self/fd/3",
    ]);
    let fd = bin.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec and only makes the async-
    // signal-safe calls dup2 and fcntl on descriptors it owns (`bin` lives in the closure).
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &bin;
            // dup2 onto 3 clears close-on-exec; if `bin` is 3 already, clear it by hand.
            let r = match fd {
                3 => libc::fcntl(3, libc::F_SETFD, 0),
                _ => libc::dup2(fd, 3),
            };
            match r {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        })
    };
    cmd
}

/// Runs the binary; kills it and panics if it is still running after `timeout`.
pub fn run_bin_timeout<I, S>(args: I, timeout: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_cmd_timeout(Command::new(BIN), args, timeout)
}

/// Runs `cmd` (e.g. the binary wrapped in setpriv) with a timeout, capturing stdout and stderr.
pub fn run_cmd_timeout<I, S>(cmd: Command, args: I, timeout: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_cmd_with_stdin(cmd, args, Stdio::null(), timeout)
}

/// [`run_cmd_timeout`] with `stdin` as the command's standard input.
pub fn run_cmd_with_stdin<I, S>(mut cmd: Command, args: I, stdin: Stdio, timeout: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    cmd.args(&args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
        panic!(
            "{cmd:?} {args:?} did not finish within {timeout:?} (killed); stderr so far:\n{stderr}"
        );
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    Run {
        status,
        stdout,
        stderr,
        args,
    }
}

/// Waits for `child` to exit (on its pidfd), for at most `timeout`: a guard against hanging, not
/// a measurement. None: still running then.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let deadline = Instant::now() + timeout;
    let mut pidfd = None;
    loop {
        // Reaped only here, so the pid cannot be reused while the pidfd is being opened.
        if let Some(st) = child.try_wait().expect("wait for child") {
            return Some(st);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let fd = pidfd.get_or_insert_with(|| {
            pidfd_open(Pid::from_child(child), PidfdFlags::empty()).expect("pidfd_open")
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timespec(left))) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll on a pidfd: {e}"),
        }
    }
}

/// `d` as a poll timeout.
pub fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as i64,
    }
}

/// Output of an external tool.
pub struct Tool {
    pub code: Option<i32>,
    pub out: String,
}

/// Runs an external tool to completion, capturing stdout+stderr together.
pub fn tool<I, S>(prog: &str, args: I) -> Tool
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let o = Command::new(prog)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e} (is it installed?)"));
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    Tool {
        code: o.status.code(),
        out,
    }
}

/// Runs a tool and panics (with its output) unless it exits 0.
pub fn tool_ok<I, S>(prog: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let t = tool(prog, &args);
    assert_eq!(t.code, Some(0), "{prog} {args:?} failed:\n{}", t.out);
    t.out
}

/// Bytes actually allocated to a file (st_blocks * 512).
pub fn allocated(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).expect("stat").blocks() * 512
}

/// Names in a directory (to check that nothing, temp files included, was left behind).
pub fn dir_names(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// Mounts the filesystem at `offset` of `img` and asserts it holds `src` exactly (`what`
/// names the image in the message).
pub fn assert_image_holds(img: &Path, offset: u64, src: &Path, what: &str) {
    let mnt = mount_image(img, offset);
    assert_no_diffs(&compare_trees(src, mnt.path()), what);
}

/// Writes the image that build options `opts` make of `src` at `out` (the build must succeed);
/// returns its size.
pub fn build_image(opts: &[&str], src: &Path, out: &Path) -> u64 {
    let mut a: Vec<&OsStr> = opts.iter().map(OsStr::new).collect();
    a.extend([src.as_os_str(), out.as_os_str()]);
    run_bin(&a).assert_ok();
    std::fs::metadata(out).unwrap().len()
}

/// `tar OPTS -C src -cf archive .` (`-z` and the like in `opts` compress).
pub fn tar_c(src: &Path, archive: &Path, opts: &[&str]) {
    let mut a: Vec<&OsStr> = opts.iter().map(OsStr::new).collect();
    a.extend([OsStr::new("-C"), src.as_os_str(), OsStr::new("-cf")]);
    a.extend([archive.as_os_str(), OsStr::new(".")]);
    tool_ok("tar", a);
}

/// Asserts a comparator result is empty, printing (the first 200 of) the differences.
pub fn assert_no_diffs(diffs: &[String], what: &str) {
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(200).map(String::as_str).collect();
        panic!(
            "{what}: {} difference(s) between source and image:\n  {}",
            diffs.len(),
            shown.join("\n  ")
        );
    }
}

/// Does `text` state `bytes` in some common unit (bytes, KiB, MiB, GiB; integer or 1-2 decimals)?
pub fn mentions_size(text: &str, bytes: u64) -> bool {
    let mut cands = vec![bytes.to_string()];
    for (div, _) in [(1u64 << 10, "K"), (1 << 20, "M"), (1 << 30, "G")] {
        let v = bytes as f64 / div as f64;
        if bytes % div == 0 {
            cands.push(format!("{}", bytes / div));
        }
        if v >= 1.0 {
            cands.push(format!("{v:.1}"));
            cands.push(format!("{v:.2}"));
        }
    }
    // Decimal units too (MB = 10^6), in case the tool prints those.
    for div in [1_000u64, 1_000_000, 1_000_000_000] {
        let v = bytes as f64 / div as f64;
        if v >= 1.0 {
            cands.push(format!("{v:.1}"));
            cands.push(format!("{v:.2}"));
        }
    }
    // Whole-token match so that "64" does not match inside "1643".
    let tokens: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|t| t.trim_matches('.'))
        .filter(|t| !t.is_empty())
        .collect();
    cands.iter().any(|c| tokens.contains(&c.as_str()))
}

/// Every size stated in `text` (numbers with an optional unit), in bytes.
pub fn sizes_in(text: &str) -> Vec<u64> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let num: f64 = text[s..i].trim_end_matches('.').parse().unwrap_or(0.0);
        let rest = text[i..].trim_start().as_bytes();
        // A unit letter counts only as "K", "KB", "KiB" (etc.) followed by a non-letter.
        let unit_len = match rest {
            [_, b'i', b'B', ..] => 3,
            [_, b'B', ..] => 2,
            _ => 1,
        };
        let unit_ok =
            !rest.is_empty() && !matches!(rest.get(unit_len), Some(c) if c.is_ascii_alphabetic());
        let unit = if unit_ok {
            rest[0].to_ascii_uppercase()
        } else {
            b' '
        };
        let dec = unit_len == 2;
        let mul: f64 = match (unit as char, dec) {
            ('K', false) => 1024.0,
            ('M', false) => 1048576.0,
            ('G', false) => 1073741824.0,
            ('T', false) => 1099511627776.0,
            ('K', true) => 1e3,
            ('M', true) => 1e6,
            ('G', true) => 1e9,
            ('T', true) => 1e12,
            _ => 1.0,
        };
        out.push((num * mul) as u64);
    }
    out
}

/// The lines a child process writes to a pipe, read by a thread as they come, so that a test
/// can wait for one (an event: "the scan is done", "connected") with only a hang guard.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line received so far.
    pub seen: Vec<String>,
}

/// How long [`Lines::wait_for`] waits: reached only when the child is stuck.
const LINE_WAIT: Duration = Duration::from_secs(120);

impl Lines {
    pub fn of(pipe: impl Read + Send + 'static) -> Lines {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the first line that `want` accepts (named `what` in the panic message when
    /// the pipe closes or nothing comes) and returns it.
    pub fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no line {what} ({e:?}); lines so far: {:#?}", self.seen),
            }
        }
    }

    /// Every line, once the pipe has closed (the child has exited).
    pub fn all(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}
