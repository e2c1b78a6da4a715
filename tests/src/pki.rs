//! The tests' certificates: one certificate authority per test process
//! (cluster `coffer-test`), node certificates issued on demand for the
//! region and id a node runs as, client certificates per principal, and
//! the access policy every node of a test cluster reads.
//!
//! [`admin`] (every role on every ledger) is what the harness's clients and
//! `coffer` commands present unless a test picks another principal.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use coffer_security::issue::{loopback_hosts, Authority};
use coffer_security::{Identity, Security, TlsContext, TlsFiles};

/// The tests' cluster name.
pub const CLUSTER: &str = "coffer-test";
/// The principal with every role.
pub const ADMIN: &str = "admin";
/// How long the tests' certificates are valid.
const VALID_DAYS: u32 = 30;
/// The access policy of every test node: `admin` may do everything; the
/// other principals are the roles the security tests exercise.
const POLICY: &str = r#"
revoked = ["revoked"]

[principals.admin]
poster = "all"
reader = "all"
operator = true
auditor = true

[principals.poster1]
poster = [1]
reader = [1]

[principals.reader]
reader = "all"

[principals.operator]
operator = true
reader = "all"

[principals.revoked]
poster = "all"
"#;

/// The test process's authority and the files it issued.
pub struct Pki {
    dir: tempfile::TempDir,
    authority: Authority,
    issued: Mutex<()>,
}

/// The test process's PKI (made at first use).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory for the test PKI");
        let authority = Authority::create(CLUSTER, VALID_DAYS).expect("the test authority");
        authority.to_issued().write(dir.path(), "ca").expect("the test authority is written");
        std::fs::write(dir.path().join("access.toml"), POLICY).expect("the test policy is written");
        Pki { dir, authority, issued: Mutex::new(()) }
    })
}

impl Pki {
    /// The directory of every file (`ca.crt`, `NAME.crt`, `NAME.key`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The access policy file.
    pub fn policy(&self) -> PathBuf {
        self.dir().join("access.toml")
    }

    fn files(&self, stem: &str, identity: &Identity, hosts: &[String]) -> TlsFiles {
        let _issuing = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let files = TlsFiles::in_dir(self.dir(), stem);
        if !files.cert.exists() {
            let issued = self.authority.issue(identity, hosts, VALID_DAYS).expect("a test certificate is issued");
            issued.write(self.dir(), stem).expect("a test certificate is written");
        }
        files
    }

    /// Node `id` of `region`'s files.
    pub fn node(&self, region: &str, id: u64) -> TlsFiles {
        self.files(&format!("{region}-node{id}"), &Identity::node(CLUSTER, region, id), &loopback_hosts())
    }

    /// Client principal `name`'s files.
    pub fn client(&self, name: &str) -> TlsFiles {
        self.files(name, &Identity::client(CLUSTER, name), &[])
    }

    /// TLS as client principal `name`.
    pub fn security(&self, name: &str) -> Security {
        Security::Tls(TlsContext::load(self.client(name)).expect("the test client's TLS loads"))
    }
}

/// TLS as `admin`, shared by every client the harness makes.
pub fn admin() -> Security {
    static ADMIN_SECURITY: OnceLock<Security> = OnceLock::new();
    ADMIN_SECURITY.get_or_init(|| pki().security(ADMIN)).clone()
}
