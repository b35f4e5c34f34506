//! Running the binary on a pseudo-terminal, as a user at a terminal does: under `script`
//! (util-linux), whose typescript records every byte written to the terminal, and whose stdin
//! feeds the terminal (a `\x03` there is a Ctrl-C: the line discipline sends SIGINT to the
//! foreground process). [`Screen`] replays the carriage returns, line clears and newlines of the
//! typescript: the frames the current line showed, and the lines left on the screen.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{wait_timeout, BIN};

/// How long a run may take: reached only when it is stuck.
const STUCK: Duration = Duration::from_secs(300);

/// A run on a terminal: its exit status and what the terminal showed.
pub struct TerminalRun {
    pub status: ExitStatus,
    pub screen: Screen,
}

/// A command line for `sh -c`, every argument single-quoted.
fn shell_line<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let quote = |s: &[u8]| {
        let s = String::from_utf8_lossy(s).replace('\'', r"'\''");
        format!("'{s}'")
    };
    let mut line = quote(BIN.as_bytes());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a.as_ref().as_bytes()));
    }
    line
}

/// Runs the binary with `args` on a terminal, in `dir` (where the typescript goes). With
/// `ctrl_c`, once `ctrl_c.0()` returns true (polled; it may wait for an event itself) a Ctrl-C is
/// typed at the terminal.
pub fn on_terminal<I, S>(
    args: I,
    dir: &Path,
    mut ctrl_c: Option<&mut dyn FnMut(&str) -> bool>,
) -> TerminalRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let typescript = dir.join("typescript");
    let mut child = Command::new("script")
        .args(["-q", "-f", "-e", "-c"])
        .arg(shell_line(args))
        .arg(&typescript)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script (util-linux)");
    // Kept open until the end: script ends the session when its stdin ends.
    let mut keys = child.stdin.take().expect("script's stdin");
    if let Some(ready) = ctrl_c.as_mut() {
        let deadline = Instant::now() + STUCK;
        loop {
            let shown = std::fs::read(&typescript).unwrap_or_default();
            if ready(&String::from_utf8_lossy(&shown)) {
                break;
            }
            assert!(
                child.try_wait().expect("wait for script").is_none(),
                "the run ended before the moment for Ctrl-C:\n{}",
                String::from_utf8_lossy(&shown)
            );
            assert!(Instant::now() < deadline, "no moment for Ctrl-C came");
            std::thread::sleep(Duration::from_millis(20));
        }
        keys.write_all(b"\x03").expect("type Ctrl-C");
        keys.flush().expect("type Ctrl-C");
    }
    let status = wait_timeout(&mut child, STUCK).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the run on a terminal is stuck")
    });
    drop(keys);
    let raw = std::fs::read(&typescript).expect("read the typescript");
    TerminalRun {
        status,
        screen: Screen::replay(&String::from_utf8_lossy(&raw)),
    }
}

/// What a terminal showed.
#[derive(Debug, Default)]
pub struct Screen {
    /// The bytes written to the terminal (without script's header and footer lines).
    pub raw: String,
    /// Each state of the current line when it was returned to (`\r`) or ended (`\n`), in order.
    pub frames: Vec<String>,
    /// The lines left on the screen at the end, the last (unfinished) one included.
    pub lines: Vec<String>,
}

impl Screen {
    /// Replays a typescript (script's header and footer lines are dropped).
    pub fn replay(typescript: &str) -> Screen {
        let mut body = typescript;
        if body.starts_with("Script started") {
            body = body.split_once('\n').map_or("", |(_, rest)| rest);
        }
        if let Some(i) = body.rfind("\nScript done") {
            body = &body[..i];
        }
        let mut s = Screen {
            raw: body.to_string(),
            ..Screen::default()
        };
        let mut cur = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\x1b' if chars.peek() == Some(&'[') => {
                    chars.next();
                    let mut arg = String::new();
                    let mut cmd = ' ';
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            cmd = c;
                            break;
                        }
                        arg.push(c);
                    }
                    match (cmd, arg.as_str()) {
                        // Erase the line.
                        ('K', "2") => cur.clear(),
                        // Cursor up: the line above becomes the current one again.
                        ('A', n) => {
                            for _ in 0..n.parse().unwrap_or(1) {
                                if let Some(l) = s.lines.pop() {
                                    cur = l;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                '\r' => s.frames.push(cur.clone()),
                '\n' => {
                    s.frames.push(cur.clone());
                    s.lines.push(std::mem::take(&mut cur));
                }
                c => cur.push(c),
            }
        }
        s.lines.push(cur);
        s
    }

    /// The frames with content, consecutive repeats dropped.
    pub fn shown(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.frames {
            let f = f.trim_end();
            if !f.trim().is_empty() && out.last() != Some(&f) {
                out.push(f);
            }
        }
        out
    }
}

#[test]
fn replay_follows_returns_clears_and_newlines() {
    let s = Screen::replay(
        "Script started x\n a \r\x1b[2K b\r\x1b[2Kline one\r\n\x1b[2K c\r\x1b[2K\nScript done x\n",
    );
    assert_eq!(s.shown(), [" a", " b", "line one", " c"]);
    assert_eq!(s.lines, ["line one", ""]);
}
