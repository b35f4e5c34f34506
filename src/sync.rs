//! Locks that survive a panicked holder: the data behind every lock of the program stays
//! consistent between calls (counters, registries, pools), so a thread that panicked while
//! holding one does not make the rest of the program fail with it.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking it over from a holder that panicked.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
