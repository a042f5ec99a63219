//! The services the tool breaks, each its own copy: three Redis Cluster masters with
//! append-only persistence, a Kafka-protocol broker (tansu), and PostgreSQL from
//! `initdb` in the run's directory. The shared services of `scripts/services.sh` are
//! never touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::procs::{Proc, Spec, free_port, port_open, run, wait_for};
use crate::proxy::Proxy;

/// Three cluster-enabled `redis-server` masters, persisted as production would run them:
/// `appendonly yes`, `appendfsync everysec`, `noeviction`.
pub struct RedisCluster {
    /// One per master, in port order.
    pub nodes: Vec<RedisNode>,
}

/// One master.
pub struct RedisNode {
    /// Its port.
    pub port: u16,
    /// Its cluster bus port.
    pub bus_port: u16,
    /// The proxy in front of it: the port it announces, so every client goes through.
    pub proxy: Proxy,
    /// Its data directory (AOF, RDB, `nodes.conf`).
    pub dir: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl RedisNode {
    fn spec(&self, appendonly: bool) -> Spec {
        Self::spec_of(self.port, self.bus_port, self.proxy.port, &self.dir, appendonly)
    }

    fn spec_of(port: u16, bus_port: u16, proxy_port: u16, dir: &Path, appendonly: bool) -> Spec {
        Spec::new(format!("redis-{port}"), "redis-server").args([
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--dir".to_owned(),
            dir.display().to_string(),
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            "nodes.conf".to_owned(),
            "--cluster-node-timeout".to_owned(),
            "2000".to_owned(),
            "--appendonly".to_owned(),
            if appendonly { "yes" } else { "no" }.to_owned(),
            "--appendfsync".to_owned(),
            "everysec".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--maxmemory-policy".to_owned(),
            "noeviction".to_owned(),
            // An explicit bus port: port + 10000 may not exist for a high free port.
            "--cluster-port".to_owned(),
            bus_port.to_string(),
            "--cluster-announce-port".to_owned(),
            proxy_port.to_string(),
            "--cluster-announce-bus-port".to_owned(),
            bus_port.to_string(),
        ])
    }

    async fn cli(&self, args: &[&str]) -> Result<String> {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        run("redis-cli", &all).await
    }

    async fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let text = self.cli(&["INFO", section]).await.ok()?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")).map(str::to_owned))
    }

    /// Restarts it (SIGTERM, so its AOF is complete) with its wall clock moved by
    /// `secs` (0: the real clock), through the clock shim (`shim/shift_clock.c`). Its
    /// monotonic clock, which Redis times its own work with, is left alone.
    pub async fn restart_with_clock(&mut self, secs: i64) -> Result<()> {
        self.proc.stop("TERM", Duration::from_secs(30)).await?;
        let mut spec = self.spec(true);
        if secs != 0 {
            let run_dir = self.dir.parent().context("the run directory")?;
            spec = spec
                .env("LD_PRELOAD", clock_shim(run_dir).await?)
                .env("COUPON_CLOCK_SHIFT_SECS", secs.to_string());
        }
        self.proc.spec = spec;
        self.proc.restart()?;
        self.wait_loaded().await
    }

    /// Its `TIME`, in seconds since the epoch.
    pub async fn time(&self) -> Result<i64> {
        let text = self.cli(&["TIME"]).await?;
        Ok(text.lines().next().context("TIME answered nothing")?.trim().parse()?)
    }

    /// `kill -9`, then a start from what it persisted (its AOF).
    pub async fn kill9(&mut self) -> Result<()> {
        self.proc.kill9().await
    }

    /// Starts it again from its AOF (keeping a shifted clock).
    pub async fn restart(&mut self) -> Result<()> {
        let env = std::mem::take(&mut self.proc.spec.env);
        self.proc.spec = self.spec(true);
        self.proc.spec.env = env;
        self.proc.restart()?;
        self.wait_loaded().await
    }

