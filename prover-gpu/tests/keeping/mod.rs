//! A host backend that keeps its commitments' leaves the way a device backend does.

use std::sync::Arc;

use prover_gpu::backend::{host_leaf_rows, Leaves, Tree};
use prover_gpu::resident::{Resident, TreeKey};
use prover_gpu::transcript::WIDTH;
use prover_gpu::{Backend, BackendError, Digest, QuotientInputs, RayonBackend, Result, F};

/// The rayon backend, except that leaves committed with [`Leaves::Kept`] are taken off the
/// returned tree and held here until released, as the CUDA backend holds them on the device:
/// every read of them must go through [`Backend::leaf_rows`]. With `fail_grind`, FRI's proof of
/// work fails, late in the proof, after every commitment.
pub struct Keeping {
    /// The leaves held now.
    pub kept: Resident<Vec<Vec<F>>>,
    /// Fail the proof-of-work search.
    pub fail_grind: bool,
}

impl Keeping {
    pub fn new(fail_grind: bool) -> Self {
        Self { kept: Resident::new(usize::MAX), fail_grind }
    }
}

impl Backend for Keeping {
    fn name(&self) -> &'static str {
        "keeping"
    }
    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        RayonBackend.coset_ntt_batch(data, n, shift)
    }
    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        RayonBackend.hash_rows(rows, width, out)
    }
    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        RayonBackend.hash_pairs(children, out)
    }
    fn commit_tree(&self, coeffs: &[F], n: usize, rate_bits: usize, cap_height: usize, leaves: Leaves) -> Result<Tree> {
        let mut tree = RayonBackend.commit_tree(coeffs, n, rate_bits, cap_height, Leaves::Host)?;
        if leaves == Leaves::Kept {
            let rows = std::mem::take(&mut tree.leaves);
            self.kept.hold(TreeKey::new(&tree.cap.0, rows.len(), coeffs.len() / n), Arc::new(rows), 0);
        }
        Ok(tree)
    }
    fn leaf_rows(&self, tree: &Tree, width: usize, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        if !tree.leaves.is_empty() {
            return host_leaf_rows(tree, width, rows);
        }
        let kept = self
            .kept
            .get(&TreeKey::of(tree, width))
            .ok_or_else(|| BackendError::Shape("leaves neither on the host nor kept".into()))?;
        rows.iter().map(|&r| kept.get(r).cloned().ok_or_else(|| BackendError::Shape(format!("row {r}")))).collect()
    }
    fn release(&self, tree: &Tree, width: usize) {
        self.kept.release(&TreeKey::of(tree, width));
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
