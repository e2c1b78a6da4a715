//! Who a certificate names: a node of a cluster's region, or a client
//! principal.
//!
//! Coffer's certificates carry one URI subject alternative name:
//!
//! ```text
//! coffer://<cluster>/region/<region>/node/<id>    a node
//! coffer://<cluster>/client/<name>                a client principal
//! ```
//!
//! A client certificate from another PKI may instead name its principal in
//! the subject's common name (it has then no cluster). Names are 1 to
//! [`NAME_LEN_MAX`] characters of `A-Z a-z 0-9 . _ -`.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI scheme of Coffer's identities.
pub const SCHEME: &str = "coffer://";
/// The longest cluster, region or principal name.
pub const NAME_LEN_MAX: usize = 64;
/// The region of a cluster that has no second region.
pub const DEFAULT_REGION: &str = "main";

/// What a certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A node: it may carry Raft traffic in its region and ship between
    /// regions, and acts for the clients whose requests it forwards.
    Node {
        /// The cluster (both regions share it).
        cluster: String,
        /// The node's region.
        region: String,
        /// Its node id.
        id: u64,
    },
    /// A client principal; its roles come from the access policy.
    Client {
        /// The cluster its certificate names (`None`: a common name only).
        cluster: Option<String>,
        /// The principal's name.
        name: String,
    },
}

/// The principal a request was authorized as, which the API's access
/// layer puts in every request's extensions, for services that record who
/// asked (disaster recovery's region operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

/// Why a certificate names no identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate is not DER X.509.
    #[error("the certificate does not parse: {0}")]
    Malformed(String),
    /// It has no `coffer://` URI and no common name.
    #[error("the certificate names no coffer:// URI and no common name")]
    Unnamed,
    /// It has more than one `coffer://` URI.
    #[error("the certificate names {0} coffer:// URIs; one is allowed")]
    Ambiguous(usize),
    /// Its URI or common name is not one of the forms above.
    #[error("{text:?} is not a coffer identity: {reason}")]
    Invalid {
        /// The URI or name.
        text: String,
        /// What is wrong.
        reason: String,
    },
}

impl Identity {
    /// A node identity.
    pub fn node(cluster: &str, region: &str, id: u64) -> Self {
        Self::Node { cluster: cluster.to_owned(), region: region.to_owned(), id }
    }

    /// A client identity in `cluster`.
    pub fn client(cluster: &str, name: &str) -> Self {
        Self::Client { cluster: Some(cluster.to_owned()), name: name.to_owned() }
    }

    /// The URI a certificate carries for this identity.
    pub fn uri(&self) -> String {
        match self {
            Self::Node { cluster, region, id } => format!("{SCHEME}{cluster}/region/{region}/node/{id}"),
            Self::Client { cluster: Some(cluster), name } => format!("{SCHEME}{cluster}/client/{name}"),
            Self::Client { cluster: None, name } => name.clone(),
        }
    }

    /// The cluster it names, if it names one.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Self::Node { cluster, .. } => Some(cluster),
            Self::Client { cluster, .. } => cluster.as_deref(),
        }
    }

    /// The node id, for a node.
    pub fn node_id(&self) -> Option<u64> {
        match self {
            Self::Node { id, .. } => Some(*id),
            Self::Client { .. } => None,
        }
    }

    /// The principal's name as the access policy and the audit trail write
    /// it: the client's name, or `node:<id>` for a node.
    pub fn principal(&self) -> String {
        match self {
            Self::Node { id, .. } => format!("node:{id}"),
            Self::Client { name, .. } => name.clone(),
        }
    }

    /// Parses a URI of the forms in the module's documentation.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let invalid = |reason: &str| IdentityError::Invalid { text: uri.to_owned(), reason: reason.to_owned() };
        let rest = uri.strip_prefix(SCHEME).ok_or_else(|| invalid("it does not start with coffer://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [cluster, "region", region, "node", id] => {
                check_name(cluster).map_err(|reason| invalid(&format!("cluster: {reason}")))?;
                check_name(region).map_err(|reason| invalid(&format!("region: {reason}")))?;
                let id = id.parse::<u64>().ok().filter(|id| *id != 0).ok_or_else(|| invalid("bad node id"))?;
                Ok(Self::node(cluster, region, id))
            }
            [cluster, "client", name] => {
                check_name(cluster).map_err(|reason| invalid(&format!("cluster: {reason}")))?;
                check_name(name).map_err(|reason| invalid(&format!("name: {reason}")))?;
                Ok(Self::client(cluster, name))
            }
            _ => Err(invalid("expected coffer://CLUSTER/region/REGION/node/ID or coffer://CLUSTER/client/NAME")),
        }
    }

    /// The identity a DER certificate names.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|error| IdentityError::Malformed(error.to_string()))?;
        let mut uris = Vec::new();
        if let Ok(Some(names)) = certificate.subject_alternative_name() {
            for name in &names.value.general_names {
                if let GeneralName::URI(uri) = name {
                    if uri.starts_with(SCHEME) {
                        uris.push(*uri);
                    }
                }
            }
        }
        match uris.as_slice() {
            [uri] => Self::parse_uri(uri),
            [] => {
                let common = certificate.subject().iter_common_name().next().ok_or(IdentityError::Unnamed)?;
                let name = common.as_str().map_err(|error| IdentityError::Malformed(error.to_string()))?;
                check_name(name)
                    .map_err(|reason| IdentityError::Invalid { text: name.to_owned(), reason: reason.to_owned() })?;
                Ok(Self::Client { cluster: None, name: name.to_owned() })
            }
            many => Err(IdentityError::Ambiguous(many.len())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Checks a cluster, region or principal name.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err("must be 1 to 64 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("may hold only A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for identity in [Identity::node("coffer", "seoul", 12), Identity::client("coffer", "gangnam-payments")] {
            assert_eq!(Identity::parse_uri(&identity.uri()), Ok(identity));
        }
    }

    #[test]
    fn malformed_uris_are_refused_with_what_is_wrong() {
        let refused = |uri: &str| Identity::parse_uri(uri).expect_err(uri).to_string();
        assert!(refused("https://coffer/client/x").contains("does not start with coffer://"));
        assert!(refused("coffer://coffer/region/seoul/node/0").contains("bad node id"));
        assert!(refused("coffer://coffer/client/a b").contains("name: may hold only"));
        assert!(refused("coffer:///client/x").contains("cluster: must be 1 to 64"));
        assert!(refused("coffer://coffer/auditor").contains("expected coffer://"));
    }

    #[test]
    fn a_node_is_its_own_principal() {
        assert_eq!(Identity::node("c", "main", 3).principal(), "node:3");
        assert_eq!(Identity::client("c", "ops").principal(), "ops");
    }
}
