//! The sequencer's gRPC services: clients submit and read; workers lease, heartbeat and submit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use circuits::bls::batch::SignedMessage;
use circuits::bls::SignedTx;
use circuits::hash::digest_to_bytes;
use proto::v1::prover_farm_server::ProverFarm;
use proto::v1::sequencer_server::Sequencer;
use proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::info;

use super::core::{Arrival, Core, Fault, JobKey, JobState, Lease, Waiters};
use super::flusher::Flusher;
use super::sigcheck::{SigChecker, SIG_BATCH, SIG_WAIT};
use crate::status;

/// Shared by both services.
#[derive(Clone)]
pub struct Shared {
    /// The state machine.
    pub core: Arc<Mutex<Core>>,
    /// Hex digest of the block verifier key.
    pub verifier_digest: String,
    workers: Arc<AtomicU64>,
    /// The lease requests held for a job, as the core counts and wakes them.
    waiters: Arc<Waiters>,
    /// The backends registered workers prove on (`cpu`, `cuda`).
    backends: Arc<Mutex<std::collections::BTreeSet<String>>>,
    signatures: SigChecker,
    /// Flushes its database before every acknowledgement.
    flusher: Flusher,
}

impl Shared {
    /// Wraps the core and starts the batching signature checker (so: inside a runtime).
    pub fn new(core: Core, verifier_digest: String) -> Self {
        let signatures = SigChecker::spawn(SIG_BATCH, SIG_WAIT);
        // Every flush first writes the log's queued records: an acknowledgement's among them.
        let flusher = {
            let log = core.log();
            Flusher::spawn(move || log.write_and_flush().map_err(|e| format!("{e:#}")))
        };
        let waiters = core.waiters();
        Self {
            core: Arc::new(Mutex::new(core)),
            verifier_digest,
            workers: Arc::default(),
            waiters,
            backends: Arc::default(),
            signatures,
            flusher,
        }
    }

    /// Locks the core (a panic while holding it cannot leave it half-updated for a reader:
    /// every mutation is one call).
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The signers' keys the signature checker keeps prepared.
    pub fn signature_keys(&self) -> &circuits::bls::KeyCache {
        self.signatures.keys()
    }

    /// Leases the oldest pending job to `worker`, waiting up to `wait` for one to become
    /// pending when none is (a long poll): the job is handed over as it comes, where a worker
    /// polling would find it only at its next request. While held, the request counts as a
    /// worker waiting: the open batch is sealed for it once its timeout is up.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Option<Lease> {
        let until = tokio::time::Instant::now() + wait;
        let mut held = Some(self.waiters.hold());
        loop {
            let notified = self.waiters.notified();
            tokio::pin!(notified);
            // Registered before the lease looks: a job made pending after it finds nothing
            // wakes this request.
            notified.as_mut().enable();
            let lease = {
                let mut core = self.lock();
                let lease = core.lease(worker, Instant::now());
                if lease.is_some() {
                    // No longer waiting, under the lock: a tick never sees this request held
                    // with its job already taken (and seals the open batch for no one).
                    drop(held.take());
                }
                lease
            };
            if lease.is_some() || tokio::time::timeout_at(until, notified).await.is_err() {
                return lease;
            }
        }
    }

    /// The backends registered workers have proven on, in order (`cpu`, `cuda`).
    pub fn worker_backends(&self) -> Vec<String> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Makes everything written so far durable: one flush at a time for all callers
    /// ([`Flusher`]; sled's `flush_async` can deadlock when called concurrently).
    pub async fn flush(&self) -> Result<(), Status> {
        self.flusher.flush().await.map_err(status::storage)
    }
}

/// The longest a lease request is held for a job (`LeaseJobRequest.wait_ms` is cut to it). A
/// worker that goes away closes its connection, and its held request is dropped; one whose
/// machine vanishes without a word can still be handed a job until its wait is up, and that
/// job comes back when its lease lapses, as a job does whose worker dies while proving it.
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(5);

fn unix_ms(t: Instant) -> u64 {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ms = wall.as_millis() as i128 + (t.saturating_duration_since(now).as_millis() as i128);
    ms.max(0) as u64
}

