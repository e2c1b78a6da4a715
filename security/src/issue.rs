//! Issuing Coffer's certificates: a cluster's certificate authority, node
//! certificates (server and client use, with the hosts they are reached
//! at) and client certificates (client use only), as PEM files.
//!
//! `coffer dev` and `coffer certs` use this; a deployment with a PKI of its
//! own issues certificates there instead, with the URIs of
//! [`crate::identity`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::identity::Identity;

/// How long a certificate authority is valid by default (ten years).
pub const AUTHORITY_VALID_DAYS: u32 = 3_650;
/// How long a node or client certificate is valid by default (one year).
pub const CERTIFICATE_VALID_DAYS: u32 = 365;
/// How far back a new certificate's validity starts, for clocks a little
/// behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

/// Why a certificate could not be issued or written.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// rcgen refused the parameters or a file's contents.
    #[error("{what}: {source}")]
    Certificate {
        /// What was being made or read.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn certificate_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> IssueError {
    let what = what.into();
    move |source| IssueError::Certificate { what, source }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS #8).
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (the key readable by
    /// its owner only) and returns their paths. A file is written beside its
    /// target and renamed over it, so a node reloading its files never
    /// reads half of one.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), IssueError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&key, &self.key_pem, 0o600)?;
        write_file(&cert, &self.cert_pem, 0o644)?;
        Ok((cert, key))
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), IssueError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| IssueError::Io { path: path.to_owned(), source };
    let temporary = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// A certificate authority that issues a cluster's certificates.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new self-signed authority for `cluster`, valid for `valid_days`.
    pub fn create(cluster: &str, valid_days: u32) -> Result<Self, IssueError> {
        let key = KeyPair::generate().map_err(certificate_error("a key for the authority"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("coffer {cluster} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, valid_days);
        let cert = params.self_signed(&key).map_err(certificate_error("the authority's certificate"))?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The authority in `cert` and `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, IssueError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| IssueError::Io { path: path.to_owned(), source })
        };
        let cert_pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?).map_err(certificate_error(key.display().to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(certificate_error(cert.display().to_string()))?;
        Ok(Self { cert_pem, issuer })
    }

    /// The authority's certificate (what every node and client trusts).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The authority's certificate and key, to write next to the others.
    pub fn to_issued(&self) -> Issued {
        Issued { cert_pem: self.cert_pem.clone(), key_pem: self.issuer.key().serialize_pem() }
    }

    /// A certificate for `identity`, valid for `valid_days`. A node's is for
    /// servers and clients and names `hosts` (DNS names or IP addresses, as
    /// peers and clients dial it); a client's is for clients only.
    pub fn issue(&self, identity: &Identity, hosts: &[String], valid_days: u32) -> Result<Issued, IssueError> {
        let what = identity.uri();
        let key = KeyPair::generate().map_err(certificate_error(format!("a key for {what}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, identity.principal());
        let uri = what.clone().try_into().map_err(certificate_error(format!("URI {what}")))?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if matches!(identity, Identity::Node { .. }) {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            for host in hosts {
                params.subject_alt_names.push(match host.parse::<IpAddr>() {
                    Ok(address) => SanType::IpAddress(address),
                    Err(_) => {
                        SanType::DnsName(host.clone().try_into().map_err(certificate_error(format!("host {host}")))?)
                    }
                });
            }
        }
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, valid_days);
        let cert =
            params.signed_by(&key, &self.issuer).map_err(certificate_error(format!("the certificate of {what}")))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn set_validity(params: &mut CertificateParams, valid_days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + DAY * valid_days;
}

/// The hosts a certificate for a node on this machine names by default.
pub fn loopback_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_identity() {
        let authority = Authority::create("coffer", 30).unwrap();
        for identity in [Identity::node("coffer", "seoul", 2), Identity::client("coffer", "auditor")] {
            let issued = authority.issue(&identity, &loopback_hosts(), 1).unwrap();
            let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes());
            use rustls_pki_types::pem::PemObject as _;
            assert_eq!(Identity::from_certificate(&der.unwrap()), Ok(identity));
        }
    }

    #[test]
    fn an_authority_written_and_loaded_issues_again() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = Authority::create("coffer", 30).unwrap().to_issued().write(dir.path(), "ca").unwrap();
        let loaded = Authority::load(&cert, &key).unwrap();
        loaded.issue(&Identity::client("coffer", "ops"), &[], 1).unwrap();
    }
}
