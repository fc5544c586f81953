//! Commitments kept on the device between proving steps.
//!
//! A commitment's leaves are made on the device (the coset LDE, transposed into rows) and the
//! quotient step reads them again moments later: the wires and Z leaves of the same proof, and the
//! circuit's constants and sigmas in every proof. Without a cache each read is a fresh upload of
//! everything the host holds (about 250 MB per batch proof). [`Resident`] keeps the most recently
//! used leaf buffers up to a byte budget and finds them by the Merkle cap.
//!
//! The prover says when a commitment's leaves will not be read through the backend again
//! ([`crate::Backend::release`]: the wires and Z after the quotient, the quotient chunks at once),
//! so a proof leaves behind only its circuit's constants and sigmas, which the next proof of the
//! same circuit reads.
//!
//! The cap is the key because it is what the prover already holds and it binds the leaves: two
//! different leaf sets with one cap would be a Poseidon collision. The number of rows and their
//! width are part of the key as well, so a lookup never returns a buffer of another shape.

use std::sync::{Arc, Mutex};

use plonky2::hash::merkle_tree::MerkleTree;
use plonky2::hash::poseidon::PoseidonHash;

use crate::backend::Digest;
use crate::F;

/// What identifies a commitment's leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeKey {
    cap: Vec<Digest>,
    rows: usize,
    width: usize,
}

impl TreeKey {
    /// The key of a tree with this cap and these leaves' shape.
    pub fn new(cap: &[Digest], rows: usize, width: usize) -> Self {
        Self { cap: cap.to_vec(), rows, width }
    }

    /// The key of `tree` (its leaves are assumed to be of one width, as a commitment's are).
    pub fn of(tree: &MerkleTree<F, PoseidonHash>) -> Self {
        Self::new(&tree.cap.0, tree.leaves.len(), tree.leaves.first().map_or(0, Vec::len))
    }
}

struct Entry<V> {
    key: TreeKey,
    value: Arc<V>,
    bytes: usize,
    last_use: u64,
}

struct Inner<V> {
    entries: Vec<Entry<V>>,
    bytes: usize,
    clock: u64,
}

/// Leaf buffers by key, least recently used evicted first, at most `budget` bytes in all. A
/// buffer evicted while a kernel still reads it lives on until its last `Arc` is dropped.
pub struct Resident<V> {
    budget: usize,
    inner: Mutex<Inner<V>>,
}

impl<V> Resident<V> {
    /// An empty set that holds at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { budget, inner: Mutex::new(Inner { entries: Vec::new(), bytes: 0, clock: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The buffer stored under `key`, now the most recently used.
    pub fn get(&self, key: &TreeKey) -> Option<Arc<V>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.iter_mut().find(|e| &e.key == key)?;
        entry.last_use = now;
        Some(entry.value.clone())
    }

    /// Keeps `value` (of `bytes` bytes) under `key`, evicting the least recently used buffers
    /// until it fits. A buffer larger than the whole budget is not kept.
    pub fn insert(&self, key: TreeKey, value: Arc<V>, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        self.remove(&key);
        let mut inner = self.lock();
        while inner.bytes + bytes > self.budget {
            let Some(oldest) = inner.entries.iter().enumerate().min_by_key(|(_, e)| e.last_use).map(|(i, _)| i) else {
                break;
            };
            let old = inner.entries.swap_remove(oldest);
            inner.bytes -= old.bytes;
        }
        inner.clock += 1;
        let last_use = inner.clock;
        inner.bytes += bytes;
        inner.entries.push(Entry { key, value, bytes, last_use });
    }

    /// Drops the buffer stored under `key`, if any (a kernel still reading it keeps it alive).
    pub fn remove(&self, key: &TreeKey) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| &e.key == key) {
            let old = inner.entries.swap_remove(i);
            inner.bytes -= old.bytes;
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Buffers held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::Field;

    use super::*;

    fn key(tag: u64, rows: usize, width: usize) -> TreeKey {
        TreeKey::new(&[Digest { elements: [F::from_canonical_u64(tag); 4] }], rows, width)
    }

    #[test]
    fn least_recently_used_goes_first_and_the_budget_holds() {
        let set = Resident::<u32>::new(100);
        set.insert(key(1, 1, 1), Arc::new(1), 40);
        set.insert(key(2, 1, 1), Arc::new(2), 40);
        assert_eq!(set.get(&key(1, 1, 1)).as_deref(), Some(&1));
        // 1 was used after 2, so 2 is evicted to make room.
        set.insert(key(3, 1, 1), Arc::new(3), 40);
        assert_eq!(set.get(&key(2, 1, 1)), None);
        assert_eq!(set.get(&key(1, 1, 1)).as_deref(), Some(&1));
        assert_eq!(set.get(&key(3, 1, 1)).as_deref(), Some(&3));
        assert_eq!((set.len(), set.bytes()), (2, 80));
    }

    #[test]
    fn shape_is_part_of_the_key_reinserting_replaces_and_remove_frees() {
        let set = Resident::<u32>::new(100);
        set.insert(key(1, 8, 4), Arc::new(1), 30);
        assert_eq!(set.get(&key(1, 8, 5)), None);
        assert_eq!(set.get(&key(1, 4, 8)), None);
        set.insert(key(1, 8, 4), Arc::new(7), 50);
        assert_eq!(set.get(&key(1, 8, 4)).as_deref(), Some(&7));
        assert_eq!((set.len(), set.bytes()), (1, 50));
        set.remove(&key(1, 8, 4));
        set.remove(&key(1, 8, 4));
        assert_eq!((set.len(), set.bytes()), (0, 0));
    }

    #[test]
    fn a_buffer_over_the_budget_is_not_kept_and_evicted_buffers_stay_alive_while_used() {
        let set = Resident::<Vec<u8>>::new(100);
        set.insert(key(1, 1, 1), Arc::new(vec![1]), 101);
        assert!(set.is_empty());
        set.insert(key(2, 1, 1), Arc::new(vec![2]), 60);
        let in_use = set.get(&key(2, 1, 1)).expect("held");
        set.insert(key(3, 1, 1), Arc::new(vec![3]), 60);
        assert_eq!(set.get(&key(2, 1, 1)), None);
        assert_eq!(*in_use, vec![2]);
        assert_eq!((set.len(), set.bytes()), (1, 60));
    }
}
