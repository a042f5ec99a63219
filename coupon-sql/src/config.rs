//! [`StoreConfig`] and [`connect`]: choose the backend from the URL.

use std::sync::Arc;
use std::time::Duration;

use coupon_core::{BackendError, Component, ErrorKind, IssueStore};

/// Where the database is and how to use it. `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `postgres://...`, `mysql://...` (also MariaDB) or `sqlite://path` (`sqlite::memory:` works
    /// with one connection only).
    pub url: String,
    /// Pool size (default 10).
    pub max_connections: u32,
    /// Longest wait for a pooled connection before failing (default 2 s).
    pub acquire_timeout: Duration,
    /// Run the migrations at connect (default true).
    pub migrate: bool,
    /// Longest a statement may run on a pooled connection before the database cancels
    /// it (default 5 s; zero turns it off): PostgreSQL `statement_timeout`, MariaDB
    /// `max_statement_time`, MySQL `max_execution_time` (reads only). A cancelled
    /// statement wrote nothing: a retryable `Unavailable`. Migrations run without it.
    pub statement_timeout: Duration,
    /// Longest wait for a row lock (default 2 s; zero: the database's own default):
    /// PostgreSQL `lock_timeout`, MySQL/MariaDB `innodb_lock_wait_timeout` (whole
    /// seconds, at least 1). Bounds a pile-up behind a stuck transaction.
    pub lock_timeout: Duration,
    /// SQLite only: fsync the write-ahead log at every commit (`synchronous=FULL`,
    /// default true), so a stored coupon survives an OS crash or power loss, not only
    /// a crash of the process (`NORMAL`). Turn it off only when SQLite is not the
    /// store of record of an acknowledgement (`after-store`).
    pub sqlite_fsync_each_commit: bool,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &coupon_core::error::redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate", &self.migrate)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("sqlite_fsync_each_commit", &self.sqlite_fsync_each_commit)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://coupons.db".into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            migrate: true,
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            sqlite_fsync_each_commit: true,
        }
    }
}

impl StoreConfig {
    /// A configuration for `url` with default settings.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets the pool size.
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the acquire timeout.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets the statement timeout (zero turns it off).
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets the lock timeout (zero: the database's default).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// SQLite: whether to fsync at every commit (`synchronous=FULL`) or only at
    /// checkpoints (`NORMAL`).
    pub fn with_sqlite_fsync_each_commit(mut self, fsync: bool) -> Self {
        self.sqlite_fsync_each_commit = fsync;
        self
    }

    /// Whether to run the migrations at connect.
    pub fn with_migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

/// Connects to the store `config.url` names, by its scheme.
pub async fn connect(config: &StoreConfig) -> Result<Arc<dyn IssueStore>, BackendError> {
    let scheme = config.url.split(':').next().unwrap_or_default();
    match scheme {
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(crate::PgStore::connect(config).await?)),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => Ok(Arc::new(crate::MySqlStore::connect(config).await?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(crate::SqliteStore::connect(config).await?)),
        other => Err(BackendError::new(
            Component::Store,
            "sql",
            "connect",
            ErrorKind::Rejected,
            format!(
                "unsupported database URL scheme {other:?}: use postgres://, mysql:// or sqlite:// (with the crate feature of the same name)"
            ),
        )),
    }
}

/// An error while connecting: nothing was written, so a retry can help unless the
/// configuration itself is wrong.
#[allow(dead_code)]
pub(crate) fn connect_error(backend: &'static str, e: sqlx::Error) -> BackendError {
    let kind = match &e {
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => ErrorKind::Rejected,
        sqlx::Error::Database(_) => ErrorKind::Rejected,
        _ => ErrorKind::Unavailable,
    };
    BackendError::new(Component::Store, backend, "connect", kind, e.to_string()).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", StoreConfig::from_url("postgres://coupon:hunter2@db/coupon"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("coupon:***@db"), "{shown}");
    }
}
