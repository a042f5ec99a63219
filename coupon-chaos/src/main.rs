//! # coupon-chaos
//!
//! The project's whole-system fault suite. It starts its own Redis Cluster (three
//! masters with append-only persistence), its own Kafka-protocol broker and its own
//! PostgreSQL (`initdb` on a free port), then two `coupon-server` and two
//! `coupon-consumer` processes of the workspace's binaries. A population of users
//! with repeats buys from both servers while a fault schedule breaks processes and
//! data; every request is recorded. After the consumers drain and the reconciler
//! passes, a checker judges the history, the samples taken during the run and the
//! database against I1-I6 (`docs/PROTOCOL.md`).
//!
//! ```text
//! cargo build --workspace --bins --release
//! target/release/coupon-chaos list
//! target/release/coupon-chaos run all                  # every scenario, every ack mode
//! target/release/coupon-chaos run mixed --short        # what CI runs
//! target/release/coupon-chaos run pause-server --ack after-log --seed 42   # a replay
//! ```
//!
//! It exits non-zero when an invariant fails, after printing the history lines and
//! rows that prove it. `RELIABILITY.md` holds the figures of the last full run.

mod checker;
mod clients;
mod faults;
mod procs;
mod proxy;
mod services;
mod system;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sqlx::Row as _;

use checker::{Observed, Row, Sample, Verdict};
use clients::{Clients, History, Population};
use faults::{Scenario, scenarios};
use procs::wait_for;
use system::{GRACE_SECS, RECONCILE_SECS, System};

/// The whole-system fault suite.
#[derive(Debug, Parser)]
#[command(name = "coupon-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the scenarios.
    List,
    /// Runs one scenario (or `all`) in each ack mode asked for.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario names, comma separated (`coupon-chaos list`), or `all`.
    scenario: String,
    /// The seed of the client population; printed, and accepted to replay a run.
    #[arg(long)]
    seed: Option<u64>,
    /// The ack modes to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "after-log,after-gate,after-store")]
    ack: Vec<String>,
    /// Distinct users.
    #[arg(long, default_value_t = 6_000)]
    users: usize,
    /// The campaign's stock (default: three quarters of the users).
    #[arg(long)]
    stock: Option<u64>,
    /// Coupons per user.
    #[arg(long, default_value_t = 1)]
    per_user_limit: u32,
    /// Seconds over which the users arrive.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// CI's size: 2,000 users over 40 s.
    #[arg(long)]
    short: bool,
    /// Where the coupon-server and coupon-consumer binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The run's directory (logs, data, histories); default a new one under the temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One run's result.
