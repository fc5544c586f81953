//! The state's tree hashing, deferred to the batch's seal and done level by level.
//!
//! Applying a transaction changes leaf values (balances, account records, pools) and, in the
//! circuit's witness, needs each update's Merkle path and some balance roots as they stood at
//! that moment. Hashing each path as the transaction applies costs about 80 Poseidon
//! permutations a transaction, one after another on one core: that was the sequencer's ceiling
//! (BENCHMARKS.md, "Past the provers"). Here a batch's updates are recorded as they apply and
//! hashed when it is sealed, one tree level at a time across all of them.
//!
//! Why a level's hashes are independent: update `k`'s node at height `h + 1` is the hash of its
//! own node at height `h` (its previous level's output) and that node's sibling *as update `k`
//! saw it*, the value the last earlier update that touched the sibling gave it at height `h`, or
//! the stored value. A walk over the updates in order, with no hashing, settles where every
//! sibling comes from; then each level's hashes go at once: eight to a vector permutation
//! ([`prover_gpu::poseidon_x8`]), on every core. The three kinds of tree are walked side by
//! side, ahead of the hashing. The nested trees are hashed in dependency order: the balance
//! trees, then the account leaves (each holds its balance root as of its update) and the account
//! tree; the pool leaves and the pool tree beside them.
//!
//! The paths, roots and stored nodes are exactly those of applying each update at once with
//! [`crate::smt::SparseMerkleTree::set`]: `tests` holds them to it on random update sequences.

use std::collections::HashMap;

use prover_gpu::poseidon_x8::{hash_leaves, hash_pairs};

use crate::hash::{account_leaf_inputs, balance_leaf, empty_subtree, Digest, ACCOUNT_DEPTH, POOL_DEPTH, TOKEN_DEPTH};
use crate::smt::MerklePath;
use crate::state::{balances, AccountRecord, Pool, ACCOUNTS, POOLS};
use crate::store::{NodeKey, NodeStore, StateStore, TreeId};

/// A leaf update whose hashing waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// A balance leaf of an account's balance tree (any token but the fee token, whose balance
    /// is the account record's).
    Balance {
        /// The account.
        account: u32,
        /// The token (the leaf's index).
        token: u16,
        /// The new balance.
        amount: u64,
    },
    /// An account leaf: its record (the fee-token balance in it), hashed with the account's
    /// balance root as it stands at this update.
    Account {
        /// The account.
        id: u32,
        /// The new record.
        record: AccountRecord,
    },
    /// A pool leaf.
    Pool {
        /// The pool.
        id: u32,
        /// The new pool.
        pool: Pool,
    },
}

/// The leaf an [`Update`] writes. Ordered balances first, then accounts, then pools: an account
/// leaf holds its balance root, so where a state is rebuilt from saved leaves
/// ([`crate::State::write_leaves`]), an account's balances must be hashed before its leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeafKey {
    /// A balance leaf.
    Balance {
        /// The account.
        account: u32,
        /// The token.
        token: u16,
    },
    /// An account leaf.
    Account(u32),
    /// A pool leaf.
    Pool(u32),
}

impl Update {
    /// The leaf it writes.
    pub fn leaf(&self) -> LeafKey {
        match *self {
            Update::Balance { account, token, .. } => LeafKey::Balance { account, token },
            Update::Account { id, .. } => LeafKey::Account(id),
            Update::Pool { id, .. } => LeafKey::Pool(id),
        }
    }
}

/// Updates in the order they applied, and the balance roots asked for between them. The leaf
/// values are in the store as soon as they are pushed; the tree nodes wait for
/// [`Journal::hash_into`].
#[derive(Clone, Debug, Default)]
pub struct Journal {
    updates: Vec<Update>,
    /// `(account, updates before the read)`.
    root_reads: Vec<(u32, usize)>,
}

/// What a journal's hashing gives: one path per update, one root per read, in their orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashed {
    /// The update's path, siblings lowest first, as it stood before the update.
    pub paths: Vec<MerklePath>,
    /// The balance root each read asked for.
    pub roots: Vec<Digest>,
}

