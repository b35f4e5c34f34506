//! TLS as nbdkit offers it: `--tls=off|on|require`, X.509 certificates from a directory in
//! nbdkit's layout (`--tls-certificates DIR`, optionally verifying the clients' certificates,
//! `--tls-verify-peer`) or pre-shared keys in GnuTLS psktool's format (`--tls-psk FILE`);
//! `config` loads them into an OpenSSL acceptor, `stream` runs the handshake and carries the
//! session's bytes.
//!
//! OpenSSL (the `openssl` crate over the system's libssl) rather than rustls: rustls has no
//! TLS-PSK, and PSK is what nbdkit, libnbd and qemu use for keys without certificates. OpenSSL
//! does both PSK (TLS 1.3 external PSK and the TLS 1.2 PSK suites, through one server callback)
//! and X.509 with client certificates, and works with the GnuTLS clients (libnbd, qemu).

mod config;
mod stream;

pub use config::{parse_psk_file, Credentials, ServerTls, TlsMode, TlsOptions};
pub use stream::{accept, TlsConn, TlsReader, TlsWriter};
