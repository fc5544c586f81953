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

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

/// A record: its key and value.
type Record = (Vec<u8>, Vec<u8>);

/// A handle to the queue of log records; clones share it.
#[derive(Clone)]
pub struct LogWriter {
    db: sled::Db,
    queue: Arc<Mutex<Vec<Record>>>,
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
        Self { db, queue: Arc::default(), writing: Arc::default() }
    }

    /// Queues `value` under `key`, to be written by the next [`LogWriter::write`].
    pub fn push(&self, key: &[u8], value: Vec<u8>) {
        locked(&self.queue).push((key.to_vec(), value));
    }

    /// Writes every record queued before the call, in order, in one batch (not flushed). If the
    /// write fails, the records stay queued, ahead of those queued since, for the next write.
    pub fn write(&self) -> Result<()> {
        let _writing = self.writing.lock().map_err(|_| {
            anyhow::anyhow!("a write of the log panicked and its records are lost: nothing after them is written")
        })?;
        let records = std::mem::take(&mut *locked(&self.queue));
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in &records {
            batch.insert(&key[..], &value[..]);
        }
        if let Err(e) = self.db.apply_batch(batch) {
            let mut queue = locked(&self.queue);
            let later = std::mem::replace(&mut *queue, records);
            queue.extend(later);
            return Err(e.into());
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
        locked(&self.queue).len()
    }

    /// Drops the queued records, as a process killed now would lose them.
    #[cfg(test)]
    pub fn discard(&self) {
        locked(&self.queue).clear();
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
            let _lost = std::mem::take(&mut *locked(&poisoner.queue));
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
