//! The settlement node: accepts a block only if it extends the head, its proof verifies against
//! the pinned key with the public inputs it recomputes, and its aggregate signature verifies
//! against the senders' registered keys. Blocks, head and keys live in sled; a block is
//! acknowledged only after its writes are flushed.
//!
//! A block up to [`MAX_AHEAD`] heights ahead of the head is checked when it comes (its proof
//! against its own roots, its signatures), then waits for the blocks before it to settle, so a
//! sequencer can have several blocks out at once and the checks of each overlap the round
//! trips and checks of the others (docs/services.md, "Several blocks in flight").

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aggregator::{BlockPublicInputs, VerifierKeys};
use anyhow::{Context, Result};
use circuits::bls::pairing::SERVICE_KEY_CACHE;
use circuits::bls::{aggregate_verify, register_key, tx_message, KeyCache, PublicKey, Signature, SignedTx};
use circuits::hash::{digest_to_bytes, ZERO_DIGEST};
use circuits::tx::commitment;
use circuits::{Digest, Genesis, Tx, F};
use plonky2::field::types::Field;
use prost::Message;
use proto::v1::settlement_server::Settlement;
use proto::v1::{
    Block, Empty, GetBlockRequest, GetKeyRequest, Head, KeyResponse, SubmitBlockRequest, SubmitBlockResponse,
};
use rayon::prelude::*;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::auth;
use crate::status;

/// Most transactions one block may carry.
pub const MAX_BLOCK_TXS: usize = 1 << 16;

/// How far ahead of the head a block is taken: checked, then held until the blocks before it
/// settle. Also the most blocks checked or held ahead at once.
pub const MAX_AHEAD: u64 = 16;

/// How long a block taken ahead waits for the blocks before it to settle, by default.
pub const AHEAD_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct HeadState {
    height: u64,
    root: Digest,
    settled_txs: u64,
}

/// The settlement node's state and gRPC service.
pub struct SettlementNode {
    db: sled::Db,
    verifier: Arc<VerifierKeys>,
    token: String,
    head: Mutex<HeadState>,
    /// Notified whenever the head moves.
    advanced: Condvar,
    /// Blocks being checked or held ahead of the head, at most [`MAX_AHEAD`].
    ahead: Mutex<u64>,
    /// How long a block taken ahead waits for the blocks before it.
    ahead_wait: Duration,
    /// The busiest signers' keys, prepared for the pairing.
    keys: KeyCache,
    /// What the metrics page counts.
    counters: Counters,
}

/// Blocks by outcome and the checks' time, since this process started (the metrics page).
#[derive(Default)]
struct Counters {
    /// Settled.
    settled: AtomicU64,
    /// Acknowledged again: the block settled at its height already (a resubmission).
    again: AtomicU64,
    /// Refused as invalid (INVALID_ARGUMENT: its form, its proof or its signatures).
    invalid: AtomicU64,
    /// Refused for anything else: not extending the head, too far ahead, another block settled
    /// at its height, a storage failure.
    refused: AtomicU64,
    /// Checks of a block's proof and signatures, and their time in nanoseconds.
    checks: AtomicU64,
    check_nanos: AtomicU64,
}

/// What a block's checks found, for its write once it extends the head.
struct Checked {
    old_root: Digest,
    new_root: Digest,
    /// Its transactions, decoded.
    txs: Vec<SignedTx>,
    /// The keys it registers, once its signatures are checked (`None`: a sender's key was not
    /// here yet, [`SettlementNode::check_signatures`]).
    new_keys: Option<HashMap<u32, PublicKey>>,
}

/// A block's place among those taken ahead of the head; given back when dropped.
struct AheadSlot<'a>(&'a Mutex<u64>);

impl Drop for AheadSlot<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    }
}

fn key_block(h: u64) -> Vec<u8> {
    [b"b".as_slice(), &h.to_be_bytes()].concat()
}

fn key_pk(a: u32) -> Vec<u8> {
    [b"k".as_slice(), &a.to_be_bytes()].concat()
}

/// A digest from 32 bytes (canonical elements, little-endian), as the services carry roots.
pub fn digest_from_bytes(b: &[u8]) -> Option<Digest> {
    if b.len() != 32 {
        return None;
    }
    let mut elements = [F::ZERO; 4];
    for (i, e) in elements.iter_mut().enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[8 * i..8 * i + 8]);
        let v = u64::from_le_bytes(a);
        if v >= 0xffff_ffff_0000_0001 {
            return None;
        }
        *e = F::from_canonical_u64(v);
    }
    Some(Digest { elements })
}

