//! Prover workers (`rollup prover`): lease a job, prove it off the async runtime while a
//! heartbeat keeps the lease, submit the proof; a failure or a panic is reported as that job's
//! failure and the worker goes on; a lost coordinator is reconnected with backoff.

use std::sync::Arc;
use std::time::Duration;

use aggregator::{AggJob, ProofBytes, ProofKind};
use anyhow::{bail, Context, Result};
use circuits::BatchWitness;
use proto::v1::prover_farm_client::ProverFarmClient;
use proto::v1::{
    HeartbeatRequest, JobKind, LeaseJobRequest, RegisterWorkerRequest, ReportFailureRequest, SubmitResultRequest,
};
use prover_gpu::{Prover, Requested};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::auth::AddToken;
use crate::memory::Work;
use crate::network::Circuits;

/// Which proving backend a worker runs (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// CUDA when a device is there, else the CPU.
    Auto,
    /// Our proving pipeline on rayon.
    Cpu,
    /// Our proving pipeline on CUDA, or an error.
    Cuda,
}

/// Where a process proves: the flags `rollup prover`, `rollup bench` and `rollup devnet` share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct ProvingArgs {
    /// Proving backend.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// The CUDA device this process proves on, by CUDA's number (fastest first, or nvidia-smi's
    /// order under CUDA_DEVICE_ORDER=PCI_BUS_ID): one prover process per GPU, each naming its
    /// own. Used when CUDA is taken; a number past the machine's last device is an error.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub device: u16,
}

impl Default for ProvingArgs {
    fn default() -> Self {
        Self { backend: Backend::Auto, device: 0 }
    }
}

/// The prover for `--backend` and `--device`: our pipeline on the backend `prover_gpu::choose`
/// takes (the one place a backend is chosen; it logs which and why).
pub fn choose_prover(args: ProvingArgs) -> Result<Prover> {
    let requested = match args.backend {
        Backend::Auto => Requested::Auto,
        Backend::Cpu => Requested::Cpu,
        Backend::Cuda => Requested::Cuda,
    };
    let backend = prover_gpu::choose(requested, args.device.into()).with_context(|| {
        // The value as the command line spells it.
        let backend = clap::ValueEnum::to_possible_value(&args.backend).map(|v| v.get_name().to_string());
        format!("--backend {} --device {}", backend.unwrap_or_default(), args.device)
    })?;
    Ok(Prover::Pipeline(backend))
}

/// A client of the prover farm's coordinator, carrying the farm's token.
pub(crate) type Client = ProverFarmClient<InterceptedService<Channel, AddToken>>;

/// A job's proof, checked by plonky2's verifier.
pub struct Proven {
    /// The proof.
    pub bytes: Vec<u8>,
    /// Why the device's own attempt failed, where the CPU backend then proved the job: the
    /// device computed something wrong, and the worker stops once this proof is in.
    pub device_failure: Option<String>,
}

/// Proves one job's payload, and checks the proof with plonky2's verifier before it leaves (as
/// the coordinator will: a wrong proof from a device must be caught here, as the device's, not
/// there, where it counts against the job). On a device, a failure that is not a device error
/// (a proof that does not verify, a constraint the device's values break) is put to the CPU
/// backend, the device's oracle: if the CPU proves the job, the device was wrong and its proof is
/// the CPU's; if the CPU fails too, the failure is the job's.
pub fn prove(prover: &Prover, circuits: &Circuits, kind: JobKind, payload: &[u8]) -> Result<Proven> {
    match prove_checked(prover, circuits, kind, payload) {
        Ok(bytes) => Ok(Proven { bytes, device_failure: None }),
        Err(e) if prover.on_device() && !is_device_fault(&e) => {
            warn!(error = %format!("{e:#}"), "the device failed a job; proving it again on the CPU, the oracle");
            match prove_checked(&Prover::cpu(), circuits, kind, payload) {
                Ok(bytes) => Ok(Proven { bytes, device_failure: Some(format!("{e:#}")) }),
                Err(cpu) => Err(e.context(format!("the CPU backend failed the job too: {cpu:#}"))),
            }
        }
        Err(e) => Err(e),
    }
}