#[tonic::async_trait]
impl Sequencer for Shared {
    async fn submit_tx(&self, req: Request<SubmitTxRequest>) -> Result<Response<SubmitTxResponse>, Status> {
        let signed = SignedTx::decode(&req.into_inner().signed_tx).map_err(|e| status::signed_tx_error(&e))?;
        // A register's key is checked (proof of possession) off the runtime and outside the lock;
        // other senders' keys come from the registry. Then the signature joins a batch check.
        let (key, registered) = match &signed.tx {
            circuits::Tx::Register(r) => {
                let r = r.clone();
                let key = tokio::task::spawn_blocking(move || circuits::bls::register_key(&r))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(|e| status::bls_error(&e))?;
                (key, Some(key))
            }
            tx => (self.lock().registered_key(tx.sender())?, None),
        };
        // The message hash, for the check and for the core: computed once, outside the lock.
        let hash = circuits::bls::tx_message(&signed.tx);
        let item = SignedMessage { public_key: key, message: hash.to_vec(), signature: signed.signature };
        match self.signatures.check(item).await {
            Some(true) => {}
            Some(false) => return Err(status::bls_error(&circuits::bls::BlsError::InvalidSignature)),
            None => return Err(Status::unavailable("the signature checker stopped")),
        }
        let (hash, sequence) = self.lock().submit(Arrival { signed, hash, key: registered })?;
        self.flush().await?;
        Ok(Response::new(SubmitTxResponse { tx_hash: hash.to_vec(), sequence }))
    }

    async fn get_account(&self, req: Request<GetAccountRequest>) -> Result<Response<Account>, Status> {
        let id = req.into_inner().account;
        let core = self.lock();
        let s = core.state();
        let rec = s.account(id).ok_or_else(|| Status::not_found(format!("no account {id}")))?;
        let balances = (0..1024u16)
            .filter_map(|t| {
                let amount = s.balance(id, t);
                (amount > 0).then_some(Balance { token: t.into(), amount })
            })
            .collect();
        Ok(Response::new(Account {
            account: id,
            nonce: rec.nonce,
            pubkey_hash: digest_to_bytes(&rec.pubkey_hash).to_vec(),
            balances,
        }))
    }

    async fn get_pool(&self, req: Request<GetPoolRequest>) -> Result<Response<Pool>, Status> {
        let id = req.into_inner().pool;
        let core = self.lock();
        let p = core.state().pool(id).ok_or_else(|| Status::not_found(format!("no pool {id}")))?;
        Ok(Response::new(Pool {
            pool: id,
            token_a: p.token_a.into(),
            token_b: p.token_b.into(),
            reserve_a: p.reserve_a,
            reserve_b: p.reserve_b,
            fee_bps: p.fee_bps.into(),
        }))
    }

    async fn get_tx_status(&self, req: Request<GetTxStatusRequest>) -> Result<Response<TxStatus>, Status> {
        let hash = req.into_inner().tx_hash;
        let core = self.lock();
        core.tx_status(&hash)?.map(Response::new).ok_or_else(|| match core.index_from() {
            1 => Status::not_found("unknown transaction"),
            from => Status::not_found(format!(
                "unknown transaction: not accepted, or settled before block {from}, whose transactions' status is no longer kept"
            )),
        })
    }

    async fn get_status(&self, _: Request<Empty>) -> Result<Response<SequencerStatus>, Status> {
        Ok(Response::new(self.lock().status()))
    }
}

#[tonic::async_trait]
impl ProverFarm for Shared {
    async fn register_worker(
        &self,
        req: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let r = req.into_inner();
        if r.name.len() > 128 || !matches!(r.backend.as_str(), "cpu" | "cuda") {
            return Err(Status::invalid_argument("name of at most 128 bytes and backend cpu or cuda"));
        }
        let n = self.workers.fetch_add(1, Ordering::Relaxed);
        let worker_id = format!("{}-{n}", r.name);
        info!(worker = %worker_id, backend = %r.backend, "worker registered");
        self.backends.lock().unwrap_or_else(|p| p.into_inner()).insert(r.backend.clone());
        let core = self.lock();
        Ok(Response::new(RegisterWorkerResponse {
            worker_id,
            batch_capacity: core.capacity() as u32,
            block_verifier_digest: self.verifier_digest.clone(),
            lease_ms: core.lease_duration().as_millis() as u64,
        }))
    }

