//! `rollup settlement`, `rollup sequencer` and `rollup prover`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aggregator::VerifierKeys;
use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::auth;
use crate::cli::DEFAULT_BATCH_CAPACITY;
use crate::network::{genesis, Circuits};
use crate::prover::{ProvingArgs, WorkerConfig};
use crate::sequencer::core::Params;
use crate::sequencer::SequencerConfig;

/// What every process of a network must agree on.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct NetworkArgs {
    /// Accounts in the devnet genesis, at most the account tree's 2^24.
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=crate::network::MAX_GENESIS_ACCOUNTS))]
    pub genesis_accounts: u32,
    /// Transaction slots per batch, from 1 to the largest batch circuit's 2 941 (2^19 rows).
    #[arg(long, default_value_t = DEFAULT_BATCH_CAPACITY, value_parser = crate::cli::capacity)]
    pub capacity: usize,
    /// Read the circuits' verifier keys from this file (`rollup circuits --verifier-keys-out
    /// FILE`) instead of building the circuits: the service starts in milliseconds, without the
    /// prover's data in memory. Without it, the circuits are built at every start.
    #[arg(long)]
    pub verifier_keys: Option<PathBuf>,
}

/// Options of `rollup settlement`.
#[derive(Debug, Args)]
pub struct SettlementArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: String,
    /// Where the database lives.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Bearer token the sequencer must present (or the ROLLUP_TOKEN environment variable).
    #[arg(long)]
    pub token: Option<String>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long)]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// Options of `rollup sequencer`.
#[derive(Debug, Args)]
pub struct SequencerArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// The settlement node's URL.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub settlement: String,
    /// Where the database lives.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Bearer token for workers and for settlement (or ROLLUP_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long)]
    pub metrics: Option<String>,
    /// A non-empty batch is sealed this many milliseconds after its first transaction if a
    /// prover worker is waiting for work (full batches seal at once).
    #[arg(long, default_value_t = 2_000)]
    pub batch_timeout_ms: u64,
    /// Batches per block at most. The default is a merge's children at most
    /// (`aggregator::MERGE_ARITY`): a block of up to that many costs one merge.
    #[arg(long, default_value_t = aggregator::MERGE_ARITY,
          value_parser = crate::cli::positive)]
    pub block_batches: usize,
    /// A block closes this many milliseconds after its first batch.
    #[arg(long, default_value_t = 5_000)]
    pub block_time_ms: u64,
    /// Job lease in milliseconds, at least 100; heartbeats extend it.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub lease_ms: u64,
    /// Failures after which a job is given up, at least 1.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Accepted but unsettled transactions at most, at least 1.
    #[arg(long, default_value_t = 100_000, value_parser = crate::cli::positive)]
    pub mempool_limit: usize,
    /// The last settled blocks whose transactions' status is kept (`GetTxStatus`, and a copy
    /// refused as already accepted); older ones are pruned from the index, and a copy of
    /// one is refused by its spent nonce. 0 keeps them all, and the index grows with history.
    #[arg(long, default_value_t = Params::TX_INDEX_BLOCKS)]
    pub tx_index_blocks: u64,
    /// The settled state is saved in the database once this many transactions have settled
    /// since the last save (at the end of a block; 0 or 1 saves it with every block). A
    /// restart replays the settled transactions after the last save; fewer saves leave sled's
    /// file less to grow by.
    #[arg(long, default_value_t = Params::STATE_SAVE_TXS)]
    pub state_save_txs: u64,
    /// Blocks out at the settlement node at once, at most: each goes out once proven, and the
    /// node checks it while the ones before it settle.
    #[arg(long, default_value_t = crate::sequencer::SETTLE_IN_FLIGHT as u64,
          value_parser = clap::value_parser!(u64).range(1..=crate::settlement::MAX_AHEAD))]
    pub settle_in_flight: u64,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// Options of `rollup prover`.
#[derive(Debug, Args)]
pub struct ProverArgs {
    /// The coordinator's (sequencer's) URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Bearer token (or ROLLUP_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    #[command(flatten)]
    pub proving: ProvingArgs,
    /// Name reported to the coordinator (`NAME-i` for worker i when there are several).
    #[arg(long, default_value = "prover")]
    pub name: String,
    /// Jobs proven at once in this process, sharing one backend: on a GPU, several proofs in
    /// flight keep the device busy while each one's host steps run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Read the circuits from this file, written by `rollup circuits --prover-data-out` with
    /// this version of rollup, instead of building them: a start in seconds where a build takes
    /// tens of them. The coordinator's block verifier key must be the one they make.
    #[arg(long)]
    pub prover_data: Option<PathBuf>,
}