    async fn wait_loaded(&self) -> Result<()> {
        wait_for(
            &format!("redis {} to load its data", self.port),
            Duration::from_secs(60),
            || async { (self.info_field("persistence", "loading").await.as_deref() == Some("0")).then_some(()) },
        )
        .await
    }

    /// Takes an RDB snapshot now (`BGSAVE`) and keeps a copy as `snapshot.rdb`.
    pub async fn snapshot(&self) -> Result<()> {
        let before = self.info_field("persistence", "rdb_last_save_time").await;
        wait_for("BGSAVE to be accepted", Duration::from_secs(30), || async {
            self.cli(&["BGSAVE"]).await.ok().filter(|s| s.contains("started"))
        })
        .await?;
        wait_for("BGSAVE to finish", Duration::from_secs(60), || async {
            let done = self
                .info_field("persistence", "rdb_bgsave_in_progress")
                .await
                .as_deref()
                == Some("0")
                && self.info_field("persistence", "rdb_last_save_time").await != before;
            done.then_some(())
        })
        .await?;
        if self
            .info_field("persistence", "rdb_last_bgsave_status")
            .await
            .as_deref()
            != Some("ok")
        {
            bail!("redis {}: BGSAVE failed", self.port);
        }
        std::fs::copy(self.dir.join("dump.rdb"), self.dir.join("snapshot.rdb")).context("copying the snapshot")?;
        Ok(())
    }

    /// `kill -9`, then a start from the older `snapshot.rdb` alone: its AOF is dropped,
    /// so every write after the snapshot is lost (a restore from an old backup, or a
    /// failover to a replica that lagged).
    pub async fn kill9_and_roll_back(&mut self) -> Result<()> {
        self.proc.kill9().await?;
        let aof = self.dir.join("appendonlydir");
        if aof.exists() {
            std::fs::remove_dir_all(&aof)?;
        }
        std::fs::copy(self.dir.join("snapshot.rdb"), self.dir.join("dump.rdb"))?;
        self.proc.spec = self.spec(false);
        self.proc.restart()?;
        self.wait_loaded().await?;
        // Back to the production setting; Redis writes a fresh AOF from the snapshot.
        self.cli(&["CONFIG", "SET", "appendonly", "yes"]).await?;
        Ok(())
    }
}

