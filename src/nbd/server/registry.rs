//! The open connections, in two groups. Those still in the handshake: at most
//! `handshakes`; when a client comes and the group is full, the one that has been there longest
//! is dropped to make room. Those in the transmission phase (sessions): at most
//! `--max-connections`; a client that completes its handshake beyond that is refused. A
//! client that never completes the handshake (without the key, under `--tls=require`) thus
//! holds a place only until the handshake deadline or until newer clients push it out, and
//! never a session's place: clients that cannot authenticate cannot lock the others out.
//!
//! The registry also keeps a clone of each socket, to end the connections on stop; each
//! connection's thread removes its own entry when it ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::listen::Stream;

/// On stop, connections get this long to finish their replies in flight...
const STOP_GRACE: Duration = Duration::from_secs(5);
/// ...then their sockets are shut down both ways, and this long more before we give up.
const STOP_FORCE: Duration = Duration::from_secs(1);
/// At least this many handshakes may be in progress, whatever `--max-connections` says.
pub const MIN_HANDSHAKES: usize = 64;

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    /// Dropped from the handshake to make room (its thread is ending).
    Evicted,
    Session,
}

pub struct Registry {
    inner: Mutex<Inner>,
    changed: Condvar,
    max_sessions: usize,
    max_handshakes: usize,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, (Stream, Phase)>,
    /// Connections in the handshake, oldest (smallest id) first.
    handshaking: BTreeSet<u64>,
    sessions: usize,
    closing: bool,
}

/// Removes a connection from the registry when its thread ends (even by panic).
pub struct Deregister<'a>(pub &'a Registry, pub u64);

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

impl Registry {
    /// At most `max_sessions` clients in the transmission phase, and as many (at least
    /// [`MIN_HANDSHAKES`]) in the handshake.
    pub fn new(max_sessions: usize) -> Registry {
        Registry {
            inner: Mutex::default(),
            changed: Condvar::new(),
            max_sessions,
            max_handshakes: max_sessions.max(MIN_HANDSHAKES),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Registers a new connection in the handshake group, dropping the oldest handshake if the
    /// group is full. `None` when closing or the socket cannot be cloned.
    pub fn add(&self, stream: &Stream) -> Option<u64> {
        let mut inner = self.lock();
        if inner.closing {
            return None;
        }
        let handle = stream.try_clone().ok()?;
        if inner.handshaking.len() >= self.max_handshakes {
            if let Some(oldest) = inner.handshaking.pop_first() {
                if let Some((s, phase)) = inner.live.get_mut(&oldest) {
                    *phase = Phase::Evicted;
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(id, (handle, Phase::Handshake));
        inner.handshaking.insert(id);
        Some(id)
    }

    /// Moves connection `id` from the handshake to the sessions, if there is room.
    pub fn establish(&self, id: u64) -> Result<(), String> {
        let mut inner = self.lock();
        match inner.live.get(&id).map(|e| e.1) {
            Some(Phase::Session) => return Ok(()),
            Some(Phase::Handshake) => {}
            _ => return Err("the connection is being closed".into()),
        }
        if inner.sessions >= self.max_sessions {
            return Err(format!(
                "the server is serving its maximum of {} clients (--max-connections); try later",
                self.max_sessions
            ));
        }
        inner.sessions += 1;
        inner.handshaking.remove(&id);
        if let Some(e) = inner.live.get_mut(&id) {
            e.1 = Phase::Session;
        }
        Ok(())
    }

    /// Whether connection `id` was dropped from the handshake to make room.
    pub fn was_evicted(&self, id: u64) -> bool {
        self.lock()
            .live
            .get(&id)
            .is_some_and(|e| e.1 == Phase::Evicted)
    }

    /// How many handshakes may be in progress at once.
    pub fn max_handshakes(&self) -> usize {
        self.max_handshakes
    }

    /// Forgets connection `id`; once none are left, idle read buffers are unmapped so memory
    /// comes back down.
    pub fn remove(&self, id: u64) {
        let none_left = {
            let mut r = self.lock();
            if let Some((_, phase)) = r.live.remove(&id) {
                match phase {
                    Phase::Session => r.sessions -= 1,
                    Phase::Handshake => {
                        r.handshaking.remove(&id);
                    }
                    Phase::Evicted => {}
                }
            }
            r.live.is_empty()
        };
        if none_left {
            crate::nbd::buffer::release_idle();
        }
        self.changed.notify_all();
    }

    pub fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// (connections in the handshake, sessions).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let r = self.lock();
        (r.handshaking.len(), r.sessions)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Refuses new connections, shuts down the reading side of every open one (the session
    /// sees end-of-file, finishes its replies in flight and returns), waits for them; after
    /// [`STOP_GRACE`] shuts the rest down both ways. Returns how many were still open.
    pub fn close_all(&self) -> usize {
        let mut inner = self.lock();
        inner.closing = true;
        for (s, _) in inner.live.values() {
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
        inner = self.wait_empty(inner, STOP_GRACE);
        for (s, _) in inner.live.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        inner = self.wait_empty(inner, STOP_FORCE);
        inner.live.len()
    }

    fn wait_empty<'a>(
        &self,
        mut inner: MutexGuard<'a, Inner>,
        limit: Duration,
    ) -> MutexGuard<'a, Inner> {
        let deadline = Instant::now() + limit;
        while !inner.live.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        inner
    }
}