struct Outcome {
    scenario: &'static str,
    known_failure: Option<&'static str>,
    ack: String,
    figures: checker::Figures,
    verdicts: Vec<Verdict>,
    recoveries: Vec<(String, Option<u64>)>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for s in scenarios() {
                println!("{:<16} {}", s.name, s.about);
            }
            println!("{:<16} every scenario above, in turn", "all");
            Ok(())
        }
        Command::Run(args) => {
            let failed = run(args).await?;
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

async fn run(mut args: RunArgs) -> Result<bool> {
    if args.short {
        args.users = 2_000;
        args.window_secs = 40;
    }
    let chosen: Vec<Scenario> = if args.scenario == "all" {
        scenarios()
    } else {
        let mut chosen = Vec::new();
        for name in args.scenario.split(',') {
            match scenarios().into_iter().find(|s| s.name == name) {
                Some(s) => chosen.push(s),
                None => bail!("no scenario `{name}`: `coupon-chaos list` names them"),
            }
        }
        chosen
    };
    for ack in &args.ack {
        if !["after-log", "after-gate", "after-store"].contains(&ack.as_str()) {
            bail!("--ack {ack}: expected after-log, after-gate or after-store");
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let stock = args.stock.unwrap_or(args.users as u64 * 3 / 4);
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the tool's directory")?
            .to_owned(),
    };
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("coupon-chaos-{seed}-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    println!(
        "coupon-chaos: seed {seed}, {} users, stock {stock}, window {} s, run directory {}",
        args.users,
        args.window_secs,
        dir.display()
    );
    let mut system = System::start_services(&dir, &bin_dir).await?;
    let mut outcomes = Vec::new();
    for scenario in &chosen {
        for ack in &args.ack {
            println!(
                "\n== {} ({ack}): {}\n   replay: coupon-chaos run {} --ack {ack} --seed {seed} --users {} --window-secs {} --stock {stock}",
                scenario.name, scenario.about, scenario.name, args.users, args.window_secs
            );
            let outcome = run_one(&mut system, scenario, ack, seed, &args, stock)
                .await
                .with_context(|| format!("scenario {} ({ack})", scenario.name));
            match outcome {
                Ok(outcome) => {
                    print_outcome(&outcome);
                    outcomes.push(outcome);
                }
                Err(e) => {
                    println!("   the run could not finish: {e:#}");
                    outcomes.push(Outcome {
                        scenario: scenario.name,
                        known_failure: scenario.known_failure,
                        ack: ack.clone(),
                        figures: checker::Figures::default(),
                        verdicts: vec![Verdict {
                            name: "run",
                            pass: false,
                            detail: format!("{e:#}"),
                            proof: Vec::new(),
                        }],
                        recoveries: Vec::new(),
                    });
                }
            }
        }
    }
    system.stop_processes().await?;
    print_summary(&outcomes, seed);
    Ok(outcomes.iter().any(|o| o.known_failure.is_none() && o.failed()))
}

async fn run_one(
    system: &mut System,
    scenario: &Scenario,
    ack: &str,
    seed: u64,
    args: &RunArgs,
    stock: u64,
) -> Result<Outcome> {
    system.start_processes(ack).await?;
    let admin = system.admin();
    let campaign = admin.open_campaign(&system.base(0), stock, args.per_user_limit).await?;
    let shifted = match scenario.gate_clock_shift_secs {
        0 => None,
        secs => Some((system.redis.owner_of(&campaign).await?, secs)),
    };
    if let Some((owner, secs)) = shifted {
        shift_gate_clock(system, owner, secs).await?;
    }
    let history = History::new(Instant::now());
    let window = Duration::from_secs(args.window_secs);
    let bases = vec![system.base(0), system.base(1)];
    let population = Population {
        users: args.users,
        arrival: window,
        repeat_share: 0.15,
        redeem_share: 0.2,
        race_share: 0.03,
        tries: 4,
        request_timeout: Duration::from_secs(5),
    };
    let clients = Clients::new(bases.clone(), &campaign, history.clone(), population);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        admin.clone(),
        bases.clone(),
        system.postgres.url(),
        campaign.clone(),
        history.clone(),
        stop.clone(),
    ));
    let users = tokio::spawn(async move { clients.run(seed).await });
    let faults = faults::run_schedule(system, scenario, &campaign, window, &history).await;
    users.await.context("the client population")?;
    let faults = faults?;

    // Every process must still be up: only the schedule may stop one.
    for server in &mut system.servers {
        server.proc.ensure_running()?;
    }
    for consumer in &mut system.consumers {
        consumer.proc.ensure_running()?;
    }
    eprintln!("chaos:   sale over at {:.1} s; draining", history.now_ms() as f64 / 1e3);
    if ack != "after-store" {
        wait_for("the consumers to drain the log", Duration::from_secs(180), || async {
            let progress = system.group_progress().await.ok()?;
            (progress.uncommitted == 0).then_some(())
        })
        .await?;
    }
    if scenario.rolls_back_the_gate() {
        // The operator's step after a gate went back in time (PROTOCOL.md 5a).
        let base = system.base(0);
        wait_for("an operator sync to be accepted", Duration::from_secs(120), || async {
            admin.sync(&base, &campaign).await.ok().map(|_| ())
        })
        .await?;
    }
    // I4: the reconciler returns what nobody will store within grace + a pass or two.
    let bound = Duration::from_secs(GRACE_SECS + 4 * RECONCILE_SECS + 60);
    let settle = wait_for("stored + remaining = stock", bound, || async {
        let view = admin.view(&system.base(0), &campaign).await.ok()?;
        let counts = counts_of(&view)?;
        (counts.0 + counts.1 == stock && counts.2 == 0).then_some(counts)
    })
    .await;
    let settled = settle.is_ok();
    let final_counts = match settle {
        Ok(counts) => Some(counts),
        Err(_) => admin
            .view(&system.base(0), &campaign)
            .await
            .ok()
            .and_then(|v| counts_of(&v)),
    };
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("the sampler")?;
    let (rows, voids) = read_store(&system.postgres.url(), &campaign).await?;
    let fenced_by_rollback = system.consumers_fenced(&["sequence_reused", "slot_taken"]).await;
    let observed = Observed {
        stock,
        per_user_limit: args.per_user_limit,
        ack: ack.to_owned(),
        history: history.entries(),
        samples,
        rows,
        voids,
        final_counts,
        settled,
        faults,
        fenced_by_rollback,
        rolls_back_the_gate: scenario.rolls_back_the_gate(),
    };
    if let Some((owner, _)) = shifted {
        shift_gate_clock(system, owner, 0).await?;
    }
    let run_dir = system.dir.join(format!("{}-{ack}", scenario.name));
    save(&run_dir, &observed)?;
    let (figures, verdicts) = checker::check(&observed);
    Ok(Outcome {
        scenario: scenario.name,
        known_failure: scenario.known_failure,
        ack: ack.to_owned(),
        recoveries: checker::recoveries(&observed.history, &observed.faults),
        figures,
        verdicts,
    })
}