impl RedisCluster {
    /// Starts three masters in `dir` and forms the cluster.
    pub async fn start(dir: &Path) -> Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let (port, bus_port) = (free_port()?, free_port()?);
            let proxy = Proxy::start(port).await?;
            let node_dir = dir.join(format!("redis-{port}"));
            std::fs::create_dir_all(&node_dir)?;
            let proc = Proc::start(RedisNode::spec_of(port, bus_port, proxy.port, &node_dir, true), dir)?;
            nodes.push(RedisNode {
                port,
                bus_port,
                proxy,
                dir: node_dir,
                proc,
            });
        }
        for node in &nodes {
            wait_for(
                &format!("redis {} to answer", node.port),
                Duration::from_secs(30),
                || async { node.cli(&["PING"]).await.ok().filter(|s| s.contains("PONG")) },
            )
            .await?;
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        run("redis-cli", &args).await?;
        let cluster = Self { nodes };
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub async fn wait_ok(&self) -> Result<()> {
        for node in &self.nodes {
            wait_for(
                &format!("redis {} to report cluster_state:ok", node.port),
                Duration::from_secs(60),
                || async {
                    node.cli(&["CLUSTER", "INFO"])
                        .await
                        .ok()
                        .filter(|s| s.contains("cluster_state:ok"))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The servers' `COUPON_REDIS_URL`: the proxies.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.proxy.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the master holding `campaign`'s keys (`cpn:{<id>}:*`).
    pub async fn owner_of(&self, campaign: &str) -> Result<usize> {
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", &format!("cpn:{{{campaign}}}:meta")])
            .await?
            .trim()
            .parse()?;
        let nodes = self.nodes[0].cli(&["CLUSTER", "NODES"]).await?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields
                .get(1)
                .and_then(|a| a.split('@').next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            for range in fields.iter().skip(8) {
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<u16>(), hi.parse::<u16>()),
                    None => (range.parse::<u16>(), range.parse::<u16>()),
                };
                if let (Ok(lo), Ok(hi)) = (lo, hi)
                    && (lo..=hi).contains(&slot)
                {
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.port == port || n.proxy.port == port)
                        .context("the slot's owner is not one of ours");
                }
            }
        }
        bail!("no master holds slot {slot}")
    }
}

/// A `tansu` broker with in-memory storage.
pub struct Broker {
    /// Its port.
    pub port: u16,
    /// The proxy in front of it: its advertised listener.
    pub proxy: Proxy,
    /// The process.
    pub proc: Proc,
}

impl Broker {
    /// Finds tansu (`COUPON_TANSU_BIN`, `PATH`, `~/.cargo/bin`) and starts it.
    pub async fn start(dir: &Path) -> Result<Self> {
        let binary = find_tansu()
            .context("tansu is not installed: `scripts/services.sh up` installs it (or set COUPON_TANSU_BIN)")?;
        let help = run(&binary.display().to_string(), &["broker", "--help"])
            .await
            .unwrap_or_default();
        let (listen, advertised) = if !help.contains("--listener-url") && help.contains("--kafka-listener-url") {
            ("--kafka-listener-url", "--kafka-advertised-listener-url")
        } else {
            ("--listener-url", "--advertised-listener-url")
        };
        let port = free_port()?;
        let proxy = Proxy::start(port).await?;
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{}", proxy.port);
        let spec = Spec::new("broker", binary).args([
            "broker",
            listen,
            &url,
            advertised,
            &advertised_url,
            // In memory, not SQLite as scripts/services.sh: the broker faults make
            // librdkafka's idempotent producer bump its epoch after timed-out messages,
            // and tansu 0.6.0's SQLite engine then panics ("more or less than one row",
            // lite.rs) and refuses every produce after. The in-memory engine answers
            // ListOffsets from write times (services.sh), which a fresh broker of a short
            // run does not show.
            "--storage-engine",
            "memory://tansu/",
        ]);
        let mut proc = Proc::start(spec, dir)?;
        wait_for("the broker to listen", Duration::from_secs(60), || async {
            port_open(port).await.then_some(())
        })
        .await
        .with_context(|| format!("broker log:\n{}", proc.tail(20)))?;
        proc.ensure_running()?;
        Ok(Self { port, proxy, proc })
    }

    /// The bootstrap address: the proxy.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

fn find_tansu() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(bin) = std::env::var("COUPON_TANSU_BIN") {
        candidates.push(bin.into());
    }
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join("tansu")));
    }
    candidates.push(PathBuf::from(cargo_home).join("bin/tansu"));
    candidates.into_iter().find(|p| p.is_file())
}

/// PostgreSQL from `initdb`, on a free port, trust authentication, `fsync` on.
pub struct Postgres {
    /// Its port.
    pub port: u16,
    /// The postmaster.
    pub proc: Proc,
}

