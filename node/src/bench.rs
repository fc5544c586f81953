//! `rollup bench`: how many transactions per second this machine proves. A realistic mixed load
//! (signed, from the devnet genesis) goes through the whole proving path, the stages timed one by
//! one: signature checks, execution and witnesses, batch proofs, each aggregation level, and the
//! block proof's verification. W workers prove in parallel on this machine, after a warm-up (one
//! batch proof and one merge, a stage of its own outside the proving time: what a prover pays
//! once when it starts). The baseline is the stock plonky2 prover doing the same proving work
//! (the same batch proofs and merges, one proof at a time on all cores) in the same run.
//!
//! `rollup bench --sequencer` measures the other end instead: how many transactions per second
//! one sequencer accepts (`crate::acceptance`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use aggregator::{AggJob, BlockPlan, BlockPublicInputs, PlannedKind, ProofBytes, ProofKind};
use anyhow::{bail, Context, Result};
use circuits::bls::batch::SignedMessage;
use circuits::hash::ZERO_DIGEST;
use circuits::load::mixed_load;
use circuits::tx::commitment;
use circuits::{BatchWitness, Executor};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prover_gpu::Prover;
use serde::Serialize;

use crate::cli::DEFAULT_BATCH_CAPACITY;
use crate::memory::Stages;
use crate::network::{genesis, Circuits};
use crate::prover::{choose_prover, Backend, ProvingArgs};

/// Options of `rollup bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub proving: ProvingArgs,
    /// Transactions to prove (default: four full batches; with `--sequencer`, to submit,
    /// default 20 000), at most 2^20.
    #[arg(long,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=crate::network::MAX_LOAD_TXS))]
    pub txs: Option<usize>,
    /// Share of swaps, from 0 to 1.
    #[arg(long, default_value_t = 0.3, value_parser = crate::cli::share)]
    pub swap_ratio: f64,
    /// Workers proving in parallel on this machine (on each device, with `--all-devices`),
    /// 1 to 64 as for `rollup prover`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Prove on every CUDA device of this machine, `--workers` on each, rather than on
    /// `--device` alone: the whole machine's throughput. With `--backend auto` on a machine
    /// without a device, the CPU.
    #[arg(long)]
    pub all_devices: bool,
    /// Transaction slots per batch, from 1 to the largest batch circuit's 2 941 (2^19 rows).
    #[arg(long, default_value_t = DEFAULT_BATCH_CAPACITY, value_parser = crate::cli::capacity)]
    pub capacity: usize,
    /// Rounds of the baseline: a full batch and a merge proved by stock plonky2 and by the
    /// chosen backend, one after the other, whose medians are reported. More make the
    /// comparison steadier on a noisy machine; one is the quickest look.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "sequencer")]
    pub baseline_pairs: u16,
    /// Read the circuits from this file (`rollup circuits --prover-data-out`, of `--capacity`)
    /// instead of building them: several runs on one machine build them once.
    #[arg(long, conflicts_with = "sequencer")]
    pub prover_data: Option<std::path::PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Measure instead how many transactions per second one sequencer accepts: a sequencer on
    /// loopback, no provers, `--clients` concurrent clients submitting a signed load.
    #[arg(long, conflicts_with_all = ["workers", "all_devices", "backend", "device"])]
    pub sequencer: bool,
    /// With `--sequencer`: concurrent clients, each a stream of submissions one after another
    /// (1 to 65 536).
    #[arg(long, default_value_t = 256, requires = "sequencer",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub clients: usize,
    /// With `--sequencer`: accounts in the genesis, the load's senders (2 to the account
    /// tree's 2^24).
    #[arg(long, default_value_t = 1024, requires = "sequencer",
          value_parser = clap::value_parser!(u32).range(2..=crate::network::MAX_GENESIS_ACCOUNTS))]
    pub accounts: u32,
}

