//! `rollup devnet`: settlement, sequencer, coordinator and workers in one process over real gRPC
//! on loopback, with sled in a temporary folder, a synthetic signed load (and a few invalid
//! transactions that must be rejected), progress bars, and a summary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use circuits::bls::{SecretKey, SignedTx};
use circuits::genesis::devnet_key;
use circuits::load::mixed_load;
use circuits::{Transfer, Tx};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::v1::sequencer_client::SequencerClient;
use proto::v1::settlement_client::SettlementClient;
use proto::v1::{Empty, SubmitTxRequest};
use prover_gpu::Prover;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::cli::DEFAULT_BATCH_CAPACITY;
use crate::network::{genesis, Circuits};
use crate::prover::{ProvingArgs, WorkerConfig};
use crate::sequencer::core::Params;
use crate::sequencer::SequencerConfig;

/// Options of `rollup devnet`.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Valid transactions to send (plus a few invalid ones), at most 2^20.
    #[arg(long, default_value_t = 200,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=crate::network::MAX_LOAD_TXS))]
    pub txs: usize,
    /// Prover workers, 1 to 64 as for `rollup prover`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Transaction slots per batch, from 1 to the largest batch circuit's 2 941 (2^19 rows).
    #[arg(long, default_value_t = DEFAULT_BATCH_CAPACITY, value_parser = crate::cli::capacity)]
    pub capacity: usize,
    /// Share of swaps in the load, from 0 to 1.
    #[arg(long, default_value_t = 0.3, value_parser = crate::cli::share)]
    pub swap_ratio: f64,
    /// Accounts in the genesis (4 to the account tree's 2^24).
    #[arg(long, default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(4..=crate::network::MAX_GENESIS_ACCOUNTS))]
    pub accounts: u32,
    /// Batches per block at most (the default: a merge's children at most, one merge a block).
    #[arg(long, default_value_t = aggregator::MERGE_ARITY,
          value_parser = crate::cli::positive)]
    pub block_batches: usize,
    #[command(flatten)]
    pub proving: ProvingArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    txs_submitted: usize,
    txs_rejected: usize,
    txs_settled: u64,
    batches: u64,
    blocks_settled: u64,
    state_roots_match: bool,
    proving_tps: f64,
    e2e_tps: f64,
    latency_p50_ms: f64,
    latency_p95_ms: f64,
    /// The mean time a job waited for a worker (pending to leased).
    job_queue_ms_mean: f64,
    workers: usize,
    /// The backend the workers proved on (our pipeline on `cpu` or `cuda`), as they registered.
    backend: String,
    batch_capacity: usize,
    circuits_build_seconds: f64,
    rejections: BTreeMap<String, usize>,
}

/// Transactions that must be refused, each with the reason it must be refused for.
fn invalid_load(accounts: u32) -> Vec<(&'static str, Vec<u8>)> {
    let t = |from, amount, nonce| Tx::Transfer(Transfer { from, to: 2, token: 1, amount, fee: 0, nonce });
    let signed = |tx: Tx, sk: &SecretKey| SignedTx { signature: sk.sign_tx(&tx), tx }.encode();
    let u = accounts - 1;
    vec![
        ("signed by another key", signed(t(u, 5, 0), &devnet_key(u - 1))),
        ("insufficient balance", signed(t(u, u64::MAX, 0), &devnet_key(u))),
        ("bad nonce", signed(t(u, 5, 7), &devnet_key(u))),
        ("unknown account", signed(t(9_999, 5, 0), &devnet_key(9_999))),
        ("malformed bytes", vec![1, 2, 3]),
    ]
}

