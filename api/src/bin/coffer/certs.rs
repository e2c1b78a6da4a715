//! `coffer certs`: issue a cluster's certificates into a directory, as the
//! nodes and the command line read them (`ca.crt`, `NAME.crt`, `NAME.key`).
//!
//! - `coffer certs ca --cluster NAME`: a new certificate authority
//!   (`ca.crt`, `ca.key`; keep the key offline in production);
//! - `coffer certs node --id ID --host HOST,...`: a node's certificate
//!   (`nodeID.crt`), naming its region and the hosts it is dialled at;
//! - `coffer certs client --name NAME`: a client principal's certificate
//!   (`NAME.crt`), whose roles the access policy grants.
//!
//! Rotating a node's certificate is issuing it again into the node's
//! files: the node reloads them within seconds (or on SIGHUP). Rotating
//! the authority is adding the new `ca.crt` to every node's bundle first,
//! then re-issuing, then removing the old one.

use std::path::{Path, PathBuf};

use coffer_security::issue::{loopback_hosts, Authority, AUTHORITY_VALID_DAYS, CERTIFICATE_VALID_DAYS};
use coffer_security::Identity;

/// `coffer certs`' subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a certificate authority: DIR/ca.crt and DIR/ca.key.
    Ca {
        /// The cluster it is the authority of (named in every certificate).
        #[arg(long)]
        cluster: String,
        /// Where the files go.
        #[arg(long, value_name = "DIR", default_value = "tls")]
        dir: PathBuf,
        /// Days it is valid.
        #[arg(long, default_value_t = AUTHORITY_VALID_DAYS)]
        days: u32,
    },
    /// Issue node ID's certificate: DIR/nodeID.crt and DIR/nodeID.key.
    Node {
        /// The cluster (as its authority names it).
        #[arg(long)]
        cluster: String,
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// The node's region (its `[dr] region`; "main" without one).
        #[arg(long, default_value = coffer_security::DEFAULT_REGION)]
        region: String,
        /// Host names and IP addresses peers and clients dial it at
        /// [default: localhost, 127.0.0.1, ::1].
        #[arg(long, value_delimiter = ',', value_name = "HOST,...")]
        host: Vec<String>,
        /// Where the authority is and the files go.
        #[arg(long, value_name = "DIR", default_value = "tls")]
        dir: PathBuf,
        /// Days it is valid.
        #[arg(long, default_value_t = CERTIFICATE_VALID_DAYS)]
        days: u32,
    },
    /// Issue client principal NAME's certificate: DIR/NAME.crt, DIR/NAME.key.
    Client {
        /// The cluster (as its authority names it).
        #[arg(long)]
        cluster: String,
        /// The principal's name (the access policy grants it roles).
        #[arg(long)]
        name: String,
        /// Where the authority is and the files go.
        #[arg(long, value_name = "DIR", default_value = "tls")]
        dir: PathBuf,
        /// Days it is valid.
        #[arg(long, default_value_t = CERTIFICATE_VALID_DAYS)]
        days: u32,
    },
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A name is not one an identity can carry.
    #[error("--{flag} {value:?}: {reason}")]
    Name {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The authority already exists (it is never overwritten).
    #[error("{0} exists: an authority is never overwritten (every certificate it issued would be orphaned)")]
    Exists(PathBuf),
    /// Issuing or writing failed.
    #[error(transparent)]
    Issue(#[from] coffer_security::issue::IssueError),
    /// The directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn check(flag: &'static str, value: &str) -> Result<(), CertsError> {
    coffer_security::identity::check_name(value).map_err(|reason| CertsError::Name {
        flag,
        value: value.to_owned(),
        reason,
    })
}

fn authority(dir: &Path) -> Result<Authority, CertsError> {
    Ok(Authority::load(&dir.join("ca.crt"), &dir.join("ca.key"))?)
}

/// Runs a `coffer certs` command; returns what it wrote.
pub fn run(command: &CertsCommand) -> Result<Vec<PathBuf>, CertsError> {
    let (cert, key) = match command {
        CertsCommand::Ca { cluster, dir, days } => {
            check("cluster", cluster)?;
            if dir.join("ca.key").exists() {
                return Err(CertsError::Exists(dir.join("ca.key")));
            }
            std::fs::create_dir_all(dir).map_err(|source| CertsError::Io { path: dir.clone(), source })?;
            Authority::create(cluster, *days)?.to_issued().write(dir, "ca")?
        }
        CertsCommand::Node { cluster, id, region, host, dir, days } => {
            check("cluster", cluster)?;
            check("region", region)?;
            if *id == 0 {
                return Err(CertsError::Name { flag: "id", value: "0".into(), reason: "0 is not a node id" });
            }
            let hosts = if host.is_empty() { loopback_hosts() } else { host.clone() };
            let issued = authority(dir)?.issue(&Identity::node(cluster, region, *id), &hosts, *days)?;
            issued.write(dir, &format!("node{id}"))?
        }
        CertsCommand::Client { cluster, name, dir, days } => {
            check("cluster", cluster)?;
            check("name", name)?;
            let issued = authority(dir)?.issue(&Identity::client(cluster, name), &[], *days)?;
            issued.write(dir, name)?
        }
    };
    Ok(vec![cert, key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_issues_node_and_client_certificates_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_owned();
        run(&CertsCommand::Ca { cluster: "treasury".into(), dir: dir.clone(), days: 10 }).unwrap();
        let again = run(&CertsCommand::Ca { cluster: "treasury".into(), dir: dir.clone(), days: 10 }).unwrap_err();
        assert!(matches!(again, CertsError::Exists(_)), "{again}");
        let node = CertsCommand::Node {
            cluster: "treasury".into(),
            id: 2,
            region: "seoul".into(),
            host: vec!["node-2.treasury.internal".into()],
            dir: dir.clone(),
            days: 10,
        };
        assert_eq!(run(&node).unwrap(), [dir.join("node2.crt"), dir.join("node2.key")]);
        let client = CertsCommand::Client { cluster: "treasury".into(), name: "a b".into(), dir: dir.clone(), days: 1 };
        assert!(run(&client).unwrap_err().to_string().starts_with("--name \"a b\": "));
        let files = coffer_security::TlsFiles::in_dir(&dir, "node2");
        let context = coffer_security::TlsContext::load(files).unwrap();
        assert_eq!(context.identity(), Identity::node("treasury", "seoul", 2));
    }
}
