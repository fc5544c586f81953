//! A host backend that keeps its commitments' trees the way a device backend does.

use std::sync::Arc;

use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::merkle_tree::MerkleTree;
use plonky2::hash::poseidon::PoseidonHash;
use prover_gpu::backend::{host_leaf_rows, host_merkle_paths, Leaves, Shape, Tree};
use prover_gpu::resident::{Resident, TreeKey};
use prover_gpu::transcript::WIDTH;
use prover_gpu::{Backend, BackendError, Digest, QuotientInputs, RayonBackend, Result, F};

/// The rayon backend, except that trees committed with [`Leaves::Kept`] lose their leaves and
/// digests (the cap stays), which are held here until released, as the CUDA backend holds them
/// on the device: every read of them must go through [`Backend::leaf_rows`] and
/// [`Backend::merkle_paths`]. With `fail_grind`, FRI's proof of work fails, late in the proof,
/// after every commitment.
pub struct Keeping {
    /// The trees held now.
    pub kept: Resident<Tree>,
    /// Fail the proof-of-work search.
    pub fail_grind: bool,
}

impl Keeping {
    pub fn new(fail_grind: bool) -> Self {
        Self { kept: Resident::new(usize::MAX), fail_grind }
    }

    /// The whole tree kept for `tree` (of `shape`).
    fn whole(&self, tree: &Tree, shape: Shape) -> Result<Arc<Tree>> {
        self.kept
            .get(&TreeKey::of(tree, shape))
            .ok_or_else(|| BackendError::Shape("neither on the host nor kept".into()))
    }
}

impl Backend for Keeping {
    fn name(&self) -> &'static str {
        "keeping"
    }
    rayon_kernels!();
    fn commit_tree(&self, coeffs: &[F], n: usize, rate_bits: usize, cap_height: usize, leaves: Leaves) -> Result<Tree> {
        let tree = RayonBackend.commit_tree(coeffs, n, rate_bits, cap_height, Leaves::Host)?;
        if leaves == Leaves::Host {
            return Ok(tree);
        }
        let cap = tree.cap.clone();
        self.kept.hold(TreeKey::new(&cap.0, n << rate_bits, coeffs.len() / n), Arc::new(tree), 0);
        Ok(MerkleTree { leaves: Vec::new(), digests: Vec::new(), cap })
    }
    fn leaf_rows(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        if !tree.leaves.is_empty() {
            return host_leaf_rows(tree, shape, rows);
        }
        host_leaf_rows(self.whole(tree, shape)?.as_ref(), shape, rows)
    }
    fn merkle_paths(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<MerkleProof<F, PoseidonHash>>> {
        if !tree.digests.is_empty() {
            return host_merkle_paths(tree, shape, rows);
        }
        host_merkle_paths(self.whole(tree, shape)?.as_ref(), shape, rows)
    }
    fn release(&self, tree: &Tree, shape: Shape) {
        self.kept.release(&TreeKey::of(tree, shape));
    }
    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        q.values_on_cpu_from(self)
    }
    fn grind(&self, state: &[F; WIDTH], slot: usize, zeros: u32, start: u64, count: u64) -> Result<Option<u64>> {
        if self.fail_grind {
            return Err(BackendError::Cuda("an injected failure".into()));
        }
        RayonBackend.grind(state, slot, zeros, start, count)
    }
}