impl Journal {
    /// Writes an update's leaf value to `store` at once and records the update for hashing;
    /// returns its index into [`Hashed::paths`].
    pub fn push<S: StateStore + ?Sized>(&mut self, store: &mut S, update: Update) -> usize {
        match update {
            Update::Balance { account, token, amount } => store.put_balance(account, token, amount),
            Update::Account { id, record } => store.put_account(id, record),
            Update::Pool { id, pool } => store.put_pool(id, pool),
        }
        self.updates.push(update);
        self.updates.len() - 1
    }

    /// The updates pushed so far, in order: what they change in the state is the last value
    /// each leaf was given.
    pub fn updates(&self) -> &[Update] {
        &self.updates
    }

    /// Asks for `account`'s balance root as it stands now, after the updates pushed so far;
    /// returns the index of the answer in [`Hashed::roots`].
    pub fn read_balance_root(&mut self, account: u32) -> usize {
        self.root_reads.push((account, self.updates.len()));
        self.root_reads.len() - 1
    }

    /// Hashes every update into the trees' `store`, leaving the journal empty.
    pub fn hash_into<N: NodeStore + ?Sized>(&mut self, store: &mut N) -> Hashed {
        let updates = std::mem::take(&mut self.updates);
        let reads = std::mem::take(&mut self.root_reads);
        // Each kind's updates, with their positions in the journal.
        let (mut balance, mut account, mut pool) = (Vec::new(), Vec::new(), Vec::new());
        for (k, &u) in updates.iter().enumerate() {
            match u {
                Update::Balance { account, token, amount } => balance.push((k, account, token, amount)),
                Update::Account { id, record } => account.push((k, id, record)),
                Update::Pool { id, pool: p } => pool.push((k, id, p)),
            }
        }

        // Every balance root the account leaves and the reads may need from before the batch.
        let mut before: HashMap<u32, Digest> = HashMap::new();
        let touched = balance.iter().map(|b| b.1).chain(account.iter().map(|a| a.1)).chain(reads.iter().map(|r| r.0));
        for id in touched {
            before.entry(id).or_insert_with(|| balances(id).root(&*store));
        }

        // The trees' walks need no hashes, only the nodes stored before the batch: all three
        // side by side, ahead of the hashing.
        let b_items: Vec<_> = balance.iter().map(|b| (balances(b.1).tree, u64::from(b.2))).collect();
        let a_items: Vec<_> = account.iter().map(|a| (ACCOUNTS.tree, u64::from(a.1))).collect();
        let p_items: Vec<_> = pool.iter().map(|p| (POOLS.tree, u64::from(p.1))).collect();
        let (b_walk, (a_walk, p_walk)) = {
            let store = &*store;
            rayon::join(
                || Walk::of(store, &b_items, TOKEN_DEPTH),
                || rayon::join(|| Walk::of(store, &a_items, ACCOUNT_DEPTH), || Walk::of(store, &p_items, POOL_DEPTH)),
            )
        };

        // The pool tree beside the balance trees and, after them, the account tree (an account
        // leaf holds its balance root as of its update).
        let ((b_hashed, a_hashed, history), p_hashed) = rayon::join(
            || {
                let b_hashed = b_walk.hash(balance.iter().map(|b| balance_leaf(b.3)).collect());
                let mut history: HashMap<u32, Vec<(usize, Digest)>> = HashMap::new();
                for (b, &root) in balance.iter().zip(&b_hashed.1[TOKEN_DEPTH]) {
                    history.entry(b.1).or_default().push((b.0, root));
                }
                let inputs: Vec<Vec<_>> = account
                    .iter()
                    .map(|&(k, id, r)| {
                        let root = balance_root_at(&history, &before, id, k);
                        account_leaf_inputs(r.pubkey_hash, r.nonce, r.fee_balance, root).to_vec()
                    })
                    .collect();
                (b_hashed, a_walk.hash(hash_all(&inputs)), history)
            },
            || p_walk.hash(hash_all(&pool.iter().map(|p| p.2.leaf_inputs().to_vec()).collect::<Vec<_>>())),
        );

        let mut paths = vec![MerklePath::new(); updates.len()];
        let positions = balance.iter().map(|b| b.0).chain(account.iter().map(|a| a.0)).chain(pool.iter().map(|p| p.0));
        for (k, path) in positions.zip(b_hashed.0.into_iter().chain(a_hashed.0).chain(p_hashed.0)) {
            paths[k] = path;
        }
        b_walk.write(store, &b_hashed.1);
        a_walk.write(store, &a_hashed.1);
        p_walk.write(store, &p_hashed.1);
        let roots = reads.iter().map(|&(id, at)| balance_root_at(&history, &before, id, at)).collect();
        Hashed { paths, roots }
    }
}

