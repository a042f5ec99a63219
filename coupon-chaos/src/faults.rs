//! The scenarios: which faults, when, for how long. A fault is injected at a share of
//! the arrival window, held for its duration, then healed; the heal waits until the
//! broken part answers again, and the record of each fault gives the three moments.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::clients::History;
use crate::procs::{port_open, wait_for};
use crate::system::{GRACE_SECS, System};

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` of server `n`, restarted after the hold.
    KillServer(usize),
    /// `kill -9` of consumer `n`, restarted after the hold.
    KillConsumer(usize),
    /// SIGSTOP of server `n` for the hold (longer than the reconciler's grace), then SIGCONT.
    PauseServer(usize),
    /// SIGSTOP of the broker for the hold, then SIGCONT.
    PauseBroker,
    /// `kill -9` of the Redis master holding the campaign, restarted from its AOF.
    RedisRestart,
    /// An RDB snapshot of the campaign's master now; after the hold, `kill -9` and a
    /// start from that snapshot alone (the writes since are lost).
    RedisRollback,
    /// PostgreSQL stopped (fast shutdown) for the hold, then started.
    PostgresStop,
    /// `kill -9` of the postmaster, started again (crash recovery) after the hold.
    PostgresKill,
    /// Every request to the campaign's Redis master delayed by this many milliseconds.
    RedisLatency(u64),
    /// Every connection to the campaign's Redis master dropped, new ones refused.
    RedisCut,
    /// Every request to the broker delayed by this many milliseconds.
    BrokerLatency(u64),
    /// Every connection to the broker dropped, new ones refused.
    BrokerCut,
}

impl Fault {
    /// A short name for the report.
    pub fn name(self) -> String {
        match self {
            Fault::KillServer(n) => format!("kill -9 server-{}", server_letter(n)),
            Fault::KillConsumer(n) => format!("kill -9 consumer-{}", n + 1),
            Fault::PauseServer(n) => format!("SIGSTOP server-{}", server_letter(n)),
            Fault::PauseBroker => "SIGSTOP broker".into(),
            Fault::RedisRestart => "kill -9 Redis master, restart from AOF".into(),
            Fault::RedisRollback => "Redis master back to an older snapshot".into(),
            Fault::PostgresStop => "PostgreSQL stopped".into(),
            Fault::PostgresKill => "kill -9 PostgreSQL".into(),
            Fault::RedisLatency(ms) => format!("+{ms} ms to the Redis master"),
            Fault::RedisCut => "connections to the Redis master dropped".into(),
            Fault::BrokerLatency(ms) => format!("+{ms} ms to the broker"),
            Fault::BrokerCut => "connections to the broker dropped".into(),
        }
    }
}

fn server_letter(n: usize) -> char {
    (b'a' + n as u8) as char
}

/// One step of a schedule.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// When, as a share of the arrival window.
    pub at: f64,
    /// What.
    pub fault: Fault,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
}

/// A named scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its command-line name.
    pub name: &'static str,
    /// What it does, for `list` and the report.
    pub about: &'static str,
    /// Seconds the campaign's Redis master's clock (the gate's clock) is moved for the
    /// whole sale (libfaketime); 0: none.
    pub gate_clock_shift_secs: i64,
    /// The faults, in order.
    pub steps: Vec<Step>,
    /// A violation this scenario is known to find and that is not fixed yet: the
    /// finding it names. Its failures are reported, and do not fail the run.
    pub known_failure: Option<&'static str>,
}

impl Scenario {
    /// Whether the gate may lose acknowledged admissions by design (section 5a of the
    /// protocol): the checker then allows I3 losses the recorder refused as fenced.
    pub fn rolls_back_the_gate(&self) -> bool {
        self.steps.iter().any(|s| s.fault == Fault::RedisRollback)
    }
}

/// How long a killed consumer stays down: longer than its session timeout (6 s), so the
/// broker has expired it before its successor joins (see `kill-consumer-fast`).
const CONSUMER_DOWN_SECS: u64 = 10;

fn step(at: f64, fault: Fault, hold_secs: u64) -> Step {
    Step {
        at,
        fault,
        hold: Duration::from_secs(hold_secs),
    }
}

/// Every scenario, `mixed` last.
pub fn scenarios() -> Vec<Scenario> {
    // Past the grace and the next reconcile pass with room to spare: a pause that ends
    // just as the pass runs shows nothing (2f412b2 reconciled on a 5 s tick).
    let pause = GRACE_SECS + 10;
    vec![
        Scenario {
            name: "baseline",
            about: "no fault: the sale alone",
            gate_clock_shift_secs: 0,
            steps: vec![],
            known_failure: None,
        },
        Scenario {
            name: "kill-server",
            about: "kill -9 of server-a mid-sale, restarted 2 s later",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::KillServer(0), 2)],
            known_failure: None,
        },
        Scenario {
            name: "kill-consumer",
            about: "kill -9 of consumer-1 mid-sale, restarted 10 s later (after its session expired)",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::KillConsumer(0), CONSUMER_DOWN_SECS)],
            known_failure: None,
        },
        Scenario {
            name: "kill-consumer-fast",
            about: "kill -9 of consumer-1 mid-sale, restarted 2 s later (within its session)",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::KillConsumer(0), 2)],
            known_failure: None,
        },
        Scenario {
            name: "pause-server",
            about: "server-a paused (SIGSTOP) for the reconciler's grace + 10 s, then resumed",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::PauseServer(0), pause)],
            known_failure: None,
        },
        Scenario {
            name: "pause-broker",
            about: "the broker paused for 6 s (three times the ack timeout)",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::PauseBroker, 6)],
            known_failure: None,
        },
        Scenario {
            name: "redis-restart",
            about: "kill -9 of the campaign's Redis master, restarted from its AOF 3 s later",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::RedisRestart, 3)],
            known_failure: None,
        },
        Scenario {
            name: "redis-snapshot",
            about: "the campaign's Redis master restarted from a snapshot taken earlier in the sale (partial loss)",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.15, Fault::RedisRollback, 6)],
            known_failure: None,
        },
        Scenario {
            name: "postgres-stop",
            about: "PostgreSQL stopped for 5 s, then started",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::PostgresStop, 5)],
            known_failure: None,
        },
        Scenario {
            name: "postgres-kill",
            about: "kill -9 of PostgreSQL, crash recovery 3 s later",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::PostgresKill, 3)],
            known_failure: None,
        },
        Scenario {
            name: "clock-shift",
            about: "the gate's clock (the campaign's Redis master) 2 minutes behind the servers' for the whole sale, \
                    and consumer-1 killed mid-sale for 10 s",
            gate_clock_shift_secs: -120,
            steps: vec![step(0.3, Fault::KillConsumer(0), CONSUMER_DOWN_SECS)],
            known_failure: None,
        },
        Scenario {
            name: "redis-latency",
            about: "800 ms added to every request to the campaign's Redis master for 5 s (the gate timeout is 500 ms)",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::RedisLatency(800), 5)],
            known_failure: None,
        },
        Scenario {
            name: "redis-cut",
            about: "every connection to the campaign's Redis master dropped, new ones refused, for 4 s",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::RedisCut, 4)],
            known_failure: None,
        },
        Scenario {
            name: "broker-latency",
            about: "3 s added to every request to the broker for 6 s (the ack timeout is 2 s)",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::BrokerLatency(3_000), 6)],
            known_failure: None,
        },
        Scenario {
            name: "broker-cut",
            about: "every connection to the broker dropped, new ones refused, for 5 s",
            gate_clock_shift_secs: 0,
            steps: vec![step(0.3, Fault::BrokerCut, 5)],
            known_failure: None,
        },
        Scenario {
            name: "mixed",
            about: "one of each process fault in turn: servers, consumer, broker, Redis, PostgreSQL",
            gate_clock_shift_secs: 0,
            steps: vec![
                step(0.04, Fault::PauseServer(1), pause),
                step(0.44, Fault::KillServer(0), 2),
                step(0.52, Fault::PauseBroker, 5),
                step(0.66, Fault::KillConsumer(1), CONSUMER_DOWN_SECS),
                step(0.73, Fault::RedisRestart, 3),
                step(0.86, Fault::PostgresKill, 3),
                step(0.95, Fault::RedisLatency(800), 3),
                step(1.0, Fault::PostgresStop, 3),
            ],
            known_failure: None,
        },
    ]
}

/// When one fault happened, in milliseconds since the run started.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// What.
    pub fault: Fault,
    /// Injected.
    pub injected_ms: u64,
    /// Healed (the process started again, resumed, or the data rolled back).
    pub healed_ms: u64,
    /// The broken part answered again.
    pub answering_ms: u64,
}

/// Runs `scenario`'s steps against `system` over an arrival window of `window`.
pub async fn run_schedule(
    system: &mut System,
    scenario: &Scenario,
    campaign: &str,
    window: Duration,
    history: &History,
) -> Result<Vec<FaultRecord>> {
    let mut records = Vec::new();
    let start = history.now_ms();
    for step in &scenario.steps {
        let at = start + window.mul_f64(step.at).as_millis() as u64;
        let now = history.now_ms();
        if at > now {
            // Keeping to the schedule, not waiting for anything.
            tokio::time::sleep(Duration::from_millis(at - now)).await;
        }
        let record = inject(system, step, campaign, history)
            .await
            .with_context(|| format!("fault `{}`", step.fault.name()))?;
        eprintln!(
            "chaos:   {} at {:.1} s, healed at {:.1} s, answering at {:.1} s",
            step.fault.name(),
            record.injected_ms as f64 / 1e3,
            record.healed_ms as f64 / 1e3,
            record.answering_ms as f64 / 1e3
        );
        records.push(record);
    }
    Ok(records)
}

async fn inject(system: &mut System, step: &Step, campaign: &str, history: &History) -> Result<FaultRecord> {
    let fault = step.fault;
    // The Redis faults hit the master that holds the campaign.
    let owner = match fault {
        Fault::RedisRestart | Fault::RedisRollback | Fault::RedisLatency(_) | Fault::RedisCut => {
            system.redis.owner_of(campaign).await?
        }
        _ => 0,
    };
    let injected_ms = history.now_ms();
    match fault {
        Fault::KillServer(n) => system.servers[n].proc.kill9().await?,
        Fault::PauseServer(n) => system.servers[n].proc.signal("STOP")?,
        Fault::KillConsumer(n) => system.consumers[n].proc.kill9().await?,
        Fault::PauseBroker => system.broker.proc.signal("STOP")?,
        Fault::RedisRestart => system.redis.nodes[owner].kill9().await?,
        Fault::RedisRollback => system.redis.nodes[owner].snapshot().await?,
        Fault::PostgresStop => system.postgres.stop().await?,
        Fault::PostgresKill => system.postgres.kill9().await?,
        Fault::RedisLatency(ms) => system.redis.nodes[owner].proxy.set_delay(Duration::from_millis(ms)),
        Fault::RedisCut => system.redis.nodes[owner].proxy.cut(),
        Fault::BrokerLatency(ms) => system.broker.proxy.set_delay(Duration::from_millis(ms)),
        Fault::BrokerCut => system.broker.proxy.cut(),
    }
    // The fault's duration: the schedule, not a wait for some state.
    tokio::time::sleep(step.hold).await;
    match fault {
        Fault::KillServer(n) => system.servers[n].proc.restart()?,
        Fault::PauseServer(n) => system.servers[n].proc.signal("CONT")?,
        Fault::KillConsumer(n) => system.consumers[n].proc.restart()?,
        Fault::PauseBroker => system.broker.proc.signal("CONT")?,
        Fault::RedisRestart => system.redis.nodes[owner].restart().await?,
        Fault::RedisRollback => system.redis.nodes[owner].kill9_and_roll_back().await?,
        Fault::PostgresStop | Fault::PostgresKill => system.postgres.restart().await?,
        Fault::RedisLatency(_) => system.redis.nodes[owner].proxy.set_delay(Duration::ZERO),
        Fault::RedisCut => system.redis.nodes[owner].proxy.accept(),
        Fault::BrokerLatency(_) => system.broker.proxy.set_delay(Duration::ZERO),
        Fault::BrokerCut => system.broker.proxy.accept(),
    }
    let healed_ms = history.now_ms();
    // Back in service before the next step: the process answers, the cluster is whole.
    match fault {
        Fault::KillServer(n) | Fault::PauseServer(n) => system.wait_server_live(n).await?,
        Fault::KillConsumer(n) => {
            let port = system.consumers[n].metrics_port;
            wait_port("the consumer's metrics to answer", port).await?;
        }
        Fault::PauseBroker => wait_port("the broker to accept connections", system.broker.port).await?,
        Fault::RedisRestart | Fault::RedisRollback => system.redis.wait_ok().await?,
        _ => {}
    }
    Ok(FaultRecord {
        fault,
        injected_ms,
        healed_ms,
        answering_ms: history.now_ms(),
    })
}

async fn wait_port(what: &str, port: u16) -> Result<()> {
    wait_for(what, Duration::from_secs(60), || async move {
        port_open(port).await.then_some(())
    })
    .await
}
