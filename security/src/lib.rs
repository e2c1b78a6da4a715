//! `coffer-security`: who is on the other end of a Coffer connection.
//!
//! - [`tls`]: TLS 1.3 with mutual authentication on every listener and
//!   dialer (client API, Raft transport, shipping between regions), built
//!   from three PEM files and reloaded when they change; or plaintext, only
//!   where a configuration says `insecure = true`.
//! - [`identity`]: what a certificate names — a node of a cluster's region,
//!   or a client principal — and the checks a listener makes with it.
//! - [`issue`]: a cluster's certificate authority and the node and client
//!   certificates it issues (`coffer dev`, `coffer certs`).
//!
//! Roles and grants (what a principal may do) are the API's
//! (`coffer_api::access`); this crate only says who the principal is.

pub mod identity;
pub mod issue;
pub mod tls;

pub use identity::{Identity, IdentityError, Principal, DEFAULT_REGION};
pub use tls::{Expect, Listener, PeerInfo, Security, TlsContext, TlsError, TlsFiles};
