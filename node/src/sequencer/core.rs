//! The sequencer's state machine: accepted transactions in order, batches, blocks, and the prover
//! farm's jobs. Persistence is a log: accepted transactions, batch and block boundaries, proofs,
//! failures and the settled height go to sled, and a restart replays the log through the
//! executor, which is deterministic, to the same state (`docs/services.md`). What is settled is
//! history: its transactions, proofs and witnesses leave memory, and its proofs the database.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregator::{AggJob, BlockPlan, PlannedKind, ProofBytes, ProofKind, VerifierKeys};
use anyhow::{bail, ensure, Context, Result};
use circuits::bls::{aggregate, PublicKey, SignedTx};
use circuits::deferred::Update;
use circuits::hash::{digest_to_bytes, Digest};
use circuits::{BatchWitness, Executor, Genesis, Tx};
use rayon::prelude::*;
use tonic::Status;
use tracing::{debug, info, warn};

use super::log_writer::{self, seq_key as k, LogWriter, T_TX, T_TXS};
use super::settled_index::{Found, SettledIndex};
use super::snapshot::{self, Leaves, Snapshot, SNAPSHOT};
use crate::settlement::digest_from_bytes;
use crate::status;

/// Tunables of the sequencer and coordinator.
#[derive(Clone, Debug)]
pub struct Params {
    /// Slots per batch.
    pub capacity: usize,
    /// A non-empty batch is sealed this long after its first transaction if a worker is
    /// waiting for work ([`Core::tick`]).
    pub batch_timeout: Duration,
    /// Batches per block at most.
    pub block_batches: usize,
    /// A block closes this long after its first batch.
    pub block_time: Duration,
    /// Lease of a job; heartbeats extend it.
    pub lease: Duration,
    /// Failures after which a job is given up.
    pub max_attempts: u32,
    /// Accepted but not yet settled transactions at most (the mempool bound).
    pub mempool_limit: usize,
    /// The settled blocks whose transactions stay in the index of hashes (their status, and a
    /// copy told apart as already accepted), the last ones; 0 keeps every block's. The index is
    /// in memory, about 20 bytes a transaction, and is rebuilt at each open from the blocks'
    /// lists of hashes: it is what grows with history, so a sequencer that runs for long keeps
    /// a window of it.
    pub tx_index_blocks: u64,
    /// The settled state is saved at the end of the first block to settle this many
    /// transactions since the last save (0 or 1: with every block). A restart replays the
    /// settled transactions after the save; each save rewrites the leaves the blocks since the
    /// last one wrote, and sled's file keeps much of what a save overwrites (BENCHMARKS.md).
    pub state_save_txs: u64,
}

impl Params {
    /// The default window of [`Params::tx_index_blocks`]: at the default six batches of 183 a
    /// block, at most 11 million transactions, about 220 MB of heap and 350 MB of lists on disk
    /// (BENCHMARKS.md: 135 MB and 210 MB at four batches of 166 a block).
    pub const TX_INDEX_BLOCKS: u64 = 10_000;
    /// The default of [`Params::state_save_txs`]: about 9 blocks of six batches of 183.
    pub const STATE_SAVE_TXS: u64 = 10_000;
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKey {
    /// Prove batch `n`.
    Batch(u64),
    /// Merge node `node` of block `height`'s plan.
    Merge {
        /// The block.
        height: u64,
        /// The node in the block's plan.
        node: usize,
    },
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobKey::Batch(b) => write!(f, "batch {b}"),
            JobKey::Merge { height, node } => write!(f, "merge {node} of block {height}"),
        }
    }
}

impl JobKey {
    /// A stable id: the same job has the same id across restarts.
    pub fn id(self) -> u64 {
        match self {
            JobKey::Batch(b) => b,
            JobKey::Merge { height, node } => (1 << 63) | (height << 24) | node as u64,
        }
    }
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Pending,
    /// Leased to a worker until the deadline.
    Leased {
        /// The worker.
        worker: String,
        /// When the lease lapses.
        deadline: Instant,
    },
    /// Its proof is stored.
    Done,
    /// Given up after too many failures.
    Failed {
        /// The last failure.
        reason: String,
    },
}

impl JobState {
    /// Every state's [`JobState::name`].
    pub const NAMES: [&'static str; 4] = ["pending", "leased", "done", "failed"];

    /// Name for status and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Leased { .. } => "leased",
            JobState::Done => "done",
            JobState::Failed { .. } => "failed",
        }
    }
}

/// A job of the farm.
#[derive(Clone, Debug)]
pub struct Job {
    /// What it does.
    pub key: JobKey,
    /// Where it stands.
    pub state: JobState,
    /// Failures so far.
    pub failures: u32,
    /// Times its lease lapsed.
    pub lapses: u32,
    /// Creation order (jobs are leased oldest first).
    pub order: u64,
    /// When it was first leased (for proof latency).
    pub first_leased: Option<Instant>,
    /// When it last became pending (for the time jobs wait for a worker).
    pub pending_since: Instant,
}

/// A proof the core keeps: shared, so that a lease or a block takes it without a copy.
pub type Proof = Arc<[u8]>;

/// A block ready to submit, as the lock hands it out ([`Core::ready_block`]).
pub struct ReadyBlock {
    /// Its height.
    pub height: u64,
    old_root: Digest,
    new_root: Digest,
    /// Its transactions, in order.
    pub txs: Vec<SignedTx>,
    proof: Proof,
}

impl ReadyBlock {
    /// The message settlement takes: the transactions encoded, their signatures summed.
    pub fn into_proto(self) -> proto::v1::Block {
        let sigs: Vec<_> = self.txs.iter().map(|s| s.signature).collect();
        proto::v1::Block {
            height: self.height,
            old_root: digest_to_bytes(&self.old_root).to_vec(),
            new_root: digest_to_bytes(&self.new_root).to_vec(),
            txs: self.txs.iter().map(SignedTx::encode).collect(),
            aggregate_signature: aggregate(&sigs).to_bytes().to_vec(),
            proof: self.proof.to_vec(),
        }
    }
}

/// What settling a block let go of, handed back by [`Core::settled`] so that the caller frees
/// it after letting go of the lock: the block's transactions, witnesses, proofs and leaf writes
/// are thousands of allocations.
pub struct Released {
    _settling: Settling,
    _txs: Vec<Accepted>,
    _batches: Vec<ReleasedBatch>,
    _merges: HashMap<usize, Proof>,
}

/// A settled batch's witness, proof and leaf writes.
type ReleasedBatch = (Option<Arc<BatchWitness>>, Option<Proof>, Option<Vec<Update>>);

/// The lease requests held for a job (the service's long polls,
/// [`super::service::Shared::lease`]): told once for each job that becomes pending, and counted while
/// held, so that the open batch is sealed for them as for a worker that polls.
#[derive(Default)]
pub struct Waiters {
    ready: tokio::sync::Notify,
    held: AtomicUsize,
}

impl Waiters {
    /// Requests held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts a request as held until the guard drops (it answers, or its caller goes away).
    pub fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::Relaxed);
        Held(&self.held)
    }

    /// A wake-up for the next job made pending. Each job wakes one waiter
    /// ([`tokio::sync::Notify::notify_one`]: a waiter dropped once woken passes its wake-up on,
    /// and with none waiting the next one finds it at once). A waiter `enable`s it before it
    /// asks [`Core::lease`], so that a job made pending after its lease found nothing is not
    /// missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }
}

/// A lease request counted as held ([`Waiters::hold`]).
pub struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A leased job.
pub struct Lease {
    /// Stable id.
    pub id: u64,
    /// What it does.
    pub key: JobKey,
    /// Its inputs, encoded outside the lock ([`Payload::encode`]).
    pub payload: Payload,
    /// The lease deadline.
    pub deadline: Instant,
    /// Failures so far plus one.
    pub attempt: u32,
}

/// A leased job's inputs as the lock hands them out: shared with the core, not copied, so
/// that encoding them (a batch's witness is about 460 KB, a merge's children's proofs about
/// 600 KB) happens after the lock is let go.
pub enum Payload {
    /// A batch job's witness.
    Batch(Arc<BatchWitness>),
    /// A merge's children's proofs, in order.
    Merge(Vec<(ProofKind, Proof)>),
}

impl Payload {
    /// The bytes the wire carries: [`BatchWitness::to_bytes`] or [`AggJob::to_bytes`].
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Payload::Batch(w) => w.to_bytes(),
            Payload::Merge(children) => AggJob::merge_bytes(children.iter().map(|(kind, p)| (*kind, &p[..]))),
        }
    }
}

/// An accepted transaction that is not settled yet.
struct Accepted {
    signed: SignedTx,
    /// Its message hash: what [`Core::tx_status`] and the replay check look it up by.
    hash: [u8; 32],
}

/// A transaction whose signature checked, as the core takes it: with what the caller computed
/// for the check, before the lock (its message hash and, for a register, its key).
#[derive(Clone)]
pub struct Arrival {
    /// The transaction.
    pub signed: SignedTx,
    /// Its message hash ([`circuits::bls::tx_message`]).
    pub hash: [u8; 32],
    /// A register's key, decoded and checked; `None` for other kinds (or to decode it here).
    pub key: Option<PublicKey>,
}

struct BatchRec {
    start: u64,
    end: u64,
    witness: Option<Arc<BatchWitness>>,
    proof: Option<Proof>,
    block: Option<u64>,
    /// What the batch wrote to the state's leaves, until its block settles and they are saved
    /// ([`snapshot`]).
    leaves: Option<Vec<Update>>,
}

/// What a replay of a database without its settled state saved (from an earlier version)
/// gathers to save it: the settled batches' leaf writes, the accounts their transactions
/// registered, and the root they end at.
#[derive(Default)]
struct Unsaved {
    leaves: Leaves,
    registered: Vec<u32>,
    root: Digest,
}

/// What the blocks settled since the last save of the settled state wrote to it: the leaves
/// at their last values and the keys their registrations created, saved with the next save
/// ([`Params::state_save_txs`]).
#[derive(Default)]
struct ToSave {
    leaves: Leaves,
    keys: BTreeMap<u32, PublicKey>,
}

/// The settled state saved in the database: the block it is at, and where that block's
/// transactions end (the log keeps those after).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Saved {
    height: u64,
    txs: u64,
}

/// Records numbered from `base`, in order: the batches or blocks the core keeps. Those before
/// `base` settled and fell out of the index's window with their transactions
/// ([`Params::tx_index_blocks`]), so nothing asks about them any more.
struct Records<T> {
    base: usize,
    items: VecDeque<T>,
}

impl<T> Default for Records<T> {
    fn default() -> Self {
        Records { base: 0, items: VecDeque::new() }
    }
}

impl<T> Records<T> {
    /// The number the next record gets.
    fn end(&self) -> usize {
        self.base + self.items.len()
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i.checked_sub(self.base)?)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i.checked_sub(self.base)?)
    }

    fn push(&mut self, t: T) {
        self.items.push_back(t)
    }

    fn last(&self) -> Option<&T> {
        self.items.back()
    }

    /// Records `r` (all kept).
    fn range(&self, r: Range<usize>) -> impl Iterator<Item = &T> + '_ {
        self.items.range(r.start - self.base..r.end - self.base)
    }

    fn range_mut(&mut self, r: Range<usize>) -> impl Iterator<Item = &mut T> + '_ {
        self.items.range_mut(r.start - self.base..r.end - self.base)
    }

    /// The records from number `i` on, numbered.
    fn from(&self, i: usize) -> impl Iterator<Item = (usize, &T)> + '_ {
        (self.base..).zip(self.items.iter()).skip(i.saturating_sub(self.base))
    }

    /// The number of the first record for which `pred` is false, as `slice::partition_point`.
    fn partition_point(&self, pred: impl FnMut(&T) -> bool) -> usize {
        self.base + self.items.partition_point(pred)
    }

    /// Lets go of the records before number `i`.
    fn drop_before(&mut self, i: usize) {
        let n = i.saturating_sub(self.base).min(self.items.len());
        self.items.drain(..n);
        self.base += n;
    }
}

impl<T> std::ops::Index<usize> for Records<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        self.get(i).expect("a record kept")
    }
}

impl<T> std::ops::IndexMut<usize> for Records<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        self.get_mut(i).expect("a record kept")
    }
}

/// Ends read from the log (`T_BATCH`, `T_BLOCK`), by their keys' numbers (a batch's id, a block's
/// height) from `base`.
#[derive(Default)]
struct Ends {
    base: usize,
    ends: Vec<u64>,
}

impl Ends {
    fn get(&self, i: usize) -> Option<u64> {
        self.ends.get(i.checked_sub(self.base)?).copied()
    }
}

struct BlockRec {
    height: u64,
    first_batch: u64,
    plan: BlockPlan,
    merges: HashMap<usize, Proof>,
}

/// Counters for status and metrics.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Transactions proven in batch proofs.
    pub proven_txs: u64,
    /// Sum and count of proof latencies (lease to accepted result), seconds.
    pub proof_seconds: (f64, u64),
    /// Sum and count of the times jobs waited for a worker (pending to leased), seconds.
    pub queue_seconds: (f64, u64),
    /// When the first job was leased and the last proof accepted (this process).
    pub proving_window: Option<(Instant, Instant)>,
    /// Failures charged to their jobs (reported, or invalid proofs submitted), this process.
    pub job_failures: u64,
    /// Failures workers reported as their devices' ([`Fault::Worker`]), this process.
    pub worker_faults: u64,
    /// Given-up jobs an operator queued again ([`Core::retry`]), this process.
    pub retried_jobs: u64,
    /// Batches sealed full, and sealed by their timeout (not full), this process.
    pub sealed: (u64, u64),
}

/// Whom a reported failure is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The job: it counts toward the job's `max_attempts`.
    Job,
    /// The worker's device (a CUDA error, backends disagreeing): nothing in the job causes it, and
    /// a broken device would otherwise use up the attempts of every job it leases and halt the
    /// chain. The job goes back to the queue uncounted; the worker stops (docs/services.md).
    Worker,
}

/// The sequencer and coordinator state.
pub struct Core {
    params: Params,
    db: sled::Db,
    /// The log's appends (transactions, batch and block ends), queued under the lock and
    /// written behind it ([`LogWriter`]).
    log: LogWriter,
    keys: Arc<VerifierKeys>,
    ex: Executor,
    registry: HashMap<u32, PublicKey>,
    /// The transactions accepted and not settled, in order: the first is number `settled_txs`.
    txs: VecDeque<Accepted>,
    /// Their hashes; a settled transaction's is in `index`.
    by_hash: HashMap<[u8; 32], u64>,
    /// The settled transactions in the window, by hash ([`SettledIndex`]), checked against
    /// their blocks' lists (`T_HASHES`).
    index: SettledIndex,
    open_since: Option<Instant>,
    /// A worker asked for a job and found none, and no job or seal has come since: the open
    /// batch, once its timeout is up, is sealed for it ([`Core::tick`]).
    worker_waiting: bool,
    /// The lease requests held for a job: woken as jobs become pending, and counted.
    waiters: Arc<Waiters>,
    batches: Records<BatchRec>,
    /// Batches whose hashing is done: the rest hash behind the executor (their witnesses come
    /// back in order, [`Core::collect_hashed`]), and have no job yet.
    hashed_batches: usize,
    /// The state root after the last hashed batch.
    state_root: circuits::hash::Digest,
    block_start_batch: u64,
    block_since: Option<Instant>,
    blocks: Records<BlockRec>,
    jobs: BTreeMap<u64, Job>,
    /// The jobs waiting for a worker, as (order, id), oldest first: an entry is added whenever a
    /// job becomes pending, and one whose job is no longer pending is dropped when a lease
    /// comes to it.
    pending: BTreeSet<(u64, u64)>,
    /// Batches below this have had their jobs planned (those hashed; see `hashed_batches`).
    planned_batches: usize,
    job_order: u64,
    settled_height: u64,
    /// Transactions settled: those accepted before the first of `txs`.
    settled_txs: u64,
    /// The first settled block whose transactions are in the index.
    index_from: IndexFrom,
    /// The block whose settling is being written, with the lock released ([`Settling`]).
    settling: Option<u64>,
    /// Only while a database without its settled state saved is replayed, or one whose saved
    /// state is behind the settled height.
    unsaved: Option<Unsaved>,
    /// The settled state saved in the database.
    saved: Saved,
    /// What the blocks settled after `saved` wrote, for the next save: a settling takes it and
    /// gives it back ([`Core::settled`]).
    to_save: ToSave,
    /// Counters.
    pub counters: Counters,
    started: Instant,
}

impl Drop for Core {
    /// A core let go writes what its log still queues (not flushed: sled flushes as the last
    /// handle to the database goes). None of it was acknowledged, so a process killed before this
    /// loses nothing it promised; a clean shutdown keeps it anyway.
    fn drop(&mut self) {
        if let Err(e) = self.log.write() {
            warn!("writing the log's last records: {e:#}");
        }
    }
}

