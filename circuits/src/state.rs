//! The rollup state: accounts with token balances, and AMM pools, committed by one root.
//!
//! `state_root = hash_pair(account_root, pool_root)`. See `docs/state.md` for the leaf formats.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use plonky2::field::types::Field;

use crate::deferred::{Journal, LeafKey, Update};
use crate::hash::{
    account_leaf, balance_leaf, hash_elements, hash_pair, u64_limbs, Digest, ACCOUNT_DEPTH, ACCOUNT_LEAF_ELEMENTS, F,
    POOL_DEPTH, TOKEN_DEPTH, ZERO_DIGEST,
};
use crate::smt::{MerklePath, SparseMerkleTree};
use crate::store::{MemoryStore, StateStore, TreeId};

/// The account that collects every transaction fee.
pub const OPERATOR_ACCOUNT: u32 = 0;
/// The token fees are paid in (the network's gas token). Its balance is held in the account leaf
/// itself ([`AccountRecord::fee_balance`]), not in the account's balance tree, whose leaf 0
/// stays empty: every paying transaction debits a fee, and a leaf update costs no rows where a
/// balance-tree update costs twenty (`docs/state.md`).
pub const FEE_TOKEN: u16 = 0;
/// Basis points in one whole.
pub const BPS: u64 = 10_000;

/// What an account leaf holds besides its balance root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    /// Poseidon hash of the account's BLS public key.
    pub pubkey_hash: Digest,
    /// Number of transactions the account has sent.
    pub nonce: u32,
    /// The account's balance of [`FEE_TOKEN`].
    pub fee_balance: u64,
}

impl AccountRecord {
    /// A freshly registered account: nonce zero, no balances.
    pub fn registered(pubkey_hash: Digest) -> Self {
        Self { pubkey_hash, nonce: 0, fee_balance: 0 }
    }

    /// The account's leaf, with `balance_root` the root of its balance tree.
    pub fn leaf(&self, balance_root: Digest) -> Digest {
        account_leaf(self.pubkey_hash, self.nonce, self.fee_balance, balance_root)
    }
}

/// A constant-product pool between two tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// First token.
    pub token_a: u16,
    /// Second token (different from the first).
    pub token_b: u16,
    /// Reserve of `token_a`.
    pub reserve_a: u64,
    /// Reserve of `token_b`.
    pub reserve_b: u64,
    /// Swap fee in basis points, below 10 000; it stays in the pool.
    pub fee_bps: u16,
}

impl Pool {
    /// The elements hashed into the pool's leaf: its seven values and zeros, as many as an
    /// account leaf's, so that the circuit's one hash serves a slot's second leaf of either
    /// kind.
    pub fn leaf_inputs(&self) -> [F; ACCOUNT_LEAF_ELEMENTS] {
        let [ra_lo, ra_hi] = u64_limbs(self.reserve_a);
        let [rb_lo, rb_hi] = u64_limbs(self.reserve_b);
        [
            F::from_canonical_u16(self.token_a),
            F::from_canonical_u16(self.token_b),
            ra_lo,
            ra_hi,
            rb_lo,
            rb_hi,
            F::from_canonical_u16(self.fee_bps),
            F::ZERO,
            F::ZERO,
            F::ZERO,
            F::ZERO,
        ]
    }

    /// The pool's leaf in the pool tree.
    pub fn leaf(&self) -> Digest {
        hash_elements(&self.leaf_inputs())
    }
}

/// Leaves hashed at once by [`State::write_leaves`]: the paths its hashing gives back (about a
/// kilobyte a leaf) are this many at most.
const WRITE_LEAVES_CHUNK: usize = 1 << 14;

/// The whole state over a store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State<S = MemoryStore> {
    store: S,
}

/// The account tree.
pub const ACCOUNTS: SparseMerkleTree = SparseMerkleTree { tree: TreeId::Accounts, depth: ACCOUNT_DEPTH };
/// The pool tree.
pub const POOLS: SparseMerkleTree = SparseMerkleTree { tree: TreeId::Pools, depth: POOL_DEPTH };

/// The balance tree of `account`.
pub fn balances(account: u32) -> SparseMerkleTree {
    SparseMerkleTree { tree: TreeId::Balances(account), depth: TOKEN_DEPTH }
}