impl SequencerArgs {
    /// The coordinator's tunables.
    pub fn params(&self) -> Params {
        Params {
            capacity: self.network.capacity,
            batch_timeout: Duration::from_millis(self.batch_timeout_ms),
            block_batches: self.block_batches,
            block_time: Duration::from_millis(self.block_time_ms),
            lease: Duration::from_millis(self.lease_ms),
            max_attempts: self.max_attempts,
            mempool_limit: self.mempool_limit,
            tx_index_blocks: self.tx_index_blocks,
            state_save_txs: self.state_save_txs,
        }
    }
}

/// The shutdown signal of a service: Ctrl-C (SIGINT) or, on Unix, SIGTERM, which is how systemd,
/// Docker and Kubernetes stop a process. A service stops taking calls, answers the ones in
/// flight and exits 0; without the SIGTERM handler it died at once, consistent but with its
/// callers' requests cut off.
fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let signal = stop_signal().await;
        info!(signal, "shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// Waits for SIGINT or SIGTERM and names the one that came.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                warn!(error = %e, "SIGTERM cannot be handled; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

fn token(flag: Option<String>) -> Result<String> {
    auth::resolve(flag).context("a bearer token is required: --token or ROLLUP_TOKEN")
}

/// The verifier keys a sequencer or settlement node checks proofs with: read from
/// `--verifier-keys`, or taken from circuits built here (the rest of them freed).
async fn verifier_keys(network: &NetworkArgs) -> Result<Arc<VerifierKeys>> {
    let capacity = network.capacity;
    match network.verifier_keys.clone() {
        Some(path) => {
            let start = std::time::Instant::now();
            let keys = tokio::task::spawn_blocking(move || crate::network::read_keys(&path, capacity)).await??;
            info!(
                capacity,
                seconds = start.elapsed().as_secs_f64(),
                key = %keys.digest_hex(),
                "verifier keys read"
            );
            Ok(Arc::new(keys))
        }
        None => {
            let circuits = tokio::task::spawn_blocking(move || Circuits::build(capacity)).await??;
            Ok(circuits.keys().clone())
        }
    }
}

/// `rollup settlement`.
pub async fn settlement(a: SettlementArgs) -> Result<()> {
    let token = token(a.token)?;
    let keys = verifier_keys(&a.network).await?;
    let shutdown = shutdown_on_signal();
    let r = crate::settlement::start(
        &a.listen,
        a.metrics.as_deref(),
        &a.data_dir,
        &genesis(a.network.genesis_accounts),
        keys,
        token,
        shutdown,
    )
    .await?;
    r.task.await?
}

/// `rollup sequencer`.
pub async fn sequencer(a: SequencerArgs) -> Result<()> {
    let params = a.params();
    let token = token(a.token)?;
    let keys = verifier_keys(&a.network).await?;
    let shutdown = shutdown_on_signal();
    let cfg = SequencerConfig {
        listen: a.listen,
        settlement: a.settlement,
        data_dir: a.data_dir,
        token,
        params,
        metrics: a.metrics,
        genesis_accounts: a.network.genesis_accounts,
        settle_in_flight: a.settle_in_flight as usize,
    };
    let mut running = crate::sequencer::start(cfg, keys, shutdown).await?;
    if let Some(m) = running.metrics_addr {
        info!(%m, "metrics");
    }
    // The first task to end ends the service, loudly if it failed.
    match running.tasks.join_next().await {
        Some(r) => r?,
        None => Ok(()),
    }
}

/// `rollup prover`.
pub async fn prover(a: ProverArgs) -> Result<()> {
    let shutdown = shutdown_on_signal();
    let cfg = WorkerConfig {
        coordinator: a.coordinator,
        token: auth::resolve(a.token),
        name: a.name,
        proving: a.proving,
        workers: a.workers.into(),
        pool: None,
    };
    let prover = crate::prover::choose_prover(cfg.proving)?;
    let circuits = match a.prover_data {
        Some(path) => {
            // The host memory is checked for the read and the proofs in flight on the CPU, the
            // device's by `run_with`.
            let (p, n) = (prover.clone(), cfg.workers);
            let check = move |capacity| {
                crate::prover::check_host_memory(
                    &p,
                    capacity,
                    crate::memory::Work { cpu_proofs: n, read: true, ..Default::default() },
                )
            };
            Some(tokio::task::spawn_blocking(move || Circuits::read(&path, check)).await??)
        }
        None => None,
    };
    crate::prover::run_with(prover, cfg, circuits, shutdown).await
}