#[derive(Debug, Serialize)]
struct Stage {
    name: String,
    seconds: f64,
    jobs: usize,
    /// CPU time this process spent in the stage, all threads, user and system (`None` where
    /// `/proc` does not say). Over `seconds`, the host cores the stage kept busy: on a device,
    /// what a GPU's proofs ask of its host's CPUs (a driver waiting by spinning counts too).
    cpu_seconds: Option<f64>,
}

/// Where a stage starts: the clock, and the CPU time this process has used.
#[derive(Clone, Copy)]
struct Mark {
    wall: Instant,
    cpu: Option<f64>,
}

impl Mark {
    fn now() -> Self {
        Mark { wall: Instant::now(), cpu: process_cpu_seconds() }
    }
}

/// The CPU time this process has used, all threads, user and system: `utime` and `stime` of
/// `/proc/self/stat`, in clock ticks of 1/100 s (`USER_HZ`, 100 on every Linux the prover runs
/// on: x86-64 and arm64).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, field 2, is in parentheses and may hold spaces: count from after it.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // After the name: state (field 3) is index 0, so utime (14) and stime (15) are 11 and 12.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

#[derive(Debug, Serialize)]
pub struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    /// The name of the device proving (`--device`), or of each, `a, b`, with `--all-devices`;
    /// on the CPU backend, the name of `--device` if the machine has it.
    gpu: Option<String>,
    /// CUDA devices the driver sees on this machine.
    gpus: usize,
    /// The instruction set of the rayon backend's vector kernels, its Poseidon, NTT and quotient
    /// (`avx512`, `avx2` or `scalar`; named for the first of them, kept for the reports' readers).
    cpu_hash: &'static str,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    txs: usize,
    batches: usize,
    batch_capacity: usize,
    /// Workers proving at once, on all devices: `--workers` times `devices`.
    workers: usize,
    /// Backends the workers are spread over: one per CUDA device with `--all-devices`, else 1.
    devices: usize,
    proven_tps: f64,
    /// The same transactions proven by stock plonky2 through the same path (`batches` batch
    /// proofs and `merges` merges, one proof at a time on all cores): `txs` over
    /// `batches·stock_batch_proof_seconds + merges·stock_merge_proof_seconds`.
    stock_plonky2_tps: f64,
    /// `proven_tps / stock_plonky2_tps`.
    speedup_vs_stock: f64,
    stages: Vec<Stage>,
    /// Merge proofs in the aggregation tree (`batches − 1`, or one above a lone batch).
    merges: usize,
    /// The prover data file the circuits were read from (`--prover-data`; `memory`'s build peak
    /// is then the read's); absent where they were built.
    #[serde(skip_serializing_if = "Option::is_none")]
    prover_data_file: Option<std::path::PathBuf>,
    /// One full batch proved alone by stock plonky2: the median of `baseline_pairs` runs.
    stock_batch_proof_seconds: f64,
    /// The first merge of level 1 (of this run's batch proofs) proved alone by stock plonky2:
    /// the median of `baseline_pairs` runs (any merge costs the same: the merge circuit is one,
    /// and it verifies all its children's places whatever their number).
    stock_merge_proof_seconds: f64,
    /// One full batch proof, stock's median time over ours (`batch_proof_steps.total`).
    batch_speedup_vs_stock: Option<f64>,
    /// The same batch proved alone on the chosen backend, by step: the run of median total
    /// among `baseline_pairs`, each right after a stock run.
    batch_proof_steps: Option<ProofSteps>,
    /// One merge, stock's median time over ours (`merge_proof_steps.total`).
    merge_speedup_vs_stock: Option<f64>,
    /// The same merge proved alone on the chosen backend, by step: the run of median total
    /// among `baseline_pairs`, each right after a stock merge.
    merge_proof_steps: Option<ProofSteps>,
    /// Rounds of the baseline behind the figures above: a stock batch proof, ours of the same
    /// batch, a stock merge and ours of the same merge, interleaved.
    baseline_pairs: usize,
    proving_seconds: f64,
    block_proof_bytes: usize,
    peak_memory_mib: f64,
    /// Host memory by stage: building the circuits, and the proving path after it.
    memory: Stages,
    /// Peak device memory taken by the backend's buffers (CUDA only).
    peak_device_memory_mib: Option<f64>,
    /// What the check before the first proof estimated for `--workers` proofs in flight on one
    /// device, the driver's slack included (CUDA only; `prover_gpu::cuda::footprint`).
    device_memory_estimate_mib: Option<f64>,
    /// What one batch proof (`batch_proof_steps`) copied to and from the device (CUDA only).
    batch_proof_transfers_mib: Option<TransfersMib>,
    /// CUDA streams the workers' device work goes to (CUDA only; `ROLLUP_CUDA_STREAMS`).
    cuda_streams: Option<usize>,
    machine: Machine,
}