impl Outcome {
    fn failed(&self) -> bool {
        self.verdicts.iter().any(|v| !v.pass)
    }
}

fn counts_of(view: &serde_json::Value) -> Option<(u64, u64, u64)> {
    Some((
        view["remaining"].as_u64()?,
        view["stored"].as_u64()?,
        view["pending"].as_u64()?,
    ))
}

/// Reads the gate's and the store's counts every 250 ms until told to stop (I1 at
/// every moment, as far as sampling can see it).
async fn sample(
    admin: system::Admin,
    bases: Vec<String>,
    db: String,
    campaign: String,
    history: History,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut pool: Option<sqlx::PgPool> = None;
    let id = uuid::Uuid::parse_str(&campaign).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut gate_issued = None;
        for base in &bases {
            if let Ok(Ok(view)) = tokio::time::timeout(Duration::from_secs(1), admin.view(base, &campaign)).await {
                gate_issued = view["issued"].as_u64();
                break;
            }
        }
        if pool.is_none() {
            pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(1))
                .connect(&db)
                .await
                .ok();
        }
        let mut db_stored = None;
        if let Some(p) = &pool {
            let count = sqlx::query("SELECT count(*) FROM coupon_coupons WHERE campaign_id = $1")
                .bind(id)
                .fetch_one(p);
            if let Ok(Ok(row)) = tokio::time::timeout(Duration::from_secs(1), count).await {
                db_stored = row.try_get::<i64, _>(0).ok().map(|n| n as u64);
            }
        }
        samples.push(Sample {
            t_ms: history.now_ms(),
            gate_issued,
            db_stored,
        });
    }
    samples
}

/// Every stored coupon of `campaign`, and how many admissions were voided.
async fn read_store(db: &str, campaign: &str) -> Result<(Vec<Row>, u64)> {
    let pool = sqlx::PgPool::connect(db).await.context("reading the store")?;
    let id = uuid::Uuid::parse_str(campaign)?;
    let rows =
        sqlx::query("SELECT id::text, user_id, state, order_id FROM coupon_coupons WHERE campaign_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| Row {
                id: r.get(0),
                user: r.get(1),
                state: r.get(2),
                order_id: r.get(3),
            })
            .collect();
    // Binaries older than the reservation protocol v2 have no voids table: none voided.
    let has_voids: bool = sqlx::query("SELECT to_regclass('coupon_voids') IS NOT NULL")
        .fetch_one(&pool)
        .await?
        .get(0);
    let voids: i64 = if has_voids {
        sqlx::query("SELECT count(*) FROM coupon_voids WHERE campaign_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await?
            .get(0)
    } else {
        0
    };
    pool.close().await;
    Ok((rows, voids as u64))
}

