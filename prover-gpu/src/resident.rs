//! Commitments' leaves kept on the device between proving steps.
//!
//! A commitment's leaves are made on the device (the coset LDE, transposed into rows), and the
//! proof reads them twice more: the quotient step reads the constants and sigmas, wires and Z at
//! every point moments later, and FRI's query rounds read a few dozen rows of every commitment at
//! the end. Each commitment's leaves are in one of two states here:
//!
//! - **held** ([`Resident::hold`]): the only copy, kept for the proof that made it (the host got
//!   the digests and the cap, not the leaves). Never evicted; freed when the proof says it is done
//!   ([`Resident::release`], from `Backend::release`). Held twice (two proofs that committed the
//!   same data at once), freed after the second release.
//! - **cached** ([`Resident::insert`]): a copy of leaves the host also holds (the circuit's
//!   constants and sigmas, uploaded for the quotient and read again by every proof of the
//!   circuit). The least recently used go first once cached and held buffers pass the byte budget.
//!
//! The cap is the key because it is what the prover already holds and it binds the leaves: two
//! different leaf sets with one cap would be a Poseidon collision. The number of rows and their
//! width are part of the key as well, so a lookup never returns a buffer of another shape (rows of
//! at most four elements are their own digests, zero-padded, so the width is not implied).

use std::sync::{Arc, Mutex};

use plonky2::hash::merkle_tree::MerkleTree;
use plonky2::hash::poseidon::PoseidonHash;

use crate::backend::{Digest, Shape};
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

    /// The number of rows (leaves).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of elements in a row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The key of `tree`, of this shape, whether the host holds its leaves or not.
    pub fn of(tree: &MerkleTree<F, PoseidonHash>, shape: Shape) -> Self {
        Self::new(&tree.cap.0, shape.rows, shape.width)
    }
}

struct Entry<V> {
    key: TreeKey,
    value: Arc<V>,
    bytes: usize,
    last_use: u64,
    /// Proofs holding this buffer as their only copy; evictable only at zero.
    holds: usize,
}

struct Inner<V> {
    entries: Vec<Entry<V>>,
    bytes: usize,
    clock: u64,
}