impl SettlementNode {
    /// Opens (or creates) the node's database; a new one starts at the genesis.
    pub fn open(
        data_dir: &std::path::Path,
        genesis: &Genesis,
        verifier: Arc<VerifierKeys>,
        token: String,
    ) -> Result<Self> {
        // Made with sled segments of 4 MiB: with the default 512 KiB, this database's file was four
        // times its blocks (docs/services.md).
        let (db, _) =
            crate::compact::open_history(&data_dir.join("settlement")).context("opening the settlement database")?;
        let genesis_root = genesis.build().context("genesis")?.root();
        let stored_head = db.get(b"head")?;
        crate::network::check_database(&verifier, &db, stored_head.is_none())?;
        let head = match stored_head {
            Some(v) => {
                let field = |r: std::ops::Range<usize>| v.get(r).context("corrupt head");
                let height = u64::from_be_bytes(field(0..8)?.try_into().context("corrupt head")?);
                let settled_txs = u64::from_be_bytes(field(8..16)?.try_into().context("corrupt head")?);
                let root = digest_from_bytes(field(16..48)?).context("corrupt head root")?;
                HeadState { height, root, settled_txs }
            }
            None => {
                let mut batch = sled::Batch::default();
                for a in &genesis.accounts {
                    batch.insert(key_pk(a.id), a.pubkey.to_vec());
                }
                let h = HeadState { height: 0, root: genesis_root, settled_txs: 0 };
                batch.insert(b"head".as_slice(), encode_head(&h));
                db.apply_batch(batch)?;
                db.flush()?;
                h
            }
        };
        info!(height = head.height, "settlement head");
        Ok(Self {
            db,
            verifier,
            token,
            head: Mutex::new(head),
            advanced: Condvar::new(),
            ahead: Mutex::new(0),
            ahead_wait: AHEAD_WAIT,
            keys: KeyCache::new(SERVICE_KEY_CACHE),
            counters: Counters::default(),
        })
    }

    /// Account `account`'s registered key, if any. Stored once its registration was checked
    /// (the genesis's, or `register_key`'s proof of possession and subgroup check), so it is
    /// read without the subgroup check: that cost about 90 µs a key, for a block's transactions
    /// one after another (BENCHMARKS.md).
    fn key(&self, account: u32) -> Result<Option<PublicKey>, Status> {
        let Some(v) = self.db.get(key_pk(account)).map_err(status::storage)? else { return Ok(None) };
        PublicKey::from_stored_bytes(&v)
            .map(Some)
            .map_err(|e| Status::internal(format!("stored key of {account}: {e}")))
    }

    /// Checks a block on its own: its form, its proof against the roots it names and the
    /// commitment to its transactions, and its aggregate signature. A sender whose key this node
    /// does not have yet may be registered by a block before it that has not settled: with
    /// `parent_settled` false the signatures are left for later (`new_keys` is `None`), with it
    /// true it is an error.
    fn check(&self, block: &Block, parent_settled: bool) -> Result<Checked, Status> {
        let old_root =
            digest_from_bytes(&block.old_root).ok_or_else(|| Status::invalid_argument("malformed old_root"))?;
        let new_root =
            digest_from_bytes(&block.new_root).ok_or_else(|| Status::invalid_argument("malformed new_root"))?;
        if block.txs.is_empty() || block.txs.len() > MAX_BLOCK_TXS {
            return Err(Status::invalid_argument(format!("a block carries 1 to {MAX_BLOCK_TXS} transactions")));
        }
        let txs: Vec<SignedTx> = block
            .txs
            .iter()
            .enumerate()
            .map(|(i, b)| SignedTx::decode(b).map_err(|e| Status::invalid_argument(format!("transaction {i}: {e}"))))
            .collect::<Result<_, _>>()?;
        // The proof, and the signatures, side by side: the proof's verification and the
        // commitment's hash chain are sequential, a few ms a block, and would otherwise come
        // before the signatures, which spread over the cores. Both must pass; the proof's
        // failure is reported first, as it was when they ran in turn.
        let (proved, signed) = rayon::join(
            || {
                // Public inputs recomputed from the posted transactions.
                let c = commitment(ZERO_DIGEST, txs.iter().map(|s| &s.tx));
                self.verifier
                    .block()
                    .verify(&block.proof, &BlockPublicInputs { old_root, new_root, commitment: c })
                    .map_err(|e| status::proof_error(&e))
            },
            || self.check_signatures(block, &txs, parent_settled),
        );
        proved?;
        Ok(Checked { old_root, new_root, new_keys: signed?, txs })
    }

