//! Where the state lives: a small trait so the sequencer can put a database under it, and the
//! in-memory store used by tests, benches and the devnet.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

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

/// Tree nodes: a missing node is an empty subtree.
pub trait NodeStore: Sync {
    /// A stored tree node.
    fn node(&self, key: NodeKey) -> Option<Digest>;
    /// Writes a node; `is_empty` nodes are deleted instead.
    fn put_node(&mut self, key: NodeKey, value: Digest, is_empty: bool);
}

/// The state's tree nodes in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nodes(HashMap<NodeKey, Digest>);

impl Nodes {
    /// Number of stored (non-empty) nodes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no node is stored (every tree is empty).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl NodeStore for Nodes {
    fn node(&self, key: NodeKey) -> Option<Digest> {
        self.0.get(&key).copied()
    }
    fn put_node(&mut self, key: NodeKey, value: Digest, is_empty: bool) {
        if is_empty {
            self.0.remove(&key);
        } else {
            self.0.insert(key, value);
        }
    }
}

/// A store's tree nodes, behind the lock a seal's hashing holds while it writes them: the
/// executor can hash a sealed batch on another thread while the next batch applies, which
/// touches only leaf values (`crate::executor`, "The seal behind").
pub type SharedNodes = Arc<RwLock<Nodes>>;

/// Storage of the state's leaf records, and of its tree nodes behind a lock. A missing balance
/// is zero.
pub trait StateStore: Send + Sync {
    /// The tree nodes.
    fn shared_nodes(&self) -> &SharedNodes;
    /// The tree nodes to read; waits while a seal's hashing writes them.
    fn nodes(&self) -> RwLockReadGuard<'_, Nodes> {
        // A panic while hashing is a bug that stops the executor (its witnesses never come back:
        // `Executor::take_hashed` panics), so the lock's poison adds nothing to act on.
        self.shared_nodes().read().unwrap_or_else(PoisonError::into_inner)
    }
    /// The tree nodes to write; waits while a seal's hashing writes them.
    fn nodes_mut(&mut self) -> RwLockWriteGuard<'_, Nodes> {
        self.shared_nodes().write().unwrap_or_else(PoisonError::into_inner)
    }
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

/// Everything in memory: the values in hash maps, the nodes in [`Nodes`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    nodes: SharedNodes,
    accounts: HashMap<u32, AccountRecord>,
    balances: HashMap<(u32, u16), u64>,
    pools: HashMap<u32, Pool>,
}

/// A copy with its own nodes (not sharing the original's).
impl Clone for MemoryStore {
    fn clone(&self) -> Self {
        Self {
            nodes: Arc::new(RwLock::new(self.nodes().clone())),
            accounts: self.accounts.clone(),
            balances: self.balances.clone(),
            pools: self.pools.clone(),
        }
    }
}

impl PartialEq for MemoryStore {
    fn eq(&self, other: &Self) -> bool {
        self.accounts == other.accounts
            && self.balances == other.balances
            && self.pools == other.pools
            && *self.nodes() == *other.nodes()
    }
}

impl MemoryStore {
    /// Number of stored (non-empty) tree nodes.
    pub fn node_count(&self) -> usize {
        self.nodes().len()
    }
}

impl StateStore for MemoryStore {
    fn shared_nodes(&self) -> &SharedNodes {
        &self.nodes
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
