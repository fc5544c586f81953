//! Prover workers (`rollup prover`): lease a job, prove it off the async runtime while a
//! heartbeat keeps the lease, submit the proof; a failure or a panic is reported as that job's
//! failure and the worker goes on; a lost coordinator is reconnected with backoff.

use std::sync::Arc;
use std::time::Duration;

use aggregator::AggJob;
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

impl Backend {
    /// The `--backend` value that names it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }
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
    let backend = prover_gpu::choose(requested, args.device.into())
        .with_context(|| format!("--backend {} --device {}", args.backend.flag(), args.device))?;
    Ok(Prover::Pipeline(backend))
}

type Client = ProverFarmClient<InterceptedService<Channel, AddToken>>;

/// Proves one job's payload.
pub fn prove(prover: &Prover, circuits: &Circuits, kind: JobKind, payload: &[u8]) -> Result<Vec<u8>> {
    match kind {
        JobKind::Batch => {
            let w = BatchWitness::from_bytes(payload)?;
            Ok(circuits.batch.prove(prover, &w)?.to_bytes())
        }
        JobKind::Aggregate => {
            let job = AggJob::from_bytes(payload)?;
            Ok(circuits.aggregation.run(prover, &job)?.bytes)
        }
        JobKind::Unspecified => bail!("job of unspecified kind"),
    }
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
}

/// Runs `cfg.workers` workers until shutdown. They share one backend, chosen once here (a
/// device's kernels compiled once, a circuit's constants resident once, a CUDA stream each:
/// several proofs in flight keep a device busy while each one's host steps run), and one set of
/// circuits: `circuits` if the process has them, otherwise built once for the coordinator's
/// batch capacity. Returns the first worker's error, which ends the others.
pub async fn run(cfg: WorkerConfig, circuits: Option<Arc<Circuits>>, shutdown: watch::Receiver<bool>) -> Result<()> {
    let prover = choose_prover(cfg.proving)?;
    let shared = Arc::new(OnceCell::new_with(circuits));
    let n = cfg.workers.max(1);
    let mut workers = JoinSet::new();
    for i in 0..n {
        let name = if n == 1 { cfg.name.clone() } else { format!("{}-{i}", cfg.name) };
        let (coordinator, token) = (cfg.coordinator.clone(), cfg.token.clone());
        workers.spawn(worker(coordinator, token, name, prover.clone(), shared.clone(), shutdown.clone()));
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
    coordinator: String,
    token: Option<String>,
    name: String,
    prover: Prover,
    circuits: Arc<OnceCell<Arc<Circuits>>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let channel = Endpoint::from_shared(coordinator).context("coordinator URL")?.connect_lazy();
    let mut client: Client = ProverFarmClient::with_interceptor(channel, AddToken(token))
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
        // The first worker to register builds the circuits; the others wait for them.
        let capacity = reg.batch_capacity as usize;
        let c = circuits
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || Circuits::build(capacity)).await.context("building the circuits")?
            })
            .await?
            .clone();
        if c.verifier.digest_hex() != reg.block_verifier_digest {
            bail!("this worker's circuits do not match the coordinator's (block key {})", reg.block_verifier_digest);
        }
        info!(worker = %reg.worker_id, name = %name, "registered");
        if let Err(e) = work(&mut client, &reg.worker_id, reg.lease_ms, &prover, &c, &mut shutdown).await {
            warn!(name = %name, "lost the coordinator ({e}); reconnecting");
        }
    }
}

async fn work(
    client: &mut Client,
    worker: &str,
    lease_ms: u64,
    prover: &Prover,
    c: &Arc<Circuits>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let job = client.lease_job(LeaseJobRequest { worker_id: worker.into() }).await?.into_inner().job;
        let Some(job) = job else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
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
        let outcome = tokio::task::spawn_blocking(move || prove(&prover, &circuits, kind, &job.payload)).await;
        heartbeat.abort();
        let result = match outcome {
            Ok(Ok(proof)) => Ok(proof),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(e) if e.is_panic() => Err(format!("the prover panicked: {e}")),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(proof) => {
                let secs = started.elapsed().as_secs_f64();
                match client
                    .submit_result(SubmitResultRequest {
                        worker_id: worker.into(),
                        job_id: id,
                        proof,
                        prove_seconds: secs,
                    })
                    .await
                {
                    Ok(_) => info!(job = id, seconds = secs, "proof accepted"),
                    Err(e) if e.code() == tonic::Code::Unavailable => return Err(e.into()),
                    Err(e) => warn!(job = id, message = e.message(), "proof refused"),
                }
            }
            Err(reason) => {
                warn!(job = id, %reason, "job failed");
                client.report_failure(ReportFailureRequest { worker_id: worker.into(), job_id: id, reason }).await?;
            }
        }
    }
}
