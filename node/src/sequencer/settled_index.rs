//! The index of settled transactions' hashes, in memory: each transaction of the settled blocks
//! in the window ([`super::core::Params::tx_index_blocks`]) by the first eight bytes of its
//! hash, its sequence number the value; the block's list of hashes in the database (`x` +
//! height) is where the rest of a hash is checked (docs/services.md, "The index keeps a window
//! of settled blocks").
//!
//! Why not in sled, one record a transaction, as before: each insert and removal cost about
//! 4–8 µs of one thread in an empty tree and 14–18 µs with three million records, and two
//! threads did not write faster than one. At 100 000 tx/s the window's inserts and removals
//! alone were more than a core, and settling was capped near 30 000–40 000 tx/s once the window
//! filled; sled's cache over the tree held about 800 MB at three million records (BENCHMARKS.md).
//! Here a transaction costs about 17–35 bytes of heap (a map of two `u64`s, as full as it
//! happens to be) and a map insert; the cost is rebuilding the map from the lists at each open.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Sequence numbers by hash.
#[derive(Default)]
pub struct SettledIndex {
    /// By the hash's first eight bytes: a candidate, to be checked against the block's list.
    /// SipHash with a random key keeps a flood of crafted hashes from landing in one probe run.
    by_prefix: HashMap<u64, u64>,
    /// Whole, the hashes that found their prefix taken when they were added: two settled
    /// hashes share eight bytes by chance about once in 2^64 / n² (n in the window), but a
    /// sender can make its own two transactions do so with about 2^32 hashes.
    whole: HashMap<[u8; 32], u64>,
}

/// Where to look for a hash's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Certainly this one.
    Exact(u64),
    /// This one if the hash of transaction `seq` is the one asked for: the caller checks.
    Candidate(u64),
}

fn prefix(hash: &[u8; 32]) -> u64 {
    u64::from_le_bytes(hash[..8].try_into().expect("eight bytes"))
}

impl SettledIndex {
    /// Adds transaction `seq`, of hash `hash`.
    pub fn insert(&mut self, hash: &[u8; 32], seq: u64) {
        match self.by_prefix.entry(prefix(hash)) {
            Entry::Vacant(e) => {
                e.insert(seq);
            }
            Entry::Occupied(_) => {
                self.whole.insert(*hash, seq);
            }
        }
    }

    /// Removes transaction `seq`, of hash `hash`, if it is in: a prefix now held by another
    /// transaction stays with it.
    pub fn remove(&mut self, hash: &[u8; 32], seq: u64) {
        if self.whole.get(hash) == Some(&seq) {
            self.whole.remove(hash);
        } else if let Entry::Occupied(e) = self.by_prefix.entry(prefix(hash)) {
            if *e.get() == seq {
                e.remove();
            }
        }
    }

    /// Where `hash` may be.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Found> {
        if let Some(&seq) = self.whole.get(hash) {
            return Some(Found::Exact(seq));
        }
        self.by_prefix.get(&prefix(hash)).map(|&seq| Found::Candidate(seq))
    }

    /// The transactions in it.
    pub fn len(&self) -> usize {
        self.by_prefix.len() + self.whole.len()
    }

    /// Heap bytes of the maps' tables, about.
    pub fn heap_bytes(&self) -> usize {
        self.by_prefix.capacity() * (16 + 1) + self.whole.capacity() * (40 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(prefix: u64, rest: u8) -> [u8; 32] {
        let mut h = [rest; 32];
        h[..8].copy_from_slice(&prefix.to_le_bytes());
        h
    }

    #[test]
    fn a_hash_is_found_as_a_candidate_or_whole_and_removed_only_with_its_own_number() {
        let mut index = SettledIndex::default();
        let (a, b, c) = (hash(7, 1), hash(7, 2), hash(9, 3));
        index.insert(&a, 10);
        index.insert(&b, 11);
        index.insert(&c, 12);
        assert_eq!(index.len(), 3);
        assert_eq!(index.get(&a), Some(Found::Candidate(10)));
        assert_eq!(index.get(&b), Some(Found::Exact(11)), "its prefix was taken: kept whole");
        assert_eq!(index.get(&c), Some(Found::Candidate(12)));
        // Another hash with a prefix in: a candidate the caller must check, and refuses.
        assert_eq!(index.get(&hash(7, 4)), Some(Found::Candidate(10)));
        assert_eq!(index.get(&hash(8, 1)), None);

        // A removal under another number changes nothing (a number is one transaction's).
        index.remove(&a, 11);
        index.remove(&b, 12);
        index.remove(&hash(7, 4), 12);
        assert_eq!(index.len(), 3);

        index.remove(&a, 10);
        assert_eq!(index.get(&a), None);
        assert_eq!(index.get(&b), Some(Found::Exact(11)), "the whole one stays");
        // The prefix is free again: the next hash with it takes it.
        let d = hash(7, 5);
        index.insert(&d, 13);
        assert_eq!(index.get(&d), Some(Found::Candidate(13)));
        index.remove(&b, 11);
        index.remove(&c, 12);
        index.remove(&d, 13);
        assert_eq!((index.len(), index.get(&b), index.get(&d)), (0, None, None));
    }
}