impl<S: StateStore> State<S> {
    /// A state over an existing store.
    pub fn from_store(store: S) -> Self {
        Self { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The underlying store, to write (the executor's deferred hashing).
    pub(crate) fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The state root.
    pub fn root(&self) -> Digest {
        // One read of the nodes for both trees, so that both roots are of the same seal.
        let nodes = self.store.nodes();
        hash_pair(ACCOUNTS.root(&*nodes), POOLS.root(&*nodes))
    }

    /// Root of the account tree.
    pub fn account_root(&self) -> Digest {
        ACCOUNTS.root(&*self.store.nodes())
    }

    /// Root of the pool tree.
    pub fn pool_root(&self) -> Digest {
        POOLS.root(&*self.store.nodes())
    }

    /// An account's record, if it exists.
    pub fn account(&self, id: u32) -> Option<AccountRecord> {
        self.store.account(id)
    }

    /// An account's balance of a token (zero for an unknown account): the fee token's from the
    /// account's record, any other from its balance tree.
    pub fn balance(&self, account: u32, token: u16) -> u64 {
        if token == FEE_TOKEN {
            self.store.account(account).map_or(0, |r| r.fee_balance)
        } else {
            self.store.balance(account, token)
        }
    }

    /// Root of an account's balance tree.
    pub fn balance_root(&self, account: u32) -> Digest {
        balances(account).root(&*self.store.nodes())
    }

    /// A pool, if it exists.
    pub fn pool(&self, id: u32) -> Option<Pool> {
        self.store.pool(id)
    }

    /// Membership witness of an account leaf.
    pub fn account_path(&self, id: u32) -> MerklePath {
        ACCOUNTS.path(&*self.store.nodes(), u64::from(id))
    }

    /// Membership witness of a balance leaf.
    pub fn balance_path(&self, account: u32, token: u16) -> MerklePath {
        balances(account).path(&*self.store.nodes(), u64::from(token))
    }

    /// Membership witness of a pool leaf.
    pub fn pool_path(&self, id: u32) -> MerklePath {
        POOLS.path(&*self.store.nodes(), u64::from(id))
    }

    /// The account leaf as the tree holds it (the empty digest for a free id).
    pub fn account_leaf(&self, id: u32) -> Digest {
        match self.store.account(id) {
            Some(r) => r.leaf(self.balance_root(id)),
            None => ZERO_DIGEST,
        }
    }

    /// Writes leaf values and hashes them into the trees: how a state saved as its leaves is
    /// rebuilt, over the state they were written after (a later write of a leaf wins, so a
    /// batch's updates in order will do: [`crate::Executor::keep_leaf_writes`]). An account
    /// whose balances change has its leaf rehashed with its new balance root, written or not.
    /// The hashing is the seal's, level by level on every core, in chunks; only where nothing
    /// else writes the store's nodes (no executor hashes behind over it).
    pub fn write_leaves(&mut self, leaves: impl IntoIterator<Item = Update>) {
        let mut leaves: BTreeMap<LeafKey, Update> = leaves.into_iter().map(|u| (u.leaf(), u)).collect();
        let rebalanced: BTreeSet<u32> = leaves
            .keys()
            .filter_map(|k| match *k {
                LeafKey::Balance { account, .. } => Some(account),
                _ => None,
            })
            .collect();
        for id in rebalanced {
            if let (Entry::Vacant(e), Some(record)) = (leaves.entry(LeafKey::Account(id)), self.store.account(id)) {
                e.insert(Update::Account { id, record });
            }
        }
        // In key order, so every balance is hashed before any account leaf that holds it.
        let leaves: Vec<Update> = leaves.into_values().collect();
        for chunk in leaves.chunks(WRITE_LEAVES_CHUNK) {
            let mut journal = Journal::default();
            for &u in chunk {
                journal.push(&mut self.store, u);
            }
            journal.hash_into(&mut *self.store.nodes_mut());
        }
    }

    /// Writes an account record and rehashes its leaf; returns the account-tree path.
    pub(crate) fn write_account(&mut self, id: u32, record: AccountRecord) -> MerklePath {
        self.store.put_account(id, record);
        let leaf = record.leaf(self.balance_root(id));
        ACCOUNTS.set(&mut *self.store.nodes_mut(), u64::from(id), leaf)
    }

    /// Writes a balance into the account's balance tree (not the account leaf); returns the path.
    /// Not for the fee token, whose balance is the record's.
    pub(crate) fn write_balance(&mut self, account: u32, token: u16, amount: u64) -> MerklePath {
        debug_assert_ne!(token, FEE_TOKEN, "the fee token's balance is in the account record");
        self.store.put_balance(account, token, amount);
        balances(account).set(&mut *self.store.nodes_mut(), u64::from(token), balance_leaf(amount))
    }

    /// Writes a pool and its leaf; returns the pool-tree path.
    pub(crate) fn write_pool(&mut self, id: u32, pool: Pool) -> MerklePath {
        self.store.put_pool(id, pool);
        POOLS.set(&mut *self.store.nodes_mut(), u64::from(id), pool.leaf())
    }
}
