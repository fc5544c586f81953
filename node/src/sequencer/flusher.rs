//! Group commit: one task flushes the database for every caller waiting on durability.
//!
//! Every acknowledgement waits for its writes to be durable. sled's `flush_async` called
//! concurrently on one database can deadlock in the release the project uses (sled 0.34:
//! spacejam/sled#1308, #1241): under 256 concurrent clients (`rollup bench --sequencer`) every
//! flush waited forever and so did every client. Here a single task runs sled's blocking `flush`
//! off the runtime, one at a time; a caller asks for a flush after its writes and waits for one
//! that *started* after it asked. Callers that ask while a flush runs share the next one, so
//! under load one flush serves many acknowledgements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// The last round done: every request numbered up to `.0` is covered, and `.1` is the round's
/// error, if it failed.
type Round = (u64, Option<Arc<str>>);

/// Handle to the flushing task.
#[derive(Clone)]
pub struct Flusher {
    requested: Arc<AtomicU64>,
    wake: Arc<Notify>,
    done: watch::Receiver<Round>,
}

impl Flusher {
    /// Starts the task (so: inside a runtime); `flush` makes every earlier write durable.
    pub fn spawn<F, E>(flush: F) -> Self
    where
        F: Fn() -> Result<(), E> + Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let requested = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Notify::new());
        let (tx, done) = watch::channel((0, None));
        let flush = Arc::new(flush);
        let (r, w) = (requested.clone(), wake.clone());
        tokio::spawn(async move {
            let mut covered = 0;
            loop {
                // Every request up to here was made after its writes: a flush that starts after
                // reading it covers them.
                let upto = r.load(Ordering::Acquire);
                if upto == covered {
                    tokio::select! {
                        _ = w.notified() => continue,
                        // No handle left to ask.
                        _ = tx.closed() => return,
                    }
                }
                let f = flush.clone();
                let error = match tokio::task::spawn_blocking(move || f()).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(Arc::from(e.to_string())),
                    Err(e) => Some(Arc::from(format!("the flush stopped: {e}"))),
                };
                covered = upto;
                if tx.send((upto, error)).is_err() {
                    return;
                }
            }
        });
        Self { requested, wake, done }
    }

    /// Returns once everything written before the call is durable, or with the error of the
    /// flush that should have made it so.
    pub async fn flush(&self) -> Result<(), Arc<str>> {
        let mine = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        let mut done = self.done.clone();
        loop {
            {
                let (upto, error) = &*done.borrow_and_update();
                if *upto >= mine {
                    return error.clone().map_or(Ok(()), Err);
                }
            }
            if done.changed().await.is_err() {
                return Err(Arc::from("the flushing task stopped"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What the original `flush_async` calls deadlocked on: many tasks writing and flushing one
    /// sled database at once. Every flush returns, and the writes are in the database. The
    /// runtime runs on a thread of its own, watched from here: a deadlock can block its workers
    /// and its timers with them, and must fail the test rather than hang it.
    #[test]
    fn concurrent_flushes_of_one_database_all_return() {
        let dir = std::env::temp_dir().join(format!("rollup-flusher-{}", std::process::id()));
        let db = sled::open(&dir).expect("open");
        let (done, finished) = std::sync::mpsc::channel();
        let handle = db.clone();
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let flusher = {
                    let db = handle.clone();
                    Flusher::spawn(move || db.flush().map(|_| ()))
                };
                let mut tasks = tokio::task::JoinSet::new();
                for t in 0..256u32 {
                    let (db, flusher) = (handle.clone(), flusher.clone());
                    tasks.spawn(async move {
                        for i in 0..20u32 {
                            db.insert([t.to_be_bytes(), i.to_be_bytes()].concat(), &[1u8][..]).expect("insert");
                            flusher.flush().await.expect("flush");
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.expect("task");
                }
            });
            let _ = done.send(());
        });
        finished.recv_timeout(Duration::from_secs(120)).expect("every flush returned");
        assert_eq!(db.len(), 256 * 20);
        drop(db);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A flush returns only after a flush that started after the call: each caller's write is
    /// in what the fake flush made durable when it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flush_covers_the_writes_before_it() {
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let flusher = {
            let (written, durable, flushes) = (written.clone(), durable.clone(), flushes.clone());
            Flusher::spawn(move || {
                let snapshot = written.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                durable.fetch_max(snapshot, Ordering::SeqCst);
                flushes.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (written, durable, flusher) = (written.clone(), durable.clone(), flusher.clone());
            tasks.spawn(async move {
                for _ in 0..20 {
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    flusher.flush().await.expect("flush");
                    assert!(durable.load(Ordering::SeqCst) >= mine, "returned before write {mine} was durable");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
        // Group commit: far fewer flushes than acknowledgements.
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 64 * 20, "{n} flushes for {} acknowledgements", 64 * 20);
    }

    /// A failed flush fails the callers it covered, and the next flush serves the next callers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_is_reported_to_its_callers() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flusher = {
            let fail = fail.clone();
            Flusher::spawn(move || if fail.load(Ordering::SeqCst) { Err("disk on fire") } else { Ok(()) })
        };
        assert_eq!(flusher.flush().await.expect_err("failed").as_ref(), "disk on fire");
        fail.store(false, Ordering::SeqCst);
        flusher.flush().await.expect("the next flush");
    }
}
