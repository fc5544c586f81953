//! `rollup bench --sequencer`: how many transactions per second one sequencer accepts. Proving
//! scales out over machines; every transaction still passes one sequencer, which decodes it,
//! checks its signature (batched across concurrent submissions), executes it under its lock,
//! appends it to its log and flushes the log before acknowledging. This runs a real sequencer
//! in-process on loopback (gRPC, sled in a temporary folder, no provers) and drives it with
//! concurrent clients sending a signed mixed load, signed before the clock starts. In the same
//! run, as ceilings to compare against, the two steps it cannot skip are timed alone on the
//! same load: the signatures' check (in the checker's batches of 256, with its key cache) and
//! execution (apply, and seal with the hashing behind); and what the sequencer's core allows
//! without the signatures and gRPC in front of it: the load submitted straight into a core on one
//! thread, as its lock takes each transaction, its seals hashing behind on the other cores. On
//! that core, two more stages a farm's rate passes through: the coordinator's bookkeeping (every
//! job leased and its result recorded, stand-in proofs) and the sequencer's side of settlement
//! (every block settled in turn).
//!
//! The clients run in this process, on the same cores as the sequencer, so the figure is what
//! one machine does playing both parts: a lower bound on the sequencer's own rate.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregator::VerifierKeys;
use anyhow::{bail, Context, Result};
use circuits::bls::batch::SignedMessage;
use circuits::bls::{tx_message, PublicKey, SecretKey, SignedTx};
use circuits::genesis::devnet_key;
use circuits::load::mixed_load;
use circuits::{Executor, Tx};
use indicatif::ProgressBar;
use proto::v1::sequencer_client::SequencerClient;
use proto::v1::SubmitTxRequest;
use rayon::prelude::*;
use serde::Serialize;
use tokio::sync::watch;

use crate::bench::{machine, process_cpu_seconds, progress_bar, BenchArgs, Machine};
use crate::devnet::percentile;
use crate::network::{genesis, Circuits};
use crate::sequencer::core::{Arrival, Core, Params, Proof};
use crate::sequencer::SequencerConfig;

/// Connections the clients share (each carries many concurrent requests over HTTP/2).
const CONNECTIONS: usize = 8;

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    txs: usize,
    clients: usize,
    accounts: u32,
    batch_capacity: usize,
    /// Transactions acknowledged per second, first submission to last acknowledgement.
    accepted_tps: f64,
    seconds: f64,
    /// This process's CPU time over the submissions (sequencer and clients), and over
    /// `seconds`, the cores kept busy.
    cpu_seconds: Option<f64>,
    latency_ms: Latency,
    /// The same load's signatures checked alone, as the sequencer's checker does it (batches of
    /// 256, busy keys kept prepared): the rate signatures allow.
    signatures_alone_tps: f64,
    /// The share of the sequencer's key lookups (one per distinct signer in a checked batch) that
    /// found the key prepared.
    key_cache_hit_rate: Option<f64>,
    /// The same load executed alone (applied and sealed in batches, each hashing behind the
    /// next one's applies, as the sequencer does): the rate execution allows.
    execution_alone_tps: f64,
    /// The same load submitted straight into a sequencer's core on one thread, as its lock
    /// takes each transaction once the signature is checked (execution, the log record queued,
    /// the bookkeeping; the log's write and flush are a group commit off the lock), its seals
    /// hashing behind: the rate the core allows, the lower of its lock's and its hashing's. On
    /// a few cores the hashing, which shares them, is the bound.
    core_alone_tps: f64,
    /// The log's records of the same load written to sled behind the lock, in groups of
    /// [`LOG_GROUP`] transactions (without the flush): transactions per second of those writes.
    log_alone_tps: f64,
    /// What the prover farm's coordinator allows, its lock alone: on the core above, with the
    /// whole load's jobs waiting (`batches`, and the merges of its blocks), every job leased and
    /// its result recorded one after another, as its lock takes them. The results are stand-in
    /// proofs of a batch proof's size ([`STAND_IN_PROOF_BYTES`]): what the lock holds does not
    /// depend on what the bytes prove, and plonky2's verifier runs outside it (about 5 ms a
    /// proof, on the farm's side of the figure). Transactions proven per second of the lock.
    coordinator_alone_tps: f64,
    /// The lock's hold per job, medians in µs: `lease` and `result`.
    coordinator_lock_us: JobLock,
    /// What the sequencer's side of settlement allows: on the core above, every block, proven
    /// with the stand-ins, settled one after another as the submitter does each once the
    /// settlement node acknowledges it (without the network and that node's checks): built to
    /// send, its settling gathered, written and taken back, the database flushed. Transactions
    /// settled per second.
    settle_alone_tps: f64,
    /// Per block, medians in ms: `lock` (building it, gathering, taking back), `write` (without
    /// the lock) and `flush`.
    settle_ms: SettleTimes,
    batches: u64,
    machine: Machine,
}

