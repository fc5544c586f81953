//! The sequencer with the prover-farm coordinator (`rollup sequencer`).

pub mod core;
pub mod flusher;
mod log_writer;
pub mod metrics;
pub mod service;
mod settled_index;
pub mod sigcheck;
mod snapshot;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregator::VerifierKeys;
use anyhow::{Context, Result};
use proto::v1::prover_farm_server::ProverFarmServer;
use proto::v1::sequencer_server::SequencerServer;
use proto::v1::settlement_client::SettlementClient;
use proto::v1::SubmitBlockRequest;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Server};
use tonic::Status;
use tracing::{info, warn};

use self::core::{Core, Params, Settling};
use self::service::Shared;
use crate::auth::{AddToken, RequireToken};

/// Largest request a client may send (a signed transaction is under 300 bytes).
pub const CLIENT_MESSAGE_LIMIT: usize = 64 << 10;
/// Largest request a worker may send (a proof is about 150 KB).
pub const WORKER_MESSAGE_LIMIT: usize = 8 << 20;

/// How to run a sequencer.
pub struct SequencerConfig {
    /// Address to serve on.
    pub listen: String,
    /// The settlement node's URL.
    pub settlement: String,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Bearer token for workers and for settlement.
    pub token: String,
    /// Tunables.
    pub params: Params,
    /// Address of the Prometheus endpoint, if any.
    pub metrics: Option<String>,
    /// Genesis accounts.
    pub genesis_accounts: u32,
    /// Blocks out at the settlement node at once, at most ([`SETTLE_IN_FLIGHT`] by default).
    pub settle_in_flight: usize,
}

/// The default of [`SequencerConfig::settle_in_flight`]: a round trip to the settlement node of
/// about 100 ms then costs about 16 ms a block of 664 here, where one block out at a time took
/// 103 (BENCHMARKS.md); within what a node takes ahead of its head
/// ([`crate::settlement::MAX_AHEAD`]).
pub const SETTLE_IN_FLIGHT: usize = 8;

/// A started sequencer.
pub struct Running {
    /// Where it serves.
    pub addr: SocketAddr,
    /// Where its metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// Its state.
    pub shared: Shared,
    /// Its tasks; the first to end (error or shutdown) ends the service.
    pub tasks: JoinSet<Result<()>>,
}

/// Opens the database, replays it and starts serving, ticking and submitting blocks.
pub async fn start(cfg: SequencerConfig, keys: Arc<VerifierKeys>, shutdown: watch::Receiver<bool>) -> Result<Running> {
    let dir = cfg.data_dir.join("sequencer");
    let (db, _) = tokio::task::spawn_blocking(move || crate::compact::open(&dir))
        .await?
        .context("opening the sequencer database")?;
    let genesis = crate::network::genesis(cfg.genesis_accounts);
    let digest = keys.digest_hex();
    let core = {
        let params = cfg.params.clone();
        tokio::task::spawn_blocking(move || Core::open(params, db, &genesis, keys)).await??
    };
    let shared = Shared::new(core, digest);
    let (listener, addr) = crate::server::bind(&cfg.listen).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SequencerServer<Shared>>().await;
    health.set_serving::<ProverFarmServer<Shared>>().await;
    let farm = InterceptedService::new(
        ProverFarmServer::new(shared.clone()).max_decoding_message_size(WORKER_MESSAGE_LIMIT),
        RequireToken(cfg.token.clone()),
    );
    let router = Server::builder()
        .add_service(health_service)
        .add_service(crate::server::reflection()?)
        .add_service(SequencerServer::new(shared.clone()).max_decoding_message_size(CLIENT_MESSAGE_LIMIT))
        .add_service(farm);
    let mut tasks = JoinSet::new();
    let mut sd = shutdown.clone();
    tasks.spawn(crate::server::serve(router, listener, async move {
        let _ = sd.wait_for(|s| *s).await;
    }));
    tasks.spawn(ticker(shared.clone(), shutdown.clone()));
    let in_flight = cfg.settle_in_flight.clamp(1, crate::settlement::MAX_AHEAD as usize);
    tasks.spawn(submitter(shared.clone(), cfg.settlement.clone(), cfg.token.clone(), in_flight, shutdown.clone()));
    let metrics_addr = match &cfg.metrics {
        Some(a) => {
            let (l, addr) = crate::server::bind(a).await?;
            let page = shared.clone();
            tasks.spawn(crate::server::serve_metrics(l, move || metrics::render(&page), shutdown.clone()));
            Some(addr)
        }
        None => None,
    };
    info!(%addr, "sequencer serving");
    Ok(Running { addr, metrics_addr, shared, tasks })
}

