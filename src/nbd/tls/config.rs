//! The server's TLS set-up from the command line: the mode, the credentials (a certificates
//! directory or a PSK file, checked and loaded before anything is built), the OpenSSL acceptor
//! made from them, and what a client's URI must carry to use them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use openssl::ssl::{
    SslAcceptor, SslContextBuilder, SslMethod, SslMode, SslOptions, SslSessionCacheMode,
    SslVerifyMode,
};
use openssl::x509::X509Name;

/// `--tls`: whether clients may, must or cannot use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS (NBD_OPT_STARTTLS is unsupported).
    #[default]
    Off,
    /// Clients may use TLS, or not.
    On,
    /// Clients must use TLS: nothing but STARTTLS is answered before it.
    Require,
}

/// Where the server's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `--tls-certificates DIR` (ca-cert.pem, server-cert.pem, server-key.pem);
    /// `verify_peer`: clients must present a certificate that ca-cert.pem signed.
    X509 { dir: PathBuf, verify_peer: bool },
    /// `--tls-psk FILE`: `username:hexkey` lines, as GnuTLS's psktool writes them.
    Psk(PathBuf),
}

/// The TLS options as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: TlsMode,
    pub credentials: Option<Credentials>,
}

/// The loaded set-up: the acceptor every TLS connection starts from.
pub struct ServerTls {
    mode: TlsMode,
    credentials: Credentials,
    acceptor: SslAcceptor,
    /// With PSK: the file's first username, for the URI.
    psk_user: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The longest PSK identity and key accepted (OpenSSL's own limits are 256 and 512 bytes).
const MAX_PSK_IDENTITY: usize = 128;
const MAX_PSK_KEY: usize = 256;

/// TLS 1.2 PSK suites, for clients without TLS 1.3 (TLS 1.3 uses its own suites with PSK).
const PSK_CIPHERS: &str = "ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES128-GCM-SHA256:\
                           DHE-PSK-AES256-GCM-SHA384:DHE-PSK-CHACHA20-POLY1305";

impl ServerTls {
    /// Loads what `opts` name; `None` with `--tls=off`.
    pub fn load(opts: &TlsOptions) -> anyhow::Result<Option<ServerTls>> {
        if opts.mode == TlsMode::Off {
            return Ok(None);
        }
        let credentials = match &opts.credentials {
            None => bail!("TLS needs --tls-certificates DIR or --tls-psk FILE"),
            // Absolute, for the URI given to --run's command (which may change directory).
            Some(Credentials::Psk(file)) => Credentials::Psk(absolute(file)?),
            Some(Credentials::X509 { dir, verify_peer }) => Credentials::X509 {
                dir: absolute(dir)?,
                verify_peer: *verify_peer,
            },
        };
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .context("setting up OpenSSL")?;
        common(&mut b)?;
        let mut psk_user = None;
        match &credentials {
            Credentials::X509 { dir, verify_peer } => x509(&mut b, dir, *verify_peer)?,
            Credentials::Psk(file) => {
                let keys = parse_psk_file(file)?;
                psk_user = keys.first().map(|(user, _)| user.clone());
                psk(&mut b, keys)?;
            }
        }
        Ok(Some(ServerTls {
            mode: opts.mode,
            credentials,
            acceptor: b.build(),
            psk_user,
        }))
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    pub fn acceptor(&self) -> &SslAcceptor {
        &self.acceptor
    }

    /// What a URI's authority needs before the host (`USER@`, with PSK), percent-encoded.
    pub fn uri_user(&self) -> Option<&str> {
        self.psk_user.as_deref()
    }

    /// The query parameter (name, path) that tells libnbd where the keys are: `tls-psk-file`
    /// or `tls-certificates` (the same directory: enough for a client that only needs
    /// ca-cert.pem, or that finds its client-cert.pem and client-key.pem there too).
    pub fn uri_keys(&self) -> (&'static str, &Path) {
        match &self.credentials {
            Credentials::Psk(file) => ("tls-psk-file", file),
            Credentials::X509 { dir, .. } => ("tls-certificates", dir),
        }
    }

    /// True when TLS itself tells who the client is: a PSK, or a verified certificate.
    pub fn authenticates_clients(&self) -> bool {
        matches!(
            self.credentials,
            Credentials::Psk(_)
                | Credentials::X509 {
                    verify_peer: true,
                    ..
                }
        )
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: making the path absolute", p.display()))
}

/// What every TLS connection gets: TLS 1.2 or 1.3, no renegotiation, no session resumption (a
/// connection is long-lived and a ticket would be one more secret to keep), OpenSSL's buffers
/// released while a connection is idle, and an end of stream without close_notify read as an
/// ordinary end (NBD's own framing shows a cut request).
fn common(b: &mut SslContextBuilder) -> anyhow::Result<()> {
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::IGNORE_UNEXPECTED_EOF);
    b.set_mode(
        SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::RELEASE_BUFFERS,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_num_tickets(0)
        .context("turning TLS session tickets off")?;
    b.set_session_id_context(b"linuxdisk-mk")
        .context("setting the TLS session context")?;
    Ok(())
}

fn x509(b: &mut SslContextBuilder, dir: &Path, verify_peer: bool) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("--tls-certificates {}: not a directory", dir.display());
    }
    let file = |name: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        if !p.is_file() {
            bail!(
                "--tls-certificates {}: {name} is missing (the directory holds ca-cert.pem, \
                 server-cert.pem and server-key.pem, as for nbdkit)",
                dir.display()
            );
        }
        Ok(p)
    };
    let cert = file("server-cert.pem")?;
    b.set_certificate_chain_file(&cert)
        .with_context(|| format!("loading the certificate {}", cert.display()))?;
    let key = file("server-key.pem")?;
    b.set_private_key_file(&key, openssl::ssl::SslFiletype::PEM)
        .with_context(|| format!("loading the private key {}", key.display()))?;
    b.check_private_key().with_context(|| {
        format!(
            "{} is not the key of the certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    if verify_peer {
        let ca = file("ca-cert.pem")?;
        b.set_ca_file(&ca)
            .with_context(|| format!("loading the CA certificate {}", ca.display()))?;
        let names = X509Name::load_client_ca_file(&ca)
            .with_context(|| format!("loading the CA certificate {}", ca.display()))?;
        b.set_client_ca_list(names);
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(())
}

fn psk(b: &mut SslContextBuilder, keys: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    b.set_cipher_list(PSK_CIPHERS)
        .context("choosing the TLS 1.2 PSK cipher suites")?;
    let keys: HashMap<Vec<u8>, Vec<u8>> = keys
        .into_iter()
        .map(|(user, key)| (user.into_bytes(), key))
        .collect();
    // An unknown identity gets no key: the handshake then fails (there is no certificate).
    b.set_psk_server_callback(move |_ssl, identity, out| {
        match identity.and_then(|id| keys.get(id)) {
            Some(key) if key.len() <= out.len() => {
                out[..key.len()].copy_from_slice(key);
                Ok(key.len())
            }
            _ => Ok(0),
        }
    });
    Ok(())
}

/// Reads a PSK file: one `username:hexkey` a line (GnuTLS psktool's format; blank lines are
/// skipped). Errors name the file and the line; a username given twice is an error.
pub fn parse_psk_file(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--tls-psk {}: reading it", path.display()))?;
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("--tls-psk {} line {}", path.display(), i + 1);
        let Some((user, hex)) = line.split_once(':') else {
            bail!("{}: expected USERNAME:HEXKEY", at());
        };
        if user.is_empty() || user.len() > MAX_PSK_IDENTITY {
            bail!(
                "{}: the username must have 1 to {MAX_PSK_IDENTITY} bytes",
                at()
            );
        }
        let key = decode_hex(hex.trim()).ok_or_else(|| {
            anyhow::anyhow!("{}: the key is not an even number of hex digits", at())
        })?;
        if key.is_empty() || key.len() > MAX_PSK_KEY {
            bail!("{}: the key must have 1 to {MAX_PSK_KEY} bytes", at());
        }
        if keys.iter().any(|(u, _)| u == user) {
            bail!("{}: username {user:?} appears twice", at());
        }
        keys.push((user.to_string(), key));
    }
    if keys.is_empty() {
        bail!("--tls-psk {}: no USERNAME:HEXKEY line", path.display());
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.psk");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn psk_files_as_psktool_writes_them() {
        let (_d, p) = psk_file("alice:00ff10\n\nbob:ABCDEF\r\n");
        let keys = parse_psk_file(&p).unwrap();
        assert_eq!(
            keys,
            [
                ("alice".to_string(), vec![0, 0xff, 0x10]),
                ("bob".to_string(), vec![0xab, 0xcd, 0xef])
            ]
        );
        for (text, why) in [
            ("alice", "USERNAME:HEXKEY"),
            (":00", "username"),
            ("alice:0", "hex digits"),
            ("alice:zz", "hex digits"),
            ("alice:", "1 to"),
            ("a:00\na:11", "twice"),
            ("\n\n", "no USERNAME"),
        ] {
            let (_d, p) = psk_file(text);
            let e = format!("{:#}", parse_psk_file(&p).unwrap_err());
            assert!(e.contains(why) && e.contains("keys.psk"), "{text:?}: {e}");
        }
        let e = format!(
            "{:#}",
            parse_psk_file(Path::new("/nonexistent.psk")).unwrap_err()
        );
        assert!(e.contains("/nonexistent.psk"), "{e}");
    }

    #[test]
    fn loading_names_what_is_missing() {
        let off = TlsOptions::default();
        assert!(ServerTls::load(&off).unwrap().is_none());
        let none = TlsOptions {
            mode: TlsMode::Require,
            credentials: None,
        };
        assert!(format!("{:#}", ServerTls::load(&none).unwrap_err()).contains("--tls-psk"));
        let dir = tempfile::tempdir().unwrap();
        let certs = TlsOptions {
            mode: TlsMode::Require,
            credentials: Some(Credentials::X509 {
                dir: dir.path().to_path_buf(),
                verify_peer: false,
            }),
        };
        let e = format!("{:#}", ServerTls::load(&certs).unwrap_err());
        assert!(e.contains("server-cert.pem is missing"), "{e}");
        let (_d, p) = psk_file("alice:0011\n");
        let psk = ServerTls::load(&TlsOptions {
            mode: TlsMode::On,
            credentials: Some(Credentials::Psk(p.clone())),
        })
        .unwrap()
        .unwrap();
        assert_eq!(psk.uri_user(), Some("alice"));
        assert_eq!(psk.uri_keys(), ("tls-psk-file", p.as_path()));
        assert!(psk.authenticates_clients());
    }
}
