//! The NBD server, written from the protocol document (NetworkBlockDevice/nbd, doc/proto.md):
//! wire constants (`proto`), the fixed-newstyle handshake (`handshake`), request parsing and
//! validation (`request`), reply writing (`reply`), the transmission phase (`session`), what is
//! served (`export`: the [`Disk`](crate::disk::Disk) read-only, or under a copy-on-write overlay,
//! `cow`), and the process around it: listeners, threads, signals, `--run` (`server`, `captive`).

pub mod buffer;
pub mod captive;
pub mod cow;
pub mod export;
pub mod handshake;
pub mod proto;
pub mod reply;
pub mod request;
pub mod server;
pub mod session;
#[cfg(test)]
pub(crate) mod testing;

pub use export::{Export, Extent};
pub use server::{check_options, serve, ServeOptions};