impl Postgres {
    /// `initdb` in `dir/pgdata` and a start. As root, runs as the `postgres` user
    /// (initdb refuses root).
    pub async fn start(dir: &Path) -> Result<Self> {
        let bin = postgres_bin_dir()?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data)?;
        let as_user = as_postgres_user(&data).await?;
        let initdb = bin.join("initdb").display().to_string();
        let data_arg = data.display().to_string();
        let mut args: Vec<&str> = as_user.iter().map(String::as_str).collect();
        args.extend([&initdb, "-D", &data_arg, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        run(args[0], &args[1..]).await.context("initdb")?;
        let port = free_port()?;
        let postgres = bin.join("postgres").display().to_string();
        let server_args = [
            "-D".to_owned(),
            data_arg.clone(),
            "-p".to_owned(),
            port.to_string(),
            "-k".to_owned(),
            data_arg,
            "-c".to_owned(),
            "listen_addresses=127.0.0.1".to_owned(),
            "-c".to_owned(),
            "fsync=on".to_owned(),
            "-c".to_owned(),
            "max_connections=200".to_owned(),
        ];
        let spec = match as_user.split_first() {
            Some((wrapper, wrapper_args)) => Spec::new("postgres", wrapper)
                .args(wrapper_args.iter().cloned())
                .args([postgres])
                .args(server_args),
            None => Spec::new("postgres", postgres).args(server_args),
        };
        let own = Self {
            port,
            proc: Proc::start(spec, dir)?,
        };
        own.wait_ready().await?;
        Ok(own)
    }

    /// The database URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Waits until it accepts a query.
    pub async fn wait_ready(&self) -> Result<()> {
        let url = self.url();
        wait_for("PostgreSQL to accept a query", Duration::from_secs(60), || async {
            let pool = sqlx::PgPool::connect(&url).await.ok()?;
            let ok = sqlx::query("SELECT 1").execute(&pool).await.is_ok();
            pool.close().await;
            ok.then_some(())
        })
        .await
    }

    /// Fast shutdown (SIGINT), waited for.
    pub async fn stop(&mut self) -> Result<()> {
        self.proc.stop("INT", Duration::from_secs(30)).await
    }

    /// `kill -9` of the postmaster; its backends notice and exit.
    pub async fn kill9(&mut self) -> Result<()> {
        self.proc.kill9().await
    }

    /// Starts it again (crash recovery after a kill) and waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        // Backends of a killed postmaster may hold its shared memory for a moment:
        // start again until one start stays up.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if !self.proc.running() {
                self.proc.restart()?;
            }
            if wait_for("PostgreSQL to answer", Duration::from_secs(5), || async {
                port_open(self.port).await.then_some(())
            })
            .await
            .is_ok()
                && self.proc.running()
            {
                break;
            }
            if std::time::Instant::now() >= deadline {
                bail!("PostgreSQL did not start again within 60 s:\n{}", self.proc.tail(20));
            }
        }
        self.wait_ready().await
    }
}

fn postgres_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("COUPON_CHAOS_PG_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found in /usr/lib/postgresql (set COUPON_CHAOS_PG_BIN)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin (set COUPON_CHAOS_PG_BIN)")
}

/// As root: `setpriv` to the `postgres` user (it execs, so the pid stays the
/// postmaster's), with `dir` handed to that user. Otherwise nothing.
async fn as_postgres_user(dir: &Path) -> Result<Vec<String>> {
    let uid = run("id", &["-u"]).await?;
    if uid.trim() != "0" {
        return Ok(Vec::new());
    }
    let pg_uid: u32 = run("id", &["-u", "postgres"])
        .await
        .context("running as root needs the `postgres` user for initdb")?
        .trim()
        .parse()?;
    let pg_gid: u32 = run("id", &["-g", "postgres"]).await?.trim().parse()?;
    // The run's directory and the data directory must be reachable by that user.
    if let Some(parent) = dir.parent() {
        std::os::unix::fs::chown(parent, Some(pg_uid), Some(pg_gid))?;
    }
    std::os::unix::fs::chown(dir, Some(pg_uid), Some(pg_gid))?;
    Ok(vec![
        "setpriv".into(),
        format!("--reuid={pg_uid}"),
        format!("--regid={pg_gid}"),
        "--init-groups".into(),
    ])
}

/// Builds the clock shim into `dir` (once) and returns its path.
async fn clock_shim(dir: &Path) -> Result<String> {
    let library = dir.join("shift_clock.so");
    if !library.is_file() {
        let source = dir.join("shift_clock.c");
        std::fs::write(&source, include_str!("../shim/shift_clock.c"))?;
        let (source, output) = (source.display().to_string(), library.display().to_string());
        run("cc", &["-shared", "-fPIC", "-O2", "-o", &output, &source])
            .await
            .context("building the clock shim needs a C compiler (`cc`)")?;
    }
    Ok(library.display().to_string())
}
