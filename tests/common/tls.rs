//! Keys and certificates for the TLS tests, made with GnuTLS's own tools (gnutls-bin), as a
//! user of nbdkit would make them: `psktool` for PSK files, `certtool` for certificate
//! authorities, each with a server certificate (CN and DNS name localhost, IP 127.0.0.1) and a
//! client certificate, in the directory layout nbdkit, libnbd and qemu share (ca-cert.pem,
//! server-cert.pem, server-key.pem, client-cert.pem, client-key.pem).

use std::path::{Path, PathBuf};

use super::nbd::{client_ok, require_tools};

/// `psktool -u USER -p DIR/NAME`: a PSK file with one random key for USER.
pub fn psk_file(dir: &Path, name: &str, user: &str) -> PathBuf {
    require_tools(&["psktool"]);
    let p = dir.join(name);
    client_ok("psktool", ["-u", user, "-p", p.to_str().unwrap()]);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(
        text.starts_with(&format!("{user}:")),
        "psktool wrote {text:?}"
    );
    p
}

/// The same user with another key (a wrong key for a server that has `real`).
pub fn wrong_key(real: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(real).unwrap();
    let (user, key) = text.trim().split_once(':').unwrap();
    let flipped: String = key
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let p = dir.join("wrong.psk");
    std::fs::write(&p, format!("{user}:{flipped}\n")).unwrap();
    p
}

/// A certificate authority in `DIR/NAME` with its key, a server certificate and a client
/// certificate; returns the directory (nbdkit's --tls-certificates layout, and a libnbd
/// client's too).
pub fn pki(dir: &Path, name: &str) -> PathBuf {
    require_tools(&["certtool"]);
    let d = dir.join(name);
    std::fs::create_dir(&d).unwrap();
    let key = |file: &str| {
        let out = client_ok("certtool", ["--generate-privkey", "--key-type=ecdsa"]);
        std::fs::write(d.join(file), out).unwrap();
    };
    let template = |file: &str, text: &str| {
        let p = d.join(file);
        std::fs::write(&p, text).unwrap();
        p
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    key("ca-key.pem");
    let t = template(
        "ca.info",
        &format!("cn = {name} test CA\nca\ncert_signing_key\nexpiration_days = 30\n"),
    );
    certtool(&[
        "--generate-self-signed",
        "--load-privkey",
        &s(&d.join("ca-key.pem")),
        "--template",
        &s(&t),
        "--outfile",
        &s(&d.join("ca-cert.pem")),
    ]);
    for (who, text) in [
        (
            "server",
            "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\n",
        ),
        ("client", "cn = a test client\ntls_www_client\n"),
    ] {
        key(&format!("{who}-key.pem"));
        let t = template(
            &format!("{who}.info"),
            &format!("organization = {name}\n{text}signing_key\nexpiration_days = 30\n"),
        );
        certtool(&[
            "--generate-certificate",
            "--load-ca-certificate",
            &s(&d.join("ca-cert.pem")),
            "--load-ca-privkey",
            &s(&d.join("ca-key.pem")),
            "--load-privkey",
            &s(&d.join(format!("{who}-key.pem"))),
            "--template",
            &s(&t),
            "--outfile",
            &s(&d.join(format!("{who}-cert.pem"))),
        ]);
    }
    d
}

fn certtool(args: &[&str]) {
    client_ok("certtool", args);
}

/// A client's directory (libnbd's tls-certificates, qemu's tls-creds-x509 dir) that trusts the
/// CA of `trust` and presents the client certificate of `client_of` (None: no certificate).
pub fn client_dir(dir: &Path, name: &str, trust: &Path, client_of: Option<&Path>) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(trust.join("ca-cert.pem"), d.join("ca-cert.pem")).unwrap();
    if let Some(c) = client_of {
        for f in ["client-cert.pem", "client-key.pem"] {
            std::fs::copy(c.join(f), d.join(f)).unwrap();
        }
    }
    d
}
