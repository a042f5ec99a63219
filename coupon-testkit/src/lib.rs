//! # coupon-testkit
//!
//! Where the integration tests find their real services.
//!
//! ```no_run
//! # async fn demo() {
//! use coupon_testkit::{service, Service};
//! // `None` means "skipped" (and the reason was printed); with
//! // `COUPON_REQUIRE_SERVICES=1` a missing service panics instead.
//! let Some(url) = service(Service::Redis).await else { return };
//! assert!(url.starts_with("redis://"));
//! # }
//! ```
//!
//! Each service is looked up in this order:
//!
//! 1. its `COUPON_TEST_*` variable (`scripts/services.sh env` prints them all);
//! 2. if the variable is unset and a Docker engine is reachable (feature `docker`),
//!    a container started with `testcontainers`, kept for the test process;
//! 3. otherwise the test is skipped with a message saying which variable to set,
//!    unless `COUPON_REQUIRE_SERVICES=1` (CI), where it fails.

use std::fmt;

pub mod postgres;
pub mod tls;

/// A service the integration tests talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// A standalone Redis: `redis://host:port/`.
    Redis,
    /// A Redis Cluster: comma-separated `redis://host:port/` seed nodes.
    RedisCluster,
    /// PostgreSQL: `postgres://user@host:port/db`.
    Postgres,
    /// MySQL or MariaDB: `mysql://user@host:port/db`.
    Mysql,
    /// A Kafka-protocol broker: `host:port[,host:port]`.
    Kafka,
    /// The `nginx` binary (tests start their own instances): its path.
    Nginx,
    /// The `promtool` binary (Prometheus's rule checker): its path.
    Promtool,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 7] = [
        Service::Redis,
        Service::RedisCluster,
        Service::Postgres,
        Service::Mysql,
        Service::Kafka,
        Service::Nginx,
        Service::Promtool,
    ];

    /// The environment variable holding its address.
    pub const fn env_var(self) -> &'static str {
        match self {
            Service::Redis => "COUPON_TEST_REDIS_URL",
            Service::RedisCluster => "COUPON_TEST_REDIS_CLUSTER_URLS",
            Service::Postgres => "COUPON_TEST_POSTGRES_URL",
            Service::Mysql => "COUPON_TEST_MYSQL_URL",
            Service::Kafka => "COUPON_TEST_KAFKA_BROKERS",
            Service::Nginx => "COUPON_TEST_NGINX",
            Service::Promtool => "COUPON_TEST_PROMTOOL",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Redis => "Redis",
            Service::RedisCluster => "Redis Cluster",
            Service::Postgres => "PostgreSQL",
            Service::Mysql => "MySQL/MariaDB",
            Service::Kafka => "Kafka",
            Service::Nginx => "nginx",
            Service::Promtool => "promtool",
        })
    }
}

/// The variable that makes a missing service a failure instead of a skip.
pub const REQUIRE_VAR: &str = "COUPON_REQUIRE_SERVICES";

/// Whether missing services fail the tests (`COUPON_REQUIRE_SERVICES=1`, as in CI).
pub fn services_required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The address of `service`, or `None` if the test should skip (the reason is printed).
///
/// # Panics
///
/// When the service is missing and [`services_required`].
pub async fn service(service: Service) -> Option<String> {
    if let Ok(value) = std::env::var(service.env_var()) {
        let value = value.trim().to_owned();
        if !value.is_empty() {
            return Some(value);
        }
    }
    let reason = match docker::start(service).await {
        Ok(address) => return Some(address),
        Err(why) => why,
    };
    let message = format!(
        "{service} is not available: {} is unset and {reason}. Run `eval \"$(scripts/services.sh env)\"` after `scripts/services.sh up`.",
        service.env_var()
    );
    if services_required() {
        panic!("{message} ({REQUIRE_VAR}=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// The addresses of every service in `wanted`, in order, or `None` if the test should
/// skip: [`service`] for each (so each missing one is reported, or panics when
/// [`services_required`]).
///
/// ```no_run
/// # async fn demo() {
/// use coupon_testkit::{Service, services};
/// let Some([redis, postgres]) = services([Service::Redis, Service::Postgres]).await else {
///     return;
/// };
/// # let _ = (redis, postgres);
/// # }
/// ```
pub async fn services<const N: usize>(wanted: [Service; N]) -> Option<[String; N]> {
    let mut found = Vec::with_capacity(N);
    for s in wanted {
        found.push(service(s).await);
    }
    found.into_iter().collect::<Option<Vec<_>>>()?.try_into().ok()
}

#[cfg(feature = "docker")]
mod docker {
    //! Containers started once per test process and kept until it exits.

    use std::sync::Mutex;

    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, Image};
    use tokio::sync::OnceCell;

    use super::Service;

    // Containers are kept alive (never dropped) for the life of the test process.
    static KEEP: Mutex<Vec<Box<dyn std::any::Any + Send>>> = Mutex::new(Vec::new());
    static REDIS: OnceCell<Result<String, String>> = OnceCell::const_new();
    static POSTGRES: OnceCell<Result<String, String>> = OnceCell::const_new();
    static MYSQL: OnceCell<Result<String, String>> = OnceCell::const_new();
    static KAFKA: OnceCell<Result<String, String>> = OnceCell::const_new();

    async fn run<I: Image + 'static>(image: I, port: u16) -> Result<(String, u16), String> {
        let container: ContainerAsync<I> = image
            .start()
            .await
            .map_err(|e| format!("no Docker engine could start a container ({e})"))?;
        let host = container.get_host().await.map_err(|e| e.to_string())?.to_string();
        let port = container.get_host_port_ipv4(port).await.map_err(|e| e.to_string())?;
        KEEP.lock().expect("container list").push(Box::new(container));
        Ok((host, port))
    }

    pub async fn start(service: Service) -> Result<String, String> {
        use testcontainers_modules::{kafka, mariadb, postgres, redis};
        let cell = match service {
            Service::Redis => &REDIS,
            Service::Postgres => &POSTGRES,
            Service::Mysql => &MYSQL,
            Service::Kafka => &KAFKA,
            Service::RedisCluster => return Err("testcontainers has no Redis Cluster image here".into()),
            Service::Nginx | Service::Promtool => return Err("a local binary, not a container".into()),
        };
        cell.get_or_init(|| async move {
            match service {
                Service::Redis => run(redis::Redis::default(), 6379)
                    .await
                    .map(|(h, p)| format!("redis://{h}:{p}/")),
                Service::Postgres => run(postgres::Postgres::default(), 5432)
                    .await
                    .map(|(h, p)| format!("postgres://postgres:postgres@{h}:{p}/postgres")),
                Service::Mysql => run(mariadb::Mariadb::default(), 3306)
                    .await
                    .map(|(h, p)| format!("mysql://root@{h}:{p}/test")),
                Service::Kafka => run(kafka::apache::Kafka::default(), kafka::apache::KAFKA_PORT.as_u16())
                    .await
                    .map(|(h, p)| format!("{h}:{p}")),
                Service::RedisCluster | Service::Nginx | Service::Promtool => unreachable!(),
            }
        })
        .await
        .clone()
    }
}

#[cfg(not(feature = "docker"))]
mod docker {
    use super::Service;

    pub async fn start(_: Service) -> Result<String, String> {
        Err("the `docker` feature of coupon-testkit is off".into())
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A new empty directory under the system's temporary directory, named after `prefix`
/// and unique to this run; the caller removes it.
pub fn scratch_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A name unique to this test run, for topics, key prefixes and database names.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