async fn ticker(shared: Shared, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        shared.lock().tick(Instant::now())?;
        shared.flush().await.map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
    }
}

/// A settled block's write, out on a blocking thread.
type Writing = tokio::task::JoinHandle<(Settling, Result<()>)>;

/// A block's submission to the settlement node, out on its own task.
type Submission = tokio::task::JoinHandle<Result<tonic::Response<proto::v1::SubmitBlockResponse>, Status>>;

/// Takes back the write of the last block settlement acknowledged, if one is out: the block is
/// history once its write is (the sequencer's state, then flushed).
async fn take_back(shared: &Shared, writing: Option<Writing>) -> Result<()> {
    let Some(writing) = writing else { return Ok(()) };
    let (s, written) = writing.await?;
    let released = shared.lock().settled(s, written)?;
    // Freed with the lock let go: the block's transactions, witnesses, proofs.
    drop(released);
    shared.flush().await.map_err(|e| anyhow::anyhow!(e.message().to_string()))
}

/// Submits each block, in order, once its proof is ready, up to `in_flight` of them out at once;
/// retries with backoff.
///
/// Blocks go out as they are proven, each after the one before it, and are taken back in order:
/// the settlement node checks a block when it comes and holds it until the blocks before it
/// settle, so the round trips and checks of blocks in flight overlap, where with one block out
/// settlement took at most one block per round trip (docs/services.md, "Several blocks in
/// flight"). A submission that fails stops the ones after it, and all are sent again from the
/// first not acknowledged, after a backoff; the node acknowledges one it settled already.
///
/// Once settlement acknowledges a block, its settling is written without the lock while the
/// blocks after it are out: the write (about 6 ms a block of 664 on the 2-vCPU dev machine) and
/// the settlement node's checks overlap, where one after the other they added up. One write is
/// out at a time, taken back as soon as it lands (the block reads as settled from then on) and
/// in any case before the next block's is gathered. A crash between the two finds the first
/// block unsettled here and settled there: it is sent again and acknowledged as already settled,
/// and settled here then.
async fn submitter(
    shared: Shared,
    url: String,
    token: String,
    in_flight: usize,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let channel = Endpoint::from_shared(url.clone()).context("settlement URL")?.connect_lazy();
    let client = SettlementClient::with_interceptor(channel, AddToken(Some(token)))
        .max_decoding_message_size(crate::settlement::BLOCK_MESSAGE_LIMIT)
        .max_encoding_message_size(crate::settlement::BLOCK_MESSAGE_LIMIT);
    let mut backoff = Duration::from_millis(100);
    let mut writing: Option<Writing> = None;
    // The blocks out, oldest first: each one's height, size and submission.
    let mut out: VecDeque<(u64, u64, Submission)> = VecDeque::new();
    loop {
        while out.len() < in_flight {
            let block = {
                let core = shared.lock();
                core.ready_block_at(out.back().map_or(core.next_to_settle(), |(h, _, _)| h + 1))
            };
            let Some(block) = block else { break };
            let height = block.height;
            let txs = block.txs.len() as u64;
            let mut client = client.clone();
            // Encoded, and its signatures summed, with the lock let go.
            out.push_back((
                height,
                txs,
                tokio::spawn(async move {
                    client.submit_block(SubmitBlockRequest { block: Some(block.into_proto()) }).await
                }),
            ));
        }
        let Some((height, txs, submission)) = out.pop_front() else {
            if writing.is_some() {
                take_back(&shared, writing.take()).await?;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
        };
        // The previous block's write, taken back as soon as it lands, while this one is out.
        let (submitted, taken) = tokio::join!(submission, take_back(&shared, writing.take()));
        taken?;
        match submitted.unwrap_or_else(|e| Err(Status::internal(format!("the submission's task: {e}")))) {
            Ok(r) => {
                info!(height, txs, resubmitted = r.get_ref().already_settled, "block settled");
                // The settling write runs without the lock: arrivals and provers go on meanwhile.
                if let Some(mut s) = shared.lock().settling(height)? {
                    writing = Some(tokio::task::spawn_blocking(move || {
                        let written = s.write();
                        (s, written)
                    }));
                }
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                warn!(height, code = ?e.code(), message = e.message(), "block submission failed; retrying");
                for (_, _, later) in out.drain(..) {
                    later.abort();
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