#[derive(Debug, Serialize)]
struct JobLock {
    jobs: usize,
    lease: f64,
    result: f64,
}

#[derive(Debug, Serialize)]
struct SettleTimes {
    blocks: usize,
    txs_per_block: f64,
    lock: f64,
    write: f64,
    flush: f64,
}

/// What the load does on one sequencer's core alone, with the transactions' signatures already
/// checked: their arrival, then their jobs, then their blocks' settling.
struct CoreAlone {
    core_tps: f64,
    log_tps: f64,
    coordinator_tps: f64,
    coordinator_lock: JobLock,
    settle_tps: f64,
    settle: SettleTimes,
}

/// Transactions whose log records one write takes in `core_alone_tps`'s run: what a group
/// commit finds queued, about a flush's time of arrivals.
const LOG_GROUP: usize = 32;

/// A batch proof's size (`rollup circuits`, BENCHMARKS.md): what the coordinator's stand-in
/// results weigh.
const STAND_IN_PROOF_BYTES: usize = 146_244;

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

/// Runs the sequencer benchmark.
pub fn run(a: &BenchArgs) -> Result<()> {
    let txs = a.txs.unwrap_or(20_000);
    crate::network::check_load_fits(a.accounts, txs)?;
    let bar = progress_bar(a.json)?;
    // Only the verifier keys: the sequencer proves nothing, and the prover's data is freed.
    let keys = Circuits::build(a.capacity)?.keys().clone();

    // The load, signed before the clock starts: clients bring their signatures.
    bar.set_prefix("signing");
    let load = mixed_load(txs, a.accounts, a.swap_ratio);
    let (signed, messages): (Vec<SignedTx>, Vec<SignedMessage>) = sign_load(&load).into_iter().unzip();

    // The ceilings, alone on the same load.
    bar.set_prefix("ceilings");
    let t = Instant::now();
    if !crate::sequencer::sigcheck::check_stream(&messages).is_empty() {
        bail!("the load has invalid signatures");
    }
    let signatures_alone_tps = txs as f64 / t.elapsed().as_secs_f64();
    // As the sequencer executes: each batch hashing behind the next one's applies.
    let mut ex = Executor::new(genesis(a.accounts).build()?, a.capacity);
    let t = Instant::now();
    for tx in &load {
        if ex.open_len() == a.capacity {
            ex.seal_batch_behind()?;
            while ex.take_hashed().is_some() {}
        }
        ex.apply(tx).map_err(|e| anyhow::anyhow!("load transaction rejected: {e}"))?;
    }
    ex.seal_batch_behind()?;
    while ex.wait_hashed().is_some() {}
    let execution_alone_tps = txs as f64 / t.elapsed().as_secs_f64();
    drop(ex);

    let dir = std::env::temp_dir().join(format!("rollup-bench-sequencer-{}", std::process::id()));
    // A fresh database: a leftover one would be replayed.
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir)?;
    let core_alone = core_alone(a, keys.clone(), &dir.join("core"), signed.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let result = core_alone.and_then(|core_alone| {
        let r = rt.block_on(submit_all(a, keys, &dir, signed, a.clients, &bar))?;
        Ok((core_alone, r))
    });
    std::fs::remove_dir_all(&dir).ok();
    let (alone, (seconds, cpu_seconds, mut latencies, batches, key_cache_hit_rate)) = result?;
    bar.finish_and_clear();

    latencies.sort_by(f64::total_cmp);
    let report = Report {
        mode: "sequencer",
        txs,
        clients: a.clients,
        accounts: a.accounts,
        batch_capacity: a.capacity,
        accepted_tps: txs as f64 / seconds,
        seconds,
        cpu_seconds,
        latency_ms: Latency {
            p50: percentile(&latencies, 0.5),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or(0.0),
        },
        signatures_alone_tps,
        key_cache_hit_rate,
        execution_alone_tps,
        core_alone_tps: alone.core_tps,
        log_alone_tps: alone.log_tps,
        coordinator_alone_tps: alone.coordinator_tps,
        coordinator_lock_us: alone.coordinator_lock,
        settle_alone_tps: alone.settle_tps,
        settle_ms: alone.settle,
        batches,
        machine: machine(&[]),
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn print(r: &Report) {
    println!("rollup bench --sequencer: one sequencer accepting a signed mixed load over gRPC");
    println!("  machine       {}", r.machine.describe());
    println!(
        "  load          {} transactions from {} accounts, {} concurrent clients, {} batches of {}",
        r.txs, r.accounts, r.clients, r.batches, r.batch_capacity
    );
    println!("  accepted      {:.0} tx/s ({:.2} s)", r.accepted_tps, r.seconds);
    if let Some(cpu) = r.cpu_seconds {
        println!("  cpu           {:.2} s, {:.2} cores busy (sequencer and clients)", cpu, cpu / r.seconds);
    }
    println!(
        "  latency       p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "  alone         signatures {:.0} tx/s, execution {:.0} tx/s: accepted is {:.0}% of the lower",
        r.signatures_alone_tps,
        r.execution_alone_tps,
        100.0 * r.accepted_tps / r.signatures_alone_tps.min(r.execution_alone_tps)
    );
    println!(
        "  core          {:.0} tx/s straight into the sequencer's core, its seals hashing behind; its log written {:.0} tx/s behind the lock",
        r.core_alone_tps, r.log_alone_tps
    );
    println!(
        "  coordinator   {:.0} tx/s proven through its lock alone: {} jobs, held {:.0} µs a lease and {:.0} µs a result (medians)",
        r.coordinator_alone_tps, r.coordinator_lock_us.jobs, r.coordinator_lock_us.lease, r.coordinator_lock_us.result
    );
    let s = &r.settle_ms;
    println!(
        "  settling      {:.0} tx/s settled one block after another: {} blocks of {:.0}, {:.2} ms under the lock, {:.2} ms writing, {:.2} ms flushing a block (medians)",
        r.settle_alone_tps, s.blocks, s.txs_per_block, s.lock, s.write, s.flush
    );
    if let Some(h) = r.key_cache_hit_rate {
        println!("  keys          {:.1}% of key lookups found the signer's key prepared", 100.0 * h);
    }
}

/// The sequencer's parameters for a load of `txs`: nothing settles here, so the mempool holds
/// the whole load.
fn params(a: &BenchArgs, txs: usize) -> Params {
    Params {
        capacity: a.capacity,
        batch_timeout: Duration::from_millis(1000),
        block_batches: 4,
        block_time: Duration::from_millis(3000),
        lease: Duration::from_secs(60),
        max_attempts: 3,
        mempool_limit: txs + 1,
        tx_index_blocks: Params::TX_INDEX_BLOCKS,
        state_save_txs: Params::STATE_SAVE_TXS,
    }
}

/// `signed` submitted one after another into a sequencer's core opened in `dir`, as its lock
/// takes them after their signatures are checked, transactions per second; then the farm's
/// jobs for them on the same core (`coordinator_alone_tps`), then the blocks' settling
/// (`settle_alone_tps`).
fn core_alone(
    a: &BenchArgs,
    keys: Arc<VerifierKeys>,
    dir: &std::path::Path,
    signed: Vec<SignedTx>,
) -> Result<CoreAlone> {
    let txs = signed.len();
    // Opened as the sequencer opens its database (its segment size).
    let (db, _) = crate::compact::open(dir).context("opening the benchmark's database")?;
    let mut core = Core::open(params(a, txs), db.clone(), &genesis(a.accounts), keys)?;
    // What the service computes before the lock: the message hashes, a register's key.
    let arrivals: Vec<Arrival> = signed
        .into_par_iter()
        .map(|signed| {
            let key = match &signed.tx {
                Tx::Register(r) => PublicKey::from_bytes(&r.pubkey).ok(),
                _ => None,
            };
            Arrival { hash: tx_message(&signed.tx), signed, key }
        })
        .collect();
    // The log's writes, which the group commit does behind the lock, are timed apart.
    let log = core.log();
    let mut writing = 0.0;
    let mut write_log = || -> Result<()> {
        let t = Instant::now();
        log.write()?;
        writing += t.elapsed().as_secs_f64();
        Ok(())
    };
    let t = Instant::now();
    for (i, s) in arrivals.into_iter().enumerate() {
        core.submit(s)
            .map_err(|s| anyhow::anyhow!("a valid transaction was refused: {:?}: {}", s.code(), s.message()))?;
        if (i + 1) % LOG_GROUP == 0 {
            write_log()?;
        }
    }
    write_log()?;
    let seconds = t.elapsed().as_secs_f64() - writing;
    // Its last seals finish hashing behind it: not on the lock, so not in the figure.
    core.collect_hashed(true);
    let core_tps = txs as f64 / seconds;
    let log_tps = txs as f64 / writing;
    // The open batch sealed, as its timeout would for a worker waiting, and a block still open
    // closed if its time is up; a block that only this sealing starts stays open (its batch is
    // proven, nothing merges or settles it).
    let later = Instant::now() + Duration::from_secs(24 * 3600);
    core.seal_open_batch(later)?;
    core.tick(later)?;
    core.tick(later)?;
    core.collect_hashed(true);
    let (coordinator_tps, coordinator_lock) = coordinator_alone(&mut core)?;
    // What the stages before wrote is flushed first, as the group commits and the results'
    // writes would have flushed it, so that the settling's first flush is its own.
    db.flush().context("flushing the stages before the settling")?;
    let (settle_tps, settle) = settle_alone(&mut core, &db)?;
    Ok(CoreAlone { core_tps, log_tps, coordinator_tps, coordinator_lock, settle_tps, settle })
}

/// Every job `core` has, and each merge its results make ready, leased and its stand-in result
/// recorded, one after another; the transactions proven per second of the lock's holds, and the
/// holds' medians. A result takes the lock twice, for its check and its record.
fn coordinator_alone(core: &mut Core) -> Result<(f64, JobLock)> {
    let proof: Proof = vec![0u8; STAND_IN_PROOF_BYTES].into();
    let refused = |s: tonic::Status| anyhow::anyhow!("a result was refused: {:?}: {}", s.code(), s.message());
    let (mut leases, mut results) = (Vec::new(), Vec::new());
    loop {
        let t = Instant::now();
        let Some(lease) = core.lease("bench", Instant::now()) else { break };
        leases.push(t.elapsed().as_secs_f64());
        // What the service does without the lock: encode the inputs, check and write the proof.
        if lease.payload.encode().is_empty() {
            bail!("job {} leased without its inputs", lease.id);
        }
        let t = Instant::now();
        let check = core.result_check(lease.id).map_err(refused)?.context("a leased job is done")?;
        let mut held = t.elapsed().as_secs_f64();
        let checked = check.store(proof.clone(), Ok(())).map_err(refused)?;
        let t = Instant::now();
        core.record_result(lease.id, checked, Instant::now()).map_err(refused)?;
        held += t.elapsed().as_secs_f64();
        results.push(held);
    }
    let status = core.status();
    let proven = status.proven_txs;
    if proven != status.accepted_txs {
        bail!("{} of {} transactions proven once every job was done", proven, status.accepted_txs);
    }
    let held: f64 = leases.iter().chain(&results).sum();
    let lock = JobLock { jobs: leases.len(), lease: median(leases) * 1e6, result: median(results) * 1e6 };
    Ok((proven as f64 / held, lock))
}

/// Every proven block of `core` settled in turn, as the submitter does once settlement
/// acknowledges each; transactions settled per second of the whole, and per block the medians.
fn settle_alone(core: &mut Core, db: &sled::Db) -> Result<(f64, SettleTimes)> {
    let (mut lock, mut write, mut flush) = (Vec::new(), Vec::new(), Vec::new());
    let mut txs = 0;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let Some(block) = core.ready_block() else { break };
        let mut s = core.settling(block.height)?.context("the next block is not being settled")?;
        let mut held = t.elapsed().as_secs_f64();
        // What the submitter does with the lock let go: the message built, the write.
        let txs_in_block = block.into_proto().txs.len();
        let t = Instant::now();
        let written = s.write();
        write.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let released = core.settled(s, written)?;
        held += t.elapsed().as_secs_f64();
        drop(released);
        lock.push(held);
        let t = Instant::now();
        db.flush().context("flushing the settled block")?;
        flush.push(t.elapsed().as_secs_f64());
        txs += txs_in_block;
    }
    let seconds = started.elapsed().as_secs_f64();
    let blocks = lock.len();
    if blocks == 0 {
        bail!("no block was proven to settle");
    }
    let times = SettleTimes {
        blocks,
        txs_per_block: txs as f64 / blocks as f64,
        lock: median(lock) * 1e3,
        write: median(write) * 1e3,
        flush: median(flush) * 1e3,
    };
    Ok((txs as f64 / seconds, times))
}

/// The median of `v` (0 if empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// `load` signed by its senders' devnet keys, each with the message its signature is checked
/// on; each sender's keys derived once (a public key is a G2 multiplication).
pub fn sign_load(load: &[Tx]) -> Vec<(SignedTx, SignedMessage)> {
    let senders: BTreeSet<u32> = load.iter().map(Tx::sender).collect();
    let keys: HashMap<u32, (SecretKey, PublicKey)> = senders
        .into_par_iter()
        .map(|id| {
            let sk = devnet_key(id);
            let pk = sk.public_key();
            (id, (sk, pk))
        })
        .collect();
    load.par_iter()
        .map(|tx| {
            let (sk, pk) = &keys[&tx.sender()];
            let signature = sk.sign_tx(tx);
            let checked = SignedMessage { public_key: *pk, message: tx_message(tx).to_vec(), signature };
            (SignedTx { tx: tx.clone(), signature }, checked)
        })
        .collect()
}

/// Starts a sequencer in `dir` and submits `signed` over `clients` concurrent streams (a
/// sender's transactions in order on one stream); returns the seconds from the first
/// submission to the last acknowledgement, the CPU seconds over them, each submission's
/// latency in ms, the batches sealed, and the share of key lookups that found the key prepared.
async fn submit_all(
    a: &BenchArgs,
    keys: Arc<VerifierKeys>,
    dir: &std::path::Path,
    signed: Vec<SignedTx>,
    clients: usize,
    bar: &ProgressBar,
) -> Result<(f64, Option<f64>, Vec<f64>, u64, Option<f64>)> {
    let (stop, shutdown) = watch::channel(false);
    let txs = signed.len();
    let params = params(a, txs);
    let token = "bench".to_string();
    let cfg = SequencerConfig {
        listen: "127.0.0.1:0".into(),
        // Never reached: no block is proven, so none is submitted.
        settlement: "http://127.0.0.1:9".into(),
        data_dir: dir.join("q"),
        token,
        params,
        metrics: None,
        genesis_accounts: a.accounts,
        settle_in_flight: crate::sequencer::SETTLE_IN_FLIGHT,
    };
    let seq = crate::sequencer::start(cfg, keys, shutdown).await?;
    let url = format!("http://{}", seq.addr);
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS.min(clients) {
        channels.push(tonic::transport::Endpoint::from_shared(url.clone())?.connect().await?);
    }
    let mut streams: Vec<Vec<Vec<u8>>> = vec![Vec::new(); clients];
    for s in &signed {
        streams[s.tx.sender() as usize % clients].push(s.encode());
    }
    drop(signed);
    bar.set_prefix("submitting");
    bar.set_length(txs as u64);
    bar.set_position(0);

    let cpu = process_cpu_seconds();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let mut c = SequencerClient::new(channels[i % channels.len()].clone());
        let bar = bar.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(stream.len());
            for bytes in stream {
                let t = Instant::now();
                c.submit_tx(SubmitTxRequest { signed_tx: bytes })
                    .await
                    .map_err(|s| anyhow::anyhow!("a valid transaction was refused: {:?}: {}", s.code(), s.message()))?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                bar.inc(1);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(txs);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds().zip(cpu).map(|(now, then)| now - then);
    let status = seq.shared.lock().status();
    if status.accepted_txs != txs as u64 {
        bail!("{} transactions acknowledged, the sequencer counts {}", txs, status.accepted_txs);
    }
    let (kept, prepared) = seq.shared.signature_keys().hits_and_misses();
    let hit_rate = (kept + prepared > 0).then(|| kept as f64 / (kept + prepared) as f64);
    let _ = stop.send(true);
    Ok((seconds, cpu_seconds, latencies, status.batches, hit_rate))
}