/// `account`'s balance root after the journal's updates before position `at`: from `history`,
/// each account's roots after its balance updates in journal order, or `before` the batch.
fn balance_root_at(
    history: &HashMap<u32, Vec<(usize, Digest)>>,
    before: &HashMap<u32, Digest>,
    account: u32,
    at: usize,
) -> Digest {
    let h = history.get(&account).map_or(&[][..], Vec::as_slice);
    match h.partition_point(|&(k, _)| k < at) {
        0 => before[&account],
        i => h[i - 1].1,
    }
}

/// `hash_no_pad` of each leaf's elements (all longer than a digest), eight at a time.
fn hash_all(inputs: &[Vec<crate::hash::F>]) -> Vec<Digest> {
    let mut out = vec![Digest::default(); inputs.len()];
    hash_leaves(inputs, &mut out);
    out
}

/// The end of the run of `order` from `s` whose positions satisfy `same`.
fn run_end(order: &[usize], s: usize, same: impl Fn(usize) -> bool) -> usize {
    s + order[s..].iter().position(|&k| !same(k)).unwrap_or(order.len() - s)
}

/// Where an update's sibling at one height comes from.
#[derive(Clone, Copy, Debug)]
enum Sibling {
    /// No earlier update of the batch wrote it: the stored node (or the empty subtree).
    Stored(Digest),
    /// Update `j`, earlier in the batch, wrote it last: `j`'s node at this height.
    Of(usize),
}

/// The updates `(tree, index)` of trees of one depth, in order, walked: where each update's
/// sibling comes from at each height, and which update wrote each node last. No hashing, so
/// walks run ahead of it, and then nothing sequential stands between a level's hashes and the
/// next's but gathering the pairs.
///
/// The walk keeps the updates ordered by the node they pass through at the current height, and
/// by position within a node: sorted once by leaf, then, one height up, each pair of sibling
/// runs merged. A run's sibling run is beside it, so each update's sibling source is found by
/// walking two sorted runs together, with no map: the account ids that decide the keys are the
/// clients' choice, and a sorted walk costs the same whatever they are. The store is read once
/// per sibling node that no earlier update wrote, not once per update.
struct Walk<'a> {
    depth: usize,
    items: &'a [(TreeId, u64)],
    /// `siblings[h * n + k]`: update `k`'s sibling at height `h`.
    siblings: Vec<Sibling>,
    /// Each node the updates write, root included, and the last update to write it.
    last: Vec<(NodeKey, usize)>,
}

