//! Bounds on the payload bytes that requests in flight hold (WRITE data read, READ data to
//! send): each connection has its own budget, so that one client cannot take everything, and
//! all connections share [`GLOBAL`], so that the server's memory stays bounded however many
//! clients there are. A request waits until its bytes fit; one that is alone always fits.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Most payload bytes one connection holds at once.
pub const PER_CONNECTION: u64 = 64 << 20;
/// Most payload bytes all connections together hold at once.
pub const ALL_CONNECTIONS: u64 = 128 << 20;

/// The budget all connections share.
pub static GLOBAL: Budget = Budget::new(ALL_CONNECTIONS);

/// A bound on the bytes held by requests in flight.
#[derive(Debug)]
pub struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
    cap: u64,
}

impl Budget {
    pub const fn new(cap: u64) -> Budget {
        Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        crate::sync::lock(&self.used)
    }

    /// Waits until `n` more bytes fit (a request always fits when nothing else is held).
    pub fn acquire(&self, n: u64) -> Grant<'_> {
        if n > 0 {
            let mut used = self.lock();
            while *used > 0 && *used + n > self.cap {
                used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
            }
            *used += n;
        }
        Grant { budget: self, n }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        *self.lock()
    }
}

/// Bytes held from a [`Budget`] until dropped (also on unwinding).
#[derive(Debug)]
pub struct Grant<'a> {
    budget: &'a Budget,
    n: u64,
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            *self.budget.lock() -= self.n;
            self.budget.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn budget_bounds_bytes_in_flight() {
        let b = Arc::new(Budget::new(100));
        let g1 = b.acquire(60);
        let g0 = b.acquire(0);
        let b2 = Arc::clone(&b);
        // 60 + 60 > 100: the second waits until the first is given back.
        let waiter = crate::testing::Spawned::new(move || {
            let _g = b2.acquire(60);
            b2.used()
        });
        waiter.wait_until_blocked("acquire(60) with 60 of 100 held");
        drop(g1);
        assert_eq!(waiter.join("acquire(60) once the 60 held are freed"), 60);
        drop(g0);
        assert_eq!(b.used(), 0);
        let _big = b.acquire(1000); // alone, anything fits
        assert_eq!(b.used(), 1000);
    }
}
