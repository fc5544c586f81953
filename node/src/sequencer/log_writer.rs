//! The log's appends, written to sled behind the sequencer's lock.
//!
//! Under the lock, an arrival (or a seal, or a block's close) only queues its log record; the
//! records reach sled in the order they were queued, in one batch per write, when someone asks
//! for them: the group commit before an acknowledgement ([`super::flusher::Flusher`]), the
//! settling before it removes a block's records, or the core when it closes.
//!
//! Why: sled 0.34 applies a batch holding a process-wide lock that stops every other insert
//! until the batch lands (its `concurrency_control`), and the settling's batch (a block's leaves,
//! about 5 ms per block of 664 on the 2-vCPU dev machine) is such a batch. With the append
//! under the sequencer's lock, every arrival, lease and result queued behind it for that long.
//! Now the lock never waits on sled for an append: an arrival's acknowledgement still waits for
//! its record to be written and flushed, but the next arrival is applied meanwhile.
//!
//! Nothing acknowledged is lost: an acknowledgement waits for a flush that started after it
//! asked, and that flush writes every record queued before it. A record not yet written when the
//! process dies was not acknowledged, and neither was any record queued after it: the records
//! are written in order, one write at a time, so what a restart finds is a prefix of the queue.
//!
//! The transactions are written packed: a write's transactions, in consecutive runs of at most
//! [`TXS_PER_RECORD`], one record a run under the first one's sequence number (`T_TXS`). One
//! record a transaction cost sled about 8–9 µs each to insert and 3–4 µs to remove on the 2-vCPU
//! dev machine, where a run of 32 packed costs about 1.1 µs and 0.3–0.4 µs a transaction: the log's
//! writes were a core's work at 100 000 tx/s, and the removals of a save's 10 000 transactions
//! 50–70 ms of the settling that made it (BENCHMARKS.md). A database from before keeps its
//! records of one transaction (`T_TX`) until they settle; they read as runs of one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

/// A record: its key and value.
type Record = (Vec<u8>, Vec<u8>);

/// A transaction's record in a database from before the runs: the key is the prefix and the
/// sequence number (big-endian), the value the transaction.
pub const T_TX: u8 = b't';
/// A run of consecutive transactions: the key is the prefix and the first one's sequence number
/// (big-endian), the value each transaction's length (four bytes, big-endian) and bytes, in
/// order.
pub const T_TXS: u8 = b'g';
/// The most transactions a run holds: a save removes the runs wholly before it, so what a run
/// keeps after a save is bounded by this.
pub const TXS_PER_RECORD: usize = 64;
/// Written with the first runs of a database: a version from before the runs reads it as a
/// transaction that does not decode and refuses the directory, changing nothing, where it would
/// otherwise find no transaction after the settled ones and lose those not settled.
const RUNS_MARKER: [u8; 9] = [T_TX, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/// A record's key: `prefix`, then `seq` big-endian, so that records sort by number (the
/// core's keys of batches, blocks, proofs and lists are the same shape).
pub(super) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut out = [prefix; 9];
    out[1..].copy_from_slice(&seq.to_be_bytes());
    out
}

fn seq_of(key: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(key.get(1..).and_then(|k| k.try_into().ok()).context("corrupt transaction log key")?))
}

/// The transactions of one run's record, in order.
fn unpack(value: &[u8]) -> Result<Vec<&[u8]>> {
    let mut txs = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let len = rest.get(..4).context("corrupt transaction log run")?;
        let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
        txs.push(rest.get(4..4 + len).context("corrupt transaction log run")?);
        rest = &rest[4 + len..];
    }
    if txs.is_empty() {
        bail!("an empty transaction log run");
    }
    Ok(txs)
}