/// A proof this worker made that plonky2's verifier rejects.
#[derive(Debug, thiserror::Error)]
#[error("the proof made does not verify: {0}")]
pub struct OwnProofInvalid(String);

fn prove_checked(prover: &Prover, circuits: &Circuits, kind: JobKind, payload: &[u8]) -> Result<Vec<u8>> {
    let made = match kind {
        JobKind::Batch => {
            let w = BatchWitness::from_bytes(payload)?;
            ProofBytes { kind: ProofKind::Batch, bytes: circuits.batch.prove(prover, &w)?.to_bytes() }
        }
        JobKind::Aggregate => {
            let job = AggJob::from_bytes(payload)?;
            circuits.aggregation.run(prover, &job)?
        }
        JobKind::Unspecified => bail!("job of unspecified kind"),
    };
    circuits.aggregation.check(&made).map_err(|e| OwnProofInvalid(e.to_string()))?;
    Ok(made.bytes)
}

/// Options of a prover process.
pub struct WorkerConfig {
    /// Coordinator URL.
    pub coordinator: String,
    /// Bearer token.
    pub token: Option<String>,
    /// Name reported to the coordinator (`NAME-i` for worker i when there are several).
    pub name: String,
    /// Backend and device.
    pub proving: ProvingArgs,
    /// Jobs proven at once, each by its own worker with its own lease.
    pub workers: usize,
    /// A rayon pool of the proofs' own, for a process whose other work runs on rayon's global
    /// pool beside them (the devnet's sequencer); `None`: the global pool.
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

/// A proof failed on this process's device: a device error
/// ([`prover_gpu::BackendError::is_device_fault`]), reported as the device's, or a failure the CPU
/// backend then did not repeat ([`prove`]). The worker stops, which ends the process (see
/// [`run_with`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "the proving device failed, so this prover stops (a context that hit a device error can stay \
     broken for the life of the process; a restart, by hand or by a supervisor, gets a fresh one): {0}"
)]
pub struct DeviceFailed(String);

/// Whether a failed proof's error chain holds a device error, the device's fault rather than the
/// job's.
pub fn is_device_fault(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<prover_gpu::BackendError>()).any(|b| b.is_device_fault())
}

/// A failure as the coordinator records it (and `rollup jobs` shows it): the error's chain of
/// causes, each once. Errors that print their source inside their own message (such as
/// `CircuitError::Prove`) would otherwise repeat it, as `{:#}` appends every cause.
pub fn failure_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !text.ends_with(&msg) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&msg);
        }
    }
    text
}

/// Refuses, before the first proof, more proofs at once than `prover`'s device holds: `workers`
/// proofs of `circuits` (a process started with too many would otherwise fail its first jobs
/// with the device out of memory, stop as a device fault, and meet the same after every
/// restart). Host backends always pass.
pub fn check_device_memory(prover: &Prover, circuits: &Circuits, workers: usize) -> Result<()> {
    use prover_gpu::BackendError::DeviceMemory;
    match prover.check_memory(&circuits.commons(), workers) {
        Ok(()) => Ok(()),
        Err(e @ DeviceMemory { fit: 0, .. }) => Err(anyhow::Error::new(e).context(
            "not even one proof of these circuits fits in this device's free memory: prove on the CPU \
             (--backend cpu) or on a device with more memory",
        )),
        Err(e @ DeviceMemory { fit, .. }) => Err(anyhow::Error::new(e)
            .context(format!("more workers than this device's free memory holds: run at most --workers {fit}"))),
        Err(e) => Err(anyhow::Error::new(e).context("reading the device's free memory")),
    }
}

