//! Index arithmetic of plonky2's layouts.

use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::poseidon::PoseidonHash;

use crate::backend::Tree;
use crate::error::{BackendError, Result};
use crate::F;

/// The low `bits` bits of `i`, reversed.
pub fn reverse_bits(i: usize, bits: usize) -> usize {
    if bits == 0 {
        0
    } else {
        i.reverse_bits() >> (usize::BITS as usize - bits)
    }
}

/// Position, in the digest buffer of one cap subtree of height `k`, of the node at height `h`
/// (0 = leaf digests, at most `k − 1`) with index `j` among its level.
///
/// plonky2 lays a subtree out recursively as `left subtree ‖ left child ‖ right child ‖ right
/// subtree` (`fill_subtree`), so the children of a subtree with `2^k` leaves sit at `2^k − 2`
/// and `2^k − 1`, the left subtree's nodes before them and the right subtree's after.
pub fn digest_position(k: usize, h: usize, j: usize) -> usize {
    debug_assert!(h < k && j < 1 << (k - h));
    let mut offset = 0;
    let mut k = k;
    let mut j = j;
    loop {
        let n = 1usize << k;
        if h == k - 1 {
            return offset + n - 2 + j;
        }
        let half = 1usize << (k - 1 - h);
        if j >= half {
            offset += n;
            j -= half;
        }
        k -= 1;
    }
}

/// The number of leaves of `tree`, from its digests and cap, so also when its leaves are not on
/// the host: plonky2 keeps `2·(2^h − 1)` digests under each of the cap's subtrees of `2^h` leaves.
pub fn tree_rows(tree: &Tree) -> usize {
    tree.digests.len() / 2 + tree.cap.0.len()
}

/// plonky2's `MerkleTree::prove(leaf)` (the siblings from the leaf up to the cap) from the
/// digests and the cap alone: plonky2's reads the tree's height from `leaves`, which a backend
/// may have kept ([`crate::backend::Leaves`]).
pub fn merkle_proof(tree: &Tree, leaf: usize) -> Result<MerkleProof<F, PoseidonHash>> {
    let (rows, caps) = (tree_rows(tree), tree.cap.0.len());
    if !caps.is_power_of_two() || !rows.is_power_of_two() || leaf >= rows {
        return Err(BackendError::Shape(format!("leaf {leaf} of a tree of {rows} leaves under a cap of {caps}")));
    }
    let height = (rows / caps).trailing_zeros() as usize;
    let per_subtree = tree.digests.len() / caps;
    let subtree = &tree.digests[(leaf >> height) * per_subtree..][..per_subtree];
    let j = leaf & ((1 << height) - 1);
    let siblings = (0..height).map(|h| subtree[digest_position(height, h, (j >> h) ^ 1)]).collect();
    Ok(MerkleProof { siblings })
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::Sample;
    use plonky2::hash::merkle_tree::MerkleTree;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn merkle_proofs_without_leaves_are_plonky2s() {
        let mut rng = StdRng::seed_from_u64(1);
        // Cap heights from 0 (the root) to the whole tree; rows of one and of five elements.
        for (log_rows, cap_height, width) in [(0, 0, 1), (1, 0, 5), (3, 1, 5), (5, 2, 1), (6, 6, 5), (7, 0, 5)] {
            let leaves: Vec<Vec<F>> =
                (0..1 << log_rows).map(|_| (0..width).map(|_| F::sample(&mut rng)).collect()).collect();
            let tree = MerkleTree::<F, PoseidonHash>::new(leaves, cap_height);
            let kept = Tree { leaves: Vec::new(), digests: tree.digests.clone(), cap: tree.cap.clone() };
            assert_eq!(tree_rows(&kept), 1 << log_rows);
            for leaf in 0..1 << log_rows {
                assert_eq!(
                    merkle_proof(&kept, leaf).expect("a leaf"),
                    tree.prove(leaf),
                    "{log_rows} {cap_height} {leaf}"
                );
            }
            assert!(merkle_proof(&kept, 1 << log_rows).is_err());
        }
    }

    #[test]
    fn positions_cover_the_buffer_once() {
        for k in 1..8 {
            let mut seen = vec![false; 2 * ((1 << k) - 2) + 2];
            for h in 0..k {
                for j in 0..1 << (k - h) {
                    let p = digest_position(k, h, j);
                    assert!(!seen[p], "k={k} h={h} j={j}");
                    seen[p] = true;
                }
            }
            assert!(seen.iter().all(|s| *s));
        }
    }
}
