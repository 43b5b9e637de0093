//! TLS in front of a loopback service, for testing the Kafka clients' TLS settings against a
//! real handshake: a certificate authority and a server certificate for 127.0.0.1 made with
//! the `openssl` command, and `socat` terminating TLS and forwarding to the service (both
//! installed by `deploy/test.sh` when missing).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{ChildGuard, wait_until};

/// A test CA and a server certificate it signed for `127.0.0.1`.
pub struct TlsCertificates {
    /// The CA certificate clients trust (PEM).
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub certificate: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl TlsCertificates {
    /// Makes a CA named `name` and a server certificate in `dir`.
    pub fn make(dir: &Path, name: &str) -> anyhow::Result<TlsCertificates> {
        std::fs::create_dir_all(dir)?;
        let path = |file: &str| dir.join(format!("{name}-{file}"));
        let certificates = TlsCertificates {
            ca: path("ca.pem"),
            certificate: path("server.pem"),
            key: path("server.key"),
        };
        let (ca_key, request, extensions) =
            (path("ca.key"), path("server.csr"), path("server.ext"));
        std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1\n")?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&certificates.ca)
                .args(["-days", "2", "-subj"])
                .arg(format!("/CN={name} test CA")),
        )?;
        openssl(
            Command::new("openssl")
                .arg("req")
                .args(ec)
                .arg("-keyout")
                .arg(&certificates.key)
                .arg("-out")
                .arg(&request)
                .args(["-subj", "/CN=127.0.0.1"]),
        )?;
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-in"])
                .arg(&request)
                .arg("-CA")
                .arg(&certificates.ca)
                .arg("-CAkey")
                .arg(&ca_key)
                .args(["-CAcreateserial", "-days", "2", "-out"])
                .arg(&certificates.certificate)
                .arg("-extfile")
                .arg(&extensions),
        )?;
        Ok(certificates)
    }
}

fn openssl(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .context("running openssl (deploy/test.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A free loopback port (free when this returns: bind it soon).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Terminates TLS on `127.0.0.1:<port>` with `certificates` and forwards each connection to
/// `127.0.0.1:<upstream>`; returns once the port accepts connections. The guard stops it.
pub async fn tls_front(
    port: u16,
    upstream: u16,
    certificates: &TlsCertificates,
    log_dir: &Path,
) -> anyhow::Result<ChildGuard> {
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
        certificates.certificate.display(),
        certificates.key.display()
    );
    let mut cmd = Command::new("socat");
    cmd.arg(listen).arg(format!("TCP:127.0.0.1:{upstream}"));
    let front = ChildGuard::spawn(&mut cmd, log_dir, "tls-front")
        .context("starting socat (deploy/test.sh installs it)")?;
    wait_until(
        "the TLS front to listen",
        Duration::from_secs(10),
        move || async move { Ok(TcpStream::connect(("127.0.0.1", port)).is_ok()) },
    )
    .await
    .map_err(|e| e.context(front.logs()))?;
    Ok(front)
}
