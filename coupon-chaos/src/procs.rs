//! Processes the tool starts, breaks and restarts: one log file each (appended across
//! restarts), signals by pid, and bounded waits on what can be observed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// How to start one process again and again.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short name, for logs and messages (`server-a`, `redis-7001`).
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment, on top of `PATH` and `HOME` (everything else is cleared).
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// A spec with no arguments and no environment.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }
}

/// A running (or stopped) process of a [`Spec`]; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it runs.
    pub spec: Spec,
    /// Its log: stdout and stderr of every start.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `spec`, logging to `dir/<name>.log`.
    pub fn start(spec: Spec, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{}.log", spec.name));
        let mut proc = Self { spec, log, child: None };
        proc.spawn()?;
        Ok(proc)
    }

    fn spawn(&mut self) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.spec.program);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        for (k, v) in &self.spec.env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", self.spec.name, self.spec.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether it is still running (a stopped process is running).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`, `INT`).
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.spec.name))?;
        signal_pid(pid, signal)
    }

    /// `kill -9`, then waits for the exit.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal_pid(pid, "KILL")?;
            }
            tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .with_context(|| format!("{} did not exit within 30 s of SIGKILL", self.spec.name))??;
        }
        Ok(())
    }

    /// `signal`, then waits (bounded) for the exit; SIGKILL if it does not come.
    pub async fn stop(&mut self, signal: &str, within: Duration) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal_pid(pid, signal)?;
            }
            if tokio::time::timeout(within, child.wait()).await.is_err() {
                eprintln!(
                    "chaos: {} ignored SIG{signal} for {within:?}; killing it",
                    self.spec.name
                );
                child.kill().await?;
            }
        }
        Ok(())
    }

    /// Starts it again with its (possibly changed) spec.
    pub fn restart(&mut self) -> Result<()> {
        if self.running() {
            bail!("{} is still running", self.spec.name);
        }
        self.spawn()
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Fails with the log's end when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.running() {
            Ok(())
        } else {
            bail!(
                "{} exited; log {}:\n{}",
                self.spec.name,
                self.log.display(),
                self.tail(30)
            )
        }
    }
}

fn signal_pid(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` every 100 ms until it answers `Some`, or fails after `within` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub async fn port_open(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Runs a short command to completion; its stdout, or an error with its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = tokio::time::timeout(Duration::from_secs(60), Command::new(program).args(args).output())
        .await
        .with_context(|| format!("{program} {args:?} did not finish within 60 s"))?
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {args:?} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
