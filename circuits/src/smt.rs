//! Sparse Merkle trees of fixed depth over a node store.
//!
//! Only non-empty nodes are stored; a missing node is the empty subtree of its height. Leaf
//! index bit `i` (little-endian) says whether the node at height `i` on the path is a right child,
//! which is how plonky2's `permute_swapped` orders a Merkle step in the circuit.

use crate::hash::{empty_subtree, hash_pair, Digest};
use crate::store::{NodeKey, NodeStore, TreeId};

/// The siblings from a leaf up to the root, lowest first.
pub type MerklePath = Vec<Digest>;

/// Root computed from a leaf, its index and its siblings.
pub fn root_from_path(leaf: Digest, index: u64, path: &[Digest]) -> Digest {
    let mut node = leaf;
    for (h, sibling) in path.iter().enumerate() {
        node = if (index >> h) & 1 == 1 { hash_pair(*sibling, node) } else { hash_pair(node, *sibling) };
    }
    node
}

/// One tree, identified in the store by `tree`, with `depth` levels below the root.
#[derive(Clone, Copy, Debug)]
pub struct SparseMerkleTree {
    /// Which tree of the state this is.
    pub tree: TreeId,
    /// Number of levels between the leaves and the root.
    pub depth: usize,
}

impl SparseMerkleTree {
    fn node<N: NodeStore + ?Sized>(&self, store: &N, height: usize, index: u64) -> Digest {
        store.node(NodeKey { tree: self.tree, height: height as u8, index }).unwrap_or_else(|| empty_subtree(height))
    }

    /// The current root.
    pub fn root<N: NodeStore + ?Sized>(&self, store: &N) -> Digest {
        self.node(store, self.depth, 0)
    }

    /// The leaf at `index`.
    pub fn leaf<N: NodeStore + ?Sized>(&self, store: &N, index: u64) -> Digest {
        self.node(store, 0, index)
    }

    /// Membership witness: the siblings of the leaf at `index`, lowest first.
    pub fn path<N: NodeStore + ?Sized>(&self, store: &N, index: u64) -> MerklePath {
        (0..self.depth).map(|h| self.node(store, h, (index >> h) ^ 1)).collect()
    }

    /// Replaces the leaf at `index` and rehashes its path; returns the update witness (the path,
    /// which proves both the old and the new leaf against the old and new roots).
    pub fn set<N: NodeStore + ?Sized>(&self, store: &mut N, index: u64, leaf: Digest) -> MerklePath {
        debug_assert!(index < (1u64 << self.depth));
        let path = self.path(store, index);
        let mut node = leaf;
        for h in 0..=self.depth {
            let key = NodeKey { tree: self.tree, height: h as u8, index: index >> h };
            store.put_node(key, node, node == empty_subtree(h));
            if let Some(&sibling) = path.get(h).filter(|_| h < self.depth) {
                node = if (index >> h) & 1 == 1 { hash_pair(sibling, node) } else { hash_pair(node, sibling) };
            }
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{balance_leaf, ZERO_DIGEST};
    use crate::store::Nodes;

    #[test]
    fn set_get_and_paths_agree() {
        let mut store = Nodes::default();
        let t = SparseMerkleTree { tree: TreeId::Pools, depth: 10 };
        assert_eq!(t.root(&store), empty_subtree(10));
        for (i, v) in [(0u64, 5u64), (1023, 7), (512, 9), (3, 11)] {
            let old_root = t.root(&store);
            let old_leaf = t.leaf(&store, i);
            let path = t.set(&mut store, i, balance_leaf(v));
            assert_eq!(root_from_path(old_leaf, i, &path), old_root);
            assert_eq!(root_from_path(balance_leaf(v), i, &path), t.root(&store));
        }
        // Clearing every leaf returns the empty root and leaves no node behind.
        for i in [0u64, 1023, 512, 3] {
            t.set(&mut store, i, ZERO_DIGEST);
        }
        assert_eq!(t.root(&store), empty_subtree(10));
        assert!(store.is_empty());
    }
}