/// The `p` quantile of `sorted` (nearest rank), 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the devnet.
pub async fn run(a: DevnetArgs) -> Result<()> {
    crate::network::check_load_fits(a.accounts, a.txs)?;
    // The backend is chosen first, so that what this machine's memory cannot hold (the
    // circuits, and the workers' proofs on the CPU) is refused before the build.
    let prover = crate::prover::choose_prover(a.proving)?;
    let work = crate::memory::Work { cpu_proofs: a.workers.into(), ..Default::default() };
    crate::prover::check_host_memory(&prover, a.capacity, work)?;
    let t0 = Instant::now();
    let circuits = tokio::task::spawn_blocking({
        let c = a.capacity;
        move || Circuits::build(c)
    })
    .await??;
    let build_seconds = t0.elapsed().as_secs_f64();
    let dir = std::env::temp_dir().join(format!("rollup-devnet-{}-{}", std::process::id(), t0.elapsed().as_nanos()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&a, prover, circuits, &dir, build_seconds).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn run_in(
    a: &DevnetArgs,
    prover: Prover,
    circuits: Arc<Circuits>,
    dir: &std::path::Path,
    build_seconds: f64,
) -> Result<()> {
    let (stop, shutdown) = watch::channel(false);
    let token: String = {
        let mut b = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        crate::keyfile::to_hex(&b)
    };
    let g = genesis(a.accounts);
    let settlement = crate::settlement::start(
        "127.0.0.1:0",
        None,
        &dir.join("s"),
        &g,
        circuits.keys().clone(),
        token.clone(),
        shutdown.clone(),
    )
    .await?;
    let settlement_url = format!("http://{}", settlement.addr);
    let params = Params {
        capacity: a.capacity,
        batch_timeout: Duration::from_millis(1000),
        block_batches: a.block_batches,
        block_time: Duration::from_millis(3000),
        lease: Duration::from_secs(60),
        max_attempts: 3,
        mempool_limit: 100_000,
        tx_index_blocks: Params::TX_INDEX_BLOCKS,
        state_save_txs: Params::STATE_SAVE_TXS,
    };
    let cfg = SequencerConfig {
        listen: "127.0.0.1:0".into(),
        settlement: settlement_url.clone(),
        data_dir: dir.join("q"),
        token: token.clone(),
        params,
        metrics: None,
        genesis_accounts: a.accounts,
        settle_in_flight: crate::sequencer::SETTLE_IN_FLIGHT,
    };
    let mut seq = crate::sequencer::start(cfg, circuits.keys().clone(), shutdown.clone()).await?;
    let seq_url = format!("http://{}", seq.addr);
    // The workers share one backend, as `rollup prover --workers W` does. Their proofs run on a
    // rayon pool of their own, as they would in a process of their own: on the global pool, the
    // sequencer's signature checks and seal hashing (rayon too) queued behind a proof's parallel
    // steps, and the load stalled for a second at a time while a proof ran.
    let wc = WorkerConfig {
        coordinator: seq_url.clone(),
        token: Some(token.clone()),
        name: "devnet".into(),
        proving: a.proving,
        workers: a.workers.into(),
        pool: Some(Arc::new(rayon::ThreadPoolBuilder::new().thread_name(|i| format!("proving-{i}")).build()?)),
    };
    let mut workers = tokio::spawn(crate::prover::run_with(prover, wc, Some(circuits.clone()), shutdown.clone()));

    // The load: valid transactions in per-sender order, split over a few concurrent clients.
    let valid = mixed_load(a.txs, a.accounts, a.swap_ratio);
    let mp = MultiProgress::with_draw_target(if a.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")?.progress_chars("=> ");
    let bar = |name: &str| {
        let b = mp.add(ProgressBar::new(valid.len() as u64));
        b.set_style(style.clone());
        b.set_prefix(name.to_string());
        b
    };
    let (submitted_bar, proven_bar, settled_bar) = (bar("submitted"), bar("proven"), bar("settled"));
    let started = Instant::now();
    let channel = tonic::transport::Endpoint::from_shared(seq_url.clone())?.connect().await?;
    let streams = 4usize;
    let mut per: Vec<Vec<Tx>> = vec![Vec::new(); streams];
    for tx in &valid {
        per[tx.sender() as usize % streams].push(tx.clone());
    }
    let mut clients = Vec::new();
    for txs in per {
        let mut c = SequencerClient::new(channel.clone());
        let b = submitted_bar.clone();
        clients.push(tokio::spawn(async move {
            let mut acks: Vec<(u64, Instant)> = Vec::new();
            let mut rejected = Vec::new();
            for tx in txs {
                let signed = SignedTx { signature: devnet_key(tx.sender()).sign_tx(&tx), tx };
                match c.submit_tx(SubmitTxRequest { signed_tx: signed.encode() }).await {
                    Ok(r) => acks.push((r.into_inner().sequence, Instant::now())),
                    Err(s) => rejected.push(format!("{:?}: {}", s.code(), s.message())),
                }
                b.inc(1);
            }
            (acks, rejected)
        }));
    }
    let mut acks = Vec::new();
    let mut rejections: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for c in clients {
        let (a, r) = c.await?;
        acks.extend(a);
        unexpected.extend(r);
    }
    if !unexpected.is_empty() {
        bail!("valid transactions were rejected: {unexpected:?}");
    }
    let mut c = SequencerClient::new(channel.clone());
    let mut txs_rejected = 0;
    for (reason, bytes) in invalid_load(a.accounts) {
        match c.submit_tx(SubmitTxRequest { signed_tx: bytes }).await {
            Ok(_) => bail!("an invalid transaction ({reason}) was accepted"),
            Err(s) => {
                txs_rejected += 1;
                *rejections.entry(format!("{reason}: {:?}", s.code())).or_default() += 1;
            }
        }
    }
    submitted_bar.finish();

    // Wait for everything accepted to settle, recording when each sequence number settles.
    acks.sort_unstable_by_key(|x| x.0);
    let total = acks.len() as u64;
    let mut settled_at: Vec<Option<Instant>> = vec![None; acks.len()];
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    let mut settle_client: SettlementClient<Channel> = SettlementClient::connect(settlement_url.clone()).await?;
    let status = loop {
        let s = c.get_status(Empty {}).await?.into_inner();
        proven_bar.set_position(s.proven_txs.min(total));
        settled_bar.set_position(s.settled_txs.min(total));
        let now = Instant::now();
        for t in settled_at.iter_mut().take(s.settled_txs.min(total) as usize) {
            t.get_or_insert(now);
        }
        let failed = seq.shared.lock().failed_jobs();
        if !failed.is_empty() {
            bail!("jobs were given up: {failed:?}");
        }
        if s.settled_txs >= total {
            break s;
        }
        if now > deadline {
            bail!("timed out with {} of {total} transactions settled", s.settled_txs);
        }
        if let Some(r) = seq.tasks.try_join_next() {
            bail!("the sequencer stopped: {:?}", r?);
        }
        if workers.is_finished() {
            bail!("the prover workers stopped: {:?}", (&mut workers).await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    proven_bar.finish();
    settled_bar.finish();
    let head = settle_client.get_head(Empty {}).await?.into_inner();
    let end = settled_at.iter().flatten().max().copied().unwrap_or_else(Instant::now);
    let mut lat: Vec<f64> = acks
        .iter()
        .zip(&settled_at)
        .filter_map(|((_, acked), s)| s.map(|s| s.duration_since(*acked).as_secs_f64() * 1e3))
        .collect();
    lat.sort_by(|x, y| x.total_cmp(y));
    let (window, queue) = {
        let core = seq.shared.lock();
        (core.counters.proving_window, core.counters.queue_seconds)
    };
    let proving_secs = window.map(|(a, b)| b.duration_since(a).as_secs_f64()).unwrap_or(0.0).max(1e-9);
    let summary = Summary {
        txs_submitted: acks.len() + txs_rejected,
        txs_rejected,
        txs_settled: status.settled_txs,
        batches: status.batches,
        blocks_settled: status.blocks_settled,
        state_roots_match: head.state_root == status.state_root,
        proving_tps: status.proven_txs as f64 / proving_secs,
        e2e_tps: status.settled_txs as f64 / end.duration_since(started).as_secs_f64().max(1e-9),
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p95_ms: percentile(&lat, 0.95),
        job_queue_ms_mean: queue.0 * 1e3 / queue.1.max(1) as f64,
        workers: a.workers.into(),
        backend: seq.shared.worker_backends().join(", "),
        batch_capacity: a.capacity,
        circuits_build_seconds: build_seconds,
        rejections,
    };
    let _ = stop.send(true);
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("devnet summary");
        println!(
            "  transactions  {} submitted, {} rejected, {} settled",
            summary.txs_submitted, summary.txs_rejected, summary.txs_settled
        );
        for (r, n) in &summary.rejections {
            println!("    rejected    {n} × {r}");
        }
        println!(
            "  batches       {} in {} settled blocks ({:.0} transactions a batch on average, of {})",
            summary.batches,
            summary.blocks_settled,
            summary.txs_settled as f64 / summary.batches.max(1) as f64,
            summary.batch_capacity
        );
        println!("  roots match   {}", summary.state_roots_match);
        println!(
            "  proving       {:.2} tx/s with {} workers (our pipeline on {})",
            summary.proving_tps, summary.workers, summary.backend
        );
        println!("  end to end    {:.2} tx/s", summary.e2e_tps);
        println!(
            "  latency       p50 {:.0} ms, p95 {:.0} ms (accepted to settled)",
            summary.latency_p50_ms, summary.latency_p95_ms
        );
        println!("  job queue     {:.0} ms a job on average, pending to leased", summary.job_queue_ms_mean);
    }
    if !summary.state_roots_match {
        bail!("the settled root differs from the sequencer's");
    }
    Ok(())
}