/// Refuses, before the circuits are built (or, with `work.built`, before the first proof), what
/// this machine's available memory cannot hold: the circuits of `capacity` slots and `work`'s
/// proofs of them, its `cpu_proofs` counted only where `prover` proves on the CPU (a device's
/// proofs count on the device: [`check_device_memory`]). A process past it would be killed by
/// the kernel mid-build or mid-proof, with no word, and again after every restart.
pub fn check_host_memory(prover: &Prover, capacity: usize, mut work: Work) -> Result<()> {
    if prover.on_device() {
        work.cpu_proofs = 0;
    }
    crate::memory::check(capacity, work).map_err(|e| {
        let advice = match (e.fit, work) {
            (0, Work { stock_baseline: true, .. }) => "not enough memory here for these circuits and the baseline's \
                                                       proof by plonky2's own prover: use a smaller --capacity, or a \
                                                       machine with more memory"
                .to_string(),
            (0, Work { cpu_proofs: 0, read, .. }) => format!(
                "not enough memory here to {} these circuits: use a smaller --capacity, or a machine with more memory",
                if read { "read" } else { "build" }
            ),
            (0, _) => "not enough memory here for these circuits and one proof on the CPU: use a smaller \
                       --capacity, prove on a GPU, or use a machine with more memory"
                .to_string(),
            (fit, _) => format!("more workers than this machine's available memory holds: run at most --workers {fit}"),
        };
        anyhow::Error::new(e).context(advice)
    })
}

/// Runs `cfg.workers` workers until shutdown. They share one backend, `prover`, chosen once by
/// the caller ([`choose_prover`]; `cfg.proving` is not read): a device's kernels compiled once, a
/// circuit's constants resident once, a CUDA stream each (several proofs in flight keep a device
/// busy while each one's host steps run). And one set of circuits: `circuits` if the process has
/// them (built, or read from a prover data file), otherwise built once for the coordinator's
/// batch capacity. Returns the first worker's error, which ends the others: a refused token,
/// circuits that differ from the coordinator's, or a device that failed ([`DeviceFailed`]).
pub async fn run_with(
    prover: Prover,
    cfg: WorkerConfig,
    circuits: Option<Arc<Circuits>>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let n = cfg.workers.max(1);
    if let Some(c) = &circuits {
        check_host_memory(&prover, c.batch.capacity(), Work { cpu_proofs: n, built: true, ..Work::default() })?;
        check_device_memory(&prover, c, n)?;
    }
    let shared = Arc::new(OnceCell::new_with(circuits));
    let cfg = Arc::new(cfg);
    let mut workers = JoinSet::new();
    for i in 0..n {
        let name = if n == 1 { cfg.name.clone() } else { format!("{}-{i}", cfg.name) };
        workers.spawn(worker(cfg.clone(), name, prover.clone(), shared.clone(), shutdown.clone()));
    }
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(Ok(())) => {}
            // Dropping the set aborts the other workers: their leases lapse and are re-issued.
            Ok(Err(e)) => return Err(e),
            Err(e) => bail!("a worker task ended abnormally: {e}"),
        }
    }
    Ok(())
}