/// Leaf buffers by key: held ones until released, cached ones evicted least recently used first
/// once everything passes `budget` bytes. A buffer evicted or released while a kernel still
/// reads it lives on until its last `Arc` is dropped.
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

    /// Caches `value` (of `bytes` bytes) under `key`, evicting the least recently used cached
    /// buffers until it fits. A buffer that does not fit beside the held ones is not kept; a key
    /// already present keeps its buffer (the same leaves, by the cap).
    pub fn insert(&self, key: TreeKey, value: Arc<V>, bytes: usize) {
        let mut inner = self.lock();
        if inner.entries.iter().any(|e| e.key == key) {
            return;
        }
        let held: usize = inner.entries.iter().filter(|e| e.holds > 0).map(|e| e.bytes).sum();
        if held + bytes > self.budget {
            return;
        }
        while inner.bytes + bytes > self.budget {
            let oldest = inner.entries.iter().enumerate().filter(|(_, e)| e.holds == 0).min_by_key(|(_, e)| e.last_use);
            let Some(i) = oldest.map(|(i, _)| i) else { break };
            let old = inner.entries.swap_remove(i);
            inner.bytes -= old.bytes;
        }
        Self::push(&mut inner, key, value, bytes, 0);
    }

    /// Holds `value` (of `bytes` bytes) under `key` until [`Resident::release`], whatever the
    /// budget: it is the only copy of these leaves. If the key is present (cached, or held by
    /// another proof that committed the same data), the entry is held once more and takes
    /// `value`, the same leaves by the cap, with whatever else it carries (a kept tree's
    /// digests, which a cached copy lacks); a kernel reading the old value keeps it alive.
    pub fn hold(&self, key: TreeKey, value: Arc<V>, bytes: usize) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| e.key == key) {
            let old = inner.entries[i].bytes;
            inner.bytes = inner.bytes - old + bytes;
            let e = &mut inner.entries[i];
            e.holds += 1;
            e.value = value;
            e.bytes = bytes;
            return;
        }
        Self::push(&mut inner, key, value, bytes, 1);
    }

    fn push(inner: &mut Inner<V>, key: TreeKey, value: Arc<V>, bytes: usize, holds: usize) {
        inner.clock += 1;
        let last_use = inner.clock;
        inner.bytes += bytes;
        inner.entries.push(Entry { key, value, bytes, last_use, holds });
    }

    /// One holder of `key` is done with it: a buffer held by no one else is dropped, as is a
    /// cached one (a kernel still reading it keeps it alive).
    pub fn release(&self, key: &TreeKey) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| &e.key == key) {
            let e = &mut inner.entries[i];
            e.holds = e.holds.saturating_sub(1);
            if e.holds == 0 {
                let old = inner.entries.swap_remove(i);
                inner.bytes -= old.bytes;
            }
        }
    }

    /// The entry under `key` has grown by `bytes` (something was attached to its value), if it
    /// is still there; nothing is evicted for it.
    pub fn grow(&self, key: &TreeKey, bytes: usize) {
        let mut inner = self.lock();
        if let Some(i) = inner.entries.iter().position(|e| &e.key == key) {
            inner.entries[i].bytes += bytes;
            inner.bytes += bytes;
        }
    }

    /// Buffers held now (not merely cached).
    pub fn held(&self) -> usize {
        self.lock().entries.iter().filter(|e| e.holds > 0).count()
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
    fn shape_is_part_of_the_key_a_present_key_keeps_its_buffer_and_release_frees() {
        let set = Resident::<u32>::new(100);
        set.insert(key(1, 8, 4), Arc::new(1), 30);
        assert_eq!(set.get(&key(1, 8, 5)), None);
        assert_eq!(set.get(&key(1, 4, 8)), None);
        set.insert(key(1, 8, 4), Arc::new(7), 50);
        assert_eq!(set.get(&key(1, 8, 4)).as_deref(), Some(&1));
        assert_eq!((set.len(), set.bytes()), (1, 30));
        set.release(&key(1, 8, 4));
        set.release(&key(1, 8, 4));
        assert_eq!((set.len(), set.bytes()), (0, 0));
    }

    #[test]
    fn an_entry_grows_by_what_is_attached_and_its_eviction_frees_it_all() {
        let set = Resident::<u32>::new(100);
        set.insert(key(1, 1, 1), Arc::new(1), 40);
        set.grow(&key(1, 1, 1), 20);
        set.grow(&key(9, 1, 1), 20); // absent: nothing
        assert_eq!(set.bytes(), 60);
        // 60 + 50 passes the budget: the grown entry goes whole.
        set.insert(key(2, 1, 1), Arc::new(2), 50);
        assert_eq!((set.len(), set.bytes()), (1, 50));
    }

    #[test]
    fn held_buffers_outlast_the_budget_until_each_holder_releases_them() {
        let set = Resident::<u32>::new(100);
        // Held past the budget: it is the only copy.
        set.hold(key(1, 1, 1), Arc::new(1), 120);
        set.hold(key(2, 1, 1), Arc::new(2), 30);
        // A second proof that committed the same data holds the entry again (with its value).
        set.hold(key(2, 1, 1), Arc::new(9), 30);
        assert_eq!((set.len(), set.held(), set.bytes()), (2, 2, 150));
        // Nothing cached fits beside them, and caching evicts no held buffer.
        set.insert(key(3, 1, 1), Arc::new(3), 10);
        assert_eq!(set.get(&key(3, 1, 1)), None);
        set.release(&key(1, 1, 1));
        assert_eq!(set.get(&key(1, 1, 1)), None);
        set.insert(key(3, 1, 1), Arc::new(3), 60);
        set.insert(key(4, 1, 1), Arc::new(4), 10);
        // 3 was used last, so 4 goes when 5 needs room; 2 stays held whatever its age.
        assert_eq!(set.get(&key(3, 1, 1)).as_deref(), Some(&3));
        set.insert(key(5, 1, 1), Arc::new(5), 10);
        assert_eq!(set.get(&key(4, 1, 1)), None);
        assert_eq!(set.get(&key(2, 1, 1)).as_deref(), Some(&9));
        set.release(&key(2, 1, 1));
        assert_eq!(set.get(&key(2, 1, 1)).as_deref(), Some(&9), "held by the second proof still");
        set.release(&key(2, 1, 1));
        assert_eq!(set.get(&key(2, 1, 1)), None);
        // Holding a cached entry pins it, with the held value and its size; its release drops it.
        set.hold(key(3, 1, 1), Arc::new(0), 70);
        assert_eq!((set.held(), set.bytes(), set.get(&key(3, 1, 1)).as_deref()), (1, 80, Some(&0)));
        set.release(&key(3, 1, 1));
        assert_eq!((set.len(), set.held(), set.bytes()), (1, 0, 10));
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
