//! The NBD server, written from the protocol document (NetworkBlockDevice/nbd, doc/proto.md):
//! wire constants (`proto`), the fixed-newstyle handshake (`handshake`), request parsing and
//! validation (`request`), reply writing (`reply`), the transmission phase (`session`), what is
//! served (`export`: the [`Disk`](crate::disk::Disk) read-only, or under a copy-on-write overlay,
//! `cow`), the bounds on memory held by requests in flight (`budget`, `buffer`), TLS (`tls`), and
//! the process around it: listeners, connection limits, threads, signals, `--run` (`server`,
//! `captive`).
//!
//! Hand-written rather than a crate: the published ones fall short of the clients we serve
//! (`nbd` 0.3 has no NBD_OPT_GO or structured replies and drops the connection on an unknown
//! option; `tokio-nbd` panics when a client asks for structured replies), and block status
//! from the disk's layout needs the server to know its regions.

pub mod budget;
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
pub mod tls;

pub use export::{Export, Extent};
pub use server::{check_options, serve, serve_announcing, ServeOptions};