    /// Takes `block`: settles it if it extends the head and passes its checks, acknowledges it
    /// again if it is settled already. One ahead of the head is checked first, then waits for
    /// the blocks before it ([`MAX_AHEAD`]).
    fn submit(&self, block: &Block) -> Result<SubmitBlockResponse, Status> {
        let head = self.head();
        if block.height >= 1 && block.height <= head.height {
            return self.settled_before(block);
        }
        if block.height > head.height + MAX_AHEAD {
            return Err(Status::failed_precondition(format!(
                "block {} is more than {MAX_AHEAD} blocks ahead of the head at height {}",
                block.height, head.height
            )));
        }
        if block.height == 0 {
            return Err(Status::invalid_argument("block heights start at 1"));
        }
        let old_root =
            digest_from_bytes(&block.old_root).ok_or_else(|| Status::invalid_argument("malformed old_root"))?;
        let parent_settled = block.height == head.height + 1;
        if parent_settled && old_root != head.root {
            return Err(Status::failed_precondition("the block's old root is not the head's root"));
        }
        let _slot = if parent_settled { None } else { Some(self.ahead_slot()?) };
        let t0 = Instant::now();
        let checked = self.check(block, parent_settled);
        self.counters.checks.fetch_add(1, Ordering::Relaxed);
        self.counters.check_nanos.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let checked = checked?;
        let mut head = self.wait_for_parent(block.height)?;
        if block.height <= head.height {
            drop(head);
            return self.settled_before(block);
        }
        let new_keys = match checked.new_keys {
            Some(keys) => keys,
            None => {
                // A sender's key was not here when it was checked: the blocks before it have
                // settled now, so check its signatures again (its proof passed), the head let go
                // meanwhile (only this height can move it).
                drop(head);
                let keys = self
                    .check_signatures(block, &checked.txs, true)?
                    .ok_or_else(|| Status::internal("keys unknown after the parent"))?;
                head = self.head.lock().unwrap_or_else(|p| p.into_inner());
                if block.height <= head.height {
                    drop(head);
                    return self.settled_before(block);
                }
                keys
            }
        };
        if block.height != head.height + 1 {
            return Err(Status::failed_precondition(format!(
                "block {} does not extend the head at height {}",
                block.height, head.height
            )));
        }
        if checked.old_root != head.root {
            return Err(Status::failed_precondition("the block's old root is not the head's root"));
        }
        let next = HeadState {
            height: block.height,
            root: checked.new_root,
            settled_txs: head.settled_txs + checked.txs.len() as u64,
        };
        let mut batch = sled::Batch::default();
        batch.insert(key_block(block.height), block.encode_to_vec());
        for (a, pk) in new_keys {
            batch.insert(key_pk(a), pk.to_bytes().to_vec());
        }
        batch.insert(b"head".as_slice(), encode_head(&next));
        self.db.apply_batch(batch).map_err(status::storage)?;
        self.db.flush().map_err(status::storage)?;
        *head = next;
        self.advanced.notify_all();
        info!(height = next.height, txs = block.txs.len(), "block settled");
        Ok(SubmitBlockResponse { height: next.height, already_settled: false })
    }

    /// The answer to a block at a settled height: acknowledged if it is the block settled
    /// there, refused if it is another.
    fn settled_before(&self, block: &Block) -> Result<SubmitBlockResponse, Status> {
        let stored = self.db.get(key_block(block.height)).map_err(status::storage)?;
        if stored.as_deref() == Some(&block.encode_to_vec()[..]) {
            return Ok(SubmitBlockResponse { height: block.height, already_settled: true });
        }
        Err(Status::failed_precondition(format!("height {} is settled with a different block", block.height)))
    }

