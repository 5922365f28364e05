//! Workload identity files for the sidecars, as the controller's agent would write them.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// One pod's identity files (`--identity-dir`), readable by the sidecar's uid.
pub struct IdentityDir {
    pub dir: tempfile::TempDir,
    pub spiffe_id: String,
}

impl IdentityDir {
    pub fn new(spiffe_id: &str) -> IdentityDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        IdentityDir {
            dir,
            spiffe_id: spiffe_id.into(),
        }
    }

    /// A fresh key and certificate from `ca`, and `roots` as the bundle. Each file is
    /// replaced by a rename, as kubelet and cert tools do, so no half-written file is read.
    pub fn issue(&self, ca: &crate::support::tls::TestCa, roots: &str, lifetime: Duration) {
        let leaf = ca.issue_svid(&self.spiffe_id, lifetime);
        self.write("root-cert.pem", roots);
        self.write("key.pem", &leaf.key_pem);
        self.write("cert-chain.pem", &leaf.cert_pem);
    }

    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    pub fn arg(&self) -> [String; 2] {
        [
            "--identity-dir".into(),
            self.dir.path().display().to_string(),
        ]
    }
}