const T_BATCH: u8 = b'b';
const T_BLOCK: u8 = b'k';
const T_PROOF: u8 = b'p';
const T_MERGE: u8 = b'm';
const T_FAILED: u8 = b'f';
/// A settled transaction's sequence number under its hash: the index of versions before the
/// thirtieth session's, which kept it in sled. The open builds the lists (`T_HASHES`) from
/// it where a database has none, then removes it.
const T_INDEX: u8 = b'h';
const SETTLED: &[u8] = b"settled";
/// Of the same versions: the height up to which the settled transactions were in `T_INDEX`.
const INDEXED: &[u8] = b"indexed";
/// A settled block's transaction hashes, in order, under its height: what the index is built
/// from at the open and checked against, and what pruning a block from it reads
/// ([`Params::tx_index_blocks`]).
const T_HASHES: u8 = b'x';
/// The first settled height whose transactions are in the index (those before were pruned),
/// its first batch and its first transaction: three big-endian `u64`s.
const INDEX_FROM: &[u8] = b"index-from";
/// The settled block's state root, written with `SETTLED`: a restart whose saved state is an
/// earlier block's replays the settled transactions after it and must come to this root.
const SETTLED_ROOT: &[u8] = b"settled-root";

/// Adds to `w` the state that block `height` settled at, where `txs` transactions had settled:
/// the leaves written since the state saved before it, the keys of the accounts registered
/// since, and its root. (The log entries of the transactions it stands for are no longer
/// needed: the caller removes them.)
fn save_settled(
    w: &mut sled::Batch,
    height: u64,
    txs: u64,
    leaves: &Leaves,
    keys: &BTreeMap<u32, PublicKey>,
    root: Digest,
) {
    for u in leaves.values() {
        let (key, value) = snapshot::leaf_entry(u);
        w.insert(key, value);
    }
    for (id, pk) in keys {
        let (key, value) = snapshot::key_entry(*id, pk);
        w.insert(&key[..], value);
    }
    w.insert(SNAPSHOT, Snapshot { height, root, txs: Some(txs) }.to_bytes());
}

/// What pruning the index removes: the settled blocks from `from` to `to`, with `INDEX_FROM`
/// after them.
#[derive(Clone, Debug)]
struct Prune {
    from: IndexFrom,
    to: IndexFrom,
}

impl Prune {
    /// Written in one batch: the blocks are pruned once it lands, and not at all before.
    fn write(&self, db: &sled::Db) -> Result<()> {
        let mut w = sled::Batch::default();
        self.add(&mut w);
        Ok(db.apply_batch(w)?)
    }

    /// The blocks' transaction hashes, in order, from their lists in `db`: what leaves the
    /// index in memory once the pruning has landed.
    fn hashes(&self, db: &sled::Db) -> Result<Vec<[u8; 32]>> {
        let mut hashes = Vec::new();
        for old in self.from.height..self.to.height {
            hashes.extend(block_hashes(db, old)?.unwrap_or_default());
        }
        Ok(hashes)
    }

    /// Adds to `w` the removal of the blocks' lists of hashes and of their batch and block ends
    /// from the log, and the new `INDEX_FROM`.
    fn add(&self, w: &mut sled::Batch) {
        for b in self.from.batch..self.to.batch {
            w.remove(&k(T_BATCH, b));
        }
        for old in self.from.height..self.to.height {
            w.remove(&k(T_BLOCK, old));
            w.remove(&k(T_HASHES, old));
        }
        w.insert(INDEX_FROM, self.to.to_bytes());
    }
}

/// What settling a block writes, gathered under the sequencer's lock by [`Core::settling`] and
/// written without it ([`Settling::write`]): about 12 ms for a block of 664 transactions on the
/// 2-vCPU dev machine when it was written (about 6 ms since the state is saved every
/// [`Params::state_save_txs`] transactions), which would otherwise hold up every arrival.
pub struct Settling {
    db: sled::Db,
    log: LogWriter,
    height: u64,
    /// Its transactions' sequence numbers and hashes.
    txs: Range<u64>,
    hashes: Vec<[u8; 32]>,
    /// Its batches' leaf writes, in order, and the keys its registrations created.
    leaves: Vec<Vec<Update>>,
    keys: Vec<(u32, PublicKey)>,
    root: Digest,
    /// What the blocks settled since the last save wrote: the write adds this block's to it.
    to_save: ToSave,
    /// If this block's write saves the settled state: where the transactions settled since the
    /// last save begin. The save removes the log's records that hold only transactions before
    /// this block's end, a run the last save cut included, so only whether it saves is read.
    save_from: Option<u64>,
    proofs: Vec<Vec<u8>>,
    /// The blocks falling out of the index's window, if any.
    prune: Option<Prune>,
    /// Their hashes, read by the write before it prunes them.
    pruned: Vec<[u8; 32]>,
    index_from: IndexFrom,
}

impl Settling {
    /// Writes the block settled: first, in one write, the settled height, its root and the
    /// block's list of hashes, and, where it saves the settled state, that state (the leaf writes
    /// of the blocks settled since the last save merged, the keys their registrations created,
    /// the root); a restart finds the block settled with all of that, or not settled with none of
    /// it. Then, one record at a time, its proofs removed, with a save the log's records that
    /// hold only transactions it saved removed (its runs: [`log_writer`]), and the blocks
    /// falling out of the index's window pruned (one small batch): each of these is redone or
    /// finished by the open if a crash cuts it short. The index itself is in memory
    /// ([`SettledIndex`]): [`Core::settled`] adds the block's transactions and removes the pruned
    /// blocks'.
    ///
    /// Why not save the state with every block: each save rewrites a few thousand leaves spread
    /// over the state's keys, and sled 0.34's file keeps most of what they overwrite: with a
    /// save every block, about 780 bytes a settled transaction that only a rewrite of the file
    /// gives back (BENCHMARKS.md, [`Params::state_save_txs`]).
    ///
    /// Why not all in one write, as before: sled 0.34 applies a batch holding a lock that stops
    /// every other write and read of the process until it lands (its `concurrency_control`), the
    /// arrivals' log appends included, which wait under the sequencer's lock. The index's
    /// random keys (sled records then) and the log's removals were about 60% of the batch's
    /// 12–15 ms per block of 664 (BENCHMARKS.md); one at a time, they let the arrivals in
    /// between.
    ///
    /// First, the log's queued records: the block's must be in the database before their
    /// removal. They are already (each proof's store wrote the log before it, and the block's
    /// last proof came after its last record), so this only keeps that from resting on it.
    ///
    /// Merging this block's writes into what is to be saved may be done twice (a write that
    /// failed, then the same block settled again): the second merge changes nothing.
    pub fn write(&mut self) -> Result<()> {
        self.log.write()?;
        self.write_settled()?;
        self.write_rest()
    }

    fn write_settled(&mut self) -> Result<()> {
        for writes in &self.leaves {
            snapshot::merge(&mut self.to_save.leaves, writes);
        }
        self.to_save.keys.extend(self.keys.iter().copied());
        let mut w = sled::Batch::default();
        if self.save_from.is_some() {
            let ToSave { leaves, keys } = &self.to_save;
            save_settled(&mut w, self.height, self.txs.end, leaves, keys, self.root);
        }
        w.insert(SETTLED, &self.height.to_be_bytes());
        w.insert(SETTLED_ROOT, &digest_to_bytes(&self.root)[..]);
        w.insert(&k(T_HASHES, self.height), self.hashes.concat());
        // The record is written either way (its absence means a database from before the
        // lists); a pruning writes it when its removals are done.
        if self.prune.is_none() {
            w.insert(INDEX_FROM, self.index_from.to_bytes());
        }
        Ok(self.db.apply_batch(w)?)
    }

    fn write_rest(&mut self) -> Result<()> {
        if self.save_from.is_some() {
            for key in log_writer::keys_before(&self.db, self.txs.end)? {
                self.db.remove(key)?;
            }
        }
        for key in &self.proofs {
            self.db.remove(&key[..])?;
        }
        if let Some(prune) = &self.prune {
            self.pruned = prune.hashes(&self.db)?;
            prune.write(&self.db)?;
        }
        Ok(())
    }
}

/// The `INDEX_FROM` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexFrom {
    height: u64,
    batch: u64,
    tx: u64,
}

impl IndexFrom {
    /// Nothing pruned.
    const ALL: IndexFrom = IndexFrom { height: 1, batch: 0, tx: 0 };

    fn to_bytes(self) -> Vec<u8> {
        [self.height, self.batch, self.tx].iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    fn from_bytes(v: &[u8]) -> Result<Self> {
        if v.len() != 24 {
            bail!("corrupt record {:?}", String::from_utf8_lossy(INDEX_FROM));
        }
        Ok(IndexFrom { height: be(&v[..8])?, batch: be(&v[8..16])?, tx: be(&v[16..])? })
    }
}

/// Block `height`'s list of transaction hashes (`T_HASHES`), if kept.
fn block_hashes(db: &sled::Db, height: u64) -> Result<Option<Vec<[u8; 32]>>> {
    let Some(list) = db.get(k(T_HASHES, height))? else { return Ok(None) };
    if list.len() % 32 != 0 {
        bail!("corrupt record of block {height}'s hashes");
    }
    Ok(Some(list.chunks_exact(32).map(|hash| hash.try_into().expect("chunks of 32")).collect()))
}

fn index_key(hash: &[u8; 32]) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = T_INDEX;
    out[1..].copy_from_slice(hash);
    out
}

fn merge_key(height: u64, node: usize) -> Vec<u8> {
    [&k(T_MERGE, height)[..], &(node as u64).to_be_bytes()].concat()
}

/// Where job `key`'s proof is kept.
fn proof_key(key: JobKey) -> Vec<u8> {
    match key {
        JobKey::Batch(b) => k(T_PROOF, b).to_vec(),
        JobKey::Merge { height, node } => merge_key(height, node),
    }
}

fn be(v: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().context("corrupt record")?))
}