impl<'a> Walk<'a> {
    fn of<N: NodeStore + ?Sized>(store: &N, items: &'a [(TreeId, u64)], depth: usize) -> Self {
        let n = items.len();
        debug_assert!(items.iter().all(|&(_, index)| index >> depth == 0), "an index past its tree");
        let mut siblings = vec![Sibling::Stored(Digest::default()); n * depth];
        let mut last = Vec::with_capacity(n * (depth + 1));
        // Positions ordered by (tree, node at height `h`, position): by leaf at height 0.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&k| (items[k], k));
        let mut merged = Vec::with_capacity(n);
        for h in 0..depth {
            let height = h as u8;
            let node = |k: usize| (items[k].0, items[k].1 >> h);
            let sibs = &mut siblings[h * n..(h + 1) * n];
            merged.clear();
            let mut s = 0;
            while s < n {
                let (tree, index) = node(order[s]);
                let e = run_end(&order, s, |k| node(k) == (tree, index));
                // The sibling's run follows a left node's run directly, if any update passes
                // through the sibling.
                let f = if index & 1 == 0 && e < n && node(order[e]) == (tree, index ^ 1) {
                    run_end(&order, e, |k| node(k) == (tree, index ^ 1))
                } else {
                    e
                };
                let (own, other) = (&order[s..e], &order[e..f]);
                last.push((NodeKey { tree, height, index }, own[own.len() - 1]));
                if let Some(&j) = other.last() {
                    last.push((NodeKey { tree, height, index: index ^ 1 }, j));
                }
                // The stored sibling, read at most once for each of the two nodes.
                let stored = |i: u64| {
                    Sibling::Stored(store.node(NodeKey { tree, height, index: i }).unwrap_or(empty_subtree(h)))
                };
                let (mut own_stored, mut other_stored) = (None, None);
                // Both runs are in position order: merge them, each update taking the last
                // update of the other run before it, if any.
                let (mut a, mut b) = (0, 0);
                while a < own.len() || b < other.len() {
                    if b == other.len() || (a < own.len() && own[a] < other[b]) {
                        sibs[own[a]] = match b {
                            0 => *own_stored.get_or_insert_with(|| stored(index ^ 1)),
                            _ => Sibling::Of(other[b - 1]),
                        };
                        merged.push(own[a]);
                        a += 1;
                    } else {
                        sibs[other[b]] = match a {
                            0 => *other_stored.get_or_insert_with(|| stored(index)),
                            _ => Sibling::Of(own[a - 1]),
                        };
                        merged.push(other[b]);
                        b += 1;
                    }
                }
                s = f;
            }
            std::mem::swap(&mut order, &mut merged);
        }
        // At the top each run is one tree: its root.
        let mut s = 0;
        while s < n {
            let tree = items[order[s]].0;
            let e = run_end(&order, s, |k| items[k].0 == tree);
            last.push((NodeKey { tree, height: depth as u8, index: 0 }, order[e - 1]));
            s = e;
        }
        Self { depth, items, siblings, last }
    }

    /// From the updates' new leaves, each update's path (as it stood before the update) and
    /// `levels[h][k]`, update `k`'s node at height `h` (its tree's root after it at the top).
    fn hash(&self, leaves: Vec<Digest>) -> (Vec<MerklePath>, Vec<Vec<Digest>>) {
        let n = self.items.len();
        let mut levels = Vec::with_capacity(self.depth + 1);
        levels.push(leaves);
        let mut paths: Vec<MerklePath> = vec![Vec::with_capacity(self.depth); n];
        let mut pairs = vec![Digest::default(); 2 * n];
        for h in 0..self.depth {
            let own = &levels[h];
            for (k, &(_, index)) in self.items.iter().enumerate() {
                let sibling = match self.siblings[h * n + k] {
                    Sibling::Stored(d) => d,
                    Sibling::Of(j) => own[j],
                };
                paths[k].push(sibling);
                let (l, r) = if (index >> h) & 1 == 1 { (sibling, own[k]) } else { (own[k], sibling) };
                pairs[2 * k] = l;
                pairs[2 * k + 1] = r;
            }
            // The level's hashes, all independent.
            let mut next = vec![Digest::default(); n];
            hash_pairs(&pairs, &mut next);
            levels.push(next);
        }
        (paths, levels)
    }