/// Mebibytes copied each way between host and device.
#[derive(Debug, Serialize)]
struct TransfersMib {
    to_device: f64,
    from_device: f64,
}

impl From<prover_gpu::backend::Transfers> for TransfersMib {
    fn from(t: prover_gpu::backend::Transfers) -> Self {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        TransfersMib { to_device: mib(t.to_device), from_device: mib(t.from_device) }
    }
}

/// Seconds of each step of one proof (a batch's or a merge's) on our pipeline.
#[derive(Debug, Serialize)]
struct ProofSteps {
    total: f64,
    witness: f64,
    wires_commit: f64,
    partial_products: f64,
    zs_commit: f64,
    quotient: f64,
    quotient_commit: f64,
    openings: f64,
    fri: f64,
}

impl ProofSteps {
    /// The proof's time against stock's, then its steps, for the text report.
    fn against(&self, stock: f64) -> String {
        format!(
            "{:>9.3} s vs stock {stock:.3} s ({:.2}x): commitments {:.3} s (wires {:.3}, Z {:.3}, quotient {:.3}), \
             quotient {:.3} s, openings {:.3} s, FRI {:.3} s, witness {:.3} s",
            self.total,
            stock / self.total,
            self.wires_commit + self.zs_commit + self.quotient_commit,
            self.wires_commit,
            self.zs_commit,
            self.quotient_commit,
            self.quotient,
            self.openings,
            self.fri,
            self.witness
        )
    }
}

impl From<&prover_gpu::StepTimes> for ProofSteps {
    fn from(s: &prover_gpu::StepTimes) -> Self {
        ProofSteps {
            total: s.total().as_secs_f64(),
            witness: s.witness.as_secs_f64(),
            wires_commit: s.wires_commit.as_secs_f64(),
            partial_products: s.partial_products.as_secs_f64(),
            zs_commit: s.zs_commit.as_secs_f64(),
            quotient: s.quotient.as_secs_f64(),
            quotient_commit: s.quotient_commit.as_secs_f64(),
            openings: s.openings.as_secs_f64(),
            fri: s.fri.as_secs_f64(),
        }
    }
}

impl Machine {
    /// One line: the CPU, its cores and memory, and the devices proving if any.
    pub fn describe(&self) -> String {
        let gpu = self.gpu.as_ref().map(|g| format!(", {g}")).unwrap_or_default();
        format!("{} ({} cores, {:.0} GiB){gpu}", self.cpu, self.cores, self.memory_gib)
    }
}

/// This machine, with the names of the CUDA devices `devices` (those proving) where it has them.
pub fn machine(devices: &[usize]) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = crate::memory::meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0) as f64 / 1024.0;
    // The devices' names only: opening one compiles nothing (a backend would compile its kernels).
    let names: Vec<String> = devices
        .iter()
        .filter_map(|&d| {
            prover_gpu::cuda::Driver::new(d, prover_gpu::cuda::Streams::One)
                .and_then(|d| prover_gpu::cuda::Device::name(&d))
                .ok()
        })
        .collect();
    let gpu = (!names.is_empty()).then(|| names.join(", "));
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: kib / (1 << 20) as f64,
        gpu,
        gpus: prover_gpu::cuda::device_count(),
        cpu_hash: prover_gpu::lanes::isa().name(),
    }
}

