//! A PostgreSQL of the test's own: `initdb` in a temporary directory, on a free port,
//! optionally accepting only TLS connections. For tests that must configure the server
//! (TLS) or stop it; the shared service is never touched. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::ThrowawayCa;

/// A running PostgreSQL of the test's own.
#[derive(Debug)]
pub struct OwnPostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl OwnPostgres {
    /// `initdb` and a start, trust authentication for user `postgres`. With `tls`, the
    /// server presents the certificate that CA signed and accepts only TLS connections
    /// over TCP (`hostssl`). Panics with the reason if it cannot (no server binaries, ...).
    pub fn start(tls: Option<&ThrowawayCa>) -> Self {
        let bin = bin_dir();
        let dir = crate::scratch_dir("own-postgres");
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).expect("data directory");
        let owner = postgres_user();
        let mut files = Vec::new();
        if let Some(ca) = tls {
            for (from, name) in [
                (ca.cert_file(), "server.pem"),
                (ca.key_file(), "server.key"),
                (ca.ca_file(), "ca.pem"),
            ] {
                let to = dir.join(name);
                std::fs::copy(&from, &to).expect("copying a certificate file");
                files.push(to);
            }
        }
        if let Some((uid, gid)) = owner {
            for path in [dir.as_path(), data.as_path()]
                .into_iter()
                .chain(files.iter().map(PathBuf::as_path))
            {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("handing the directory to postgres");
            }
        }
        let status = as_owner(owner, &bin.join("initdb"))
            .args([
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running initdb");
        assert!(status.success(), "initdb failed in {}", data.display());
        if tls.is_some() {
            // Only TLS over TCP; the socket stays open for nothing but trust.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("pg_hba.conf");
        }
        let port = crate::free_port();
        let mut server = as_owner(owner, &bin.join("postgres"));
        server.args([
            "-D",
            &data.display().to_string(),
            "-p",
            &port.to_string(),
            "-k",
            &dir.display().to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
        ]);
        if tls.is_some() {
            let file = |name: &str| dir.join(name).display().to_string();
            server.args([
                "-c".to_owned(),
                "ssl=on".to_owned(),
                "-c".to_owned(),
                format!("ssl_cert_file={}", file("server.pem")),
                "-c".to_owned(),
                format!("ssl_key_file={}", file("server.key")),
                "-c".to_owned(),
                format!("ssl_ca_file={}", file("ca.pem")),
            ]);
        }
        let log = std::fs::File::create(dir.join("postgres.log")).expect("log file");
        let child = server
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        let own = Self { port, dir, child };
        own.wait_listening(Duration::from_secs(60));
        own
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` followed by `params` (e.g.
    /// `?sslmode=verify-full&sslrootcert=...`).
    pub fn url(&self, params: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres{params}", self.port)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the log says it accepts connections.
    fn wait_listening(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while !self.log().contains("ready to accept connections") {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not become ready within {bound:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `COUPON_TEST_PG_BIN`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("COUPON_TEST_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set COUPON_TEST_PG_BIN)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin").1
}

/// As root, the `postgres` user's ids (initdb and postgres refuse to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"]).expect("running as root needs the `postgres` user"),
        id(&["-g", "postgres"]).expect("the `postgres` group"),
    ))
}

/// `program`, run as `owner` through `setpriv` when there is one.
fn as_owner(owner: Option<(u32, u32)>, program: &Path) -> Command {
    match owner {
        Some((uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--init-groups".to_owned(),
            ])
            .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}
