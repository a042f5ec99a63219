//! [`StoreConfig`] and [`connect`]: choose the backend from the URL.

use std::sync::Arc;
use std::time::Duration;

use coupon_core::{BackendError, Component, ErrorKind, IssueStore, ValidationError};

/// Where the database is and how to use it. `Debug` hides the URL's password.
///
/// Build it with [`StoreConfig::from_url`] and setters, or deserialize it (durations
/// as `"2s"`, `"500ms"`). [`StoreConfig::validate`] checks it once; [`connect`] calls it:
///
/// ```
/// # use coupon_sql::StoreConfig;
/// let config: StoreConfig = serde_json::from_str(
///     r#"{ "url": "postgres://coupon@db/coupon", "max_connections": 20, "lock_timeout": "1s" }"#,
/// )?;
/// assert_eq!(config, StoreConfig::from_url("postgres://coupon@db/coupon")
///     .with_max_connections(20)
///     .with_lock_timeout(std::time::Duration::from_secs(1)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub(crate) url: String,
    pub(crate) max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub(crate) acquire_timeout: Duration,
    pub(crate) migrate: bool,
    #[serde(with = "humantime_serde")]
    pub(crate) statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) lock_timeout: Duration,
    pub(crate) sqlite_fsync_each_commit: bool,
    pub(crate) stored_notices: bool,
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
            .field("stored_notices", &self.stored_notices)
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
            stored_notices: false,
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

    /// Checks every setting once: a scheme this build can connect to, a pool of at
    /// least one connection, a positive acquire timeout. [`connect`] calls it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let scheme = self.url.split(':').next().unwrap_or_default();
        let known = (cfg!(feature = "postgres") && matches!(scheme, "postgres" | "postgresql"))
            || (cfg!(feature = "mysql") && matches!(scheme, "mysql" | "mariadb"))
            || (cfg!(feature = "sqlite") && scheme == "sqlite");
        if !known {
            return Err(ValidationError::field(
                "url",
                format!(
                    "unsupported database URL scheme {scheme:?}: use postgres://, mysql:// or sqlite:// (with the crate feature of the same name)"
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(ValidationError::field("max_connections", "must be at least 1"));
        }
        if self.acquire_timeout.is_zero() {
            return Err(ValidationError::field("acquire_timeout", "must be above zero"));
        }
        Ok(())
    }

    /// `postgres://...`, `mysql://...` (also MariaDB) or `sqlite://path` (`sqlite::memory:`
    /// works with one connection only).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Pool size (default 10).
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Longest wait for a pooled connection before failing (default 2 s).
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Whether the migrations run at connect (default true).
    pub fn migrate(&self) -> bool {
        self.migrate
    }

    /// Longest a statement may run on a pooled connection before the database cancels
    /// it (default 5 s; zero turns it off): PostgreSQL `statement_timeout`, MariaDB
    /// `max_statement_time`, MySQL `max_execution_time` (reads only). A cancelled
    /// statement wrote nothing: a retryable `Unavailable`. Migrations run without it.
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// Longest wait for a row lock (default 2 s; zero: the database's own default):
    /// PostgreSQL `lock_timeout`, MySQL/MariaDB `innodb_lock_wait_timeout` (whole
    /// seconds, at least 1). Bounds a pile-up behind a stuck transaction.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// SQLite only: whether the write-ahead log is fsynced at every commit
    /// (`synchronous=FULL`, default true), so a stored coupon survives an OS crash or
    /// power loss, not only a crash of the process (`NORMAL`). Turn it off only when
    /// SQLite is not the store of record of an acknowledgement (`after-store`).
    pub fn sqlite_fsync_each_commit(&self) -> bool {
        self.sqlite_fsync_each_commit
    }

    /// Whether `record` raises each stored coupon's "stored" notice for the post-processing
    /// hooks (`coupon_core::hooks`; default false). Off, a coupon is written with nothing
    /// pending and the insert costs what it did before hooks: the pending-notice index
    /// holds only pending rows (on MySQL/MariaDB, which have no partial index, every row).
    /// Redemptions raise their notice either way (one row each, off the sale's path).
    pub fn stored_notices(&self) -> bool {
        self.stored_notices
    }

    /// Sets the pool size (at least 1).
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
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

    /// Raises a "stored" notice for each coupon `record` stores ([`StoreConfig::stored_notices`]):
    /// turn it on where a `HookRunner` delivers them.
    pub fn with_stored_notices(mut self, on: bool) -> Self {
        self.stored_notices = on;
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
    refuse_invalid(config, "sql")?;
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

/// [`StoreConfig::validate`] as the `Rejected` error of `backend`'s connect.
pub(crate) fn refuse_invalid(config: &StoreConfig, backend: &'static str) -> Result<(), BackendError> {
    config
        .validate()
        .map_err(|e| BackendError::invalid_config(Component::Store, backend, e))
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

/// The `pending_notice` value `record` writes under `config`.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) fn stored_notice(config: &StoreConfig) -> Option<i16> {
    config.stored_notices.then(|| coupon_core::hooks::Notice::Stored.bit())
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

    #[test]
    fn a_config_survives_serde_and_unknown_fields_are_refused() {
        let config = StoreConfig::from_url("mysql://u@db/coupon").with_statement_timeout(Duration::from_millis(1500));
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains(r#""statement_timeout":"1s 500ms""#), "{text}");
        assert_eq!(serde_json::from_str::<StoreConfig>(&text).unwrap(), config);
        let unknown = serde_json::from_str::<StoreConfig>(r#"{"max_conections": 3}"#).unwrap_err();
        assert!(unknown.to_string().contains("max_conections"), "{unknown}");
    }

    #[test]
    fn validate_names_the_setting_that_is_wrong() {
        let field = |config: StoreConfig| match config.validate() {
            Err(ValidationError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(StoreConfig::from_url("oracle://db")), "url");
        #[cfg(feature = "postgres")]
        {
            let pg = StoreConfig::from_url("postgres://db/coupon");
            assert!(pg.clone().validate().is_ok());
            assert_eq!(field(pg.clone().with_max_connections(0)), "max_connections");
            assert_eq!(field(pg.with_acquire_timeout(Duration::ZERO)), "acquire_timeout");
        }
    }
}
