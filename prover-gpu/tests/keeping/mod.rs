//! A host backend that keeps its commitments' trees and coefficients the way a device backend
//! does.

use std::borrow::Cow;
use std::sync::Arc;

use plonky2::field::types::Field;
use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::merkle_tree::MerkleTree;
use plonky2::hash::poseidon::PoseidonHash;
use prover_gpu::backend::{combine_coeffs, evaluate_coeffs, host_leaf_rows, host_merkle_paths, Leaves, Shape, Tree};
use prover_gpu::commit::{shape, Commitment};
use prover_gpu::resident::{Resident, TreeKey};
use prover_gpu::transcript::WIDTH;
use prover_gpu::{Backend, BackendError, Digest, QuotientInputs, RayonBackend, Result, F, FE};

/// The rayon backend, except that trees committed with [`Leaves::Kept`] lose their leaves and
/// digests (the cap stays), which are held here until released with the coefficients, as the
/// CUDA backend holds them on the device: every read of them must go through
/// [`Backend::leaf_rows`] and [`Backend::merkle_paths`]. Commitments to values also lose their
/// coefficients on the host, so the openings and FRI's combination must come through
/// [`Backend::evaluate`] and [`Backend::combine`], which read the held copy wherever there is one
/// (as the device prefers its own). With `fail_grind`, FRI's proof of work fails, late in the
/// proof, after every commitment.
pub struct Keeping {
    /// The trees and coefficients held now.
    pub kept: Resident<Kept>,
    /// Fail the proof-of-work search.
    pub fail_grind: bool,
    /// Add one to the first value of every evaluation and combination from held coefficients
    /// (for the dual backend's checks).
    pub skew: bool,
    /// Return all the coefficients but the last from a commitment to values, kept or not (a
    /// broken backend, for the commitment's checks).
    pub short_coeffs: bool,
}

/// A kept commitment: its whole tree and its coefficients, one polynomial after another.
pub struct Kept {
    tree: Tree,
    coeffs: Vec<F>,
}

impl Keeping {
    pub fn new(fail_grind: bool) -> Self {
        Self { kept: Resident::new(usize::MAX), fail_grind, skew: false, short_coeffs: false }
    }

    /// What is kept for `tree` (of `shape`).
    fn whole(&self, tree: &Tree, shape: Shape) -> Result<Arc<Kept>> {
        self.kept
            .get(&TreeKey::of(tree, shape))
            .ok_or_else(|| BackendError::Shape("neither on the host nor kept".into()))
    }

    /// The coefficients held for `c`, one slice per polynomial, if any.
    fn held_coeffs(&self, c: &Commitment) -> Option<Arc<Kept>> {
        self.kept.get(&TreeKey::of(&c.merkle_tree, shape(c)))
    }
}

fn polys<'a>(kept: &'a Kept, c: &Commitment) -> Vec<&'a [F]> {
    kept.coeffs.chunks(1 << c.degree_log).collect()
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
        let kept = Kept { tree, coeffs: coeffs.to_vec() };
        self.kept.hold(TreeKey::new(&cap.0, n << rate_bits, coeffs.len() / n), Arc::new(kept), 0);
        Ok(MerkleTree { leaves: Vec::new(), digests: Vec::new(), cap })
    }
    /// As a device backend: with [`Leaves::Kept`], the coefficients stay here with the tree and
    /// none go back.
    fn commit_values_tree(
        &self,
        values: Cow<'_, [F]>,
        n: usize,
        rate_bits: usize,
        cap_height: usize,
        leaves: Leaves,
    ) -> Result<(Vec<F>, Tree)> {
        let mut values = values.into_owned();
        self.intt_batch(&mut values, n)?;
        let tree = self.commit_tree(&values, n, rate_bits, cap_height, leaves)?;
        if self.short_coeffs {
            values.pop();
            return Ok((values, tree));
        }
        Ok(if leaves == Leaves::Kept { (Vec::new(), tree) } else { (values, tree) })
    }
    fn evaluate(&self, c: &Commitment, points: &[FE]) -> Result<Vec<Vec<FE>>> {
        match self.held_coeffs(c) {
            Some(kept) => {
                let mut out = evaluate_coeffs(&polys(&kept, c), points);
                if self.skew {
                    out[0][0] += FE::ONE;
                }
                Ok(out)
            }
            None => RayonBackend.evaluate(c, points),
        }
    }
    fn combine(&self, c: &Commitment, indices: &[usize], powers: &[FE]) -> Result<Vec<FE>> {
        match self.held_coeffs(c) {
            Some(kept) => {
                let mut out = combine_coeffs(&polys(&kept, c), indices, powers, 1 << c.degree_log)?;
                if self.skew {
                    out[0] += FE::ONE;
                }
                Ok(out)
            }
            None => RayonBackend.combine(c, indices, powers),
        }
    }
    fn read_coeffs(&self, c: &Commitment) -> Result<Vec<F>> {
        match self.held_coeffs(c) {
            Some(kept) => Ok(kept.coeffs.clone()),
            None => RayonBackend.read_coeffs(c),
        }
    }
    fn leaf_rows(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        if !tree.leaves.is_empty() {
            return host_leaf_rows(tree, shape, rows);
        }
        host_leaf_rows(&self.whole(tree, shape)?.tree, shape, rows)
    }
    fn merkle_paths(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<MerkleProof<F, PoseidonHash>>> {
        if !tree.digests.is_empty() {
            return host_merkle_paths(tree, shape, rows);
        }
        host_merkle_paths(&self.whole(tree, shape)?.tree, shape, rows)
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
