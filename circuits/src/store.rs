//! Where the state lives: a small trait so the sequencer can put a database under it, and the
//! in-memory store used by tests, benches and the devnet.

use std::collections::HashMap;

use crate::hash::Digest;
use crate::state::{AccountRecord, Pool};

/// Which tree a node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TreeId {
    /// The account tree.
    Accounts,
    /// The pool tree.
    Pools,
    /// The token-balance tree of one account.
    Balances(u32),
}

/// Address of a tree node: height 0 are the leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// The tree.
    pub tree: TreeId,
    /// Height above the leaves.
    pub height: u8,
    /// Index among the nodes of that height.
    pub index: u64,
}

/// Storage of the state's tree nodes and leaf records. A missing node is an empty subtree, a
/// missing balance is zero.
pub trait StateStore: Send + Sync {
    /// A stored tree node.
    fn node(&self, key: NodeKey) -> Option<Digest>;
    /// Writes a node; `is_empty` nodes are deleted instead.
    fn put_node(&mut self, key: NodeKey, value: Digest, is_empty: bool);
    /// An account's record.
    fn account(&self, id: u32) -> Option<AccountRecord>;
    /// Writes an account's record.
    fn put_account(&mut self, id: u32, record: AccountRecord);
    /// A balance (zero when never written).
    fn balance(&self, account: u32, token: u16) -> u64;
    /// Writes a balance.
    fn put_balance(&mut self, account: u32, token: u16, amount: u64);
    /// A pool.
    fn pool(&self, id: u32) -> Option<Pool>;
    /// Writes a pool.
    fn put_pool(&mut self, id: u32, pool: Pool);
}

/// Everything in hash maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryStore {
    nodes: HashMap<NodeKey, Digest>,
    accounts: HashMap<u32, AccountRecord>,
    balances: HashMap<(u32, u16), u64>,
    pools: HashMap<u32, Pool>,
}

impl MemoryStore {
    /// Number of stored (non-empty) tree nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

impl StateStore for MemoryStore {
    fn node(&self, key: NodeKey) -> Option<Digest> {
        self.nodes.get(&key).copied()
    }
    fn put_node(&mut self, key: NodeKey, value: Digest, is_empty: bool) {
        if is_empty {
            self.nodes.remove(&key);
        } else {
            self.nodes.insert(key, value);
        }
    }
    fn account(&self, id: u32) -> Option<AccountRecord> {
        self.accounts.get(&id).copied()
    }
    fn put_account(&mut self, id: u32, record: AccountRecord) {
        self.accounts.insert(id, record);
    }
    fn balance(&self, account: u32, token: u16) -> u64 {
        self.balances.get(&(account, token)).copied().unwrap_or(0)
    }
    fn put_balance(&mut self, account: u32, token: u16, amount: u64) {
        if amount == 0 {
            self.balances.remove(&(account, token));
        } else {
            self.balances.insert((account, token), amount);
        }
    }
    fn pool(&self, id: u32) -> Option<Pool> {
        self.pools.get(&id).copied()
    }
    fn put_pool(&mut self, id: u32, pool: Pool) {
        self.pools.insert(id, pool);
    }
}