/// The logged transactions from sequence number `from` on, in order, with their sequence
/// numbers: the records of one transaction, then the runs (the first read is the run that holds
/// `from`). Gaps are the caller's to find.
pub fn read_txs(db: &sled::Db, from: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
    let singles = db.range(seq_key(T_TX, from)..RUNS_MARKER).map(|r| {
        let (key, value) = r?;
        Ok(vec![(seq_of(&key)?, value.to_vec())])
    });
    // The run holding `from`, if it starts before it, then those after.
    let (start, failed) = match db.range(seq_key(T_TXS, 0)..=seq_key(T_TXS, from)).next_back() {
        Some(Ok((key, _))) => (key.to_vec(), None),
        Some(Err(e)) => (seq_key(T_TXS, from).to_vec(), Some(Err(e.into()))),
        None => (seq_key(T_TXS, from).to_vec(), None),
    };
    let runs = db.range(start..vec![T_TXS + 1]).map(|r| {
        let (key, value) = r?;
        let first = seq_of(&key)?;
        Ok(unpack(&value)?.into_iter().zip(first..).map(|(tx, seq)| (seq, tx.to_vec())).collect())
    });
    let txs = singles.chain(runs).flat_map(move |r: Result<Vec<(u64, Vec<u8>)>>| match r {
        Ok(txs) => txs.into_iter().filter(|(seq, _)| *seq >= from).map(Ok).collect::<Vec<_>>(),
        Err(e) => vec![Err(e)],
    });
    failed.into_iter().chain(txs)
}