    /// Writes each node the updates wrote, as the last of them left it.
    fn write<N: NodeStore + ?Sized>(self, store: &mut N, levels: &[Vec<Digest>]) {
        for (key, k) in self.last {
            let height = usize::from(key.height);
            let value = levels[height][k];
            store.put_node(key, value, value == empty_subtree(height));
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::hash::F;
    use crate::state::State;
    use plonky2::field::types::{Field, Field64};

    fn record(rng: &mut StdRng) -> AccountRecord {
        let elements = [(); 4].map(|_| F::from_canonical_u64(rng.gen_range(0..F::ORDER)));
        AccountRecord {
            pubkey_hash: Digest { elements },
            nonce: rng.gen(),
            fee_balance: [0, rng.gen(), u64::MAX][rng.gen_range(0..3)],
        }
    }

    /// A random update over few accounts, tokens and pools, so that updates share leaves,
    /// siblings and paths, zero balances (empty leaves) included.
    fn update(rng: &mut StdRng) -> Update {
        let account = rng.gen_range(0..6u32) * [1, 2, 1 << 21][rng.gen_range(0..3)];
        match rng.gen_range(0..5) {
            0 | 1 => Update::Balance {
                account,
                token: rng.gen_range(1..5u16) * [1, 255][rng.gen_range(0..2)],
                amount: [0, 1, rng.gen(), u64::MAX][rng.gen_range(0..4)],
            },
            2 | 3 => Update::Account { id: account, record: record(rng) },
            _ => Update::Pool {
                id: rng.gen_range(0..5u32),
                pool: Pool {
                    token_a: rng.gen_range(0..3),
                    token_b: 3,
                    reserve_a: rng.gen(),
                    reserve_b: rng.gen(),
                    fee_bps: 30,
                },
            },
        }
    }

    /// The reference: each update applied at once with `SparseMerkleTree::set`, as the executor
    /// did before the hashing was deferred.
    fn at_once(state: &mut State, ops: &[(Update, bool)]) -> Hashed {
        let (mut paths, mut roots) = (Vec::new(), Vec::new());
        for &(u, read_first) in ops {
            if read_first {
                let account = match u {
                    Update::Balance { account, .. } => account,
                    Update::Account { id, .. } | Update::Pool { id, .. } => id,
                };
                roots.push(state.balance_root(account));
            }
            paths.push(match u {
                Update::Balance { account, token, amount } => state.write_balance(account, token, amount),
                Update::Account { id, record } => state.write_account(id, record),
                Update::Pool { id, pool } => state.write_pool(id, pool),
            });
        }
        Hashed { paths, roots }
    }

    fn deferred(state: &mut State, ops: &[(Update, bool)]) -> Hashed {
        let mut journal = Journal::default();
        for &(u, read_first) in ops {
            if read_first {
                let account = match u {
                    Update::Balance { account, .. } => account,
                    Update::Account { id, .. } | Update::Pool { id, .. } => id,
                };
                journal.read_balance_root(account);
            }
            journal.push(state.store_mut(), u);
        }
        journal.hash_into(&mut *state.store_mut().nodes_mut())
    }

    #[test]
    fn deferred_hashing_equals_each_update_at_once() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..40 {
            // Both start from the same non-empty state, reached the reference way.
            let mut reference = State::default();
            let warm: Vec<_> = (0..rng.gen_range(0..20)).map(|_| (update(&mut rng), false)).collect();
            at_once(&mut reference, &warm);
            let mut ours = reference.clone();
            let ops: Vec<_> = (0..rng.gen_range(0..60)).map(|_| (update(&mut rng), rng.gen_bool(0.3))).collect();
            let want = at_once(&mut reference, &ops);
            let got = deferred(&mut ours, &ops);
            assert_eq!(got, want, "round {round}: paths and roots");
            assert_eq!(ours.root(), reference.root(), "round {round}: state root");
            assert_eq!(ours.store(), reference.store(), "round {round}: stored nodes");
            // And batches in a row: the second starts from the first's stored nodes.
            let ops: Vec<_> = (0..rng.gen_range(1..30)).map(|_| (update(&mut rng), rng.gen_bool(0.3))).collect();
            assert_eq!(deferred(&mut ours, &ops), at_once(&mut reference, &ops), "round {round}: next batch");
            assert_eq!(ours.store(), reference.store(), "round {round}: next batch's nodes");
        }
    }

    #[test]
    fn clearing_every_leaf_leaves_no_node() {
        let mut state = State::default();
        let ops: Vec<_> = [(1u32, 3u16), (1, 2), (9, 3)]
            .iter()
            .map(|&(account, token)| (Update::Balance { account, token, amount: 5 }, false))
            .collect();
        deferred(&mut state, &ops);
        assert!(state.store().node_count() > 0);
        let clear: Vec<_> = ops
            .iter()
            .map(|&(u, _)| match u {
                Update::Balance { account, token, .. } => (Update::Balance { account, token, amount: 0 }, false),
                _ => unreachable!(),
            })
            .collect();
        deferred(&mut state, &clear);
        assert_eq!(state.store().node_count(), 0, "empty subtrees are not stored");
        assert_eq!(state.balance_root(1), empty_subtree(TOKEN_DEPTH));
    }
}
