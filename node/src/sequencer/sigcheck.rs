//! Signature checks on arrival, in batches: concurrent submissions wait at most a few
//! milliseconds to be checked together with one random-linear-combination multi-pairing, and a
//! failing batch is bisected so that exactly the bad signatures are refused
//! (`circuits::bls::batch::find_invalid`).

use std::sync::Arc;
use std::time::Duration;

use circuits::bls::batch::{find_invalid, SignedMessage};
use circuits::bls::pairing::{KeyCache, SERVICE_KEY_CACHE};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

type Request = (SignedMessage, oneshot::Sender<bool>);

/// Signatures checked together at most.
pub const SIG_BATCH: usize = 256;
/// How long a batch waits for more after its first signature.
pub const SIG_WAIT: Duration = Duration::from_millis(2);

/// Handle to the batching checker task.
#[derive(Clone)]
pub struct SigChecker {
    tx: mpsc::Sender<Request>,
    keys: Arc<KeyCache>,
}

impl SigChecker {
    /// Starts the checker: a batch closes at `max_batch` signatures or `max_wait` after its first.
    /// The busiest senders' keys stay prepared between batches ([`SERVICE_KEY_CACHE`] of them).
    pub fn spawn(max_batch: usize, max_wait: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Request>(4 * max_batch.max(1));
        let keys = Arc::new(KeyCache::new(SERVICE_KEY_CACHE));
        let cache = keys.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + max_wait;
                while batch.len() < max_batch {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(r) => batch.push(r),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
                let (items, replies): (Vec<SignedMessage>, Vec<oneshot::Sender<bool>>) = batch.into_iter().unzip();
                let keys = keys.clone();
                let verdicts = tokio::task::spawn_blocking(move || {
                    let bad = find_invalid(&items, &keys, &mut rand::rngs::OsRng);
                    (0..items.len()).map(|i| bad.binary_search(&i).is_err()).collect::<Vec<bool>>()
                })
                .await;
                match verdicts {
                    Ok(v) => {
                        for (reply, ok) in replies.into_iter().zip(v) {
                            let _ = reply.send(ok);
                        }
                    }
                    // Dropping the replies refuses the batch; its senders see an internal error.
                    Err(e) => warn!("signature batch check failed: {e}"),
                }
            }
        });
        Self { tx, keys: cache }
    }

    /// The prepared keys the checker keeps (how often they were found there: its metrics).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// Whether `item`'s signature verifies; `None` if the checker is gone.
    pub async fn check(&self, item: SignedMessage) -> Option<bool> {
        let (reply, verdict) = oneshot::channel();
        self.tx.send((item, reply)).await.ok()?;
        verdict.await.ok()
    }
}

/// The indices of the invalid signatures among `items`, checked as the checker checks a steady
/// stream of them: in batches of [`SIG_BATCH`], with one key cache throughout. The benchmarks'
/// ceiling for the signature step.
pub fn check_stream(items: &[SignedMessage]) -> Vec<usize> {
    let keys = KeyCache::new(SERVICE_KEY_CACHE);
    let mut bad = Vec::new();
    for (c, chunk) in items.chunks(SIG_BATCH).enumerate() {
        bad.extend(find_invalid(chunk, &keys, &mut rand::rngs::OsRng).into_iter().map(|i| c * SIG_BATCH + i));
    }
    bad
}

#[cfg(test)]
mod tests {
    use circuits::genesis::devnet_key;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_checked_together_and_the_bad_one_named() {
        let checker = SigChecker::spawn(64, Duration::from_millis(20));
        let mut tasks = Vec::new();
        for i in 0..40u32 {
            let sk = devnet_key(i % 5);
            let message = format!("tx {i}").into_bytes();
            let signature = if i == 17 { sk.sign(b"something else") } else { sk.sign(&message) };
            let item = SignedMessage { public_key: sk.public_key(), message, signature };
            let c = checker.clone();
            tasks.push(tokio::spawn(async move { c.check(item).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task"), Some(i != 17), "submission {i}");
        }
    }

    #[test]
    fn a_stream_names_its_bad_signatures_by_their_place_in_it() {
        let bad = [5, SIG_BATCH + 44, 2 * SIG_BATCH + 87];
        let items: Vec<SignedMessage> = (0..2 * SIG_BATCH + 88)
            .map(|i| {
                let sk = devnet_key((i % 7) as u32);
                let message = format!("tx {i}").into_bytes();
                let signature = if bad.contains(&i) { sk.sign(b"something else") } else { sk.sign(&message) };
                SignedMessage { public_key: sk.public_key(), message, signature }
            })
            .collect();
        assert_eq!(check_stream(&items), bad);
    }
}