/// One worker: registers, then leases, proves and submits jobs until shutdown, reconnecting
/// with backoff when the coordinator is lost.
async fn worker(
    cfg: Arc<WorkerConfig>,
    name: String,
    prover: Prover,
    circuits: Arc<OnceCell<Arc<Circuits>>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let in_flight = cfg.workers.max(1);
    let channel = Endpoint::from_shared(cfg.coordinator.clone()).context("coordinator URL")?.connect_lazy();
    let mut client: Client = ProverFarmClient::with_interceptor(channel, AddToken(cfg.token.clone()))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let reg = match client
            .register_worker(RegisterWorkerRequest { name: name.clone(), backend: prover.name().into() })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == tonic::Code::Unauthenticated => {
                bail!("coordinator refused the token: {}", e.message())
            }
            Err(e) => {
                warn!(message = e.message(), "coordinator unreachable; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // The first worker to register builds the circuits, once this machine's memory is known
        // to hold them and the process's proofs in flight on the CPU, and checks that those in
        // flight on a device fit there; the others wait for them.
        let capacity = reg.batch_capacity as usize;
        let p = prover.clone();
        let c = circuits
            .get_or_try_init(|| async move {
                check_host_memory(&p, capacity, Work { cpu_proofs: in_flight, ..Work::default() })?;
                let c = tokio::task::spawn_blocking(move || Circuits::build(capacity))
                    .await
                    .context("building the circuits")??;
                check_device_memory(&p, &c, in_flight)?;
                Ok::<_, anyhow::Error>(c)
            })
            .await?
            .clone();
        if c.keys().digest_hex() != reg.block_verifier_digest {
            bail!(
                "this worker's circuits (batches of {} slots, block key {}) do not match the coordinator's (batches of \
                 {capacity} slots, block key {})",
                c.batch.capacity(),
                c.keys().digest_hex(),
                reg.block_verifier_digest
            );
        }
        info!(worker = %reg.worker_id, name = %name, "registered");
        match work(&mut client, &reg.worker_id, reg.lease_ms, &prover, &c, &cfg.pool, &mut shutdown).await {
            Ok(()) => {}
            Err(e) if e.is::<DeviceFailed>() => return Err(e),
            Err(e) => warn!(name = %name, "lost the coordinator ({e}); reconnecting"),
        }
    }
}

/// How long a lease request may wait at the coordinator for a job (`LeaseJobRequest.wait_ms`).
const LEASE_WAIT: Duration = Duration::from_secs(2);

async fn work(
    client: &mut Client,
    worker: &str,
    lease_ms: u64,
    prover: &Prover,
    c: &Arc<Circuits>,
    pool: &Option<Arc<rayon::ThreadPool>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        // A long poll: the coordinator holds the request until a job is pending or LEASE_WAIT
        // is up, so a job is taken as it comes.
        let asked = std::time::Instant::now();
        let request = LeaseJobRequest { worker_id: worker.into(), wait_ms: LEASE_WAIT.as_millis() as u32 };
        let job = tokio::select! {
            r = client.lease_job(request) => r?.into_inner().job,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        let Some(job) = job else {
            // A coordinator that answers an empty queue at once (one from before the long
            // poll) is polled every 100 ms, not in a tight loop.
            let held = asked.elapsed();
            if held < LEASE_WAIT / 2 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100).saturating_sub(held)) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
            }
            continue;
        };
        let kind = JobKind::try_from(job.kind).unwrap_or(JobKind::Unspecified);
        // Heartbeats keep the lease while the proof runs.
        let mut hb_client = client.clone();
        let (hb_worker, id) = (worker.to_string(), job.job_id);
        let heartbeat = tokio::spawn(async move {
            let period = Duration::from_millis((lease_ms / 3).max(100));
            loop {
                tokio::time::sleep(period).await;
                if hb_client.heartbeat(HeartbeatRequest { worker_id: hb_worker.clone(), job_id: id }).await.is_err() {
                    return;
                }
            }
        });
        let started = std::time::Instant::now();
        let (circuits, prover) = (c.clone(), prover.clone());
        let pool = pool.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let prove = || prove(&prover, &circuits, kind, &job.payload);
            match pool {
                Some(pool) => pool.install(prove),
                None => prove(),
            }
        })
        .await;
        heartbeat.abort();
        // A failure is the job's unless the device caused it.
        let result = match outcome {
            Ok(Ok(proof)) => Ok(proof),
            Ok(Err(e)) => Err((failure_text(&e), is_device_fault(&e))),
            Err(e) if e.is_panic() => Err((format!("the prover panicked: {e}"), false)),
            Err(e) => Err((e.to_string(), false)),
        };
        match result {
            Ok(Proven { bytes: proof, device_failure }) => {
                let secs = started.elapsed().as_secs_f64();
                let submitted = client
                    .submit_result(SubmitResultRequest {
                        worker_id: worker.into(),
                        job_id: id,
                        proof,
                        prove_seconds: secs,
                    })
                    .await;
                if let Some(failure) = device_failure {
                    // The CPU's proof of the job is in (or, unsent, the lease lapses); the device
                    // that got it wrong is not trusted with another.
                    let sent = if submitted.is_ok() { "accepted" } else { "not accepted" };
                    return Err(DeviceFailed(format!(
                        "the device failed job {id} ({failure}) where the CPU backend proved it; its proof was {sent}"
                    ))
                    .into());
                }
                match submitted {
                    Ok(_) => info!(job = id, seconds = secs, "proof accepted"),
                    Err(e) if e.code() == tonic::Code::Unavailable => return Err(e.into()),
                    Err(e) => warn!(job = id, message = e.message(), "proof refused"),
                }
            }
            Err((reason, worker_fault)) => {
                warn!(job = id, %reason, worker_fault, "job failed");
                let report =
                    ReportFailureRequest { worker_id: worker.into(), job_id: id, reason: reason.clone(), worker_fault };
                let reported = client.report_failure(report).await;
                if worker_fault {
                    // Stop whether or not the report arrived: unreported, the lease lapses and
                    // the job is re-issued, uncounted too.
                    if let Err(e) = reported {
                        warn!(job = id, message = e.message(), "the device failure was not reported");
                    }
                    return Err(
                        DeviceFailed(format!("{reason}; the job went back to the coordinator uncounted")).into()
                    );
                }
                match reported {
                    Ok(_) => {}
                    Err(e) if e.code() == tonic::Code::Unavailable => return Err(e.into()),
                    // A lease that lapsed meanwhile: the job is someone else's now.
                    Err(e) => warn!(job = id, message = e.message(), "failure report refused"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use circuits::bls::SignedTx;
    use circuits::genesis::devnet_key;
    use circuits::load::mixed_load;
    use proto::v1::sequencer_client::SequencerClient;
    use proto::v1::SubmitTxRequest;
    use prover_gpu::backend::{Backend, Digest};
    use prover_gpu::{BackendError, F};

    use super::*;
    use crate::sequencer::core::{Fault, JobKey, Params};
    use crate::sequencer::{Running, SequencerConfig};

    /// A backend whose every kernel fails with one error: a device that hit an illegal address
    /// ([`BackendError::Cuda`], the device's fault), or a refusal no device causes; on a device
    /// or on the host.
    struct Failing {
        error: fn() -> BackendError,
        on_device: bool,
    }

    impl Backend for Failing {
        fn name(&self) -> &'static str {
            if self.on_device {
                "cuda"
            } else {
                "cpu"
            }
        }
        fn device_streams(&self) -> Option<usize> {
            self.on_device.then_some(1)
        }
        fn coset_ntt_batch(&self, _: &mut [F], _: usize, _: F) -> prover_gpu::Result<()> {
            Err((self.error)())
        }
        fn hash_rows(&self, _: &[F], _: usize, _: &mut [Digest]) -> prover_gpu::Result<()> {
            Err((self.error)())
        }
        fn hash_pairs(&self, _: &[Digest], _: &mut [Digest]) -> prover_gpu::Result<()> {
            Err((self.error)())
        }
    }

    fn failing(error: fn() -> BackendError, on_device: bool) -> Prover {
        Prover::Pipeline(Arc::new(Failing { error, on_device }))
    }

    fn lost_device() -> BackendError {
        BackendError::Cuda("CUDA_ERROR_ILLEGAL_ADDRESS (injected)".into())
    }

    fn refused() -> BackendError {
        BackendError::Shape("refused (injected)".into())
    }

    /// A failure's text names each cause once, also where an error prints its source inside
    /// its own message.
    #[test]
    fn a_failure_names_each_cause_once() {
        let repeated = circuits::CircuitError::Prove { gadget: Some("transfer".into()), source: refused() };
        let e = anyhow::Error::new(repeated).context("batch 3");
        assert_eq!(
            format!("{e:#}"),
            "batch 3: proving failed in transfer: shape: refused (injected): shape: refused (injected)"
        );
        assert_eq!(failure_text(&e), "batch 3: proving failed in transfer: shape: refused (injected)");
        let plain = anyhow::anyhow!("out of memory").context("witness").context("batch 4");
        assert_eq!(failure_text(&plain), "batch 4: witness: out of memory");
    }

    async fn wait_until(what: &str, seq: &Running, done: impl Fn(&crate::sequencer::core::Core) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(&seq.shared.lock()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn jobs(core: &crate::sequencer::core::Core, state: &str) -> u64 {
        core.status().jobs.iter().find(|j| j.state == state).map_or(0, |j| j.count)
    }

    /// A device error hands the job back without counting it and stops the worker; any other
    /// failure on the host counts toward the job's attempts and the worker goes on; on a device,
    /// the CPU backend proves the job the device failed, and the worker stops. Before, a broken
    /// GPU used up the attempts of every job it leased, and the chain halted on the first one.
    /// A job given up halts the chain until an operator queues it again (`rollup jobs retry`),
    /// and a worker then proves it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_fault_is_the_workers_and_stops_it_where_a_job_fault_counts_against_the_job() {
        let circuits = tokio::task::spawn_blocking(crate::network::test_circuits).await.expect("join");
        let dir = std::env::temp_dir().join(format!("rollup-device-fault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (stop, shutdown) = watch::channel(false);
        let params = Params {
            capacity: 4,
            // Only full batches seal: a timeout between two submissions would split a batch and
            // make the proven count depend on the machine's speed.
            batch_timeout: Duration::from_secs(3600),
            block_batches: 1,
            block_time: Duration::from_millis(200),
            lease: Duration::from_secs(60),
            max_attempts: 2,
            mempool_limit: 1000,
            tx_index_blocks: Params::TX_INDEX_BLOCKS,
            state_save_txs: Params::STATE_SAVE_TXS,
        };
        let cfg = SequencerConfig {
            listen: "127.0.0.1:0".into(),
            // Nothing settles here: no proof is ever made.
            settlement: "http://127.0.0.1:9".into(),
            data_dir: dir.clone(),
            token: "t".into(),
            params,
            metrics: None,
            genesis_accounts: 8,
            settle_in_flight: crate::sequencer::SETTLE_IN_FLIGHT,
        };
        let seq = crate::sequencer::start(cfg, circuits.keys().clone(), shutdown.clone()).await.expect("sequencer");
        let url = format!("http://{}", seq.addr);
        let client = SequencerClient::connect(url.clone()).await.expect("connect");
        let load = mixed_load(8, 8, 0.0);
        let submit = |txs: &[circuits::Tx]| {
            let signed: Vec<_> = txs
                .iter()
                .map(|tx| SignedTx { signature: devnet_key(tx.sender()).sign_tx(tx), tx: tx.clone() })
                .collect();
            let mut client = client.clone();
            async move {
                for s in signed {
                    client.submit_tx(SubmitTxRequest { signed_tx: s.encode() }).await.expect("accepted");
                }
            }
        };
        submit(&load[..4]).await;
        wait_until("the batch job", &seq, |c| jobs(c, "pending") == 1).await;
        let worker = |name: &str| WorkerConfig {
            coordinator: url.clone(),
            token: Some("t".into()),
            name: name.into(),
            proving: ProvingArgs::default(),
            workers: 1,
            pool: None,
        };

        // The device fails: the worker stops with the device's error, the job is pending again
        // and uncounted.
        let broken = failing(lost_device, true);
        let ended = tokio::time::timeout(
            Duration::from_secs(120),
            run_with(broken, worker("gpu"), Some(circuits.clone()), shutdown.clone()),
        )
        .await
        .expect("the worker stops by itself");
        let err = ended.expect_err("a device fault ends the worker");
        assert!(err.is::<DeviceFailed>() && format!("{err:#}").contains("ILLEGAL_ADDRESS"), "{err:#}");
        {
            let mut core = seq.shared.lock();
            assert_eq!((core.counters.worker_faults, core.counters.job_failures), (1, 0));
            assert_eq!((jobs(&core, "pending"), jobs(&core, "failed")), (1, 0));
            // A report from a worker that holds no lease on the job is stale: refused, and
            // nothing changes.
            let stale = core.report_failure("ghost", JobKey::Batch(0).id(), "late".into(), Fault::Job);
            assert_eq!(stale.expect_err("stale").code(), tonic::Code::FailedPrecondition);
            assert_eq!((core.counters.job_failures, jobs(&core, "pending")), (0, 1));
        }

        // Any other failure on the host is the job's: counted, the worker going on, the job given
        // up after its two attempts.
        let (stop_refusing, refusing_shutdown) = watch::channel(false);
        let refusing = failing(refused, false);
        let going_on = tokio::spawn(run_with(refusing, worker("cpu"), Some(circuits.clone()), refusing_shutdown));
        wait_until("the job to be given up", &seq, |c| jobs(c, "failed") == 1).await;
        {
            let core = seq.shared.lock();
            assert_eq!((core.counters.worker_faults, core.counters.job_failures), (1, 2));
            let failed = core.failed_jobs();
            assert!(failed[0].1.contains("refused (injected)"), "{failed:?}");
        }
        assert!(!going_on.is_finished(), "a job's failure does not stop the worker");
        stop_refusing.send(true).expect("shutdown");
        going_on.await.expect("join").expect("a worker stopped by shutdown ends cleanly");

        // The same refusal on a device: the CPU backend proves the next batch, its proof is
        // accepted, and the worker stops, nothing charged to the job.
        submit(&load[4..]).await;
        wait_until("the second batch job", &seq, |c| jobs(c, "pending") == 1).await;
        let wrong = failing(refused, true);
        let ended = tokio::time::timeout(
            Duration::from_secs(300),
            run_with(wrong, worker("gpu"), Some(circuits.clone()), shutdown.clone()),
        )
        .await
        .expect("the worker stops by itself");
        let err = ended.expect_err("a device that failed a job the CPU proves ends the worker");
        let text = format!("{err:#}");
        assert!(
            err.is::<DeviceFailed>() && text.contains("the CPU backend proved it; its proof was accepted"),
            "{text}"
        );
        {
            let core = seq.shared.lock();
            assert_eq!((core.counters.worker_faults, core.counters.job_failures), (1, 2));
            assert_eq!(core.counters.proven_txs, 4, "the second batch, proven on the CPU");
        }

        // The given-up job halts the chain until an operator queues it again (`rollup jobs`).
        use crate::jobs::{list, retry, StateArg};
        let token = || Some("t".to_string());
        let e = list(&url, None, None).await.expect_err("the farm's token is required");
        assert!(format!("{e}").contains("Unauthenticated"), "{e}");
        let failed = list(&url, token(), Some(StateArg::Failed)).await.expect("listed");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!((crate::jobs::describe(&failed[0]), failed[0].failures), ("batch 0".to_string(), 2));
        // The worker's name, then the error: each cause once, no gadget named for a failure
        // that is not a constraint's.
        assert!(failed[0].reason.ends_with(": proving failed: shape: refused (injected)"), "{failed:?}");
        // Oldest first: batch 0 given up, batch 1 proven, its block's merge waiting for a worker.
        let all = list(&url, token(), None).await.expect("listed");
        let shown: Vec<_> = all.iter().map(|j| (crate::jobs::describe(j), j.state.as_str())).collect();
        assert_eq!(
            shown,
            [("batch 0".into(), "failed"), ("batch 1".into(), "done"), ("merge 1 of block 2".into(), "pending")],
            "{all:?}"
        );
        let e = retry(&url, token(), vec![0, JobKey::Batch(1).id()]).await.expect_err("batch 1 is done");
        assert!(format!("{e}").contains("FailedPrecondition"), "{e}");
        assert_eq!(jobs(&seq.shared.lock(), "failed"), 1, "a refused request changes nothing");
        let queued = retry(&url, token(), vec![]).await.expect("queued again");
        assert_eq!(queued.iter().map(|j| j.job_id).collect::<Vec<_>>(), [0]);
        assert_eq!(list(&url, token(), Some(StateArg::Failed)).await.expect("listed").len(), 0);
        // A worker that can prove it does, and the job's block has all its proofs.
        let (stop_proving, proving_shutdown) = watch::channel(false);
        let proving = tokio::spawn(run_with(
            Prover::Pipeline(Arc::new(prover_gpu::cpu::RayonBackend)),
            worker("cpu"),
            Some(circuits),
            proving_shutdown,
        ));
        wait_until("the retried job's proof", &seq, |c| c.counters.proven_txs == 8).await;
        assert_eq!(seq.shared.lock().counters.retried_jobs, 1);
        stop_proving.send(true).expect("shutdown");
        proving.await.expect("join").expect("a worker stopped by shutdown ends cleanly");
        stop.send(true).expect("shutdown");
        std::fs::remove_dir_all(&dir).ok();
    }
}