    async fn lease_job(&self, req: Request<LeaseJobRequest>) -> Result<Response<LeaseJobResponse>, Status> {
        let r = req.into_inner();
        let wait = Duration::from_millis(r.wait_ms.into()).min(MAX_LEASE_WAIT);
        let lease = self.lease(&r.worker_id, wait).await;
        // Encoded with the lock let go: a witness or a merge's proofs are hundreds of KB.
        Ok(Response::new(LeaseJobResponse {
            job: lease.map(|l| Job {
                job_id: l.id,
                kind: match l.key {
                    JobKey::Batch(_) => JobKind::Batch,
                    _ => JobKind::Aggregate,
                } as i32,
                payload: l.payload.encode(),
                deadline_unix_ms: unix_ms(l.deadline),
                attempt: l.attempt,
            }),
        }))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let deadline = self.lock().heartbeat(&r.worker_id, r.job_id, Instant::now())?;
        Ok(Response::new(HeartbeatResponse { deadline_unix_ms: unix_ms(deadline) }))
    }

    async fn submit_result(&self, req: Request<SubmitResultRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let shared = self.clone();
        // Verification is CPU work: off the runtime, and outside the lock, so that proofs verify
        // side by side while transactions keep arriving (a few ms each; at a farm's rate,
        // hundreds a second). The proof's write too is outside the lock.
        tokio::task::spawn_blocking(move || {
            let Some(check) = shared.lock().result_check(r.job_id)? else { return Ok(()) };
            let verdict = check.run(&r.proof);
            let checked = check.store(r.proof.into(), verdict)?;
            shared.lock().record_result(r.job_id, checked, Instant::now())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        self.flush().await?;
        Ok(Response::new(Empty {}))
    }

    async fn report_failure(&self, req: Request<ReportFailureRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let reason: String = r.reason.chars().take(1000).collect();
        let fault = if r.worker_fault { Fault::Worker } else { Fault::Job };
        self.lock().report_failure(&r.worker_id, r.job_id, reason, fault)?;
        self.flush().await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_jobs(&self, req: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let state = req.into_inner().state;
        let state = match state.as_str() {
            "" => None,
            s if JobState::NAMES.contains(&s) => Some(s),
            _ => return Err(Status::invalid_argument("state is one of pending, leased, done, failed, or empty")),
        };
        let jobs = self.lock().job_list(state).into_iter().map(job_info).collect();
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn retry_jobs(&self, req: Request<RetryJobsRequest>) -> Result<Response<RetryJobsResponse>, Status> {
        let ids = req.into_inner().job_ids;
        let jobs = {
            let mut core = self.lock();
            let keys = core.retry(&ids)?;
            keys.iter().filter_map(|k| core.job(k.id())).map(job_info).collect()
        };
        self.flush().await?;
        Ok(Response::new(RetryJobsResponse { jobs }))
    }
}

/// A job as the operator's calls show it.
pub(super) fn job_info(j: &super::core::Job) -> JobInfo {
    let mut info = JobInfo {
        job_id: j.key.id(),
        state: j.state.name().into(),
        failures: j.failures,
        lapses: j.lapses,
        ..JobInfo::default()
    };
    match j.key {
        JobKey::Batch(b) => {
            info.set_kind(JobKind::Batch);
            info.batch = b;
        }
        JobKey::Merge { height, node } => {
            info.set_kind(JobKind::Aggregate);
            (info.height, info.node) = (height, node as u32);
        }
    }
    match &j.state {
        JobState::Leased { worker, deadline } => {
            info.worker.clone_from(worker);
            info.deadline_unix_ms = unix_ms(*deadline);
        }
        JobState::Failed { reason } => info.reason.clone_from(reason),
        JobState::Pending => info.pending_ms = j.pending_since.elapsed().as_millis() as u64,
        JobState::Done => {}
    }
    info
}
