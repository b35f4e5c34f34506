//! Captive mode (`--run CMD`), as nbdkit does it: once the server listens, `sh -c CMD` runs
//! with `$uri`, `$nbd`, `$unixsocket`, `$port` and `$exportname` in its environment and our
//! stdin, stdout and stderr; when it exits the server stops, and the process exits with the
//! command's status (128 + signal number when a signal killed it).

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// What the command learns about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptiveEnv {
    /// The NBD URI (also given as `$nbd`).
    pub uri: String,
    /// The Unix socket's path, empty on TCP.
    pub unixsocket: String,
    /// The TCP port, empty on a Unix socket.
    pub port: String,
    /// The export name.
    pub exportname: String,
}

/// Sends signals to the command while it has not exited: once its exit is seen (before it
/// is reaped) nothing more is sent, so its process ID cannot have been reused.
#[derive(Debug, Clone)]
pub struct Signaller {
    pid: Pid,
    exited: Arc<Mutex<bool>>,
}

impl Signaller {
    /// Forwards signal `signo` to the command's shell, unless it has exited.
    pub fn forward(&self, signo: i32) {
        let exited = crate::sync::lock(&self.exited);
        if !*exited {
            if let Some(sig) = Signal::from_named_raw(signo) {
                let _ = rustix::process::kill_process(self.pid, sig);
            }
        }
    }
}

/// The running command.
#[derive(Debug)]
pub struct Captive {
    signaller: Signaller,
    waiter: JoinHandle<io::Result<ExitStatus>>,
}

impl Captive {
    /// Starts `sh -c cmd` with `env`; `on_exit` runs (on another thread) once it has exited.
    pub fn spawn(
        cmd: &str,
        env: &CaptiveEnv,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<Captive> {
        let child = command(cmd, env)
            .spawn()
            .with_context(|| format!("running `sh -c {cmd}`"))?;
        let signaller = Signaller {
            pid: Pid::from_child(&child),
            exited: Arc::new(Mutex::new(false)),
        };
        let exited = Arc::clone(&signaller.exited);
        let waiter = std::thread::Builder::new()
            .name("nbd-run-wait".into())
            .spawn(move || {
                let status = wait(child, &exited);
                on_exit();
                status
            })
            .context("starting the thread that waits for the --run command")?;
        Ok(Captive { signaller, waiter })
    }

    /// A handle to signal the command with.
    pub fn signaller(&self) -> Signaller {
        self.signaller.clone()
    }

    /// Waits for the command; returns the exit status for our process.
    pub fn wait(self) -> anyhow::Result<i32> {
        let status = self
            .waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the thread waiting for the --run command panicked"))?
            .context("waiting for the --run command")?;
        Ok(exit_code(status))
    }
}

/// `sh -c cmd` with the server's variables; LISTEN_* (ours, from socket activation) removed.
fn command(cmd: &str, env: &CaptiveEnv) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("uri", &env.uri)
        .env("nbd", &env.uri)
        .env("unixsocket", &env.unixsocket)
        .env("port", &env.port)
        .env("exportname", &env.exportname)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
    c
}

/// Waits for `child` to exit; marks it exited before reaping it.
fn wait(mut child: Child, exited: &Mutex<bool>) -> io::Result<ExitStatus> {
    let pid = Pid::from_child(&child);
    // Seen as a zombie (Ok) or not waitable at all (other errors): stop signalling it.
    while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    ) {}
    *crate::sync::lock(exited) = true;
    child.wait()
}

/// The exit code: the command's own, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn env() -> CaptiveEnv {
        CaptiveEnv {
            uri: "nbd+unix:///?socket=/tmp/s".into(),
            unixsocket: "/tmp/s".into(),
            port: String::new(),
            exportname: "e x".into(),
        }
    }

    #[test]
    fn environment_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!(
            "printf '%s|%s|%s|%s|%s|%s' \"$uri\" \"$nbd\" \"$unixsocket\" \"${{port-unset}}\" \
             \"$exportname\" \"${{LISTEN_PID-none}}\" > '{}'; exit 7",
            out.display()
        );
        let (tx, rx) = mpsc::channel();
        let c = Captive::spawn(&cmd, &env(), move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(c.wait().unwrap(), 7);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "nbd+unix:///?socket=/tmp/s|nbd+unix:///?socket=/tmp/s|/tmp/s||e x|none"
        );
    }

    #[test]
    fn forwarded_signal_gives_128_plus_signal() {
        // sh, or the sleep it has become: either dies of the signal.
        let c = Captive::spawn("exec sleep 30", &env(), || ()).unwrap();
        c.signaller().forward(15);
        assert_eq!(c.wait().unwrap(), 128 + 15);
    }

    #[test]
    fn no_signal_after_exit() {
        let (tx, rx) = mpsc::channel();
        let c = Captive::spawn("exit 0", &env(), move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let s = c.signaller();
        assert!(*s.exited.lock().unwrap());
        s.forward(9); // does nothing: the pid may be anyone's now
        assert_eq!(c.wait().unwrap(), 0);
    }
}
