//! Opens and reads of one path by the binary under test, as events. A [`Gate`] (fanotify permission
//! events, root only) holds each one until the test lets it through, so that a test acts at a
//! known point of the binary's work: the build opening its first source file means its scan is
//! over; opening OUTPUT's directory means the image has been renamed into place. A [`Watch`]
//! (inotify, which unlike fanotify sees FIFOs too) only notes opens, to show that a path was
//! never opened. The kernel queues each event inside the open or read call itself, so neither
//! depends on timing.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

/// How long to wait for an event: only reached when the process under test is stuck.
const WAIT: Duration = Duration::from_secs(120);

/// One fanotify group marking one path.
struct Group {
    fd: OwnedFd,
    path: PathBuf,
}

/// One event: the process that opened or read the path, and the descriptor of it the kernel
/// opened for us (closed when dropped).
struct Event {
    fd: OwnedFd,
    pid: u32,
}

impl Group {
    fn new(path: &Path, class: u32, mask: u64) -> Group {
        super::require_root();
        // The kernel opens the path (a regular file or a directory: fanotify reports no
        // others) for each event, with these flags.
        let event_flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_LARGEFILE;
        let init = class | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        // SAFETY: fanotify_init takes flags only; a negative result is checked before use.
        let raw = unsafe { libc::fanotify_init(init, event_flags as u32) };
        assert!(
            raw >= 0,
            "fanotify_init: {} (the tests need root and a kernel with fanotify permission events)",
            std::io::Error::last_os_error()
        );
        // SAFETY: fanotify_init just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_path = CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
        let mask = mask | libc::FAN_ONDIR;
        // SAFETY: `fd` is an open fanotify group and `c_path` a NUL-terminated string that
        // outlives the call.
        let marked = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD,
                mask,
                libc::AT_FDCWD,
                c_path.as_ptr(),
            )
        };
        assert!(
            marked == 0,
            "fanotify_mark {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Group {
            fd,
            path: path.to_path_buf(),
        }
    }

    /// The next queued event, if any (the descriptor is non-blocking).
    fn read_one(&self) -> Option<Event> {
        // One struct fanotify_event_metadata: no information records were asked for.
        let mut buf = [0u8; std::mem::size_of::<libc::fanotify_event_metadata>()];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(n) => return Some(self.parse(&buf[..n])),
                Err(Errno::AGAIN) => return None,
                Err(Errno::INTR) => continue,
                Err(e) => panic!("reading fanotify events for {}: {e}", self.path.display()),
            }
        }
    }

    fn parse(&self, ev: &[u8]) -> Event {
        let word = |at: usize| i32::from_ne_bytes(ev[at..at + 4].try_into().unwrap());
        assert!(
            ev.len() == 24 && ev[4] == libc::FANOTIFY_METADATA_VERSION,
            "unexpected fanotify event {ev:?}"
        );
        let (fd, pid) = (word(16), word(20));
        assert!(
            fd >= 0,
            "fanotify queue overflow watching {}",
            self.path.display()
        );
        Event {
            // SAFETY: the kernel opened this descriptor for this event; nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pid: pid as u32,
        }
    }

    /// Lets a held open or read go on. Errors are ignored: the process may be gone.
    fn allow(&self, ev: &Event) {
        let mut response = ev.fd.as_raw_fd().to_ne_bytes().to_vec();
        response.extend_from_slice(&libc::FAN_ALLOW.to_ne_bytes());
        let _ = rustix::io::write(self.fd.as_fd(), &response);
    }
}

/// Holds every open (or read) of one path by another process until the test lets it go; the
/// test process's own go through at once (a thread answers them), so the test can look at the
/// path while it holds the binary there. Dropping the gate lets everything through.
pub struct Gate {
    group: Arc<Group>,
    events: mpsc::Receiver<Event>,
    wake: UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An open or read held at a [`Gate`]; it goes on when this is dropped.
pub struct Held<'a> {
    gate: &'a Gate,
    event: Event,
}

impl Gate {
    /// Holds the opens of `path` (a file or a directory).
    pub fn opens(path: &Path) -> Gate {
        Gate::new(Group::new(
            path,
            libc::FAN_CLASS_CONTENT,
            libc::FAN_OPEN_PERM,
        ))
    }

    /// Holds the reads of the file at `path` (read, pread, copy_file_range...).
    pub fn reads(path: &Path) -> Gate {
        Gate::new(Group::new(
            path,
            libc::FAN_CLASS_CONTENT,
            libc::FAN_ACCESS_PERM,
        ))
    }

    fn new(group: Group) -> Gate {
        let group = Arc::new(group);
        let (wake, woken) = UnixStream::pair().expect("socketpair");
        let (tx, events) = mpsc::channel();
        let g = Arc::clone(&group);
        let thread = std::thread::spawn(move || {
            let me = std::process::id();
            loop {
                let mut fds = [
                    PollFd::new(&g.fd, PollFlags::IN),
                    PollFd::new(&woken, PollFlags::IN),
                ];
                match poll(&mut fds, None) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => panic!("poll on fanotify for {}: {e}", g.path.display()),
                }
                if !fds[1].revents().is_empty() {
                    return;
                }
                while let Some(event) = g.read_one() {
                    if event.pid == me {
                        g.allow(&event);
                    } else if let Err(mpsc::SendError(event)) = tx.send(event) {
                        g.allow(&event);
                    }
                }
            }
        });
        Gate {
            group,
            events,
            wake,
            thread: Some(thread),
        }
    }

    /// Waits until process `pid` opens (or reads) the path, letting other processes through;
    /// that process waits there until the returned [`Held`] is dropped.
    pub fn wait_for(&self, pid: u32) -> Held<'_> {
        loop {
            let event = self.events.recv_timeout(WAIT).unwrap_or_else(|e| {
                panic!(
                    "process {pid} did not reach {} within {WAIT:?} ({e})",
                    self.group.path.display()
                )
            });
            if event.pid == pid {
                return Held { gate: self, event };
            }
            self.group.allow(&event);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.gate.group.allow(&self.event);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = (&self.wake).write_all(b"x");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Closing the group (when `group` drops) lets every event still held go on.
    }
}

/// Notes the opens of one path (a file, a directory, a FIFO...), holding none.
pub struct Watch(OwnedFd);

impl Watch {
    pub fn opens(path: &Path) -> Watch {
        use rustix::fs::inotify::{add_watch, init, CreateFlags, WatchFlags};
        let fd = init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).expect("inotify_init");
        add_watch(&fd, path, WatchFlags::OPEN)
            .unwrap_or_else(|e| panic!("inotify_add_watch {}: {e}", path.display()));
        Watch(fd)
    }

    /// Has the path been opened since the last call? An open is queued by the open call itself:
    /// one that has returned is always seen.
    pub fn opened(&self) -> bool {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
        let mut events = Reader::new(&self.0, &mut buf);
        let mut opened = false;
        loop {
            match events.next() {
                Ok(e) => opened |= e.events().contains(ReadFlags::OPEN),
                Err(Errno::AGAIN) => return opened,
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
    }
}
