//! The coordinator's TLS certificate: the configured PEM pair, or a self-signed one that
//! `hoist server` generates in `DATA_DIR/tls/` on its first start on a non-loopback address
//! with no certificate configured; and its SHA-256 fingerprint (of the DER certificate,
//! uppercase hex in colon-separated pairs), which agents pin with `coordinator.pin_sha256`.
//!
//! The generated pair is written key first, each file through a temp file, fsync and
//! rename, so a certificate on disk always has its key beside it. Not here: serving
//! (the `server` module).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::TlsFiles;

/// Where the generated certificate lives in a data directory.
pub fn generated_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("cert.pem")
}

/// Where the generated certificate's key lives in a data directory.
pub fn generated_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("key.pem")
}

/// `AB:CD:...`: the SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint of the first certificate in a PEM file.
pub fn certificate_fingerprint(path: &Path) -> Result<String> {
    let certs = read_certs(path)?;
    let first = certs
        .first()
        .ok_or_else(|| anyhow!("{} holds no PEM certificate", path.display()))?;
    Ok(fingerprint(first.as_ref()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    if !path.exists() {
        return Err(anyhow!(
            "no certificate at {}: the coordinator generates one there on its first start \
             on a non-loopback address without --tls-cert",
            path.display()
        ));
    }
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading TLS certificates {}", path.display()))
}

/// The certificate in `DATA_DIR/tls/`, generated now if there is none yet.
pub fn generated_pair(data_dir: &Path, listen: SocketAddr) -> Result<TlsFiles> {
    let files = TlsFiles {
        cert: generated_cert_path(data_dir),
        key: generated_key_path(data_dir),
    };
    match (files.cert.exists(), files.key.exists()) {
        (true, true) => return Ok(files),
        (true, false) => {
            return Err(anyhow!(
                "{} exists without its key {}: restore the key, or remove both to generate a new \
                 certificate (agents that pinned the old one must then pin the new one)",
                files.cert.display(),
                files.key.display()
            ))
        }
        // A key alone is what an interrupted generation leaves: start again.
        (false, _) => {}
    }
    let dir = data_dir.join("tls");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let key = rcgen::KeyPair::generate().context("generating a TLS key")?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hoist coordinator");
    let mut names = vec!["localhost".to_owned()];
    if let Ok(host) = nix::unistd::gethostname() {
        if let Some(h) = host.to_str().filter(|h| !h.is_empty() && *h != "localhost") {
            names.push(h.to_owned());
        }
    }
    for name in names {
        // A host name that is not a valid DNS name is left out; pinning does not need it.
        if let Ok(n) = rcgen::string::Ia5String::try_from(name) {
            params.subject_alt_names.push(rcgen::SanType::DnsName(n));
        }
    }
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if !listen.ip().is_unspecified() && !ips.contains(&listen.ip()) {
        ips.push(listen.ip());
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
    let cert = params
        .self_signed(&key)
        .context("generating a self-signed certificate")?;
    write_private(&files.key, key.serialize_pem().as_bytes())?;
    write_private(&files.cert, cert.pem().as_bytes())?;
    tracing::warn!(
        path = %files.cert.display(),
        "no TLS certificate configured: generated a self-signed one"
    );
    Ok(files)
}

/// Writes `bytes` to `path` (mode 0600) through a temp file, fsync and rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A rustls acceptor (ring provider, HTTP/1.1 by ALPN) for a PEM pair; also returns the
/// fingerprint of its certificate.
pub fn acceptor(tls: &TlsFiles) -> Result<(tokio_rustls::TlsAcceptor, String)> {
    let certs = read_certs(&tls.cert)?;
    let fp = certs
        .first()
        .map(|c| fingerprint(c.as_ref()))
        .ok_or_else(|| anyhow!("{} holds no PEM certificate", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("reading TLS key {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the TLS certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), fp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_reused_and_its_fingerprint_is_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let files = generated_pair(tmp.path(), listen).unwrap();
        let fp = certificate_fingerprint(&files.cert).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        let again = generated_pair(tmp.path(), listen).unwrap();
        assert_eq!(certificate_fingerprint(&again.cert).unwrap(), fp);
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, served) = acceptor(&files).unwrap();
        assert_eq!(served, fp);
    }

    #[test]
    fn a_certificate_without_its_key_is_an_error_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let files = generated_pair(tmp.path(), listen).unwrap();
        std::fs::remove_file(&files.key).unwrap();
        let err = format!("{:#}", generated_pair(tmp.path(), listen).unwrap_err());
        assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
    }
}