/// The benchmark's progress bar on stderr (hidden under `--json`), at its first stage.
pub fn progress_bar(json: bool) -> Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(
        None,
        if json { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {elapsed}")?.progress_chars("=> "));
    bar.set_prefix("circuits");
    Ok(bar)
}

/// Runs `jobs` on `workers` threads (each proof uses rayon inside), in order of completion;
/// `f` is given the number of the worker running it (below `workers`) and the job.
fn run_parallel<T: Send, R: Send>(
    jobs: Vec<T>,
    workers: usize,
    f: impl Fn(usize, T) -> Result<R> + Sync,
    bar: &ProgressBar,
) -> Result<Vec<R>> {
    let n = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        let (queue, results, failure, f) = (&queue, &results, &failure, &f);
        for worker in 0..workers.max(1).min(n.max(1)) {
            s.spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, job)) = next else { return };
                match f(worker, job) {
                    Ok(r) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r),
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
                bar.inc(1);
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.context("a job did not run"))
        .collect()
}

/// The provers the workers are spread over, with their CUDA devices: `--device`'s alone, or
/// with `--all-devices` one per CUDA device of the machine (CUDA required for each of them once
/// the machine has any; without any, `--backend auto` proves on the CPU, as for one device).
fn choose_provers(a: &BenchArgs) -> Result<(Vec<Prover>, Vec<usize>)> {
    if a.all_devices && a.proving.backend == Backend::Cpu {
        bail!("--all-devices proves on every CUDA device: not with --backend cpu");
    }
    let count = prover_gpu::cuda::device_count();
    if !a.all_devices || count == 0 {
        let prover = choose_prover(a.proving)?;
        let device = prover.on_device().then_some(a.proving.device.into());
        return Ok((vec![prover], device.into_iter().collect()));
    }
    let devices: Vec<usize> = (0..count).collect();
    let provers = devices
        .iter()
        .map(|&d| {
            let device = u16::try_from(d).context("device number")?;
            choose_prover(ProvingArgs { backend: Backend::Cuda, device })
        })
        .collect::<Result<_>>()?;
    Ok((provers, devices))
}