/// Writes the history, the samples, the rows and the faults of one run.
fn save(dir: &std::path::Path, o: &Observed) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut history = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    for entry in &o.history {
        writeln!(history, "{}", serde_json::to_string(entry)?)?;
    }
    let mut rows = std::io::BufWriter::new(std::fs::File::create(dir.join("rows.jsonl"))?);
    for row in &o.rows {
        writeln!(rows, "{}", serde_json::to_string(row)?)?;
    }
    std::fs::write(dir.join("samples.json"), serde_json::to_string(&o.samples)?)?;
    std::fs::write(dir.join("faults.json"), serde_json::to_string_pretty(&o.faults)?)?;
    Ok(())
}

/// Restarts the gate's master `owner` with its clock moved by `secs` (0: back to the
/// real clock) and checks that `TIME` says so.
async fn shift_gate_clock(system: &mut System, owner: usize, secs: i64) -> Result<()> {
    let node = &mut system.redis.nodes[owner];
    node.restart_with_clock(secs).await?;
    system.redis.wait_ok().await?;
    let now = chrono::Utc::now().timestamp();
    let theirs = system.redis.nodes[owner].time().await?;
    if (theirs - now - secs).abs() > 5 {
        bail!("the gate's clock is {} s off, expected {secs}", theirs - now);
    }
    eprintln!("chaos:   the gate's clock is {} s off", theirs - now);
    Ok(())
}

fn print_outcome(o: &Outcome) {
    for v in &o.verdicts {
        println!(
            "   {:<6} {}  {}",
            v.name,
            if v.pass { "ok  " } else { "FAIL" },
            v.detail
        );
        for p in &v.proof {
            println!("            {p}");
        }
    }
    let answers: Vec<String> = o.figures.answers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("   answers: {}", answers.join(", "));
    for (fault, ms) in &o.recoveries {
        match ms {
            Some(ms) => println!("   recovery after `{fault}`: {:.2} s", *ms as f64 / 1e3),
            None => println!("   recovery after `{fault}`: no decided answer after the heal"),
        }
    }
}

fn print_summary(outcomes: &[Outcome], seed: u64) {
    println!("\n== summary (seed {seed})\n");
    println!(
        "| scenario | ack | requests | 201 | stored | lost acks | unknown outcomes | leaked | gate 503 p99 ms | worst recovery s | I1 | I2 | I3 | I4 | I5 | I6 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---|");
    for o in outcomes {
        let fail = if o.known_failure.is_some() {
            "FAIL (known)"
        } else {
            "**FAIL**"
        };
        let verdict = |name: &str| match o.verdicts.iter().find(|v| v.name == name) {
            Some(v) if v.pass => "ok",
            Some(_) => fail,
            None if o.verdicts.iter().any(|v| v.name == "run") => fail,
            None => "-",
        };
        let f = &o.figures;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.scenario,
            o.ack,
            f.requests,
            f.acknowledged,
            f.stored,
            f.lost,
            f.unknown_outcomes,
            f.leaked,
            f.fail_fast_p99_ms.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            f.worst_recovery_ms
                .map(|v| format!("{:.2}", v as f64 / 1e3))
                .unwrap_or_else(|| "-".into()),
            verdict("I1"),
            verdict("I2"),
            verdict("I3"),
            verdict("I4"),
            verdict("I5"),
            verdict("I6"),
        );
    }
    let failures = |known: bool| -> Vec<String> {
        outcomes
            .iter()
            .filter(|o| o.known_failure.is_some() == known)
            .flat_map(|o| {
                o.verdicts
                    .iter()
                    .filter(|v| !v.pass)
                    .map(move |v| format!("{} ({}): {}", o.scenario, o.ack, v.name))
            })
            .collect()
    };
    for o in outcomes.iter().filter(|o| o.known_failure.is_some()) {
        let known = o.known_failure.unwrap_or_default();
        if o.failed() {
            println!("\nknown failure, {} ({}): {known}", o.scenario, o.ack);
        } else {
            println!(
                "\n{} ({}) passes now: its known failure ({known}) did not show; if it is fixed, drop the mark",
                o.scenario, o.ack
            );
        }
    }
    let (failed, known) = (failures(false), failures(true));
    if failed.is_empty() {
        println!(
            "\nevery invariant held{}",
            if known.is_empty() {
                String::new()
            } else {
                format!(", apart from the known failures ({})", known.join("; "))
            }
        );
    } else {
        println!("\nFAILED: {}", failed.join("; "));
    }
}
