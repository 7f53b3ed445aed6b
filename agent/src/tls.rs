//! Pinning the coordinator's certificate (`coordinator.pin_sha256`).
//!
//! With a pin, a TLS connection to the coordinator's host accepts exactly the certificate
//! whose DER encoding has that SHA-256, whoever signed it and whatever its dates (a
//! self-signed certificate the coordinator generated, say), and the handshake signature is
//! still verified with that certificate's key, so only the holder of its private key can
//! complete it. Connections to every other host (S3, artifact servers, Git over HTTPS) share
//! the agent's one HTTP client and are verified as usual: the system's roots plus
//! `coordinator.ca_file`.
//!
//! This module builds the rustls configuration only, from the pin the config parsed
//! ([`crate::config::CertPin`]); `client::http_client` hands it to reqwest.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::CertPin;

/// A rustls client configuration that pins `pin` and verifies every other host against the
/// system's roots plus the PEM certificates of `ca_file`.
pub fn pinned_config(
    pin: &CertPin,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, as reqwest does; what loads is used.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "reading CA file {}: no PEM certificate in the file",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
        }
    }
    // Without any root, other hosts are refused with rustls's own "no root" error.
    let others = (!roots.is_empty())
        .then(|| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
        })
        .transpose()
        .map_err(|e| format!("building the certificate verifier: {e}"))?;
    let verifier = PinnedVerifier {
        pin: pin.clone(),
        others,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: CertPin,
    /// Everyone but the coordinator; `None` when no root certificate could be loaded.
    others: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.pin.servers.iter().any(|s| s == server_name) {
            return match &self.others {
                Some(others) => others.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ),
                None => Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
            };
        }
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the certificate of {} has SHA-256 fingerprint {}, not the one in \
                 coordinator.pin_sha256 ({})",
                server_name.to_str(),
                hex::encode(got),
                hex::encode(self.pin.sha256)
            )))
        }
    }

    // The handshake is signed with the pinned certificate's key: checked as usual, so a
    // copy of the public certificate alone cannot impersonate the coordinator.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