/// Runs the benchmark.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.sequencer {
        return crate::acceptance::run(&a);
    }
    let txs = a.txs.unwrap_or(4 * DEFAULT_BATCH_CAPACITY);
    let (provers, devices) = choose_provers(&a)?;
    // Worker `w` proves on `provers[w % provers.len()]`: `--workers` on each.
    let workers = usize::from(a.workers) * provers.len();
    let on = |worker: usize| &provers[worker % provers.len()];
    let prover = &provers[0];
    let accounts = 64;
    let bar = progress_bar(a.json)?;
    // The workers' proofs, then the baseline's by stock plonky2, one at a time.
    let work = crate::memory::Work { cpu_proofs: a.workers.into(), stock_baseline: true, ..Default::default() };
    let circuits = match &a.prover_data {
        Some(path) => Circuits::read(path, |capacity| {
            if capacity != a.capacity {
                bail!(
                    "the prover data {} is for batches of {capacity} slots, and --capacity is {}",
                    path.display(),
                    a.capacity
                );
            }
            for p in &provers {
                crate::prover::check_host_memory(p, capacity, crate::memory::Work { read: true, ..work })?;
            }
            Ok(())
        })?,
        None => {
            for p in &provers {
                crate::prover::check_host_memory(p, a.capacity, work)?;
            }
            Circuits::build(a.capacity)?
        }
    };
    let memory = Stages::after_build();
    for p in &provers {
        crate::prover::check_device_memory(p, &circuits, a.workers.into())?;
    }
    let mut stages = Vec::new();
    let mut stage = |name: &str, start: Mark, jobs: usize| {
        let cpu_seconds = process_cpu_seconds().zip(start.cpu).map(|(now, then)| now - then);
        stages.push(Stage { name: name.into(), seconds: start.wall.elapsed().as_secs_f64(), jobs, cpu_seconds })
    };

    // Signatures, as the sequencer checks them on arrival.
    let txs = mixed_load(txs, accounts, a.swap_ratio);
    let signed: Vec<SignedMessage> = crate::acceptance::sign_load(&txs).into_iter().map(|(_, m)| m).collect();
    let t = Mark::now();
    if !crate::sequencer::sigcheck::check_stream(&signed).is_empty() {
        bail!("the load has invalid signatures");
    }
    stage("signatures", t, 1);

    // Execution and witnesses.
    let t = Mark::now();
    let mut ex = Executor::new(genesis(accounts).build()?, a.capacity);
    let mut witnesses: Vec<BatchWitness> = Vec::new();
    for tx in &txs {
        if ex.open_len() == a.capacity {
            witnesses.push(ex.seal_batch()?);
        }
        ex.apply(tx).map_err(|e| anyhow::anyhow!("load transaction rejected: {e}"))?;
    }
    witnesses.push(ex.seal_batch()?);
    stage("execution_and_witness", t, witnesses.len());

    // Warm-up, outside the proving time: on each device, one batch proof and a merge of it, so
    // that what a prover pays once (a device's kernels compiled and JIT-loaded, root and twiddle
    // tables, the circuits' constants and sigmas made resident) is not charged to the throughput
    // a running farm sees. Its seconds are reported as their own stage.
    let c = &circuits;
    let prove_batch = |prover: &Prover, w: &BatchWitness| -> Result<ProofBytes> {
        Ok(ProofBytes { kind: ProofKind::Batch, bytes: c.batch.prove(prover, w)?.to_bytes() })
    };
    let t = Mark::now();
    bar.set_prefix("warm-up");
    bar.set_length(provers.len() as u64);
    bar.set_position(0);
    run_parallel(
        provers.iter().collect(),
        provers.len(),
        |_, p| {
            let warm = prove_batch(p, &witnesses[0])?;
            Ok(c.aggregation.run(p, &AggJob::Merge { children: vec![warm] })?)
        },
        &bar,
    )?;
    stage("warmup", t, 2 * provers.len());

    // Batch proofs on W workers (on each device).
    let proving = Mark::now();
    bar.set_prefix("batch proofs");
    bar.set_length(witnesses.len() as u64);
    bar.set_position(0);
    let batch_proofs = run_parallel(witnesses.iter().collect(), workers, |worker, w| prove_batch(on(worker), w), &bar)?;
    stage("batch_proofs", proving, witnesses.len());

    // Aggregation, level by level.
    let plan = BlockPlan::new(batch_proofs.len())?;
    let mut outputs: Vec<Option<ProofBytes>> = vec![None; plan.jobs.len()];
    for j in plan.level(0) {
        if let PlannedKind::Batch { batch } = j.kind {
            outputs[j.id] = Some(batch_proofs[batch].clone());
        }
    }
    for level in 1..=plan.depth() {
        let t = Mark::now();
        let jobs: Vec<(usize, AggJob)> = plan
            .level(level)
            .map(|j| {
                let get = |id: usize| outputs[id].clone().context("child not proven");
                let job = match &j.kind {
                    PlannedKind::Batch { .. } => bail!("a batch proof above level 0"),
                    PlannedKind::Merge { children } => {
                        AggJob::Merge { children: children.iter().map(|&c| get(c)).collect::<Result<_>>()? }
                    }
                };
                Ok((j.id, job))
            })
            .collect::<Result<_>>()?;
        let n = jobs.len();
        bar.set_prefix(format!("aggregation {level}"));
        bar.set_length(n as u64);
        bar.set_position(0);
        let done =
            run_parallel(jobs, workers, |worker, (id, job)| Ok((id, c.aggregation.run(on(worker), &job)?)), &bar)?;
        for (id, p) in done {
            outputs[id] = Some(p);
        }
        stage(&format!("aggregation_level_{level}"), t, n);
    }
    let proving_seconds = proving.wall.elapsed().as_secs_f64();
    let memory = memory.after_proving();
    let block = outputs[plan.root()].clone().context("no block proof")?;

    // Verification, as the settlement node does it.
    let t = Mark::now();
    let first = &witnesses[0];
    let last = &witnesses[witnesses.len() - 1];
    let expected = BlockPublicInputs {
        old_root: first.old_root,
        new_root: last.new_root,
        commitment: commitment(ZERO_DIGEST, txs.iter()),
    };
    circuits.keys().block().verify(&block.bytes, &expected)?;
    stage("verification", t, 1);

    // Baseline: plonky2's own prover doing the same proving work, alone on the machine. A full
    // batch proof, the chosen backend's proof of the same batch, and a merge (the first of
    // level 1, on this run's batch proofs), round after round; medians of each, so one noisy
    // run on a shared machine does not make the comparison. Every merge costs the same (one
    // merge circuit), and a partial batch costs a full one (one batch circuit), so the stock
    // path is `batches` batch proofs and `merges` merges at those medians.
    let merges = plan.jobs.iter().filter(|j| matches!(j.kind, PlannedKind::Merge { .. })).count();
    let merge_job = match plan.level(1).next().map(|j| &j.kind) {
        Some(PlannedKind::Merge { children }) => {
            let get = |id: usize| outputs[id].clone().context("child not proven");
            AggJob::Merge { children: children.iter().map(|&c| get(c)).collect::<Result<_>>()? }
        }
        _ => bail!("the block plan has no merge at level 1"),
    };
    // Rounds of the baseline (stock and pipeline proofs of one full batch, then of one merge),
    // interleaved, for its medians (`--baseline-pairs`).
    let pairs = usize::from(a.baseline_pairs);
    bar.set_prefix("baseline");
    bar.set_length(u64::from(a.baseline_pairs));
    bar.set_position(0);
    let full = witnesses.iter().max_by_key(|w| w.slots.len()).context("no batch")?;
    let mut stock_runs = Vec::with_capacity(pairs);
    let mut stock_merge_runs = Vec::with_capacity(pairs);
    let mut pipeline_runs = Vec::with_capacity(pairs);
    let mut transfers = None;
    // The merge's inputs, checked once, for the chosen backend's timed merge.
    let merge_inputs = c.aggregation.job_inputs(&merge_job)?;
    let mut merge_runs = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let t = Instant::now();
        let stock = circuits.batch.prove(&Prover::Stock, full)?;
        stock_runs.push(t.elapsed().as_secs_f64());
        circuits.batch.verify(&stock)?;
        if let Prover::Pipeline(backend) = prover {
            let data = circuits.batch.data();
            let before = backend.transfers();
            let (proof, s) = prover_gpu::prove_timed(
                backend.as_ref(),
                &data.prover_only,
                &data.common,
                circuits.batch.witness(full)?,
            )?;
            transfers = backend.transfers().zip(before).map(|(after, before)| after.since(before));
            circuits.batch.verify(&proof)?;
            pipeline_runs.push(ProofSteps::from(&s));
        }
        let t = Instant::now();
        let merged = c.aggregation.run(&Prover::Stock, &merge_job)?;
        stock_merge_runs.push(t.elapsed().as_secs_f64());
        if merged.kind != ProofKind::Merge {
            bail!("the stock merge made a {:?} proof", merged.kind);
        }
        if let Prover::Pipeline(backend) = prover {
            let data = c.aggregation.block_circuit();
            let (proof, s) =
                prover_gpu::prove_timed(backend.as_ref(), &data.prover_only, &data.common, merge_inputs.clone())?;
            data.verify(proof)?;
            merge_runs.push(ProofSteps::from(&s));
        }
        bar.inc(1);
    }
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let stock_seconds = median(stock_runs);
    let stock_merge_seconds = median(stock_merge_runs);
    // The pipeline run whose total is the median, with its steps.
    pipeline_runs.sort_by(|x, y| x.total.total_cmp(&y.total));
    let steps = (!pipeline_runs.is_empty()).then(|| pipeline_runs.swap_remove(pipeline_runs.len() / 2));
    merge_runs.sort_by(|x, y| x.total.total_cmp(&y.total));
    let merge_steps = (!merge_runs.is_empty()).then(|| merge_runs.swap_remove(merge_runs.len() / 2));
    bar.finish_and_clear();

    let proven_tps = txs.len() as f64 / proving_seconds;
    let stock_path_seconds = witnesses.len() as f64 * stock_seconds + merges as f64 * stock_merge_seconds;
    let stock_plonky2_tps = txs.len() as f64 / stock_path_seconds;
    let batch_speedup_vs_stock = steps.as_ref().map(|s| stock_seconds / s.total);
    let merge_speedup_vs_stock = merge_steps.as_ref().map(|s| stock_merge_seconds / s.total);
    // The devices proving, or on the CPU backend the one `--device` names, if there is one.
    let named = if devices.is_empty() { vec![usize::from(a.proving.device)] } else { devices };
    let report = Report {
        backend: prover.name().into(),
        txs: txs.len(),
        batches: witnesses.len(),
        batch_capacity: a.capacity,
        workers,
        devices: provers.len(),
        proven_tps,
        stock_plonky2_tps,
        speedup_vs_stock: proven_tps / stock_plonky2_tps,
        merges,
        prover_data_file: a.prover_data.clone(),
        stock_batch_proof_seconds: stock_seconds,
        stock_merge_proof_seconds: stock_merge_seconds,
        batch_speedup_vs_stock,
        batch_proof_steps: steps,
        merge_speedup_vs_stock,
        merge_proof_steps: merge_steps,
        baseline_pairs: pairs,
        stages,
        proving_seconds,
        block_proof_bytes: block.bytes.len(),
        peak_memory_mib: crate::memory::peak_mib().max(memory.circuits_build_peak),
        memory,
        // The most any one device took.
        peak_device_memory_mib: provers
            .iter()
            .filter_map(|p| match p {
                Prover::Pipeline(b) => b.peak_device_bytes(),
                Prover::Stock => None,
            })
            .max()
            .map(|v| v as f64 / (1u64 << 20) as f64),
        device_memory_estimate_mib: prover.on_device().then(|| {
            let circuits = circuits.commons().map(prover_gpu::cuda::footprint::Footprint::of);
            prover_gpu::cuda::footprint::need(&circuits, a.workers.into()) as f64 / (1u64 << 20) as f64
        }),
        batch_proof_transfers_mib: transfers.map(TransfersMib::from),
        cuda_streams: match prover {
            Prover::Pipeline(b) => b.device_streams(),
            Prover::Stock => None,
        },
        machine: machine(&named),
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "proving benchmark: {} transactions in {} batches of {}, {} workers, backend {}{}",
            report.txs,
            report.batches,
            report.batch_capacity,
            report.workers,
            report.backend,
            if report.devices > 1 { format!(" on {} devices", report.devices) } else { String::new() }
        );
        for s in &report.stages {
            let cpu = s.cpu_seconds.map(|c| format!(", {c:.2} CPU s")).unwrap_or_default();
            println!("  {:<24} {:>9.3} s  ({} jobs{cpu})", s.name, s.seconds, s.jobs);
        }
        println!(
            "  proven                   {:>9.2} tx/s (batch proofs and aggregation into one block proof)",
            report.proven_tps
        );
        println!(
            "  stock plonky2            {:>9.2} tx/s (the same {} batch proofs and {} merges, one at a time: \
             {:.3} s and {:.3} s each, medians of {})",
            report.stock_plonky2_tps,
            report.batches,
            report.merges,
            report.stock_batch_proof_seconds,
            report.stock_merge_proof_seconds,
            report.baseline_pairs
        );
        for (proof, steps, stock) in [
            ("batch", &report.batch_proof_steps, report.stock_batch_proof_seconds),
            ("merge", &report.merge_proof_steps, report.stock_merge_proof_seconds),
        ] {
            if let Some(s) = steps {
                println!("  one {proof}, {:<13} {}", report.backend, s.against(stock));
            }
        }
        println!("  speedup vs stock         {:>9.2} (proven over stock, the same work)", report.speedup_vs_stock);
        println!(
            "  peak memory              {:>9.0} MiB (building the circuits {:.0}, {:.0} once built; proving {:.0})",
            report.peak_memory_mib,
            report.memory.circuits_build_peak,
            report.memory.circuits_built,
            report.memory.proving_peak
        );
        if let Some(d) = report.peak_device_memory_mib {
            println!("  peak device memory       {d:>9.0} MiB");
        }
        if let Some(d) = report.device_memory_estimate_mib {
            println!("  device memory estimated  {d:>9.0} MiB (checked before the first proof)");
        }
        if let Some(n) = report.cuda_streams {
            println!("  CUDA streams             {n:>9} ({} to change)", prover_gpu::cuda::Streams::VAR);
        }
        if let Some(t) = &report.batch_proof_transfers_mib {
            println!(
                "  one batch's transfers    {:>9.1} MiB to the device, {:.1} MiB back",
                t.to_device, t.from_device
            );
        }
        println!("  machine                  {}", report.machine.describe());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Condvar;
    use std::time::Duration;

    use super::*;

    /// Every job runs once, its result in its place, and each worker number is one of the
    /// `workers` (with `--all-devices`, worker w proves on device w mod n, so every device is
    /// used only if the numbers span them); a failing job's error comes back.
    #[test]
    fn parallel_jobs_keep_their_order_and_name_their_workers() {
        let bar = ProgressBar::hidden();
        let seen = Mutex::new(BTreeSet::new());
        // The first four jobs wait for each other: the queue hands them out first, and no worker
        // holding one can take another, so four distinct workers must hold them at once,
        // however the machine schedules the threads. (After a minute they stop waiting, so a
        // pool of fewer workers fails the assertion below rather than hanging.)
        let arrived = (Mutex::new(0usize), Condvar::new());
        let out = run_parallel(
            (0..12u32).collect(),
            4,
            |worker, job| {
                seen.lock().expect("lock").insert(worker);
                if job < 4 {
                    let (count, all) = &arrived;
                    let mut n = count.lock().expect("lock");
                    *n += 1;
                    all.notify_all();
                    let _ = all.wait_timeout_while(n, Duration::from_secs(60), |n| *n < 4).expect("lock");
                }
                Ok((worker, job * 10))
            },
            &bar,
        )
        .expect("all run");
        assert_eq!(out.iter().map(|&(_, r)| r).collect::<Vec<_>>(), (0..12).map(|j| j * 10).collect::<Vec<_>>());
        assert_eq!(seen.into_inner().expect("lock"), (0..4).collect::<BTreeSet<_>>(), "four workers, numbered 0..4");
        assert_eq!(bar.position(), 12);
        let failed = run_parallel(vec![1, 2, 3], 2, |_, j| if j == 2 { bail!("job {j} failed") } else { Ok(j) }, &bar);
        assert!(failed.expect_err("one failed").to_string().contains("job 2 failed"));
    }
}
