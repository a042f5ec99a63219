//! A throwaway certificate authority for tests of TLS connections: the test starts a
//! server of its own with a certificate this CA signed, and trusts only this CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA made for one test, and one server certificate it signed for `localhost` and
/// `127.0.0.1`, written as PEM files into a directory of the test's own.
#[derive(Debug)]
pub struct ThrowawayCa {
    /// The CA's certificate (PEM): what a client trusts.
    pub ca_pem: String,
    /// Where the files are.
    pub dir: PathBuf,
}

impl ThrowawayCa {
    /// Generates the CA and the server certificate, and writes `ca.pem`, `server.pem`
    /// and `server.key` (mode 0600, as PostgreSQL requires) into a new directory.
    pub fn new(name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("coupon test CA {name}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server parameters")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let dir = std::env::temp_dir().join(crate::unique_name(&format!("tls-{name}")));
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let ca_pem = ca.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("writing ca.pem");
        std::fs::write(dir.join("server.pem"), server.pem()).expect("writing server.pem");
        let key = dir.join("server.key");
        std::fs::write(&key, server_key.serialize_pem()).expect("writing server.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key file mode");
        }
        Self { ca_pem, dir }
    }

    /// `ca.pem`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `server.pem`.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `server.key`.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The directory holding the files.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ThrowawayCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