impl Core {
    /// Opens the database and replays it: the state after a restart is the state before. The
    /// replay starts from the settled state the database saved, and replays the log after it.
    pub fn open(params: Params, db: sled::Db, genesis: &Genesis, keys: Arc<VerifierKeys>) -> Result<Self> {
        ensure!(
            keys.capacity() == params.capacity,
            "the verifier keys are for batches of {} slots, and batches here have {}",
            keys.capacity(),
            params.capacity
        );
        let mut state = genesis.build()?;
        let mut registry = genesis
            .accounts
            .par_iter()
            .map(|a| Ok((a.id, PublicKey::from_bytes(&a.pubkey).context("genesis key")?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let settled = db.get(SETTLED)?.map(|v| be(&v)).transpose()?;
        let fresh =
            db.scan_prefix([T_TX]).next().is_none() && db.scan_prefix([T_TXS]).next().is_none() && settled.is_none();
        crate::network::check_database(&keys, &db, fresh)?;
        let settled = settled.unwrap_or(0);
        let saved = Snapshot::read(&db)?;
        if let Some(saved) = saved {
            // A save may be behind the settled height (the log keeps what settled after it),
            // never ahead of it; a record without its transactions is from a version that saved
            // with every block.
            if saved.height > settled || (saved.txs.is_none() && saved.height != settled) {
                bail!(
                    "the settled state saved is block {}'s, but block {settled} settled: the directory is corrupt",
                    saved.height
                );
            }
            snapshot::restore(&db, saved, &mut state, &mut registry)?;
        }
        let mut ex = Executor::new(state, params.capacity);
        ex.keep_leaf_writes();
        let mut core = Core {
            ex,
            params,
            log: LogWriter::new(db.clone()),
            db,
            keys,
            registry,
            txs: VecDeque::new(),
            by_hash: HashMap::new(),
            index: SettledIndex::default(),
            open_since: None,
            worker_waiting: false,
            waiters: Arc::default(),
            batches: Records::default(),
            hashed_batches: 0,
            state_root: Default::default(),
            block_start_batch: 0,
            block_since: None,
            blocks: Records::default(),
            jobs: BTreeMap::new(),
            pending: BTreeSet::new(),
            planned_batches: 0,
            job_order: 0,
            settled_height: settled,
            settled_txs: 0,
            index_from: IndexFrom::ALL,
            settling: None,
            unsaved: None,
            saved: Saved::default(),
            to_save: ToSave::default(),
            counters: Counters::default(),
            started: Instant::now(),
        };
        core.replay(saved)?;
        core.state_root = core.ex.state().root();
        Ok(core)
    }

    /// The log's ends under `prefix`, by their keys' numbers (a batch's id, a block's height),
    /// which must run on from `first`.
    fn ends(&self, prefix: u8, first: u64) -> Result<Ends> {
        let records = self.scan(prefix)?;
        if records.iter().zip(first..).any(|((n, _), expected)| *n != expected) {
            bail!("the log's ends under {:?} are not numbered on from {first}", prefix as char);
        }
        let ends = records.iter().map(|(_, v)| be(v)).collect::<Result<_>>()?;
        Ok(Ends { base: first as usize, ends })
    }

    fn scan(&self, prefix: u8) -> Result<Vec<(u64, sled::IVec)>> {
        self.db
            .scan_prefix([prefix])
            .map(|r| {
                let (key, v) = r?;
                Ok((be(&key[1..])?, v))
            })
            .collect()
    }

    /// The transactions accepted so far, settled or not.
    fn accepted(&self) -> u64 {
        self.settled_txs + self.txs.len() as u64
    }

    /// Replays the log up to the settled height read at the open, over the settled state if it
    /// was restored from the database (`saved`), else from genesis. Where the saved state is
    /// behind the settled height, the settled transactions after it are applied and hashed
    /// over it, must come to the settled block's root, and the state is saved at that block.
    fn replay(&mut self, saved: Option<Snapshot>) -> Result<()> {
        let restored = saved.is_some();
        // The blocks pruned from the index left the log's batch and block ends with it.
        if let Some(v) = self.db.get(INDEX_FROM)? {
            self.index_from = IndexFrom::from_bytes(&v)?;
        }
        let batch_ends = self.ends(T_BATCH, self.index_from.batch)?;
        let block_ends = self.ends(T_BLOCK, self.index_from.height)?;
        // Where the settled blocks' transactions end, and where those in the index end.
        let txs_before = |height: u64| -> Result<u64> {
            if height == 0 {
                return Ok(0);
            }
            let batches = block_ends.get(height as usize).context("a settled block is not in the log")?;
            batch_ends.get((batches as usize).wrapping_sub(1)).context("a settled block has no batches")
        };
        let settled_end = txs_before(self.settled_height)?;
        // A database from a version that kept the index in sled and no lists of hashes: its
        // lists are built from that index, which must first hold every settled transaction
        // (`INDEXED` says how far it does), and are what the index is built from after.
        let old_index = self.settled_height > 0 && !self.db.contains_key(INDEX_FROM)?;
        let indexed = self.db.get(INDEXED)?.map(|v| be(&v)).transpose()?.unwrap_or(0).min(self.settled_height);
        let indexed_end = txs_before(indexed)?;
        // What a database from a version that kept settled history needs: the settled
        // transactions' index where it has no lists (above), and their proofs gone.
        let mut history = sled::Batch::default();
        let mut rewrite = old_index && indexed < self.settled_height;
        let now = Instant::now();
        if let Some(saved) = saved {
            // The settled blocks are history: their bounds are all that is kept of them.
            self.restore_settled_blocks(&batch_ends, &block_ends)?;
            let saved_txs = saved.txs.unwrap_or(settled_end);
            let consistent = saved_txs <= settled_end
                && (saved.height < self.index_from.height || txs_before(saved.height)? == saved_txs);
            if !consistent {
                bail!(
                    "the settled state saved at block {} names {saved_txs} transactions, not the log's: the directory is corrupt",
                    saved.height
                );
            }
            self.settled_txs = saved_txs;
            self.saved = Saved { height: saved.height, txs: saved_txs };
            if saved.height < self.settled_height {
                self.unsaved = Some(Unsaved { root: saved.root, ..Unsaved::default() });
            }
            // What a settling cut short after its first write left undone ([`Settling::write`]):
            // its log entries removed.
            for key in log_writer::keys_before(&self.db, saved_txs)? {
                history.remove(key);
                rewrite = true;
            }
        } else if self.settled_height > 0 {
            self.unsaved = Some(Unsaved::default());
        }
        // The log after the settled state, read as it is replayed, not loaded whole.
        let db = self.db.clone();
        for r in log_writer::read_txs(&db, self.settled_txs) {
            let (seq, bytes) = r?;
            while batch_ends.get(self.batches.end()) == Some(seq) {
                self.seal_batch_inner(now, false, &block_ends)?;
            }
            let signed = SignedTx::decode(&bytes).context("corrupt transaction log")?;
            if seq != self.accepted() {
                bail!("transaction log has a gap at {seq}");
            }
            let failed = |e: Status| anyhow::anyhow!("replaying transaction {seq}: {}", e.message());
            if seq < settled_end {
                // Settled, and the state it settled at not saved: applied to rebuild the state,
                // and not kept.
                if old_index && seq >= indexed_end {
                    history.insert(&index_key(&circuits::bls::tx_message(&signed.tx))[..], &seq.to_be_bytes());
                }
                self.apply(&signed, None).map_err(failed)?;
                if let (Tx::Register(r), Some(unsaved)) = (&signed.tx, &mut self.unsaved) {
                    unsaved.registered.push(r.account);
                }
                self.settled_txs += 1;
                // Over a restored state the settled blocks' batches are not sealed again (their
                // bounds are restored): the transactions are hashed in batches as full as the
                // executor holds, which come to the same state, and the block's commitment
                // starts again after the last of them.
                if restored && (self.ex.open_len() == self.ex.capacity() || self.settled_txs == settled_end) {
                    let w = self.ex.seal_batch().map_err(|e| anyhow::anyhow!("replaying transaction {seq}: {e}"))?;
                    let leaves = self.ex.take_leaf_writes().context("the executor keeps no leaf writes")?;
                    let unsaved = self.unsaved.as_mut().context("settled transactions after the saved state")?;
                    snapshot::merge(&mut unsaved.leaves, &leaves);
                    unsaved.root = w.new_root;
                    if self.settled_txs == settled_end {
                        self.ex.restart_commitment();
                    }
                }
            } else {
                let hash = circuits::bls::tx_message(&signed.tx);
                self.execute(signed, hash, None, now).map_err(failed)?;
            }
        }
        while batch_ends.get(self.batches.end()) == Some(self.accepted()) {
            self.seal_batch_inner(now, false, &block_ends)?;
        }
        if self.settled_txs != settled_end {
            bail!("the transaction log ends at {} before the settled block {}", self.accepted(), self.settled_height);
        }
        if let Some(unsaved) = self.unsaved.take() {
            if let Some(root) = self.db.get(SETTLED_ROOT)? {
                if digest_from_bytes(&root) != Some(unsaved.root) {
                    bail!(
                        "the settled transactions replayed do not come to block {}'s root: the directory is corrupt",
                        self.settled_height
                    );
                }
            }
            // Saved now, with the settled transactions' log entries gone: the next restart
            // starts from here.
            let keys = self.keys_of(unsaved.registered.iter().copied()).into_iter().collect();
            save_settled(&mut history, self.settled_height, settled_end, &unsaved.leaves, &keys, unsaved.root);
            for key in log_writer::keys_before(&self.db, settled_end)? {
                history.remove(key);
            }
            self.saved = Saved { height: self.settled_height, txs: settled_end };
            rewrite = true;
        }
        // Proofs already made, of the blocks not settled (every settled transaction was proven).
        let (first_batch, _) = self.first_unsettled();
        self.counters.proven_txs = self.settled_txs;
        for (b, v) in self.scan(T_PROOF)? {
            if (b as usize) < first_batch {
                history.remove(&k(T_PROOF, b));
                rewrite = true;
            } else if let Some(r) = self.batches.get_mut(b as usize) {
                r.proof = Some(Proof::from(&v[..]));
                self.counters.proven_txs += r.end - r.start;
            }
        }
        for r in self.db.scan_prefix([T_MERGE]) {
            let (key, v) = r?;
            let height = be(&key[1..9])?;
            let node = be(&key[9..17])? as usize;
            if height <= self.settled_height {
                history.remove(key);
                rewrite = true;
            } else if let Some(b) = self.blocks.get_mut(height as usize - 1) {
                b.merges.insert(node, Proof::from(&v[..]));
            }
        }
        if rewrite {
            self.db.apply_batch(history)?;
        }
        if old_index {
            let ends = (1..=self.settled_height).map(txs_before).collect::<Result<Vec<_>>>()?;
            self.list_indexed_hashes(&ends)?;
        }
        self.drop_sled_index()?;
        // All that fell out of the window (it may be smaller than the last process's), where a
        // settlement prunes a few blocks at most; in writes of a bounded size.
        while let Some(prune) = self.prune(self.settled_height, 64) {
            prune.write(&self.db)?;
            self.pruned(prune.to);
        }
        self.build_index()?;
        let failed: HashMap<u64, String> =
            self.scan(T_FAILED)?.into_iter().map(|(id, v)| (id, String::from_utf8_lossy(&v).into_owned())).collect();
        for key in self.missing_jobs() {
            self.add_job(key);
        }
        self.planned_batches = self.hashed_batches;
        for (id, reason) in failed {
            self.set_not_pending(id, JobState::Failed { reason });
        }
        if self.accepted() > 0 {
            info!(
                txs = self.accepted(),
                batches = self.batches.end(),
                blocks = self.blocks.end(),
                settled = self.settled_height,
                "replayed"
            );
        }
        Ok(())
    }

    /// Lists each settled block's indexed hashes under its height (`T_HASHES`), from the index,
    /// where `ends[h - 1]` is where block `h`'s transactions end: what a database from a version
    /// that did not prune the index lacks, written once, in one batch with `INDEX_FROM`.
    fn list_indexed_hashes(&mut self, ends: &[u64]) -> Result<()> {
        let mut lists: Vec<Vec<(u64, [u8; 32])>> = vec![Vec::new(); ends.len()];
        for r in self.db.scan_prefix([T_INDEX]) {
            let (key, v) = r?;
            let seq = be(&v)?;
            let hash = <[u8; 32]>::try_from(&key[1..]).context("corrupt record")?;
            let list =
                lists.get_mut(ends.partition_point(|&e| e <= seq)).context("an indexed transaction not settled")?;
            list.push((seq, hash));
        }
        let mut w = sled::Batch::default();
        for (height, mut list) in (1..).zip(lists) {
            let start = if height == 1 { 0 } else { ends[height as usize - 2] };
            if list.len() as u64 != ends[height as usize - 1] - start {
                bail!("the index an earlier version kept lacks some of block {height}'s transactions");
            }
            list.sort_unstable();
            w.insert(&k(T_HASHES, height), list.iter().flat_map(|(_, h)| *h).collect::<Vec<u8>>());
        }
        w.insert(INDEX_FROM, IndexFrom::ALL.to_bytes());
        self.db.apply_batch(w)?;
        self.index_from = IndexFrom::ALL;
        Ok(())
    }

    /// Removes the index a version before this one kept in sled (`T_INDEX`, `INDEXED`), in
    /// writes of a bounded size: the lists of hashes stand for it now. Cut short, the next open
    /// goes on.
    fn drop_sled_index(&self) -> Result<()> {
        let mut removed = 0;
        loop {
            let mut w = sled::Batch::default();
            let mut n = 0;
            for key in self.db.scan_prefix([T_INDEX]).keys().take(16_384) {
                w.remove(key?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.db.apply_batch(w)?;
            removed += n;
        }
        if self.db.remove(INDEXED)?.is_some() || removed > 0 {
            info!(
                records = removed,
                "removed the index of settled transactions an earlier version kept in the database"
            );
        }
        Ok(())
    }

    /// The index in memory, from the lists of hashes of the settled blocks in the window.
    fn build_index(&mut self) -> Result<()> {
        for height in self.index_from.height..=self.settled_height {
            let list = block_hashes(&self.db, height)?.context("a settled block's list of hashes is missing")?;
            let start = |height: u64| self.first_tx(height).context("a block in the window is not in memory");
            let first = start(height)?;
            let end = if height == self.settled_height { self.settled_txs } else { start(height + 1)? };
            if end.checked_sub(first) != Some(list.len() as u64) {
                bail!("block {height}'s list of hashes does not match its transactions: the directory is corrupt");
            }
            for (seq, hash) in (first..).zip(&list) {
                self.index.insert(hash, seq);
            }
        }
        if self.index.len() > 0 {
            info!(
                txs = self.index.len(),
                mb = self.index.heap_bytes() as f64 / 1e6,
                "indexed the settled transactions in the window"
            );
        }
        Ok(())
    }

    /// The settled blocks that fall out of the index's window once block `height` is settled,
    /// `limit` at most, if any. None before the settled state's first save: a restart without
    /// one replays the log from genesis, batch by batch, and needs every settled block's ends,
    /// which pruning removes.
    fn prune(&self, height: u64, limit: u64) -> Option<Prune> {
        let window = self.params.tx_index_blocks;
        let from = self.index_from.height;
        let end = (height + 1).saturating_sub(window).min(from.saturating_add(limit));
        if window == 0 || end <= from || self.saved.height == 0 {
            return None;
        }
        // Block `end` is settled (the window holds one block at least), so it is in memory.
        let batch = self.blocks[end as usize - 1].first_batch;
        let to = IndexFrom { height: end, batch, tx: self.batches[batch as usize].start };
        Some(Prune { from: self.index_from, to })
    }

    /// The log's queue: what the caller writes and flushes before acknowledging what it
    /// submitted ([`LogWriter::write_and_flush`]).
    pub fn log(&self) -> LogWriter {
        self.log.clone()
    }

    /// The first settled height whose transactions' status is kept: those of earlier blocks
    /// were pruned from the index ([`Params::tx_index_blocks`]).
    pub fn index_from(&self) -> u64 {
        self.index_from.height
    }

    /// Records the bounds of the settled blocks still in the index, from the log's batch and
    /// block ends, without replaying them: the settled state they end at was restored from the
    /// database.
    fn restore_settled_blocks(&mut self, batch_ends: &Ends, block_ends: &Ends) -> Result<()> {
        let IndexFrom { height: from, batch: mut first, tx: mut start } = self.index_from;
        self.batches = Records { base: first as usize, items: VecDeque::new() };
        self.blocks = Records { base: from as usize - 1, items: VecDeque::new() };
        for height in from..=self.settled_height {
            let end = block_ends.get(height as usize).context("a settled block is not in the log")?;
            for b in first..end {
                let end = batch_ends.get(b as usize).context("a settled batch is not in the log")?;
                self.batches.push(BatchRec {
                    start,
                    end,
                    witness: None,
                    proof: None,
                    block: Some(height),
                    leaves: None,
                });
                start = end;
            }
            let plan = BlockPlan::new(end.saturating_sub(first) as usize)?;
            self.blocks.push(BlockRec { height, first_batch: first, plan, merges: HashMap::new() });
            first = end;
        }
        self.block_start_batch = first;
        self.hashed_batches = first as usize;
        Ok(())
    }

    /// Lets go of the records of the blocks pruned from the index: `to` is the first kept.
    fn pruned(&mut self, to: IndexFrom) {
        self.index_from = to;
        self.batches.drop_before(to.batch as usize);
        self.blocks.drop_before(to.height as usize - 1);
    }

    /// The registered keys of `accounts`, to save with the settled state.
    fn keys_of(&self, accounts: impl Iterator<Item = u32>) -> Vec<(u32, PublicKey)> {
        accounts.filter_map(|id| Some((id, *self.registry.get(&id)?))).collect()
    }

    /// The registered key of `sender` (a `Register` brings its own key and is checked apart).
    pub fn registered_key(&self, sender: u32) -> Result<PublicKey, Status> {
        self.registry
            .get(&sender)
            .copied()
            .ok_or_else(|| Status::failed_precondition(format!("unknown account {sender}")))
    }

    /// Executes an accepted (signature-checked) transaction and queues its log record; the
    /// caller writes the log and flushes before acknowledging ([`Core::log`]).
    pub fn submit(&mut self, arrival: Arrival) -> Result<([u8; 32], u64), Status> {
        let Arrival { signed, hash, key } = arrival;
        let pending = self.txs.len() as u64;
        if pending >= self.params.mempool_limit as u64 {
            return Err(Status::resource_exhausted(format!("mempool full: {pending} transactions await settlement")));
        }
        if self.by_hash.contains_key(&hash) {
            return Err(Status::already_exists("transaction already accepted"));
        }
        let now = Instant::now();
        self.collect_hashed(false);
        if self.ex.open_len() >= self.params.capacity {
            self.seal_batch(now).map_err(status::storage)?;
        }
        let bytes = signed.encode();
        let seq = match self.execute(signed, hash, key, now) {
            Ok(seq) => seq,
            // A settled transaction cannot apply again (its nonce is spent, or its account
            // registered), so a copy of one fails here, and is told apart from other failures
            // by the index, off the path of the transactions that apply.
            Err(_) if self.settled_seq(&hash).map_err(status::storage)?.is_some() => {
                return Err(Status::already_exists("transaction already accepted (and settled)"))
            }
            Err(e) => return Err(e),
        };
        self.log.push_tx(seq, bytes);
        if self.ex.open_len() >= self.params.capacity {
            self.seal_batch(now).map_err(status::storage)?;
        }
        Ok((hash, seq))
    }

    /// Applies `signed`, whose message hash is `hash` and, if it registers, whose key is `key`
    /// when the caller has it.
    fn execute(
        &mut self,
        signed: SignedTx,
        hash: [u8; 32],
        key: Option<PublicKey>,
        now: Instant,
    ) -> Result<u64, Status> {
        self.apply(&signed, key)?;
        let seq = self.accepted();
        self.by_hash.insert(hash, seq);
        self.txs.push_back(Accepted { signed, hash });
        self.open_since.get_or_insert(now);
        Ok(seq)
    }

    /// Applies `signed` to the state and the registry: all that replaying a settled transaction
    /// does.
    fn apply(&mut self, signed: &SignedTx, key: Option<PublicKey>) -> Result<(), Status> {
        self.ex.apply(&signed.tx).map_err(|e| status::tx_error(&e))?;
        if let Tx::Register(r) = &signed.tx {
            if let Some(pk) = key.or_else(|| PublicKey::from_bytes(&r.pubkey).ok()) {
                self.registry.insert(r.account, pk);
            }
        }
        Ok(())
    }

    fn seal_batch(&mut self, now: Instant) -> Result<()> {
        self.seal_batch_inner(now, true, &Ends::default())
    }

    /// Seals the open batch now if it holds any transaction, as its timeout does for a worker
    /// waiting ([`Core::tick`]).
    pub fn seal_open_batch(&mut self, now: Instant) -> Result<()> {
        if self.ex.open_len() > 0 {
            self.seal_batch(now)?;
        }
        Ok(())
    }

    /// Seals the open batch; closes the block when it is full. `persist` is false while replaying,
    /// where `block_ends` says where blocks closed.
    ///
    /// Live (`persist`), the batch's tree hashing runs behind the executor, off this lock, and
    /// its job is planned when its witness comes back ([`Core::collect_hashed`]); replaying, it
    /// hashes here.
    fn seal_batch_inner(&mut self, now: Instant, persist: bool, block_ends: &Ends) -> Result<()> {
        let start = self.batches.last().map_or(0, |b| b.end);
        let end = self.accepted();
        let id = self.batches.end() as u64;
        let sealing = |e| anyhow::anyhow!("sealing a batch: {e}");
        let witness = if persist {
            self.ex.seal_batch_behind().map_err(sealing)?;
            // The boundary, once sealed (a seal that failed leaves the batch open, and the next
            // arrival or tick seals it again): queued after its transactions and before the
            // next one's, and the log's records are written in the order queued.
            self.log.push(&k(T_BATCH, id), end.to_be_bytes().to_vec());
            let full = end - start >= self.params.capacity as u64;
            if full {
                self.counters.sealed.0 += 1;
            } else {
                self.counters.sealed.1 += 1;
            }
            debug!(batch = id, txs = end - start, full, held = self.waiters.held(), "batch sealed");
            None
        } else {
            let w = self.ex.seal_batch().map_err(sealing)?;
            self.state_root = w.new_root;
            self.hashed_batches += 1;
            Some(Arc::new(w))
        };
        let leaves = self.ex.take_leaf_writes().context("the executor keeps no leaf writes")?;
        // Replaying, the batches whose transactions are all settled are history: their witness
        // and leaf writes are not kept (the writes go to the settled state, where it was not
        // saved).
        let (witness, leaves) = match witness {
            Some(w) if end <= self.settled_txs => {
                if let Some(unsaved) = &mut self.unsaved {
                    snapshot::merge(&mut unsaved.leaves, &leaves);
                    unsaved.root = w.new_root;
                }
                (None, None)
            }
            w => (w, Some(leaves)),
        };
        self.batches.push(BatchRec { start, end, witness, proof: None, block: None, leaves });
        self.open_since = None;
        self.worker_waiting = false;
        self.block_since.get_or_insert(now);
        let in_block = self.batches.end() as u64 - self.block_start_batch;
        let closes = if persist {
            in_block >= self.params.block_batches as u64
        } else {
            block_ends.get(self.blocks.end() + 1) == Some(self.batches.end() as u64)
        };
        if closes {
            self.close_block(persist)?;
        }
        Ok(())
    }

    fn close_block(&mut self, persist: bool) -> Result<()> {
        let first = self.block_start_batch;
        let end = self.batches.end() as u64;
        if end == first {
            return Ok(());
        }
        let height = self.blocks.end() as u64 + 1;
        if persist {
            self.log.push(&k(T_BLOCK, height), end.to_be_bytes().to_vec());
        }
        self.ex.restart_commitment();
        for b in self.batches.range_mut(first as usize..end as usize) {
            b.block = Some(height);
        }
        let plan = BlockPlan::new((end - first) as usize)?;
        self.blocks.push(BlockRec { height, first_batch: first, plan, merges: HashMap::new() });
        self.block_start_batch = end;
        self.block_since = None;
        info!(height, batches = end - first, "block closed");
        // Its batches may be proven already.
        self.plan_block(height);
        Ok(())
    }

    /// Takes the witnesses of the batches whose hashing finished behind the executor, in seal
    /// order, and plans their jobs; with `wait`, waits for every sealed batch's.
    pub fn collect_hashed(&mut self, wait: bool) {
        let mut any = false;
        loop {
            let w = if wait { self.ex.wait_hashed() } else { self.ex.take_hashed() };
            let Some(w) = w else { break };
            self.state_root = w.new_root;
            self.batches[self.hashed_batches].witness = Some(Arc::new(w));
            self.hashed_batches += 1;
            any = true;
        }
        if any {
            self.plan_batches();
        }
    }

    /// Seals a batch or closes a block that has waited long enough; lapses expired leases.
    ///
    /// A batch not full is sealed by its timeout only for a worker waiting: while every worker
    /// is busy, sealing it would not start its proof any sooner (the job would wait in the
    /// queue), and a batch proof costs the same full or not, so it keeps filling until a worker
    /// asks for work and finds none (or it fills). A sequencer with no worker seals only full
    /// batches; its first worker's first request seals the open batch.
    pub fn tick(&mut self, now: Instant) -> Result<()> {
        self.collect_hashed(false);
        if self.open_since.is_some_and(|t| now.duration_since(t) >= self.params.batch_timeout)
            && self.ex.open_len() > 0
            && self.worker_idle()
        {
            self.seal_batch(now)?;
        }
        if self.ex.open_len() == 0
            && self.block_since.is_some_and(|t| now.duration_since(t) >= self.params.block_time)
            && (self.batches.end() as u64) > self.block_start_batch
        {
            self.close_block(true)?;
        }
        let mut lapsed = Vec::new();
        for j in self.jobs.values_mut() {
            if let JobState::Leased { deadline, worker } = &j.state {
                if *deadline <= now {
                    warn!(job = ?j.key, worker = %worker, "lease lapsed; re-issuing");
                    j.lapses += 1;
                    lapsed.push(j.key.id());
                }
            }
        }
        for id in lapsed {
            self.set_pending(id);
        }
        Ok(())
    }

    fn add_job(&mut self, key: JobKey) {
        let id = key.id();
        if !self.jobs.contains_key(&id) {
            self.job_order += 1;
            self.jobs.insert(
                id,
                Job {
                    key,
                    state: JobState::Pending,
                    failures: 0,
                    lapses: 0,
                    order: self.job_order,
                    first_leased: None,
                    pending_since: Instant::now(),
                },
            );
            self.set_pending(id);
        }
    }

    /// Puts job `id` in the queue, in its place by age: the one way a job becomes pending, so
    /// a worker that found nothing is no longer waiting, and one lease request held for a job
    /// is woken (or, with none held, the next one to wait finds the job at once).
    fn set_pending(&mut self, id: u64) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = JobState::Pending;
            j.pending_since = Instant::now();
            self.pending.insert((j.order, id));
            self.worker_waiting = false;
            self.waiters.ready.notify_one();
        }
    }

    /// Puts job `id` in `state`, done or given up, out of the queue if it was pending: with
    /// [`Core::set_pending`] and a lease, what keeps the queue the jobs pending.
    fn set_not_pending(&mut self, id: u64, state: JobState) {
        debug_assert!(!matches!(state, JobState::Pending | JobState::Leased { .. }));
        if let Some(j) = self.jobs.get_mut(&id) {
            if j.state == JobState::Pending {
                self.pending.remove(&(j.order, id));
            }
            j.state = state;
        }
    }

    /// Whether a worker waits for work that nothing queued or hashing will give it: one that
    /// asked, found nothing, and has seen no job or seal since (`worker_waiting`: a worker that
    /// polls), or more lease requests held than jobs pending and sealed batches hashing (a job
    /// made pending wakes one held request, and the others are still waiting). A job leaves the
    /// queue whichever way it stops being pending, so the queue's length is the jobs pending.
    fn worker_idle(&self) -> bool {
        let coming = self.pending.len() + (self.batches.end() - self.hashed_batches);
        self.worker_waiting || self.waiters.held() > coming
    }

    /// The lease requests held for a job ([`Waiters`]).
    pub fn waiters(&self) -> Arc<Waiters> {
        self.waiters.clone()
    }

    /// Index of the first batch and of the first block that are not settled.
    fn first_unsettled(&self) -> (usize, usize) {
        let block = self.settled_height as usize;
        let batch = self.blocks.get(block).map_or(self.block_start_batch, |b| b.first_batch) as usize;
        (batch, block)
    }

    /// Every job whose inputs exist and whose output does not, that is not there: what the
    /// open plans, after which jobs are planned as their inputs come ([`Core::plan_batches`],
    /// [`Core::plan_block`]), in time independent of the work in flight.
    fn missing_jobs(&self) -> Vec<JobKey> {
        let (first_batch, first_block) = self.first_unsettled();
        let mut missing = Vec::new();
        for (i, b) in self.batches.from(first_batch).take_while(|(i, _)| *i < self.hashed_batches) {
            if b.proof.is_none() {
                missing.push(JobKey::Batch(i as u64));
            }
        }
        for (_, blk) in self.blocks.from(first_block) {
            missing.extend(self.ready_merges(blk));
        }
        missing.retain(|key| !self.jobs.contains_key(&key.id()));
        missing
    }

    /// The batch jobs of the batches hashed since the last call.
    fn plan_batches(&mut self) {
        let from = self.planned_batches.max(self.first_unsettled().0);
        for i in from..self.hashed_batches {
            if self.batches[i].proof.is_none() {
                self.add_job(JobKey::Batch(i as u64));
            }
        }
        self.planned_batches = self.hashed_batches;
    }

    /// The merges of block `height` whose children are all proven, if not done.
    fn plan_block(&mut self, height: u64) {
        let Some(blk) = self.blocks.get(height as usize - 1) else { return };
        for key in self.ready_merges(blk).collect::<Vec<_>>() {
            self.add_job(key);
        }
    }

    fn ready_merges<'a>(&'a self, blk: &'a BlockRec) -> impl Iterator<Item = JobKey> + 'a {
        blk.plan.jobs.iter().filter_map(move |j| match &j.kind {
            PlannedKind::Merge { children }
                if !blk.merges.contains_key(&j.id) && children.iter().all(|&c| self.node_ready(blk, c)) =>
            {
                Some(JobKey::Merge { height: blk.height, node: j.id })
            }
            _ => None,
        })
    }

    fn node_ready(&self, blk: &BlockRec, node: usize) -> bool {
        match blk.plan.jobs[node].kind {
            PlannedKind::Batch { batch } => self.batches[blk.first_batch as usize + batch].proof.is_some(),
            PlannedKind::Merge { .. } => blk.merges.contains_key(&node),
        }
    }

    fn node_output(&self, blk: &BlockRec, node: usize) -> Option<(ProofKind, Proof)> {
        match blk.plan.jobs[node].kind {
            PlannedKind::Batch { batch } => {
                self.batches[blk.first_batch as usize + batch].proof.clone().map(|p| (ProofKind::Batch, p))
            }
            PlannedKind::Merge { .. } => blk.merges.get(&node).map(|p| (ProofKind::Merge, p.clone())),
        }
    }

    fn payload(&self, key: JobKey) -> Option<Payload> {
        match key {
            JobKey::Batch(b) => self.batches.get(b as usize)?.witness.clone().map(Payload::Batch),
            JobKey::Merge { height, node } => {
                let blk = self.blocks.get(height as usize - 1)?;
                let PlannedKind::Merge { children } = &blk.plan.jobs[node].kind else { return None };
                let children = children.iter().map(|&c| self.node_output(blk, c)).collect::<Option<Vec<_>>>()?;
                Some(Payload::Merge(children))
            }
        }
    }

    /// Leases the oldest pending job to `worker`.
    pub fn lease(&mut self, worker: &str, now: Instant) -> Option<Lease> {
        self.collect_hashed(false);
        #[cfg(test)]
        {
            assert_eq!(self.missing_jobs(), Vec::new(), "jobs planned as their inputs came");
            let queued: BTreeSet<(u64, u64)> =
                self.jobs.iter().filter(|(_, j)| j.state == JobState::Pending).map(|(&id, j)| (j.order, id)).collect();
            assert_eq!(queued, self.pending, "the queue holds the pending jobs, and only them");
        }
        let mut stale = Vec::new();
        let mut chosen = None;
        for &(order, id) in &self.pending {
            match self.jobs.get(&id) {
                Some(j) if j.state == JobState::Pending => {
                    // A job whose inputs are gone is skipped, not allowed to block the ones
                    // behind it.
                    if let Some(payload) = self.payload(j.key) {
                        chosen = Some(((order, id), j.key, payload));
                        break;
                    }
                }
                // None since every way out of the pending state leaves the queue (the tests
                // check it at every lease); kept so that a way missed costs a scan, not a
                // queue that never empties.
                _ => stale.push((order, id)),
            }
        }
        for entry in stale {
            self.pending.remove(&entry);
        }
        let Some((entry, key, payload)) = chosen else {
            // A batch sealed and still hashing is this worker's next job: it is not waiting.
            if self.hashed_batches == self.batches.end() {
                self.worker_waiting = true;
            }
            return None;
        };
        self.pending.remove(&entry);
        let id = key.id();
        let deadline = now + self.params.lease;
        let j = self.jobs.get_mut(&id)?;
        j.state = JobState::Leased { worker: worker.to_string(), deadline };
        j.first_leased.get_or_insert(now);
        self.counters.queue_seconds.0 += now.saturating_duration_since(j.pending_since).as_secs_f64();
        self.counters.queue_seconds.1 += 1;
        let w = self.counters.proving_window.get_or_insert((now, now));
        w.1 = w.1.max(now);
        Some(Lease { id, key, payload, deadline, attempt: j.failures + 1 })
    }

    /// Extends a lease.
    pub fn heartbeat(&mut self, worker: &str, id: u64, now: Instant) -> Result<Instant, Status> {
        let lease = self.params.lease;
        let j = self.jobs.get_mut(&id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        match &mut j.state {
            JobState::Leased { worker: w, deadline } if w == worker => {
                *deadline = now + lease;
                Ok(*deadline)
            }
            _ => Err(Status::failed_precondition(format!("job {id} is not leased to {worker}"))),
        }
    }

    /// What a submitted proof must prove: its circuit and public inputs.
    fn expected(&self, key: JobKey) -> Option<(ProofKind, circuits::BatchPublicInputs)> {
        let batch_pis = |b: u64| {
            let w = self.batches.get(b as usize)?.witness.as_ref()?;
            Some(circuits::BatchPublicInputs {
                old_root: w.old_root,
                new_root: w.new_root,
                commitment_in: w.commitment_in,
                commitment_out: w.commitment_out,
            })
        };
        match key {
            JobKey::Batch(b) => Some((ProofKind::Batch, batch_pis(b)?)),
            JobKey::Merge { height, node } => {
                let blk = self.blocks.get(height as usize - 1)?;
                let (first, last) = leaf_range(&blk.plan, node);
                let a = batch_pis(blk.first_batch + first as u64)?;
                let z = batch_pis(blk.first_batch + last as u64)?;
                Some((
                    ProofKind::Merge,
                    circuits::BatchPublicInputs {
                        old_root: a.old_root,
                        new_root: z.new_root,
                        commitment_in: a.commitment_in,
                        commitment_out: z.commitment_out,
                    },
                ))
            }
        }
    }

    /// What a result for job `id` must prove, to check it against; `None` if the job is done.
    /// A result is taken in four steps, so that neither verifying it nor writing it holds the
    /// lock: this, then [`ResultCheck::run`] (plonky2's verifier) and [`ResultCheck::store`]
    /// (the proof's write, where the job has none), then [`Core::record_result`] (the caller
    /// flushes). A proof that does not verify, or proves other public inputs, is refused and
    /// counted as a failure.
    pub fn result_check(&self, id: u64) -> Result<Option<ResultCheck>, Status> {
        let j = self.jobs.get(&id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        if j.state == JobState::Done {
            return Ok(None);
        }
        let (kind, expected) =
            self.expected(j.key).ok_or_else(|| Status::failed_precondition("job inputs are gone"))?;
        Ok(Some(ResultCheck {
            keys: self.keys.clone(),
            kind,
            expected,
            db: self.db.clone(),
            log: self.log.clone(),
            key: proof_key(j.key),
        }))
    }

    /// The block job `key` belongs to, once its block is closed.
    fn job_block(&self, key: JobKey) -> Option<u64> {
        match key {
            JobKey::Batch(b) => self.batches.get(b as usize)?.block,
            JobKey::Merge { height, .. } => Some(height),
        }
    }

    /// Takes job `id`'s result, checked and stored by its [`ResultCheck`]: keeps the proof and
    /// plans what it makes ready, or counts the failure. A job done meanwhile (another result
    /// for it was taken first) takes nothing.
    ///
    /// The proof's write ran without the lock, so the block may have settled meanwhile and its
    /// proofs left the database: a proof written after that is removed here, where it would
    /// otherwise stay (the next open removes any such leftover too). A proof written while
    /// another result of the job was being taken is kept: it is the job's proof on disk.
    pub fn record_result(&mut self, id: u64, checked: Checked, now: Instant) -> Result<(), Status> {
        let Some(j) = self.jobs.get(&id) else {
            // Settled and dropped (or never known).
            if checked.stored {
                self.db.remove(&checked.key).map_err(status::storage)?;
            }
            return Err(Status::not_found(format!("no job {id}")));
        };
        let (key, first_leased) = (j.key, j.first_leased);
        if j.state == JobState::Done {
            let settling = |h| h <= self.settled_height || self.settling == Some(h);
            if checked.stored && self.job_block(key).is_some_and(settling) {
                self.db.remove(&checked.key).map_err(status::storage)?;
            }
            return Ok(());
        }
        if let Err(reason) = checked.verdict {
            self.fail(id, format!("invalid proof: {reason}"))?;
            return Err(Status::invalid_argument(format!("proof rejected: {reason}")));
        }
        match key {
            JobKey::Batch(b) => {
                let r = &mut self.batches[b as usize];
                self.counters.proven_txs += r.end - r.start;
                r.proof = Some(checked.proof);
            }
            JobKey::Merge { height, node } => {
                self.blocks[height as usize - 1].merges.insert(node, checked.proof);
            }
        }
        if let Some(w) = &mut self.counters.proving_window {
            w.1 = now;
        }
        if let Some(t) = first_leased {
            self.counters.proof_seconds.0 += now.duration_since(t).as_secs_f64();
            self.counters.proof_seconds.1 += 1;
        }
        // Pending here if its lease lapsed and it was queued again before this result came.
        self.set_not_pending(id, JobState::Done);
        if let Some(height) = self.job_block(key) {
            self.plan_block(height);
        }
        Ok(())
    }

    /// Records the failure `worker` reports of job `id`, whose lease it must hold (a report
    /// from a worker whose lease lapsed is stale: the job may be another worker's by now), and
    /// charges it as `fault` says.
    pub fn report_failure(&mut self, worker: &str, id: u64, reason: String, fault: Fault) -> Result<(), Status> {
        let j = self.jobs.get_mut(&id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        if !matches!(&j.state, JobState::Leased { worker: w, .. } if w == worker) {
            return Err(Status::failed_precondition(format!("job {id} is not leased to {worker}")));
        }
        match fault {
            Fault::Job => self.fail(id, format!("{worker}: {reason}")),
            Fault::Worker => {
                warn!(job = ?j.key, worker, %reason, "a worker's device failed; the job is re-queued, uncounted");
                self.set_pending(id);
                self.counters.worker_faults += 1;
                Ok(())
            }
        }
    }

    /// Records a failure of the job; after `max_attempts` the job is given up with its reason.
    pub fn fail(&mut self, id: u64, reason: String) -> Result<(), Status> {
        let max = self.params.max_attempts;
        let j = self.jobs.get_mut(&id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        if matches!(j.state, JobState::Done | JobState::Failed { .. }) {
            return Ok(());
        }
        j.failures += 1;
        self.counters.job_failures += 1;
        warn!(job = ?j.key, failures = j.failures, %reason, "job failed");
        if j.failures >= max {
            // After the log's queued records, as a proof is (`ResultCheck::store`): a give-up
            // names its job by number. Rare, so the lock may wait for it.
            self.log.write().map_err(status::storage)?;
            self.db.insert(k(T_FAILED, id), reason.as_bytes()).map_err(status::storage)?;
            self.set_not_pending(id, JobState::Failed { reason });
        } else {
            self.set_pending(id);
        }
        Ok(())
    }

    /// Queues given-up jobs again with their attempts renewed: the operator's way on once the
    /// cause is fixed, since a job given up halts the chain (a block needs every proof). `ids`
    /// empty means every given-up job. An unknown id (NOT_FOUND) or a job that is not given up
    /// (FAILED_PRECONDITION) refuses the whole request, and nothing changes. The records of
    /// the give-ups go in one write, so a restart finds all of them or none; the caller flushes
    /// before acknowledging.
    pub fn retry(&mut self, ids: &[u64]) -> Result<Vec<JobKey>, Status> {
        let given_up = |j: &Job| matches!(j.state, JobState::Failed { .. });
        let chosen: Vec<u64> = if ids.is_empty() {
            self.jobs.values().filter(|j| given_up(j)).map(|j| j.key.id()).collect()
        } else {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            for id in &ids {
                let j = self.jobs.get(id).ok_or_else(|| Status::not_found(format!("no job {id} in flight")))?;
                if !given_up(j) {
                    return Err(Status::failed_precondition(format!(
                        "job {id} ({}) is {}, not given up",
                        j.key,
                        j.state.name()
                    )));
                }
            }
            ids
        };
        let mut records = sled::Batch::default();
        for &id in &chosen {
            records.remove(&k(T_FAILED, id));
        }
        self.db.apply_batch(records).map_err(status::storage)?;
        let mut keys = Vec::with_capacity(chosen.len());
        for id in chosen {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.failures = 0;
                keys.push(j.key);
                info!(job = %j.key, "a given-up job is queued again");
                self.set_pending(id);
            }
        }
        self.counters.retried_jobs += keys.len() as u64;
        Ok(keys)
    }

    /// Job `id`, if it is in flight.
    pub fn job(&self, id: u64) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// The jobs in flight in the order they are leased (oldest first), those in `state` only
    /// when it is given (a [`JobState::name`]).
    pub fn job_list(&self, state: Option<&str>) -> Vec<&Job> {
        let mut jobs: Vec<&Job> = self.jobs.values().filter(|j| state.is_none_or(|s| j.state.name() == s)).collect();
        jobs.sort_unstable_by_key(|j| j.order);
        jobs
    }

    /// The next block to submit, when its proof is ready: what it is made of, copied under the
    /// lock (its transactions hold no heap), and made into the message outside it
    /// ([`ReadyBlock::into_proto`]): done under the lock, encoding the transactions and summing
    /// their signatures held it 0.7–0.9 ms a block of 664 on the 2-vCPU dev machine.
    ///
    /// While a block's settling is being written, the next one is the block after it: the
    /// submitter sends it meanwhile, and settles it once the first is taken back.
    pub fn ready_block(&self) -> Option<ReadyBlock> {
        self.ready_block_at(self.next_to_settle())
    }

    /// The first block neither settled nor being settled.
    pub fn next_to_settle(&self) -> u64 {
        self.settling.unwrap_or(self.settled_height) + 1
    }

    /// Block `height`, if it is proven and neither settled nor being settled: a block after the
    /// next to settle goes out while the ones before it are (several blocks in flight).
    pub fn ready_block_at(&self, height: u64) -> Option<ReadyBlock> {
        if height < self.next_to_settle() {
            return None;
        }
        let blk = self.blocks.get(height as usize - 1)?;
        let root = blk.plan.root();
        let proof = blk.merges.get(&root)?.clone();
        let r = self.block_batches(height);
        let (first, last) = (&self.batches[r.start], &self.batches[r.end - 1]);
        let (start, end) = (first.start - self.settled_txs, last.end - self.settled_txs);
        let txs = self.txs.range(start as usize..end as usize).map(|a| a.signed.clone()).collect();
        Some(ReadyBlock {
            height,
            old_root: first.witness.as_ref()?.old_root,
            new_root: last.witness.as_ref()?.new_root,
            txs,
            proof,
        })
    }

    /// [`Core::ready_block`] made into the message.
    #[cfg(test)]
    pub fn next_block(&self) -> Option<proto::v1::Block> {
        self.ready_block().map(ReadyBlock::into_proto)
    }

    /// The batches of block `height`.
    fn block_batches(&self, height: u64) -> Range<usize> {
        let first = self.blocks[height as usize - 1].first_batch;
        let end = self.blocks.get(height as usize).map_or(self.block_start_batch, |b| b.first_batch);
        first as usize..end as usize
    }

    /// Gathers what settling block `height`, the next one, writes: the sequencer's lock is
    /// released while it is written ([`Settling::write`]), then [`Core::settled`] takes the
    /// outcome. None if the block is not the next one, or one is being settled.
    pub fn settling(&mut self, height: u64) -> Result<Option<Settling>> {
        if height != self.settled_height + 1 || height as usize > self.blocks.end() || self.settling.is_some() {
            return Ok(None);
        }
        let batches = self.block_batches(height);
        let settled = (self.batches[batches.end - 1].end - self.settled_txs) as usize;
        let root =
            self.batches[batches.end - 1].witness.as_ref().context("a block settled before its hashing")?.new_root;
        let leaves = self
            .batches
            .range(batches.clone())
            .map(|b| b.leaves.clone().context("an unsettled batch without its leaf writes"))
            .collect::<Result<_>>()?;
        let txs = self.txs.range(..settled);
        let keys = self.keys_of(txs.clone().filter_map(|a| {
            if let Tx::Register(r) = &a.signed.tx {
                Some(r.account)
            } else {
                None
            }
        }));
        let proofs = batches
            .clone()
            .map(|b| k(T_PROOF, b as u64).to_vec())
            .chain(self.blocks[height as usize - 1].merges.keys().map(|&node| merge_key(height, node)))
            .collect();
        // One block falls out of the window (the open pruned what fell out before).
        let prune = self.prune(height, u64::MAX);
        let end = self.settled_txs + settled as u64;
        let save = end - self.saved.txs >= self.params.state_save_txs;
        self.settling = Some(height);
        Ok(Some(Settling {
            db: self.db.clone(),
            log: self.log.clone(),
            height,
            txs: self.settled_txs..self.settled_txs + settled as u64,
            hashes: txs.map(|a| a.hash).collect(),
            leaves,
            keys,
            root,
            to_save: std::mem::take(&mut self.to_save),
            save_from: save.then_some(self.saved.txs),
            proofs,
            index_from: prune.as_ref().map_or(self.index_from, |p| p.to),
            prune,
            pruned: Vec::new(),
        }))
    }

    /// Takes the outcome of writing `s`: if it was written, the block is history from then on
    /// (its transactions, witnesses, proofs and jobs leave memory); if not, nothing changed, and
    /// the block can be settled again.
    pub fn settled(&mut self, mut s: Settling, written: Result<()>) -> Result<Released> {
        if self.settling != Some(s.height) {
            bail!("block {} was not being settled", s.height);
        }
        self.settling = None;
        // What is to be saved comes back, this block's writes merged in, unless it was saved.
        let to_save = std::mem::take(&mut s.to_save);
        if written.is_err() || s.save_from.is_none() {
            self.to_save = to_save;
        }
        written?;
        if s.save_from.is_some() {
            self.saved = Saved { height: s.height, txs: s.txs.end };
        }
        let height = s.height;
        let batches = self.block_batches(height);
        let settled = s.hashes.len();
        self.settled_height = height;
        let txs: Vec<Accepted> = self.txs.drain(..settled).collect();
        for (seq, a) in (self.settled_txs..).zip(&txs) {
            self.by_hash.remove(&a.hash);
            self.index.insert(&a.hash, seq);
        }
        if let Some(prune) = &s.prune {
            for (seq, hash) in (prune.from.tx..).zip(&s.pruned) {
                self.index.remove(hash, seq);
            }
        }
        self.settled_txs += settled as u64;
        let released_batches = self
            .batches
            .range_mut(batches.clone())
            .map(|b| (b.witness.take(), b.proof.take(), b.leaves.take()))
            .collect();
        let blk = &mut self.blocks[height as usize - 1];
        let merges = std::mem::take(&mut blk.merges);
        // The settled block's jobs are history: drop them so the job table stays the size of the
        // work in flight.
        let merges_of = blk.plan.jobs.iter().filter(|j| matches!(j.kind, PlannedKind::Merge { .. }));
        for key in
            batches.map(|b| JobKey::Batch(b as u64)).chain(merges_of.map(|j| JobKey::Merge { height, node: j.id }))
        {
            if let Some(j) = self.jobs.remove(&key.id()) {
                self.pending.remove(&(j.order, key.id()));
            }
        }
        self.pruned(s.index_from);
        Ok(Released { _settling: s, _txs: txs, _batches: released_batches, _merges: merges })
    }

    /// Records that block `height`, the next one, settled (the caller flushes): settles it under
    /// this borrow, where the service releases its lock for the write.
    #[cfg(test)]
    pub fn mark_settled(&mut self, height: u64) -> Result<()> {
        match self.settling(height)? {
            Some(mut s) => {
                let written = s.write();
                self.settled(s, written).map(drop)
            }
            None => Ok(()),
        }
    }

    /// The sequence number and status of a transaction: one not settled is looked up in
    /// `by_hash`, a settled one in the index.
    pub fn tx_status(&self, hash: &[u8]) -> Result<Option<proto::v1::TxStatus>, Status> {
        let seq = match self.by_hash.get(hash) {
            Some(&seq) => seq,
            None => {
                let Ok(hash) = <[u8; 32]>::try_from(hash) else { return Ok(None) };
                match self.settled_seq(&hash).map_err(status::storage)? {
                    Some(seq) => seq,
                    None => return Ok(None),
                }
            }
        };
        let batch = Some(self.batches.partition_point(|b| b.end <= seq))
            .filter(|&i| self.batches.get(i).is_some_and(|b| b.start <= seq));
        let (state, block) = match batch.map(|i| &self.batches[i]) {
            Some(b) if b.block.is_some_and(|h| h <= self.settled_height) => (proto::v1::TxState::Settled, b.block),
            Some(b) if b.proof.is_some() => (proto::v1::TxState::Proven, b.block),
            Some(b) => (proto::v1::TxState::Executed, b.block),
            None => (proto::v1::TxState::Executed, None),
        };
        Ok(Some(proto::v1::TxStatus {
            state: state as i32,
            sequence: seq,
            batch: batch.unwrap_or(0) as u64,
            block: block.unwrap_or(0),
        }))
    }

    /// The sequence number of settled transaction `hash`, if its block is in the index's
    /// window: the index's candidate checked against the block's list of hashes.
    fn settled_seq(&self, hash: &[u8; 32]) -> Result<Option<u64>> {
        match self.index.get(hash) {
            None => Ok(None),
            Some(Found::Exact(seq)) => Ok(Some(seq)),
            Some(Found::Candidate(seq)) => Ok((self.settled_hash(seq)? == Some(*hash)).then_some(seq)),
        }
    }

    /// The hash of settled transaction `seq`, from its block's list, if its block is in the
    /// index's window.
    fn settled_hash(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        if seq < self.index_from.tx || seq >= self.settled_txs {
            return Ok(None);
        }
        let Some(height) = self.batches.get(self.batches.partition_point(|b| b.end <= seq)).and_then(|b| b.block)
        else {
            return Ok(None);
        };
        let Some(first) = self.first_tx(height) else { return Ok(None) };
        let at = (seq - first) as usize * 32;
        let Some(list) = self.db.get(k(T_HASHES, height))? else { return Ok(None) };
        Ok(list.get(at..at + 32).map(|h| h.try_into().expect("32 bytes")))
    }

    /// The sequence number of block `height`'s first transaction, if its records are in memory.
    fn first_tx(&self, height: u64) -> Option<u64> {
        let blk = self.blocks.get(height.checked_sub(1)? as usize)?;
        Some(self.batches.get(blk.first_batch as usize)?.start)
    }

    /// The status report.
    pub fn status(&self) -> proto::v1::SequencerStatus {
        let mut jobs: BTreeMap<&str, u64> = JobState::NAMES.into_iter().map(|s| (s, 0)).collect();
        let mut oldest_pending = Duration::ZERO;
        for j in self.jobs.values() {
            *jobs.entry(j.state.name()).or_default() += 1;
            if j.state == JobState::Pending {
                oldest_pending = oldest_pending.max(j.pending_since.elapsed());
            }
        }
        proto::v1::SequencerStatus {
            state_root: digest_to_bytes(&self.state_root).to_vec(),
            accepted_txs: self.accepted(),
            pending_txs: self.txs.len() as u64,
            settled_txs: self.settled_txs,
            batches: self.batches.end() as u64,
            blocks_settled: self.settled_height,
            jobs: jobs.into_iter().map(|(state, count)| proto::v1::JobCount { state: state.into(), count }).collect(),
            settled_height: self.settled_height,
            proven_txs: self.counters.proven_txs,
            open_txs: self.ex.open_len() as u64,
            workers_waiting: self.waiters.held() as u64,
            oldest_pending_ms: oldest_pending.as_millis() as u64,
        }
    }

    /// The executor's state (accounts and pools).
    pub fn state(&self) -> &circuits::State {
        self.ex.state()
    }

    /// Failed jobs with their reasons.
    pub fn failed_jobs(&self) -> Vec<(JobKey, String)> {
        self.jobs
            .values()
            .filter_map(|j| match &j.state {
                JobState::Failed { reason } => Some((j.key, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Seconds since this process opened the core.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The network's batch capacity.
    pub fn capacity(&self) -> usize {
        self.params.capacity
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        self.params.lease
    }
}

/// First and last batch (indices within the block) under a plan node.
fn leaf_range(plan: &BlockPlan, node: usize) -> (usize, usize) {
    match &plan.jobs[node].kind {
        PlannedKind::Batch { batch } => (*batch, *batch),
        PlannedKind::Merge { children } => {
            let first = children.first().map_or((0, 0), |&c| leaf_range(plan, c));
            let last = children.last().map_or(first, |&c| leaf_range(plan, c));
            (first.0, last.1)
        }
    }
}

/// A job's result as it must be: checked by [`ResultCheck::run`] without the core's lock.
pub struct ResultCheck {
    keys: Arc<VerifierKeys>,
    kind: ProofKind,
    expected: circuits::BatchPublicInputs,
    db: sled::Db,
    log: LogWriter,
    /// Where the job's proof is kept.
    key: Vec<u8>,
}

/// A result as [`ResultCheck::store`] leaves it for [`Core::record_result`].
pub struct Checked {
    proof: Proof,
    verdict: Result<(), String>,
    /// Whether the store wrote the proof (it does not where the job has one written already).
    stored: bool,
    key: Vec<u8>,
}

impl ResultCheck {
    /// Verifies `proof` with plonky2's verifier and compares its public inputs with the job's.
    pub fn run(&self, proof: &[u8]) -> Result<(), String> {
        match self.keys.check(&ProofBytes { kind: self.kind, bytes: proof.to_vec() }) {
            Ok((_, pis)) if pis == self.expected => Ok(()),
            Ok(_) => Err("the proof proves other public inputs".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes `proof`, if `verdict` (from [`ResultCheck::run`]) passed it, as the job's proof,
    /// unless one is written already (two workers' results for a job whose lease lapsed: the
    /// first written is the one on disk, and either is a proof of the job). Runs without the
    /// lock: a proof is about 150 KB, and sled writes a value that large to a file of its own.
    ///
    /// The log's queued records are written first: a proof on disk names its batch or block by
    /// number, and a restart must not find it without the batch's or block's records, or it
    /// would take it for the proof of another batch numbered the same.
    pub fn store(self, proof: Proof, verdict: Result<(), String>) -> Result<Checked, Status> {
        if verdict.is_ok() {
            self.log.write().map_err(status::storage)?;
        }
        let stored = verdict.is_ok()
            && self.db.compare_and_swap(&self.key, None::<&[u8]>, Some(&proof[..])).map_err(status::storage)?.is_ok();
        Ok(Checked { proof, verdict, stored, key: self.key })
    }
}

#[cfg(test)]
mod tests {
    use circuits::genesis::devnet_key;
    use circuits::load::mixed_load;
    use circuits::Register;
    use tonic::Code;

    use super::*;

    /// A core's data directory for a test, removed when dropped: batches of four, blocks of
    /// `block_batches`, at most two attempts a job, eight devnet accounts.
    struct TestDir {
        dir: std::path::PathBuf,
        params: Params,
        genesis: Genesis,
        circuits: Arc<crate::network::Circuits>,
    }

    impl TestDir {
        fn new(name: &str, block_batches: usize) -> Self {
            let dir = std::env::temp_dir().join(format!("rollup-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let params = Params {
                capacity: 4,
                batch_timeout: Duration::from_secs(3600),
                block_batches,
                block_time: Duration::from_secs(3600),
                lease: Duration::from_secs(60),
                max_attempts: 2,
                mempool_limit: 1000,
                tx_index_blocks: 0,
                state_save_txs: 1,
            };
            TestDir { dir, params, genesis: crate::network::genesis(8), circuits: crate::network::test_circuits() }
        }

        /// The database, waiting for the last process's lock (a test reopens at once).
        fn db(&self) -> sled::Db {
            crate::compact::open_waiting(&self.dir.join("db")).expect("db")
        }

        /// Opens the core, replaying what is there.
        fn open(&self) -> Core {
            Core::open(self.params.clone(), self.db(), &self.genesis, self.circuits.keys().clone()).expect("open")
        }

        /// Closes `core` as a process killed after its last acknowledgement: flushed, then gone.
        fn close(core: Core) {
            core.log.write_and_flush().expect("flush")
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }

    /// `n` transactions of the mixed load over eight accounts (a share `swaps` of swaps, a
    /// register every 64), signed.
    fn arrivals(n: usize, swaps: f64) -> Vec<Arrival> {
        mixed_load(n, 8, swaps)
            .into_iter()
            .map(|tx| {
                let signed = SignedTx { signature: devnet_key(tx.sender()).sign_tx(&tx), tx };
                let hash = circuits::bls::tx_message(&signed.tx);
                Arrival { signed, hash, key: None }
            })
            .collect()
    }

    /// A job given up halts the chain; `retry` queues it again with its attempts renewed, and a
    /// restart, before or after, finds what was acknowledged. A request that names a job not
    /// given up, or one not in flight, changes nothing. (On the way: a sealed batch's job comes
    /// with the first tick after its hashing behind the executor is done.)
    #[test]
    fn a_given_up_job_queued_again_is_pending_with_its_attempts_renewed_across_restarts() {
        let test = TestDir::new("retry", 1);
        let (open, close) = (|| test.open(), TestDir::close);
        let state = |core: &Core, id: u64| core.jobs[&id].state.clone();
        let mut core = open();
        for arrival in arrivals(4, 0.0) {
            core.submit(arrival).expect("accepted");
        }
        let id = JobKey::Batch(0).id();
        // The full batch was sealed and hashes behind the executor: a tick after it finishes
        // plans its job, as the sequencer's ticker does every 50 ms.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !core.jobs.contains_key(&id) {
            assert!(Instant::now() < deadline, "no job for the sealed batch after 10 s of ticks");
            std::thread::sleep(Duration::from_millis(5));
            core.tick(Instant::now()).expect("tick");
        }
        assert_eq!(state(&core, id), JobState::Pending);

        // Nothing given up: naming a pending job is refused, and "every given-up job" is none.
        let e = core.retry(&[id]).expect_err("pending");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert_eq!(core.retry(&[]).expect("none"), Vec::<JobKey>::new());

        let give_up = |core: &mut Core| {
            for attempt in 1..=2 {
                let lease = core.lease("w", Instant::now()).expect("the batch job");
                assert_eq!((lease.id, lease.attempt), (id, attempt));
                core.report_failure("w", id, "out of memory".into(), Fault::Job).expect("reported");
            }
            assert_eq!(state(core, id), JobState::Failed { reason: "w: out of memory".into() });
            assert!(core.lease("w", Instant::now()).is_none(), "a given-up job is not leased");
        };
        give_up(&mut core);
        // An unknown id refuses the whole request.
        let e = core.retry(&[id, 77]).expect_err("unknown job");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(matches!(state(&core, id), JobState::Failed { .. }));
        // Queued again, in the same process: pending, its attempts renewed (two more to give up).
        assert_eq!(core.retry(&[id, id]).expect("queued again"), vec![JobKey::Batch(0)]);
        assert_eq!((state(&core, id), core.jobs[&id].failures, core.counters.retried_jobs), (JobState::Pending, 0, 1));
        give_up(&mut core);

        close(core);
        let mut core = open();
        assert!(matches!(state(&core, id), JobState::Failed { .. }), "a give-up survives a restart");
        assert_eq!(core.retry(&[]).expect("queued again"), vec![JobKey::Batch(0)]);
        close(core);
        let mut core = open();
        assert_eq!(state(&core, id), JobState::Pending, "queued again survives a restart");
        give_up(&mut core);
        drop(core);
    }

    /// The sequence numbers of the transactions in the log, in order.
    fn logged(db: &sled::Db) -> Vec<u64> {
        log_writer::read_txs(db, 0).map(|r| r.expect("read").0).collect()
    }

    /// Proves every job there is (the bytes stand for proofs: the core takes a result's
    /// verdict from its caller).
    fn prove(core: &mut Core) {
        core.collect_hashed(true);
        while let Some(l) = core.lease("w", Instant::now()) {
            record(core, l.id, vec![l.id as u8; 64]);
        }
    }

    /// Takes `proof` as job `id`'s result, as the service does: checked (passed here), stored,
    /// recorded.
    fn record(core: &mut Core, id: u64, proof: Vec<u8>) {
        let check = core.result_check(id).expect("a leased job").expect("not done");
        let checked = check.store(proof.into(), Ok(())).expect("stored");
        core.record_result(id, checked, Instant::now()).expect("recorded");
    }

    /// Kills `core` without its last acknowledgement: what its log still queues is lost.
    fn kill(core: Core) {
        core.log.discard();
        drop(core);
    }

    /// The log's records are written behind the lock: a kill loses what no acknowledgement
    /// covered, and the restart finds the prefix that one did, the batch end queued after the
    /// lost transactions lost with them; those transactions are accepted again as new.
    #[test]
    fn a_kill_loses_only_the_records_no_acknowledgement_covered() {
        let test = TestDir::new("log-kill", 4);
        let arrivals = arrivals(6, 0.25);
        let mut core = test.open();
        for a in &arrivals[..3] {
            core.submit(a.clone()).expect("accepted");
        }
        assert!(core.log.queued() >= 3, "the lock queues the records");
        // The acknowledgement of the first three.
        core.log.write_and_flush().expect("flush");
        for a in &arrivals[3..] {
            core.submit(a.clone()).expect("accepted");
        }
        // The fourth filled the batch: its end is queued after it.
        assert_eq!(core.status().batches, 1);
        kill(core);

        let mut core = test.open();
        let status = core.status();
        assert_eq!((status.accepted_txs, status.batches), (3, 0), "the acknowledged prefix, no batch end");
        for a in &arrivals[3..] {
            core.submit(a.clone()).expect("accepted again: the lost ones were never in the log");
        }
        TestDir::close(core);
        let core = test.open();
        assert_eq!((core.status().accepted_txs, core.status().batches), (6, 1));
        drop(core);
    }

    /// A proof and a give-up on disk name their batch by number, so the log's queued records
    /// are written before them: a kill after either finds the batch they name, and a new batch
    /// numbered the same cannot take them for its own.
    #[test]
    fn a_proof_or_a_give_up_on_disk_never_outlives_its_batch_in_a_kill() {
        let test = TestDir::new("log-order", 4);
        let arrivals = arrivals(8, 0.0);
        let prove_first_batch = |core: &mut Core| {
            core.collect_hashed(true);
            core.tick(Instant::now()).expect("tick");
            let lease = core.lease("w", Instant::now()).expect("the batch's job");
            assert_eq!(lease.id, JobKey::Batch(0).id());
            lease.id
        };
        // A proof, with the batch's records still queued when it is stored.
        let mut core = test.open();
        for a in &arrivals[..4] {
            core.submit(a.clone()).expect("accepted");
        }
        let id = prove_first_batch(&mut core);
        assert!(core.log.queued() > 0, "nothing was acknowledged");
        record(&mut core, id, vec![7; 64]);
        kill(core);
        let core = test.open();
        assert_eq!((core.status().batches, core.counters.proven_txs), (1, 4), "the batch, with its proof");
        TestDir::close(core);

        // A give-up, likewise.
        let test = TestDir::new("log-order-fail", 4);
        let mut core = test.open();
        for a in &arrivals[..4] {
            core.submit(a.clone()).expect("accepted");
        }
        let id = prove_first_batch(&mut core);
        core.report_failure("w", id, "out of memory".into(), Fault::Job).expect("reported");
        core.lease("w", Instant::now()).expect("again");
        assert!(core.log.queued() > 0, "nothing was acknowledged");
        core.report_failure("w", id, "out of memory".into(), Fault::Job).expect("reported");
        kill(core);
        let core = test.open();
        assert_eq!(core.status().batches, 1, "the batch its give-up names");
        assert!(matches!(core.jobs[&id].state, JobState::Failed { .. }));
        drop(core);
    }

    /// Settles every block whose proof is ready.
    fn settle(core: &mut Core) {
        while let Some(block) = core.next_block() {
            core.mark_settled(block.height).expect("settled");
        }
    }

    /// A settled block is history: its transactions, witnesses and proofs leave memory, its
    /// proofs leave the database, and its transactions are still answered for (their status,
    /// and a copy refused as already accepted), across restarts. A database from a version
    /// that kept settled history is brought to this at its next open.
    #[test]
    fn settled_history_leaves_memory_and_the_database_and_is_still_answered_across_restarts() {
        let test = TestDir::new("history", 2);
        let (open, close) = (|| test.open(), TestDir::close);
        let arrivals = arrivals(16, 0.0);
        let again = |i: usize| arrivals[i].clone();
        let hash = |i: usize| arrivals[i].hash;

        // Two blocks of two batches, every job proven.
        let mut core = open();
        for i in 0..16 {
            core.submit(again(i)).expect("accepted");
        }
        prove(&mut core);
        let state = |core: &Core, i: usize| {
            let s = core.tx_status(&hash(i)).expect("read").expect("known");
            (proto::v1::TxState::try_from(s.state).expect("state"), s.sequence, s.batch, s.block)
        };
        assert_eq!(state(&core, 0), (proto::v1::TxState::Proven, 0, 0, 1));
        let block1 = core.next_block().expect("block 1 is ready");
        assert_eq!((block1.height, block1.txs.len()), (1, 8));
        core.mark_settled(1).expect("settled");

        let proofs = |core: &Core| {
            let batches = core.scan(T_PROOF).expect("scan").into_iter().map(|(b, _)| b).collect::<Vec<_>>();
            let merges = core.db.scan_prefix([T_MERGE]).count();
            (batches, merges)
        };
        let check = |core: &Core| {
            let status = core.status();
            assert_eq!(
                (status.accepted_txs, status.pending_txs, status.settled_txs, status.proven_txs),
                (16, 8, 8, 16)
            );
            // In memory: block 2's transactions, witnesses and proofs, and nothing of block 1's.
            assert_eq!((core.txs.len(), core.by_hash.len()), (8, 8));
            assert!((0..8).all(|i| !core.by_hash.contains_key(&hash(i))));
            assert!(core.batches.range(0..2).all(|b| b.witness.is_none() && b.proof.is_none()));
            assert!(core.batches.range(2..4).all(|b| b.witness.is_some() && b.proof.is_some()));
            assert!(core.blocks[0].merges.is_empty() && core.blocks[1].merges.len() == 1);
            // In the database: block 2's proofs only.
            assert_eq!(proofs(core), (vec![2, 3], 1));
            // Still answered for.
            assert_eq!(state(core, 0), (proto::v1::TxState::Settled, 0, 0, 1));
            assert_eq!(state(core, 7), (proto::v1::TxState::Settled, 7, 1, 1));
            assert_eq!(state(core, 8), (proto::v1::TxState::Proven, 8, 2, 2));
            assert_eq!(core.tx_status(&[7; 32]).expect("read"), None);
            let mut near = hash(0);
            near[31] ^= 1;
            assert_eq!(core.tx_status(&near).expect("read"), None, "a settled hash's first bytes, not its hash");
            assert_eq!(core.tx_status(&[7; 5]).expect("read"), None);
            let next = core.next_block().expect("block 2 is ready");
            assert_eq!((next.height, next.txs.len()), (2, 8));
            assert_eq!(next.txs, arrivals[8..].iter().map(|a| a.signed.encode()).collect::<Vec<_>>());
            next
        };
        let block2 = check(&core);
        for (i, why) in [(0, "settled"), (8, "pending")] {
            let e = core.submit(again(i)).expect_err("a copy");
            assert_eq!(e.code(), tonic::Code::AlreadyExists, "{why}: {e:?}");
        }
        let root = core.state().root();
        close(core);

        let mut core = open();
        assert_eq!(check(&core), block2, "the same block 2 after a restart");
        assert_eq!(core.state().root(), root);
        let e = core.submit(again(3)).expect_err("a copy of a settled transaction");
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        close(core);

        // As a version that kept settled history would have left it: block 1's proofs and log
        // entries still there, no index of its transactions, no lists of hashes, no settled
        // state saved.
        {
            let db = test.db();
            let mut old = sled::Batch::default();
            old.remove(INDEX_FROM);
            for r in db.scan_prefix([T_HASHES]) {
                old.remove(r.expect("read").0);
            }
            old.remove(SNAPSHOT);
            for r in db.scan_prefix([snapshot::T_LEAF]).chain(db.scan_prefix([snapshot::T_KEY])) {
                old.remove(r.expect("read").0);
            }
            // Its log held one transaction a record.
            for r in db.scan_prefix([T_TXS]) {
                old.remove(r.expect("read").0);
            }
            for (i, a) in arrivals.iter().enumerate() {
                old.insert(&k(T_TX, i as u64), a.signed.encode());
            }
            old.insert(&k(T_PROOF, 0), &[1u8; 64][..]);
            old.insert(merge_key(1, 2), &[2u8; 64][..]);
            db.apply_batch(old).expect("write");
            db.flush().expect("flush");
        }
        let core = open();
        assert_eq!(check(&core), block2, "an old database brought up to date");
        assert_eq!(block_hashes(&core.db, 1).expect("read"), Some(arrivals[..8].iter().map(|a| a.hash).collect()));
        assert_eq!(core.db.scan_prefix([T_INDEX]).count() + core.db.scan_prefix(INDEXED).count(), 0);
        assert_eq!(core.state().root(), root);
        assert_eq!(Snapshot::read(&core.db).expect("read").map(|s| s.height), Some(1), "the settled state saved");
        assert_eq!(core.scan(T_TX).expect("scan")[0].0, 8, "and block 1's log entries gone");
        close(core);
        let mut core = open();
        assert_eq!((check(&core), core.state().root()), (block2, root), "restarted from it");

        // Block 2 settles: nothing is left in memory.
        core.mark_settled(2).expect("settled");
        assert_eq!((core.txs.len(), core.by_hash.len(), proofs(&core)), (0, 0, (vec![], 0)));
        assert_eq!(state(&core, 15), (proto::v1::TxState::Settled, 15, 3, 2));
        assert!(core.next_block().is_none());
        drop(core);
    }

    /// Settling is gathered under the lock, written without it, and taken back: while the write
    /// is out, arrivals go on and the block is not settled twice; a write that failed changes
    /// nothing, and the block settles again.
    #[test]
    fn a_settling_written_without_the_lock_takes_effect_only_when_written() {
        let test = TestDir::new("settling", 2);
        let arrivals = arrivals(12, 0.25);
        let mut core = test.open();
        for a in &arrivals[..8] {
            core.submit(a.clone()).expect("accepted");
        }
        prove(&mut core);
        let proven = |core: &Core, i: usize| {
            let s = core.tx_status(&arrivals[i].hash).expect("read").expect("known");
            proto::v1::TxState::try_from(s.state).expect("state")
        };

        let s = core.settling(1).expect("gathered").expect("block 1 is next");
        assert!(core.settling(1).expect("gathered").is_none(), "not twice at once");
        // Meanwhile the sequencer goes on.
        core.submit(arrivals[8].clone()).expect("accepted while the write is out");
        assert_eq!(proven(&core, 0), proto::v1::TxState::Proven);
        let e = core.settled(s, Err(anyhow::anyhow!("disk full"))).map(drop).expect_err("the write failed");
        assert!(e.to_string().contains("disk full"), "{e:#}");
        assert_eq!((core.settled_height, core.settled_txs, core.txs.len()), (0, 0, 9));
        assert_eq!(core.db.get(SETTLED).expect("read"), None);
        assert_eq!(core.next_block().map(|b| b.height), Some(1), "still the next block");

        let mut s = core.settling(1).expect("gathered").expect("settled again");
        let written = s.write();
        core.settled(s, written).expect("settled");
        assert_eq!((core.settled_height, core.settled_txs, core.txs.len()), (1, 8, 1));
        assert_eq!(proven(&core, 0), proto::v1::TxState::Settled);
        assert!(core.settling(1).expect("gathered").is_none(), "settled once");
        let root = core.state().root();
        TestDir::close(core);
        let core = test.open();
        assert_eq!((core.settled_height, core.settled_txs, core.txs.len()), (1, 8, 1));
        assert_eq!((proven(&core, 7), proven(&core, 8)), (proto::v1::TxState::Settled, proto::v1::TxState::Executed));
        assert_eq!(core.state().root(), root);
    }

    /// While block 1's settling is out, block 2 is the one to submit, and it is the same block
    /// before and after block 1 is taken back; it is settled only after that. A failed write
    /// makes block 1 the next again.
    #[test]
    fn the_next_block_is_ready_while_one_is_being_settled() {
        let test = TestDir::new("settling-next", 1);
        let mut core = test.open();
        for a in arrivals(8, 0.25) {
            core.submit(a).expect("accepted");
        }
        prove(&mut core);
        let first = core.next_block().expect("block 1");
        assert_eq!(first.height, 1);
        // Both are out at once, for several blocks in flight; none after them is proven.
        let at = |core: &Core, h: u64| core.ready_block_at(h).map(ReadyBlock::into_proto);
        assert_eq!(at(&core, 1).as_ref(), Some(&first));
        assert_eq!(at(&core, 2).map(|b| (b.height, b.old_root)), Some((2, first.new_root.clone())));
        assert!(at(&core, 3).is_none());

        let s = core.settling(1).expect("gathered").expect("block 1 is next");
        assert!(at(&core, 1).is_none(), "block 1 is being settled");
        let next = core.next_block().expect("block 2 while block 1 is written");
        assert_eq!((next.height, &next.old_root), (2, &first.new_root));
        assert!(core.settling(2).expect("gathered").is_none(), "not before block 1 is taken back");
        core.settled(s, Err(anyhow::anyhow!("disk full"))).map(drop).expect_err("the write failed");
        assert_eq!(core.next_block().map(|b| b.height), Some(1), "block 1 again");

        let mut s = core.settling(1).expect("gathered").expect("block 1 again");
        assert_eq!(core.next_block().as_ref(), Some(&next));
        let written = s.write();
        core.settled(s, written).expect("settled");
        assert_eq!(core.next_block().as_ref(), Some(&next), "the same block once block 1 is settled");
        assert!(at(&core, 1).is_none(), "block 1 is settled");
        core.mark_settled(2).expect("settled");
        assert_eq!((core.settled_height, core.settled_txs), (2, 8));
        assert!(core.next_block().is_none());
        assert!(at(&core, 2).is_none() && at(&core, 3).is_none());
    }

    /// How long the oldest pending job has waited for a worker (`rollup status`, the metrics'
    /// backlog gauge), and each pending job's wait (`rollup jobs`); a job leased waits no more.
    #[test]
    fn the_oldest_pending_job_s_wait_is_reported() {
        let mut core = TestDir::new("pending-age", 4).open();
        assert_eq!(core.status().oldest_pending_ms, 0, "nothing pending");
        for arrival in arrivals(4, 0.0) {
            core.submit(arrival).expect("accepted");
        }
        core.collect_hashed(true);
        let pending = core.jobs.values().find(|j| j.state == JobState::Pending).expect("batch 0's job").key;
        std::thread::sleep(Duration::from_millis(40));
        let waited = core.status().oldest_pending_ms;
        assert!(waited >= 40, "waited {waited} ms");
        let info = super::super::service::job_info(core.job(pending.id()).expect("job"));
        assert!(info.pending_ms >= 40 && info.state == "pending", "{info:?}");
        assert_eq!(core.lease("w", Instant::now()).map(|l| l.key), Some(pending));
        assert_eq!(core.status().oldest_pending_ms, 0, "leased: none pending");
        let info = super::super::service::job_info(core.job(pending.id()).expect("job"));
        assert_eq!((info.pending_ms, info.state.as_str()), (0, "leased"));
    }

    /// A batch not full is sealed by its timeout only when a worker has asked for work and
    /// found none since the last job or seal: with every worker busy its proof could not start
    /// sooner, so it keeps filling. A full batch seals at once, whoever waits.
    #[test]
    fn a_batch_not_full_is_sealed_by_its_timeout_only_for_a_worker_waiting() {
        let mut test = TestDir::new("timer-seal", 4);
        // Past any batch's timeout so far, within every lease (a slow machine included).
        test.params.batch_timeout = Duration::from_secs(30);
        test.params.lease = Duration::from_secs(600);
        let later = || Instant::now() + Duration::from_secs(31);
        let mut core = test.open();
        let mut a = arrivals(7, 0.0).into_iter();
        let mut submit = |core: &mut Core, n: usize| {
            for arrival in a.by_ref().take(n) {
                core.submit(arrival).expect("accepted");
            }
        };
        let sealed = |core: &Core| core.status().batches;

        submit(&mut core, 2);
        core.tick(later()).expect("tick");
        assert_eq!(sealed(&core), 0, "no worker has asked: the batch keeps filling");
        assert_eq!(core.status().open_txs, 2);
        assert!(core.lease("w", Instant::now()).is_none(), "nothing to prove yet");
        core.tick(Instant::now()).expect("tick");
        assert_eq!(sealed(&core), 0, "a worker waits, but the timeout is not up");
        core.tick(later()).expect("tick");
        assert_eq!(sealed(&core), 1, "sealed for the worker waiting");
        assert_eq!((core.batches[0].end, core.status().open_txs), (2, 0));

        // Asking while that batch hashes is not waiting: its job is the worker's next.
        let deadline = Instant::now() + Duration::from_secs(10);
        let lease = loop {
            if let Some(lease) = core.lease("w", Instant::now()) {
                break lease;
            }
            assert!(!core.worker_waiting, "a worker asking while a batch hashes is not waiting");
            assert!(Instant::now() < deadline, "no job for the sealed batch after 10 s");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(lease.key, JobKey::Batch(0));

        // "w" is busy and no one else asks: the next batch keeps filling past its timeout,
        // and seals when full.
        submit(&mut core, 2);
        core.tick(later()).expect("tick");
        assert_eq!(sealed(&core), 1, "every worker busy: the batch keeps filling");
        submit(&mut core, 2);
        assert_eq!(sealed(&core), 2, "a full batch seals whoever waits");
        assert_eq!(core.batches[1].end, 6);

        // One more transaction open. A second worker takes batch 1's job: still no one waits.
        submit(&mut core, 1);
        core.collect_hashed(true);
        assert_eq!(core.lease("v", Instant::now()).map(|l| l.key), Some(JobKey::Batch(1)));
        core.tick(later()).expect("tick");
        assert_eq!(sealed(&core), 2, "both workers busy");
        // A third finds nothing: the open batch is sealed for it, and its job is its next.
        assert!(core.lease("u", Instant::now()).is_none());
        core.tick(later()).expect("tick");
        assert_eq!(sealed(&core), 3);
        assert_eq!(core.batches[2].end, 7);
        core.collect_hashed(true);
        assert_eq!(core.lease("u", Instant::now()).map(|l| l.key), Some(JobKey::Batch(2)));
        assert!(!core.worker_waiting, "a job taken: no one is known to wait");
        assert_eq!(core.counters.sealed, (1, 2), "one full, two by their timeout");
    }

    /// A worker's lease request is held until a job is pending and handed the job as it comes
    /// (a long poll, [`super::super::service::Shared::lease`]). A held request counts as a
    /// worker waiting: each job made pending wakes one, and the open batch is sealed, once its
    /// timeout is up, for a held request that the jobs queued and hashing will not serve.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_request_held_for_a_job_gets_one_as_it_comes() {
        let mut test = TestDir::new("long-poll", 4);
        test.params.batch_timeout = Duration::from_secs(30);
        test.params.lease = Duration::from_secs(600);
        let later = || Instant::now() + Duration::from_secs(31);
        let core = test.open();
        let waiters = core.waiters();
        let shared = super::super::service::Shared::new(core, String::new());
        // Past the test's run, however slow the machine: an answer before it is a job.
        let wait = Duration::from_secs(600);
        let hold = |name: &'static str| {
            let s = shared.clone();
            tokio::spawn(async move { s.lease(name, wait).await.map(|l| l.key) })
        };
        let (a, b) = (hold("a"), hold("b"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while waiters.held() < 2 {
            assert!(Instant::now() < deadline, "the two requests not held after 20 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Nothing open and nothing to prove: both wait.
        shared.lock().tick(later()).expect("tick");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!a.is_finished() && !b.is_finished(), "no job yet: the requests are held");
        assert_eq!(shared.lock().status().workers_waiting, 2);

        // Six transactions: batch 0 fills and seals at once, two stay open.
        {
            let mut core = shared.lock();
            for arrival in arrivals(6, 0.0) {
                core.submit(arrival).expect("accepted");
            }
            assert_eq!((core.status().batches, core.status().open_txs), (1, 2));
        }
        // Batch 0's job, once its hashing is back, wakes one request; the other still waits,
        // so the open batch is sealed for it, and its job is that request's.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(a.is_finished() && b.is_finished()) {
            assert!(Instant::now() < deadline, "a held request got no job after 20 s of ticks");
            shared.lock().tick(later()).expect("tick");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut got = vec![a.await.expect("a"), b.await.expect("b")];
        got.sort();
        assert_eq!(got, vec![Some(JobKey::Batch(0)), Some(JobKey::Batch(1))]);
        assert_eq!(shared.lock().counters.sealed, (1, 1), "one full, one by its timeout for a request held");
        assert_eq!(waiters.held(), 0);

        // A request no job comes for answers empty when its wait is up, and is counted no more.
        assert!(shared.lease("c", Duration::from_millis(20)).await.is_none());
        assert_eq!(waiters.held(), 0);
    }

    /// Jobs are planned as their inputs come, not by scanning the work in flight: a batch's
    /// when its hashing is done, a merge's when its last child is proven or, for a block
    /// closed by its timer after its batches were proven, when it closes. (Every lease in a
    /// test also checks that no job is missing.)
    #[test]
    fn a_block_closed_by_its_timer_after_its_batches_are_proven_gets_its_merge() {
        let test = TestDir::new("timer-merge", 4);
        let mut core = test.open();
        for a in arrivals(8, 0.25) {
            core.submit(a).expect("accepted");
        }
        prove(&mut core);
        assert_eq!((core.blocks.end(), core.jobs.len()), (0, 2), "two batches proven, no block yet");
        core.tick(Instant::now() + Duration::from_secs(3601)).expect("tick");
        assert_eq!(core.blocks.end(), 1, "closed by its timer");
        let lease = core.lease("w", Instant::now()).expect("the merge");
        assert_eq!(lease.key, JobKey::Merge { height: 1, node: 2 });
        assert!(matches!(&lease.payload, Payload::Merge(children) if children.len() == 2));
        record(&mut core, lease.id, vec![9; 64]);
        assert_eq!(core.next_block().map(|b| b.height), Some(1));
    }

    /// A job re-queued when its lease lapsed, then proven by the worker that held it, leaves
    /// the queue: the queue's length is the work coming that the seal rule weighs against the
    /// lease requests held (`Core::worker_idle`), and a stale entry there kept a batch from
    /// being sealed for a waiting worker until that worker asked again.
    #[test]
    fn a_lapsed_job_proven_by_its_first_worker_leaves_the_queue() {
        let test = TestDir::new("lapsed-proven", 4);
        let mut core = test.open();
        for a in arrivals(4, 0.0) {
            core.submit(a).expect("accepted");
        }
        core.collect_hashed(true);
        let now = Instant::now();
        let id = core.lease("a", now).expect("batch 0's job").id;
        let check = core.result_check(id).expect("in flight").expect("not done");
        core.tick(now + Duration::from_secs(61)).expect("tick");
        assert_eq!(core.pending.len(), 1, "lapsed: queued again");
        let checked = check.store(vec![1; 64].into(), Ok(())).expect("written");
        core.record_result(id, checked, Instant::now()).expect("recorded");
        assert_eq!(core.job(id).map(|j| j.state.clone()), Some(JobState::Done));
        assert!(core.pending.is_empty(), "proven: out of the queue");
        // One lease request held and nothing coming: a worker is idle.
        let waiters = core.waiters();
        let _held = waiters.hold();
        assert!(core.worker_idle());
    }

    /// A result's proof is written without the lock, so two results of one job (its lease
    /// lapsed and another worker took it) and a settlement can come between its write and its
    /// record. The first proof written is the job's on disk whichever result is recorded
    /// first; and a proof written after its block's proofs left the database (the block
    /// settled, or its settling was written) is removed, so none outlives its block, there or
    /// after a restart.
    #[test]
    fn a_proof_written_without_the_lock_is_kept_once_and_never_outlives_its_block() {
        let test = TestDir::new("results", 1);
        let mut core = test.open();
        for a in arrivals(12, 0.25) {
            core.submit(a).expect("accepted");
        }
        // Three batches, a block each.
        core.collect_hashed(true);
        let on_disk = |core: &Core, b: u64| core.db.get(k(T_PROOF, b)).expect("read").map(|v| v.to_vec());
        let proof = |tag: u8| -> Proof { vec![tag; 64].into() };
        // Batch `b`'s job leased to "a", lapsed, and leased to "b": both hold a check.
        let twice = |core: &mut Core, b: u64| {
            let id = JobKey::Batch(b).id();
            let now = Instant::now();
            assert_eq!(core.lease("a", now).map(|l| l.id), Some(id));
            core.tick(now + Duration::from_secs(61)).expect("tick");
            assert_eq!(core.lease("b", now).map(|l| l.id), Some(id), "lapsed, and leased again first");
            let check = || core.result_check(id).expect("in flight").expect("not done");
            (id, check(), check())
        };

        // Batch 0: "b" writes first, "a" records first. The proof on disk is "b"'s, kept.
        let (id, a, b) = twice(&mut core, 0);
        let b = b.store(proof(2), Ok(())).expect("written");
        let a = a.store(proof(1), Ok(())).expect("not written: one is there");
        assert_eq!((a.stored, b.stored), (false, true));
        core.record_result(id, a, Instant::now()).expect("recorded");
        core.record_result(id, b, Instant::now()).expect("done already: taken as nothing");
        assert_eq!(on_disk(&core, 0), Some(vec![2; 64]));
        assert_eq!(core.batches[0].proof.as_deref(), Some(&[1u8; 64][..]), "the lock took a's");
        assert!(core.result_check(id).expect("known").is_none(), "a third result is not checked");

        // Batch 1: "b"'s result is written after its block settled.
        let (id, a, b) = twice(&mut core, 1);
        let a = a.store(proof(1), Ok(())).expect("written");
        core.record_result(id, a, Instant::now()).expect("recorded");
        prove(&mut core);
        settle(&mut core);
        assert_eq!(core.settled_height, 3);
        let b = b.store(proof(2), Ok(())).expect("written");
        assert!(b.stored, "its block's proofs left the database");
        let e = core.record_result(id, b, Instant::now()).expect_err("settled");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert_eq!(on_disk(&core, 1), None);

        // Batch 3: "b"'s result is written between its block's settling write and its record.
        for a in arrivals(16, 0.25).into_iter().skip(12) {
            core.submit(a).expect("accepted");
        }
        core.collect_hashed(true);
        let (id, a, b) = twice(&mut core, 3);
        let a = a.store(proof(1), Ok(())).expect("written");
        core.record_result(id, a, Instant::now()).expect("recorded");
        prove(&mut core);
        let mut s = core.settling(4).expect("gathered").expect("block 4 is next");
        let written = s.write();
        let b = b.store(proof(2), Ok(())).expect("written");
        assert!(b.stored);
        core.record_result(id, b, Instant::now()).expect("done already");
        core.settled(s, written).expect("settled");
        assert_eq!(on_disk(&core, 3), None);

        TestDir::close(core);
        let core = test.open();
        assert_eq!(core.settled_height, 4);
        assert_eq!(core.db.scan_prefix([T_PROOF]).count() + core.db.scan_prefix([T_MERGE]).count(), 0);
    }

    /// A settling is one write that settles the block, then removals one record at a time (so
    /// that sled's batch lock is held briefly). A process killed between the two finds the
    /// block settled at its open, and the open finishes the rest: the block's transactions
    /// indexed from its list, its log entries and proofs gone, the block leaving the index's
    /// window pruned.
    #[test]
    fn a_settling_cut_short_after_its_first_write_is_finished_at_the_open() {
        let mut test = TestDir::new("settling-cut", 1);
        test.params.tx_index_blocks = 1;
        let arrivals = arrivals(12, 0.25);
        let mut core = test.open();
        for a in &arrivals[..8] {
            core.submit(a.clone()).expect("accepted");
        }
        prove(&mut core);
        let mut s = core.settling(1).expect("gathered").expect("block 1");
        let written = s.write();
        core.settled(s, written).expect("settled");
        // Block 2's settling, killed after its first write: block 1 leaves the window with it.
        let mut s = core.settling(2).expect("gathered").expect("block 2");
        s.write_settled().expect("written");
        assert!(block_hashes(&core.db, 1).expect("read").is_some(), "block 1 is not pruned yet");
        assert!(logged(&core.db).contains(&4), "its log entries are still there");
        drop(s);
        TestDir::close(core);

        let core = test.open();
        assert_eq!((core.settled_height, core.settled_txs, core.index_from()), (2, 8, 2));
        let status = |i: usize| core.tx_status(&arrivals[i].hash).expect("read").map(|s| (s.state, s.sequence));
        let settled = proto::v1::TxState::Settled as i32;
        assert_eq!(
            (4..8).map(status).collect::<Vec<_>>(),
            (4..8).map(|i| Some((settled, i as u64))).collect::<Vec<_>>()
        );
        assert_eq!(status(0), None, "block 1 pruned");
        assert_eq!(block_hashes(&core.db, 1).expect("read"), None);
        assert_eq!(logged(&core.db), Vec::<u64>::new(), "no settled transaction left in the log");
        assert_eq!(core.db.scan_prefix([T_PROOF]).count() + core.db.scan_prefix([T_MERGE]).count(), 0);
        assert_eq!(core.index.len(), 4, "block 2's, and no more");
    }

    /// The index of settled hashes keeps the last `tx_index_blocks` settled blocks' transactions:
    /// an older one's status is unknown, and a copy of it is refused by its spent nonce where a
    /// copy of one in the window is refused as already accepted, both changing nothing. A window
    /// made smaller at a restart is pruned at the open; a database from a version that kept the
    /// whole index has its blocks' lists of hashes built once, the same as the settling writes.
    #[test]
    fn the_index_keeps_a_window_of_settled_blocks_across_restarts_and_window_changes() {
        let mut test = TestDir::new("index-window", 1);
        let arrivals = arrivals(28, 0.25);
        let lists = |core: &Core| {
            let lists = core.scan(T_HASHES).expect("scan");
            let lists: Vec<(u64, Vec<u8>)> = lists.into_iter().map(|(h, v)| (h, v.to_vec())).collect();
            // Blocks of one batch of four: block h's first batch is h - 1, its first
            // transaction 4 (h - 1).
            let h = core.index_from();
            assert_eq!(core.index_from, IndexFrom { height: h, batch: h - 1, tx: 4 * (h - 1) });
            let saved = core.db.get(INDEX_FROM).expect("read").map(|v| IndexFrom::from_bytes(&v).expect("record"));
            assert_eq!(saved, Some(core.index_from), "saved as it is in memory");
            // The records of the blocks pruned are gone, in memory and from the log's ends.
            let first = |prefix| core.scan(prefix).expect("scan").first().map(|(n, _)| *n);
            assert_eq!((core.batches.base as u64, core.blocks.base as u64), (h - 1, h - 1));
            assert_eq!((first(T_BATCH), first(T_BLOCK)), (Some(h - 1), Some(h)));
            assert_eq!(core.db.scan_prefix([T_INDEX]).count(), 0, "no index in the database");
            (h, core.index.len(), lists)
        };
        // Block `height`'s list: blocks of one batch of four.
        let list = |height: u64| {
            let txs = (height as usize - 1) * 4..height as usize * 4;
            (height, arrivals[txs].iter().flat_map(|a| a.hash).collect::<Vec<u8>>())
        };
        let known = |core: &Core, txs: Range<usize>| {
            txs.map(|i| core.tx_status(&arrivals[i].hash).expect("read").map(|s| (s.sequence, s.batch, s.block)))
                .collect::<Vec<_>>()
        };
        let settled =
            |txs: Range<usize>| txs.map(|i| Some((i as u64, i as u64 / 4, i as u64 / 4 + 1))).collect::<Vec<_>>();
        let unknown = |txs: Range<usize>| vec![None; txs.len()];
        let reopen = |test: &mut TestDir, core: Core, window: u64| {
            TestDir::close(core);
            test.params.tx_index_blocks = window;
            test.open()
        };
        // An index in the database, every settled transaction's, and no lists.
        let as_before_pruning = |core: Core| {
            let mut old = sled::Batch::default();
            old.remove(INDEX_FROM);
            let mut seq = core.index_from.tx;
            for (h, list) in core.scan(T_HASHES).expect("scan") {
                old.remove(&k(T_HASHES, h));
                for hash in list.chunks(32) {
                    old.insert(&index_key(hash.try_into().expect("32 bytes"))[..], &seq.to_be_bytes());
                    seq += 1;
                }
            }
            old.insert(INDEXED, &core.settled_height.to_be_bytes());
            core.db.apply_batch(old).expect("write");
            core
        };

        // Six blocks settled, every one indexed and listed.
        let mut core = test.open();
        for a in &arrivals[..24] {
            core.submit(a.clone()).expect("accepted");
        }
        prove(&mut core);
        settle(&mut core);
        let all = (1, 24, (1..=6).map(list).collect::<Vec<_>>());
        assert_eq!(lists(&core), all);
        assert_eq!(known(&core, 0..24), settled(0..24));

        // As a version that kept the whole index left it: the lists are built at the open.
        let core = reopen(&mut test, as_before_pruning(core), 0);
        assert_eq!(lists(&core), all);

        // The same with a window of two blocks: what fell out of it is pruned at the open.
        let core = reopen(&mut test, as_before_pruning(core), 2);
        let window = (5, 8, vec![list(5), list(6)]);
        assert_eq!(lists(&core), window);
        assert_eq!(known(&core, 0..24), [unknown(0..16), settled(16..24)].concat());
        let mut core = reopen(&mut test, core, 2);
        assert_eq!(lists(&core), window);

        // A copy of a pruned transaction is refused by its nonce, one in the window as already
        // accepted; neither changes anything.
        let (state, accepted) = (core.state().clone(), core.status().accepted_txs);
        let e = core.submit(arrivals[3].clone()).expect_err("a copy of a pruned transaction");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = core.submit(arrivals[17].clone()).expect_err("a copy of one in the window");
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        // The whole state, not its root: the root moves only when a batch is sealed.
        assert!(*core.state() == state, "a refused copy changed the state");
        assert_eq!(core.status().accepted_txs, accepted);

        // A block settled: one falls out.
        for a in &arrivals[24..] {
            core.submit(a.clone()).expect("accepted");
        }
        prove(&mut core);
        settle(&mut core);
        assert_eq!(lists(&core), (6, 8, vec![list(6), list(7)]));
        assert_eq!(known(&core, 16..28), [unknown(16..20), settled(20..28)].concat());

        // A smaller window at a restart, then none: what was pruned stays pruned.
        let core = reopen(&mut test, core, 1);
        assert_eq!(lists(&core), (7, 4, vec![list(7)]));
        let core = reopen(&mut test, core, 0);
        assert_eq!(lists(&core), (7, 4, vec![list(7)]));
        assert_eq!(known(&core, 20..28), [unknown(20..24), settled(24..28)].concat());
    }

    /// A restart starts from the state the last settled block left, saved in the write that
    /// settled it, and replays only the log after it, whose settled entries are gone: the same
    /// values and tree nodes as before (pools and fees included), the keys of the accounts
    /// registered in settled blocks, the next block as it was, and the chain goes on to the
    /// state of executing everything from genesis. A directory whose saved state does not hash
    /// to its root, or whose record of it disagrees with the settled height, is refused.
    #[test]
    fn a_restart_starts_from_the_settled_state_and_replays_only_the_log_after_it() {
        let test = TestDir::new("saved-state", 2);
        let (open, close) = (|| test.open(), TestDir::close);
        let arrivals = arrivals(80, 0.3);
        let again = |i: usize| arrivals[i].clone();
        assert!(matches!(arrivals[63].signed.tx, Tx::Register(Register { account: 9, .. })));

        // Blocks of two batches of four: 64 transactions settle (blocks 1 to 8), 8 are block 9's.
        let mut core = open();
        for i in 0..64 {
            core.submit(again(i)).expect("accepted");
        }
        prove(&mut core);
        settle(&mut core);
        for i in 64..73 {
            core.submit(again(i)).expect("accepted");
        }
        prove(&mut core);
        assert_eq!((core.settled_height, core.settled_txs, core.accepted()), (8, 64, 73));
        assert!(core.next_block().is_some(), "block 9 proven, not settled");
        // The status but its job counts (done jobs are not recreated by a replay).
        let status = |core: &Core| proto::v1::SequencerStatus { jobs: Vec::new(), ..core.status() };
        let (state, before) = (core.state().clone(), status(&core));
        let block9 = core.next_block();
        close(core);

        let db = test.db();
        assert_eq!(Snapshot::read(&db).expect("read").map(|s| s.height), Some(8));
        assert_eq!(logged(&db), (64..73).collect::<Vec<_>>(), "only the unsettled transactions are logged");
        drop(db);

        let mut core = open();
        assert!(*core.state() == state, "the same values and tree nodes");
        assert_eq!(status(&core), before);
        assert_eq!(core.next_block(), block9);
        let key = core.registered_key(9).expect("registered in block 8");
        assert_eq!(key.to_bytes(), devnet_key(9).public_key().to_bytes());
        for i in [3, 63] {
            let s = core.tx_status(&arrivals[i].hash).expect("read").expect("known");
            assert_eq!((s.state, s.sequence), (proto::v1::TxState::Settled as i32, i as u64));
        }
        // On to block 10, then against executing everything from genesis in batches of four.
        for i in 73..80 {
            core.submit(again(i)).expect("accepted");
        }
        prove(&mut core);
        settle(&mut core);
        assert_eq!(core.settled_height, 10);
        let mut reference = Executor::new(test.genesis.build().expect("genesis"), 4);
        for chunk in arrivals.chunks(4) {
            for a in chunk {
                reference.apply(&a.signed.tx).expect("valid");
            }
            reference.seal_batch().expect("seal");
        }
        assert!(*core.state() == *reference.state(), "the state of executing everything from genesis");
        close(core);
        assert!(*open().state() == *reference.state(), "and restarted, from block 10's saved state");

        // A saved leaf changed under the root: refused.
        let db = test.db();
        let (leaf, value) = db.scan_prefix([snapshot::T_LEAF]).next().expect("a leaf").expect("read");
        let mut bad = value.to_vec();
        bad[7] ^= 1;
        db.insert(&leaf, bad).expect("write");
        db.flush().expect("flush");
        drop(db);
        let reopen = || Core::open(test.params.clone(), test.db(), &test.genesis, test.circuits.keys().clone());
        let e = reopen().err().expect("a corrupt saved state");
        assert!(e.to_string().contains("does not hash to block 10's root"), "{e:#}");
        // Put back, and an account's entry as a version before the fee token's balance moved
        // into the account leaf wrote it (no balance): refused as another network's state.
        let db = test.db();
        db.insert(&leaf, &value).expect("write");
        let (account, entry) = db.scan_prefix([snapshot::T_LEAF, b'a']).next().expect("an account").expect("read");
        db.insert(&account, &entry[..36]).expect("write");
        db.flush().expect("flush");
        drop(db);
        let e = reopen().err().expect("an earlier layout");
        assert!(e.to_string().contains("another network's state") && !format!("{e:#}").contains("corrupt"), "{e:#}");
        // Put back, and account 9's saved key another (valid) key: refused.
        let db = test.db();
        db.insert(&account, entry).expect("write");
        db.insert(&leaf, value).expect("write");
        let (key, real) = snapshot::key_entry(9, &devnet_key(9).public_key());
        assert_eq!(db.get(key).expect("read").as_deref(), Some(&real[..]));
        db.insert(key, snapshot::key_entry(9, &devnet_key(10).public_key()).1).expect("write");
        db.flush().expect("flush");
        drop(db);
        let e = reopen().err().expect("a saved key changed");
        assert!(e.to_string().contains("saved key of account 9 is not the one"), "{e:#}");
        // Put back, but the record of it a block behind the settled height, with block 10's
        // transactions: refused.
        let db = test.db();
        db.insert(key, real).expect("write");
        let saved = Snapshot::read(&db).expect("read").expect("saved");
        assert_eq!(saved.txs, Some(80));
        db.insert(SNAPSHOT, Snapshot { height: 9, ..saved }.to_bytes()).expect("write");
        db.flush().expect("flush");
        drop(db);
        let e = reopen().err().expect("a saved state of another block");
        assert!(e.to_string().contains("saved at block 9 names 80 transactions, not the log's"), "{e:#}");
        // A record as a version that saved with every block wrote it (no transactions), a block
        // behind: refused; at the settled block: read as before.
        for (height, refused) in [(9, true), (10, false)] {
            let db = test.db();
            db.insert(SNAPSHOT, Snapshot { height, txs: None, ..saved }.to_bytes()).expect("write");
            db.flush().expect("flush");
            drop(db);
            match reopen() {
                Err(e) => {
                    assert!(refused && e.to_string().contains("saved is block 9's, but block 10 settled"), "{e:#}")
                }
                Ok(core) => assert!(!refused && *core.state() == *reference.state()),
            }
        }
    }

    /// The settled state is saved once `state_save_txs` transactions have settled since the last
    /// save. Between saves the log keeps the settled transactions after it, and a restart
    /// applies them over the saved state, comes to the settled block's root (a directory where
    /// they do not is refused) and saves there. A save's write that failed is settled again
    /// with the same outcome, and one cut short after its first write is finished at the open.
    #[test]
    fn the_settled_state_is_saved_every_so_many_transactions_and_a_restart_replays_those_after_it() {
        let mut test = TestDir::new("save-every", 2);
        test.params.state_save_txs = 20;
        let arrivals = arrivals(80, 0.3);
        let logged = |core: &Core| self::logged(&core.db);
        // Submitted with the log written after each batch: its runs are the batches, which a
        // save removes whole (a run that a save cuts in two stays until the next).
        let submit = |core: &mut Core, arrivals: &[Arrival]| {
            for batch in arrivals.chunks(4) {
                for a in batch {
                    core.submit(a.clone()).expect("accepted");
                }
                core.log.write().expect("written");
            }
        };
        let saved = |core: &Core| Snapshot::read(&core.db).expect("read").map(|s| (s.height, s.txs));
        // The state of executing the first `upto` transactions from genesis, in batches of four.
        let executed = |upto: usize| {
            let mut reference = Executor::new(test.genesis.build().expect("genesis"), 4);
            for chunk in arrivals[..upto].chunks(4) {
                for a in chunk {
                    reference.apply(&a.signed.tx).expect("valid");
                }
                reference.seal_batch().expect("seal");
            }
            reference.state().clone()
        };

        // Blocks of two batches of four: blocks 1 to 4 settle, the state saved at block 3 (24
        // transactions since the genesis), the log keeping block 4's; block 5 is proven.
        let mut core = test.open();
        submit(&mut core, &arrivals[..40]);
        prove(&mut core);
        for height in 1..=4 {
            core.mark_settled(height).expect("settled");
        }
        assert_eq!((core.settled_height, core.saved), (4, Saved { height: 3, txs: 24 }));
        assert_eq!(saved(&core), Some((3, Some(24))));
        assert_eq!(logged(&core), (24..40).collect::<Vec<_>>());
        let state = core.state().clone();
        assert!(state == executed(40));
        let witnesses = |core: &Core| [8, 9].map(|b| core.batches[b].witness.clone().expect("block 5's"));
        let block5 = witnesses(&core);
        TestDir::close(core);

        // The restart applies block 4's transactions over block 3's state and saves block 4's;
        // block 5's batches are executed again as they were, their commitment chain from zero.
        let mut core = test.open();
        assert!(*core.state() == state, "the same values and tree nodes");
        assert_eq!((core.settled_height, core.saved), (4, Saved { height: 4, txs: 32 }));
        assert_eq!(saved(&core), Some((4, Some(32))));
        assert_eq!(logged(&core), (32..40).collect::<Vec<_>>());
        assert!(witnesses(&core) == block5, "block 5's witnesses are not the same");

        // Blocks 5 and 6 settle without a save (16 transactions since it); block 7's save
        // fails once after its writes and is settled again.
        submit(&mut core, &arrivals[40..64]);
        prove(&mut core);
        core.mark_settled(5).expect("settled");
        core.mark_settled(6).expect("settled");
        assert_eq!((core.saved, saved(&core)), (Saved { height: 4, txs: 32 }, Some((4, Some(32)))));
        assert_eq!(logged(&core), (32..64).collect::<Vec<_>>());
        let mut s = core.settling(7).expect("gathered").expect("block 7");
        assert_eq!(s.save_from, Some(32));
        s.write().expect("written");
        let e = core.settled(s, Err(anyhow::anyhow!("a write that failed"))).err().expect("failed");
        assert!(e.to_string().contains("a write that failed"));
        assert_eq!((core.settled_height, core.saved.height), (6, 4), "nothing taken");
        core.mark_settled(7).expect("settled again");
        assert_eq!((core.saved, saved(&core)), (Saved { height: 7, txs: 56 }, Some((7, Some(56)))));
        assert_eq!(logged(&core), (56..64).collect::<Vec<_>>());
        let state = core.state().clone();
        assert!(state == executed(64), "the state of all accepted");
        TestDir::close(core);
        let core = test.open();
        assert!(*core.state() == state, "block 7's saved state, after a save settled again");
        assert_eq!(core.saved, Saved { height: 7, txs: 56 });

        // Block 8 settles without a save. A settled root that the replay of its transactions
        // does not come to: refused.
        let mut core = core;
        core.mark_settled(8).expect("settled");
        assert_eq!(logged(&core), (56..64).collect::<Vec<_>>());
        TestDir::close(core);
        let db = test.db();
        let root = db.get(SETTLED_ROOT).expect("read").expect("block 8's root");
        db.insert(SETTLED_ROOT, &digest_to_bytes(&Digest::default())[..]).expect("write");
        db.flush().expect("flush");
        drop(db);
        let reopen =
            |test: &TestDir| Core::open(test.params.clone(), test.db(), &test.genesis, test.circuits.keys().clone());
        let e = reopen(&test).err().expect("another root");
        assert!(e.to_string().contains("do not come to block 8's root"), "{e:#}");
        let db = test.db();
        db.insert(SETTLED_ROOT, root).expect("write");
        db.flush().expect("flush");
        drop(db);

        // Put back, and opened with saves every 16: block 8's state saved at the open, blocks 9
        // and 10 settle, and block 10's save is killed after its first write: the open finishes
        // it.
        test.params.state_save_txs = 16;
        let mut core = reopen(&test).expect("open");
        assert_eq!((core.saved, logged(&core)), (Saved { height: 8, txs: 64 }, vec![]));
        submit(&mut core, &arrivals[64..80]);
        prove(&mut core);
        core.mark_settled(9).expect("settled");
        let mut s = core.settling(10).expect("gathered").expect("block 10");
        assert_eq!(s.save_from, Some(64));
        s.write_settled().expect("written");
        drop(s);
        assert_eq!(logged(&core), (64..80).collect::<Vec<_>>(), "the log's entries still there");
        TestDir::close(core);
        let core = test.open();
        assert_eq!((core.settled_height, core.saved), (10, Saved { height: 10, txs: 80 }));
        assert!(logged(&core).is_empty());
        assert!(*core.state() == executed(80), "the state of executing everything from genesis");
    }

    /// Before the settled state's first save, a restart replays the log from genesis, batch by
    /// batch, and needs every settled block's ends: the index's window prunes nothing until
    /// then, however small, and catches up with the first save. (Pruned before it, the restart
    /// failed: "replaying transaction 4: batch is full".)
    #[test]
    fn the_window_prunes_nothing_before_the_first_save() {
        let mut test = TestDir::new("window-before-save", 2);
        test.params.tx_index_blocks = 1;
        test.params.state_save_txs = 30;
        let arrivals = arrivals(40, 0.25);
        let mut core = test.open();
        for a in &arrivals[..24] {
            core.submit(a.clone()).expect("accepted");
        }
        prove(&mut core);
        settle(&mut core);
        assert_eq!((core.settled_height, core.saved.height, core.index_from()), (3, 0, 1), "nothing pruned");
        let state = core.state().clone();
        TestDir::close(core);
        let mut core = test.open();
        assert!(*core.state() == state, "replayed from genesis");
        // Saved at the open, which then prunes what fell out of the window, as the settlings
        // after it do.
        assert_eq!((core.settled_height, core.saved.height, core.index_from()), (3, 3, 3));
        for a in &arrivals[24..32] {
            core.submit(a.clone()).expect("accepted");
        }
        prove(&mut core);
        settle(&mut core);
        assert_eq!((core.settled_height, core.index_from()), (4, 4));
        TestDir::close(core);
        let core = test.open();
        assert_eq!((core.settled_height, core.index_from()), (4, 4));
    }
}