    /// A place among the blocks taken ahead of the head, if one is free.
    fn ahead_slot(&self) -> Result<AheadSlot<'_>, Status> {
        let mut n = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        if *n >= MAX_AHEAD {
            return Err(Status::resource_exhausted(format!(
                "{MAX_AHEAD} blocks are already taken ahead of the head; send again once they settle"
            )));
        }
        *n += 1;
        Ok(AheadSlot(&self.ahead))
    }

    /// The head, once it is at least block `height`'s parent; an error if the blocks before
    /// it do not settle within the node's wait.
    fn wait_for_parent(&self, height: u64) -> Result<MutexGuard<'_, HeadState>, Status> {
        let deadline = Instant::now() + self.ahead_wait;
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        while head.height + 1 < height {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::failed_precondition(format!(
                    "block {height} does not extend the head at height {}: the blocks before it did not settle within {:?}",
                    head.height, self.ahead_wait
                )));
            }
            head = self.advanced.wait_timeout(head, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(head)
    }

    /// Checks the block's aggregate signature over its transactions' messages under their
    /// senders' keys: registered ones, and those registered earlier in this block (whose proofs
    /// of possession are checked here, on every core). Returns the keys the block registers. An
    /// error names the first transaction, in order, that has one. A sender whose key is not
    /// here is an error once the block's parent has settled (`parent_settled`), and before
    /// that leaves the check for later (`None`): a block not settled yet may register it.
    fn check_signatures(
        &self,
        block: &Block,
        txs: &[SignedTx],
        parent_settled: bool,
    ) -> Result<Option<HashMap<u32, PublicKey>>, Status> {
        let tx_error = |i: usize, e: String| Status::invalid_argument(format!("transaction {i}: {e}"));
        let messages: Vec<[u8; 32]> = txs.par_iter().map(|s| tx_message(&s.tx)).collect();
        let registered: HashMap<usize, Result<PublicKey, String>> = txs
            .par_iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.tx {
                Tx::Register(r) => Some((i, register_key(r).map_err(|e| e.to_string()))),
                _ => None,
            })
            .collect();
        let mut new_keys: HashMap<u32, PublicKey> = HashMap::new();
        let mut signers = Vec::with_capacity(txs.len());
        for (i, s) in txs.iter().enumerate() {
            let pk = match &s.tx {
                Tx::Register(r) => {
                    let pk = registered[&i].clone().map_err(|e| tx_error(i, e))?;
                    new_keys.insert(r.account, pk);
                    pk
                }
                tx => match new_keys.get(&tx.sender()) {
                    Some(pk) => *pk,
                    None => match self.key(tx.sender())? {
                        Some(pk) => pk,
                        None if parent_settled => {
                            return Err(tx_error(i, format!("account {} has no registered key", tx.sender())))
                        }
                        None => return Ok(None),
                    },
                },
            };
            signers.push(pk);
        }
        let agg = Signature::from_bytes(&block.aggregate_signature).map_err(|e| status::bls_error(&e))?;
        let pairs: Vec<(PublicKey, &[u8])> = signers.iter().zip(&messages).map(|(k, m)| (*k, &m[..])).collect();
        aggregate_verify(&pairs, &agg, &self.keys)
            .map_err(|_| Status::invalid_argument("aggregate signature does not verify"))?;
        Ok(Some(new_keys))
    }

    /// The same node, whose blocks taken ahead wait `wait` for the blocks before them.
    #[cfg(test)]
    fn with_ahead_wait(mut self, wait: Duration) -> Self {
        self.ahead_wait = wait;
        self
    }

    fn head(&self) -> HeadState {
        *self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`SettlementNode::submit`], its outcome counted for the metrics page.
    fn take(&self, block: &Block) -> Result<SubmitBlockResponse, Status> {
        let outcome = self.submit(block);
        let c = &self.counters;
        let counter = match &outcome {
            Ok(r) if r.already_settled => &c.again,
            Ok(_) => &c.settled,
            Err(e) if e.code() == tonic::Code::InvalidArgument => &c.invalid,
            Err(_) => &c.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// The metrics page (Prometheus text): the head, blocks by outcome, the checks' time, the
    /// blocks held ahead of the head.
    pub fn render_metrics(&self) -> String {
        let h = self.head();
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE rollup_settlement_height gauge\nrollup_settlement_height {}", h.height);
        let _ =
            writeln!(out, "# TYPE rollup_settlement_txs_total counter\nrollup_settlement_txs_total {}", h.settled_txs);
        // `invalid` is a sequencer sending blocks that do not check (a bug, or a tampered
        // block): the one to alert on. `refused` blocks are out of order or early, and are sent
        // again.
        let _ = writeln!(out, "# TYPE rollup_settlement_blocks_total counter");
        for (outcome, a) in
            [("settled", &c.settled), ("already_settled", &c.again), ("invalid", &c.invalid), ("refused", &c.refused)]
        {
            let _ = writeln!(out, "rollup_settlement_blocks_total{{outcome=\"{outcome}\"}} {}", n(a));
        }
        // A block's proof and signatures, checked side by side: the node's cost per block.
        let _ = writeln!(
            out,
            "# TYPE rollup_settlement_check_seconds summary\nrollup_settlement_check_seconds_sum {}\n\
             rollup_settlement_check_seconds_count {}",
            n(&c.check_nanos) as f64 / 1e9,
            n(&c.checks)
        );
        let ahead = *self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# TYPE rollup_settlement_blocks_ahead gauge\nrollup_settlement_blocks_ahead {ahead}");
        out
    }
}

fn encode_head(h: &HeadState) -> Vec<u8> {
    [&h.height.to_be_bytes()[..], &h.settled_txs.to_be_bytes(), &digest_to_bytes(&h.root)].concat()
}

/// The gRPC face of a settlement node.
#[derive(Clone)]
pub struct SettlementService(pub Arc<SettlementNode>);

impl std::ops::Deref for SettlementService {
    type Target = Arc<SettlementNode>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[tonic::async_trait]
impl Settlement for SettlementService {
    async fn submit_block(&self, req: Request<SubmitBlockRequest>) -> Result<Response<SubmitBlockResponse>, Status> {
        auth::check(req.metadata(), &self.token)?;
        let block = req.into_inner().block.ok_or_else(|| Status::invalid_argument("no block"))?;
        let node = self.0.clone();
        // Verification is CPU work, and a block ahead of the head waits: off the async runtime.
        tokio::task::spawn_blocking(move || {
            node.take(&block)
                .map(Response::new)
                .inspect_err(|e| warn!(height = block.height, "block rejected: {}", e.message()))
        })
        .await
        .map_err(|e| Status::internal(format!("verification task: {e}")))?
    }

    async fn get_head(&self, _: Request<Empty>) -> Result<Response<Head>, Status> {
        let h = self.head();
        Ok(Response::new(Head {
            height: h.height,
            state_root: digest_to_bytes(&h.root).to_vec(),
            settled_txs: h.settled_txs,
        }))
    }

    async fn get_block(&self, req: Request<GetBlockRequest>) -> Result<Response<Block>, Status> {
        let h = req.into_inner().height;
        let v = self
            .db
            .get(key_block(h))
            .map_err(status::storage)?
            .ok_or_else(|| Status::not_found(format!("no block {h}")))?;
        Block::decode(&v[..]).map(Response::new).map_err(|e| Status::internal(format!("stored block {h}: {e}")))
    }

    async fn get_key(&self, req: Request<GetKeyRequest>) -> Result<Response<KeyResponse>, Status> {
        let a = req.into_inner().account;
        let pk = self.key(a)?.ok_or_else(|| Status::not_found(format!("account {a} has no registered key")))?;
        Ok(Response::new(KeyResponse { account: a, public_key: pk.to_bytes().to_vec() }))
    }
}

/// Largest block request (transactions and a proof).
pub const BLOCK_MESSAGE_LIMIT: usize = 64 << 20;

/// A started settlement node.
pub struct Running {
    /// Where it serves.
    pub addr: std::net::SocketAddr,
    /// The server task.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Opens the database and starts serving, and serves the metrics page at `metrics` if given.
pub async fn start(
    listen: &str,
    metrics: Option<&str>,
    data_dir: &std::path::Path,
    genesis: &Genesis,
    keys: Arc<VerifierKeys>,
    token: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Running> {
    use proto::v1::settlement_server::SettlementServer;
    // Off the runtime's threads: the open builds the genesis state and, once, may rewrite a
    // database made with sled's default segments (seconds for a long history).
    let (dir, genesis) = (data_dir.to_path_buf(), genesis.clone());
    let node = Arc::new(tokio::task::spawn_blocking(move || SettlementNode::open(&dir, &genesis, keys, token)).await??);
    let (listener, addr) = crate::server::bind(listen).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SettlementServer<SettlementService>>().await;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(crate::server::reflection()?)
        .add_service(
            SettlementServer::new(SettlementService(node.clone())).max_decoding_message_size(BLOCK_MESSAGE_LIMIT),
        );
    if let Some(m) = metrics {
        let (l, at) = crate::server::bind(m).await?;
        let page = node.clone();
        tokio::spawn(crate::server::serve_metrics(l, move || page.render_metrics(), shutdown.clone()));
        info!(%at, "metrics");
    }
    let task = tokio::spawn(crate::server::serve(router, listener, async move {
        let _ = shutdown.wait_for(|s| *s).await;
    }));
    info!(%addr, "settlement serving");
    Ok(Running { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, wait: Duration) -> (SettlementNode, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rollup-settlement-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let genesis = crate::network::genesis(8);
        let node = SettlementNode::open(&dir, &genesis, crate::network::test_keys(), "t".into())
            .expect("open")
            .with_ahead_wait(wait);
        (node, dir)
    }

    /// A block ahead of the head waits for the blocks before it, and is refused if they do
    /// not settle within the node's wait; one further ahead than [`MAX_AHEAD`], at height 0, or
    /// beyond the blocks that may be taken ahead at once is refused at once. (Real blocks
    /// taken ahead and settled in order: the end-to-end test.)
    #[test]
    fn a_block_ahead_waits_for_its_parent_within_bounds() {
        let (node, dir) = node("ahead", Duration::from_millis(100));
        let block = |height: u64| Block {
            height,
            old_root: digest_to_bytes(&node.head().root).to_vec(),
            new_root: digest_to_bytes(&node.head().root).to_vec(),
            txs: vec![vec![0]],
            ..Block::default()
        };
        let e = node.submit(&block(MAX_AHEAD + 1)).expect_err("too far ahead");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("more than 16 blocks ahead"), "{e:?}");
        let e = node.submit(&block(0)).expect_err("height 0");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // Every place ahead taken: refused before any check.
        *node.ahead.lock().expect("lock") = MAX_AHEAD;
        let e = node.submit(&block(2)).expect_err("no place ahead");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        *node.ahead.lock().expect("lock") = 0;
        // Checked first (a malformed transaction here), and its place given back.
        let e = node.submit(&block(2)).expect_err("malformed");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(*node.ahead.lock().expect("lock"), 0);

        // The wait: refused when the head does not move, through when it reaches the parent.
        let t = Instant::now();
        let e = node.wait_for_parent(3).err().expect("the head does not move");
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("block 3 does not extend the head at height 0"), "{e:?}");
        assert_eq!(node.wait_for_parent(1).expect("the head is block 1's parent").height, 0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for height in 1..=2 {
                    std::thread::sleep(Duration::from_millis(20));
                    node.head.lock().expect("lock").height = height;
                    node.advanced.notify_all();
                }
            });
            let head = node.wait_for_parent(3).expect("blocks 1 and 2 settled meanwhile");
            assert_eq!(head.height, 2);
        });
        drop(node);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Real blocks 1 and 2 of a sequencer, proven on the CPU: block 1 registers account 9 and
    /// funds it, block 2 spends from it.
    fn two_real_blocks(dir: &std::path::Path) -> (Block, Block) {
        use circuits::genesis::devnet_key;
        use circuits::tx::{Register, Transfer};

        use crate::sequencer::core::{Arrival, Core, JobKey, Params};

        let params = Params {
            capacity: 4,
            batch_timeout: Duration::from_secs(3600),
            block_batches: 1,
            block_time: Duration::from_secs(3600),
            lease: Duration::from_secs(600),
            max_attempts: 2,
            mempool_limit: 100,
            tx_index_blocks: Params::TX_INDEX_BLOCKS,
            state_save_txs: Params::STATE_SAVE_TXS,
        };
        let circuits = crate::network::test_circuits();
        let db = sled::open(dir.join("q")).expect("db");
        let mut core = Core::open(params, db, &crate::network::genesis(8), circuits.keys().clone()).expect("open");
        let transfer = |from, to, amount, nonce| Tx::Transfer(Transfer { from, to, token: 0, amount, fee: 1, nonce });
        let nine = devnet_key(9);
        let register = Tx::Register(Register {
            account: 9,
            pubkey: nine.public_key().to_bytes(),
            pop: nine.proof_of_possession().to_bytes(),
        });
        let txs = [
            register,
            transfer(1, 9, 1_000, 0),
            transfer(2, 3, 5, 0),
            transfer(3, 4, 5, 0),
            transfer(9, 1, 10, 0),
            transfer(1, 2, 5, 1),
            transfer(2, 3, 5, 1),
            transfer(4, 5, 5, 0),
        ];
        for tx in txs {
            let signed = SignedTx { signature: devnet_key(tx.sender()).sign_tx(&tx), tx };
            let hash = tx_message(&signed.tx);
            core.submit(Arrival { signed, hash, key: None }).expect("accepted");
        }
        let prover = prover_gpu::Prover::cpu();
        loop {
            core.collect_hashed(true);
            let Some(lease) = core.lease("w", Instant::now()) else { break };
            let kind = match lease.key {
                JobKey::Batch(_) => proto::v1::JobKind::Batch,
                _ => proto::v1::JobKind::Aggregate,
            };
            let proof = crate::prover::prove(&prover, &circuits, kind, &lease.payload.encode()).expect("proven");
            let check = core.result_check(lease.id).expect("leased").expect("not done");
            let checked = check.store(proof.bytes.into(), Ok(())).expect("stored");
            core.record_result(lease.id, checked, Instant::now()).expect("recorded");
        }
        let block = |h| core.ready_block_at(h).expect("proven").into_proto();
        (block(1), block(2))
    }

    /// A block taken ahead whose sender is registered by the block before it, not settled yet:
    /// its signatures are checked once that block settles, and it settles after it.
    #[test]
    fn a_block_ahead_whose_sender_the_block_before_registers_settles_after_it() {
        let (node, dir) = node("ahead-key", AHEAD_WAIT);
        let (one, two) = two_real_blocks(&dir.join("sequencer"));
        assert_eq!(SignedTx::decode(&two.txs[0]).expect("tx").tx.sender(), 9);
        assert!(node.key(9).expect("read").is_none());
        std::thread::scope(|scope| {
            let early = scope.spawn(|| node.take(&two));
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(node.head().height, 0, "block 2 waits");
            assert!(node.render_metrics().contains("rollup_settlement_blocks_ahead 1\n"), "block 2 held ahead");
            let settled = node.take(&one).expect("block 1");
            assert_eq!((settled.height, settled.already_settled), (1, false));
            let settled = early.join().expect("thread").expect("block 2, once block 1 settled");
            assert_eq!((settled.height, settled.already_settled), (2, false));
        });
        assert_eq!(node.head().height, 2);
        assert_eq!(node.head().root, digest_from_bytes(&two.new_root).expect("root"));
        assert!(node.key(9).expect("read").is_some());

        // The metrics page: both settled; a resubmission acknowledged again; a block whose
        // proof does not check refused as invalid; a conflicting block at a settled height
        // refused otherwise.
        assert!(node.take(&two).expect("again").already_settled);
        let mut forged = two.clone();
        forged.height = 3;
        forged.old_root = two.new_root.clone();
        assert_eq!(node.take(&forged).expect_err("block 2's proof at height 3").code(), tonic::Code::InvalidArgument);
        let mut conflicting = one.clone();
        conflicting.txs.pop();
        assert_eq!(node.take(&conflicting).expect_err("another block 1").code(), tonic::Code::FailedPrecondition);
        let page = node.render_metrics();
        for line in [
            "rollup_settlement_height 2\n",
            "rollup_settlement_txs_total 8\n",
            "rollup_settlement_blocks_total{outcome=\"settled\"} 2\n",
            "rollup_settlement_blocks_total{outcome=\"already_settled\"} 1\n",
            "rollup_settlement_blocks_total{outcome=\"invalid\"} 1\n",
            "rollup_settlement_blocks_total{outcome=\"refused\"} 1\n",
            "rollup_settlement_check_seconds_count 3\n",
            "rollup_settlement_blocks_ahead 0\n",
        ] {
            assert!(page.contains(line), "{line:?} in {page}");
        }
        drop(node);
        std::fs::remove_dir_all(&dir).ok();
    }
}