/// The keys of the log's records that hold only transactions before `end`: what a save at
/// `end` makes history. A run that holds `end - 1` and later ones stays.
pub fn keys_before(db: &sled::Db, end: u64) -> Result<Vec<sled::IVec>> {
    let mut keys = Vec::new();
    for r in db.range(seq_key(T_TX, 0)..seq_key(T_TX, end)) {
        keys.push(r?.0);
    }
    let mut runs = db.range(seq_key(T_TXS, 0)..seq_key(T_TXS, end)).peekable();
    while let Some(r) = runs.next() {
        let (key, value) = r?;
        // A run ends where the next begins; the last one before `end` is read to know.
        if runs.peek().is_some() || seq_of(&key)?.saturating_add(unpack(&value)?.len() as u64) <= end {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// What is queued: records, and transactions to be written in runs.
#[derive(Default)]
struct Queue {
    records: Vec<Record>,
    txs: Vec<(u64, Vec<u8>)>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.txs.is_empty()
    }

    /// `earlier` put back ahead of what was queued since.
    fn put_back(&mut self, earlier: Queue) {
        let later = std::mem::replace(self, earlier);
        self.records.extend(later.records);
        self.txs.extend(later.txs);
    }
}

/// A handle to the queue of log records; clones share it.
#[derive(Clone)]
pub struct LogWriter {
    db: sled::Db,
    queue: Arc<Mutex<Queue>>,
    /// Whether this process has written [`RUNS_MARKER`] (once, with its first runs).
    marked: Arc<AtomicBool>,
    /// Held for the whole of a write, so that two writes land in the order they took their
    /// records. Poisoned by a write that panicked, which took records it neither wrote nor put
    /// back: no write follows it, so that nothing queued after them lands without them.
    writing: Arc<Mutex<()>>,
}

/// The queue's lock: a panic while holding it leaves nothing half-done (pushing, taking and
/// putting back whole vectors).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogWriter {
    pub fn new(db: sled::Db) -> Self {
        Self { db, queue: Arc::default(), marked: Arc::default(), writing: Arc::default() }
    }

    /// Queues `value` under `key`, to be written by the next [`LogWriter::write`].
    pub fn push(&self, key: &[u8], value: Vec<u8>) {
        locked(&self.queue).records.push((key.to_vec(), value));
    }

    /// Queues transaction `seq`, encoded, to be written by the next [`LogWriter::write`] in a run
    /// with the transactions queued before and after it.
    pub fn push_tx(&self, seq: u64, tx: Vec<u8>) {
        locked(&self.queue).txs.push((seq, tx));
    }

    /// Writes every record queued before the call, in order, in one batch (not flushed). If the
    /// write fails, the records stay queued, ahead of those queued since, for the next write.
    pub fn write(&self) -> Result<()> {
        let _writing = self.writing.lock().map_err(|_| {
            anyhow::anyhow!("a write of the log panicked and its records are lost: nothing after them is written")
        })?;
        let queued = std::mem::take(&mut *locked(&self.queue));
        if queued.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in &queued.records {
            batch.insert(&key[..], &value[..]);
        }
        let mark = !queued.txs.is_empty() && !self.marked.load(Ordering::Relaxed);
        if mark {
            batch.insert(&RUNS_MARKER[..], &b"the transactions after the records of one are in runs (g)"[..]);
        }
        // Runs of consecutive sequence numbers, at most `TXS_PER_RECORD` each.
        let mut txs = &queued.txs[..];
        while let Some(&(first, _)) = txs.first() {
            let len =
                txs.iter().take(TXS_PER_RECORD).zip(first..).take_while(|((seq, _), expected)| seq == expected).count();
            let (run, rest) = txs.split_at(len);
            let mut value = Vec::with_capacity(run.iter().map(|(_, tx)| 4 + tx.len()).sum());
            for (_, tx) in run {
                value.extend_from_slice(&(tx.len() as u32).to_be_bytes());
                value.extend_from_slice(tx);
            }
            batch.insert(&seq_key(T_TXS, first)[..], value);
            txs = rest;
        }
        if let Err(e) = self.db.apply_batch(batch) {
            locked(&self.queue).put_back(queued);
            return Err(e.into());
        }
        if mark {
            self.marked.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`LogWriter::write`], then sled's flush: everything queued before the call is durable.
    pub fn write_and_flush(&self) -> Result<()> {
        self.write()?;
        self.db.flush()?;
        Ok(())
    }

    /// Records queued and not written.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        let queue = locked(&self.queue);
        queue.records.len() + queue.txs.len()
    }

    /// Drops the queued records, as a process killed now would lose them.
    #[cfg(test)]
    pub fn discard(&self) {
        *locked(&self.queue) = Queue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test's database directory, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn temp_db(name: &str) -> (sled::Db, TempDir) {
        let dir = std::env::temp_dir().join(format!("rollup-log-writer-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        (sled::open(&dir).expect("open"), TempDir(dir))
    }

    /// Records reach the database only when written, all of them, with the values queued last
    /// for a key winning, as if inserted one at a time in order.
    #[test]
    fn records_are_written_when_asked_in_their_order() {
        let (db, _dir) = temp_db("order");
        let log = LogWriter::new(db.clone());
        log.push(b"a", vec![1]);
        log.push(b"b", vec![2]);
        log.push(b"a", vec![3]);
        assert_eq!(db.get(b"a").expect("get"), None, "queued, not written");
        assert_eq!(log.queued(), 3);
        log.write_and_flush().expect("write");
        assert_eq!(log.queued(), 0);
        assert_eq!(db.get(b"a").expect("get").as_deref(), Some(&[3u8][..]));
        assert_eq!(db.get(b"b").expect("get").as_deref(), Some(&[2u8][..]));
    }

    /// A write's transactions land in runs of consecutive sequence numbers, at most
    /// `TXS_PER_RECORD` a run; they read back from any point, a run cut by it included, after
    /// the records of one transaction an older version wrote; a save removes the runs wholly
    /// before it and keeps the one it cuts; a corrupt run is an error, not a panic.
    #[test]
    fn transactions_are_written_in_runs_read_from_any_point_and_removed_whole() {
        let (db, _dir) = temp_db("runs");
        let tx = |seq: u64| vec![seq as u8; (seq % 7) as usize + 1];
        // As an older version left it: ten records of one transaction.
        for seq in 0..10 {
            db.insert(seq_key(T_TX, seq), tx(seq)).expect("insert");
        }
        let log = LogWriter::new(db.clone());
        for seq in 10..160 {
            log.push_tx(seq, tx(seq));
        }
        log.write().expect("write");
        let runs: Vec<u64> = db.scan_prefix([T_TXS]).map(|r| seq_of(&r.expect("read").0).expect("seq")).collect();
        assert_eq!(runs, vec![10, 74, 138]);
        let read = |from: u64| -> Vec<(u64, Vec<u8>)> { read_txs(&db, from).map(|r| r.expect("read")).collect() };
        assert_eq!(read(0), (0..160).map(|seq| (seq, tx(seq))).collect::<Vec<_>>());
        assert_eq!(read(5), (5..160).map(|seq| (seq, tx(seq))).collect::<Vec<_>>());
        assert_eq!(read(100), (100..160).map(|seq| (seq, tx(seq))).collect::<Vec<_>>());
        assert_eq!(read(160), vec![]);
        let before = |end: u64| -> Vec<Vec<u8>> {
            keys_before(&db, end).expect("read").into_iter().map(|k| k.to_vec()).collect()
        };
        let singles = |n: u64| (0..n).map(|seq| seq_key(T_TX, seq).to_vec()).collect::<Vec<_>>();
        assert_eq!(before(4), singles(4));
        assert_eq!(before(12), singles(10), "the run holding 10 and 11 also holds 12");
        assert_eq!(before(74), [singles(10), vec![seq_key(T_TXS, 10).to_vec()]].concat());
        assert_eq!(before(137), [singles(10), vec![seq_key(T_TXS, 10).to_vec()]].concat());
        assert_eq!(before(160).len(), 13);

        // A break in the sequence starts a new run.
        log.push_tx(170, tx(170));
        log.push_tx(171, tx(171));
        log.push_tx(180, tx(180));
        log.write().expect("write");
        assert_eq!(db.scan_prefix([T_TXS]).count(), 5);
        assert!(db.contains_key(RUNS_MARKER).expect("read"), "marked for the versions before the runs");
        assert_eq!(read(170).iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![170, 171, 180]);
        assert_eq!(keys_before(&db, u64::MAX).expect("read").len(), 15, "the marker stays");

        db.insert(seq_key(T_TXS, 138), vec![0, 0, 0, 9, 1]).expect("insert");
        assert!(read_txs(&db, 140).any(|r| r.is_err()), "a run that ends inside a transaction");
        assert!(keys_before(&db, 170).is_err());
        db.insert(seq_key(T_TXS, 138), vec![]).expect("insert");
        assert!(read_txs(&db, 140).any(|r| r.is_err()), "an empty run");
    }

    /// A write that panicked lost the records it took: every later write is refused, so that no
    /// record queued after them lands without them.
    #[test]
    fn no_write_follows_one_that_panicked() {
        let (db, _dir) = temp_db("poisoned");
        let log = LogWriter::new(db.clone());
        log.push(b"a", vec![1]);
        let poisoner = log.clone();
        std::thread::spawn(move || {
            let _writing = poisoner.writing.lock().expect("not poisoned yet");
            let _lost = std::mem::take(&mut locked(&poisoner.queue).records);
            panic!("a write panicked");
        })
        .join()
        .expect_err("it panicked");
        log.push(b"b", vec![2]);
        let e = log.write().expect_err("refused");
        assert!(e.to_string().contains("panicked"), "{e:#}");
        assert_eq!(db.get(b"b").expect("get"), None);
    }

    /// Writers on several threads, with pushers between them: every record written once the last
    /// write returns, and each key holds its last value (the writes landed in queue order).
    #[test]
    fn concurrent_writes_keep_the_queue_order() {
        let (db, _dir) = temp_db("threads");
        let log = LogWriter::new(db.clone());
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..500u32 {
                        // Each thread rewrites its own key with increasing values.
                        log.push(&[t], i.to_be_bytes().to_vec());
                        if i % 7 == 0 {
                            log.write().expect("write");
                        }
                    }
                });
            }
        });
        log.write().expect("write");
        for t in 0..4u8 {
            assert_eq!(db.get([t]).expect("get").as_deref(), Some(&499u32.to_be_bytes()[..]), "thread {t}");
        }
    }
}
