//! The rayon backend: plonky2's FFT (its root tables, its zero-skipping LDE) and plonky2's
//! Poseidon, each on vector lanes on AVX-512 or AVX2 where the CPU has either ([`ntt_x8`],
//! [`poseidon_x8`]), parallel over polynomials and rows.
//!
//! **The prover's commitments stay in columns.** plonky2 keeps a commitment's leaves as rows
//! (one `Vec` per row of the LDE, in bit-reversed order), and making them is a transpose of the
//! whole LDE: for the batch proof's wires, 135 polynomials of 2^18 points, 283 MB gathered and
//! then freed row by row. The proof reads the rows in two places only: the quotient step, at
//! every point in natural order (it wants columns of neighbouring points), and FRI's query
//! rounds, a few dozen rows. So a commitment made with [`Leaves::Kept`] (the prover's wires, Z
//! and quotient) keeps each polynomial's LDE where the NTT wrote it, hashes eight neighbouring
//! rows at a time straight from the columns ([`poseidon_x8::hash_columns`]), and puts the
//! digests, not the rows, in bit-reversed order. The tree's digests and cap are on the host as
//! plonky2 has them; its leaves are empty, and [`Backend::leaf_rows`] and
//! [`Backend::quotient_values`] read the columns, until [`Backend::release`].

use std::sync::{Arc, LazyLock};

use plonky2::field::types::Field;
use plonky2::hash::merkle_tree::{MerkleCap, MerkleTree};
use plonky2::util::reverse_index_bits_in_place;
use rayon::prelude::*;

use crate::backend::{
    check_polynomials, commit_tree_on_host, host_leaf_rows, tree_leaves, Backend, Digest, Leaves, Shape, Tree,
};
use crate::commit::shape;
use crate::error::{BackendError, Result};
use crate::layout::reverse_bits;
use crate::ntt_x8::{self, root_table, shift_powers};
use crate::poseidon_x8;
use crate::quotient::{LdeView, QuotientInputs};
use crate::resident::{Resident, TreeKey};
use crate::F;

/// The CPU backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct RayonBackend;

/// One LDE per polynomial, natural order: a commitment's leaves as the rayon backend keeps them.
pub type Columns = Vec<Vec<F>>;

/// The commitments kept in columns ([`Leaves::Kept`]), by cap and shape, each held until the
/// proof that made it releases it. One set for the process: the backend is a unit value that
/// every prover copies, and a key names the same leaves whichever copy made them (two proofs
/// that commit the same data hold the entry twice). Held entries ignore the budget.
static KEPT: LazyLock<Resident<Columns>> = LazyLock::new(|| Resident::new(usize::MAX));

/// The columns kept for `tree` of `shape`, or why they are not here.
fn kept(tree: &Tree, shape: Shape) -> Result<Arc<Columns>> {
    KEPT.get(&TreeKey::of(tree, shape)).ok_or_else(|| {
        BackendError::Shape(format!(
            "the leaves of a tree of {} rows of {} are neither on the host nor kept by the rayon backend",
            shape.rows, shape.width
        ))
    })
}

/// Each polynomial's coset LDE on `F::coset_shift()` at rate `2^-rate_bits`, in its own vector,
/// natural order, polynomials in parallel.
fn coset_lde_columns(coeffs: &[F], n: usize, rate_bits: usize) -> Result<Columns> {
    check_polynomials(coeffs.len(), n)?;
    let m = n << rate_bits;
    let (table, powers) = (root_table(m), shift_powers(F::coset_shift(), n));
    Ok(coeffs
        .par_chunks(n)
        .map(|c| {
            let mut out = vec![F::ZERO; m];
            ntt_x8::coset_lde(c, rate_bits, &powers, &table, &mut out);
            out
        })
        .collect())
}

/// `[1, x, x², …]` of length `n`.
pub fn powers(x: F, n: usize) -> Vec<F> {
    let mut v = Vec::with_capacity(n);
    let mut p = F::ONE;
    for _ in 0..n {
        v.push(p);
        p *= x;
    }
    v
}

impl Backend for RayonBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        check_polynomials(data.len(), n)?;
        let (table, powers) = (root_table(n), shift_powers(shift, n));
        data.par_chunks_mut(n).for_each(|p| ntt_x8::coset_fft(p, &powers, &table));
        Ok(())
    }

    fn intt_batch(&self, data: &mut [F], n: usize) -> Result<()> {
        check_polynomials(data.len(), n)?;
        let table = root_table(n);
        data.par_chunks_mut(n).for_each(|p| ntt_x8::ifft(p, &table));
        Ok(())
    }

    fn coset_lde_batch(&self, coeffs: &[F], n: usize, rate_bits: usize, shift: F) -> Result<Vec<F>> {
        check_polynomials(coeffs.len(), n)?;
        let m = n << rate_bits;
        let (table, powers) = (root_table(m), shift_powers(shift, n));
        let mut lde = vec![F::ZERO; coeffs.len() << rate_bits];
        lde.par_chunks_mut(m)
            .zip(coeffs.par_chunks(n))
            .for_each(|(out, c)| ntt_x8::coset_lde(c, rate_bits, &powers, &table, out));
        Ok(lde)
    }

    fn coset_lde_leaves(&self, coeffs: &[F], n: usize, rate_bits: usize) -> Result<Vec<Vec<F>>> {
        // plonky2's `from_coeffs` path: each polynomial's LDE in its own vector (no flat buffer
        // to zero and copy into), rows gathered in natural order, then the row pointers put in
        // bit-reversed order.
        let m = n << rate_bits;
        let ldes = coset_lde_columns(coeffs, n, rate_bits)?;
        let mut leaves: Vec<Vec<F>> = (0..m).into_par_iter().map(|r| ldes.iter().map(|p| p[r]).collect()).collect();
        drop(ldes);
        reverse_index_bits_in_place(&mut leaves);
        Ok(leaves)
    }

    /// With [`Leaves::Host`], plonky2's commitment (the trait's default); with [`Leaves::Kept`],
    /// the leaves stay in columns (see the module's comment): the same digests and cap.
    fn commit_tree(&self, coeffs: &[F], n: usize, rate_bits: usize, cap_height: usize, leaves: Leaves) -> Result<Tree> {
        if leaves == Leaves::Host {
            return commit_tree_on_host(self, coeffs, n, rate_bits, cap_height);
        }
        check_polynomials(coeffs.len(), n)?;
        let (rows, width) = (n << rate_bits, coeffs.len() / n);
        tree_leaves(rows * width, width, cap_height)?;
        let columns = coset_lde_columns(coeffs, n, rate_bits)?;
        let mut level = vec![Digest::default(); rows];
        poseidon_x8::hash_columns(&columns, &mut level);
        reverse_index_bits_in_place(&mut level);
        let (digests, cap) = self.tree_above(level, cap_height)?;
        let tree = MerkleTree { leaves: Vec::new(), digests, cap: MerkleCap(cap) };
        let bytes = rows * width * size_of::<F>();
        KEPT.hold(TreeKey::of(&tree, Shape { rows, width }), Arc::new(columns), bytes);
        Ok(tree)
    }

    /// From the host's leaves, or from the columns kept for `tree` (leaf `r` is row
    /// `reverse_bits(r)` of the LDE).
    fn leaf_rows(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        if !tree.leaves.is_empty() {
            return host_leaf_rows(tree, shape, rows);
        }
        let columns = kept(tree, shape)?;
        let bits = shape.rows.trailing_zeros() as usize;
        rows.iter()
            .map(|&r| match r < shape.rows {
                true => Ok(columns.iter().map(|c| c[reverse_bits(r, bits)]).collect()),
                false => Err(BackendError::Shape(format!("row {r} of a tree of {} leaves", shape.rows))),
            })
            .collect()
    }

    /// One hold on the columns kept under `tree`'s key is dropped (another proof that committed
    /// the same data keeps them until it releases them too). By key, whether or not this `tree`
    /// carries its leaves: [`crate::DualBackend`] releases its second backend's copy through
    /// the first's tree.
    fn release(&self, tree: &Tree, shape: Shape) {
        KEPT.release(&TreeKey::of(tree, shape));
    }

    /// The quotient over the commitments' LDEs where they are: the wires and Z in the columns
    /// this backend kept, the circuit's constants and sigmas in plonky2's leaves.
    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        let trees = q.trees();
        let columns = trees
            .iter()
            .map(|&(b, width)| match b.merkle_tree.leaves.is_empty() {
                true => kept(&b.merkle_tree, Shape { rows: shape(b).rows, width }).map(Some),
                false => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let views = std::array::from_fn(|i| match &columns[i] {
            Some(c) => LdeView::Columns(c),
            None => LdeView::Leaves(&trees[i].0.merkle_tree.leaves),
        });
        q.values_on_cpu_over(views)
    }

    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        if width == 0 || rows.len() != width * out.len() {
            return Err(BackendError::Shape(format!("{} elements for {} rows of {width}", rows.len(), out.len())));
        }
        poseidon_x8::hash_rows(rows, width, out);
        Ok(())
    }

    fn merkle_tree_of_leaves(&self, leaves: &[Vec<F>], cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let mut level = vec![Digest::default(); leaves.len()];
        poseidon_x8::hash_leaves(leaves, &mut level);
        self.tree_above(level, cap_height)
    }

    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        if children.len() != 2 * out.len() {
            return Err(BackendError::Shape(format!("{} children for {} parents", children.len(), out.len())));
        }
        poseidon_x8::hash_pairs(children, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use plonky2::field::types::Field64;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::backend::host_merkle_paths;

    fn random(rng: &mut StdRng, len: usize) -> Vec<F> {
        (0..len).map(|_| F::from_canonical_u64(rng.gen_range(0..F::ORDER))).collect()
    }

    /// A commitment kept in columns is plonky2's (the trait's default, leaves on the host, which
    /// `rayon_kernels` holds to plonky2's own): the same digests and cap, the same rows and Merkle
    /// paths read back; its columns are there until released and gone after.
    #[test]
    fn kept_commitments_are_plonky2s_in_columns_until_released() {
        let mut rng = StdRng::seed_from_u64(21);
        // Widths past several chunks of the sponge's rate, and of at most four (rows that are
        // their own digests); caps from one root to one digest per leaf pair.
        for (n, rate_bits, width, cap_height) in
            [(8, 3, 135, 2), (16, 1, 3, 0), (32, 2, 20, 4), (4, 3, 9, 4), (2, 2, 1, 1)]
        {
            let coeffs = random(&mut rng, n * width);
            let host = RayonBackend.commit_tree(&coeffs, n, rate_bits, cap_height, Leaves::Host).expect("host");
            let tree = RayonBackend.commit_tree(&coeffs, n, rate_bits, cap_height, Leaves::Kept).expect("kept");
            let rows = n << rate_bits;
            let shape = Shape { rows, width };
            let case = format!("{width} polynomials of {n} at rate 2^-{rate_bits}, cap height {cap_height}");
            assert!(tree.leaves.is_empty(), "{case}");
            assert_eq!((&tree.digests, &tree.cap), (&host.digests, &host.cap), "{case}");
            let all: Vec<usize> = (0..rows).rev().collect();
            let read = RayonBackend.leaf_rows(&tree, shape, &all).expect("rows");
            assert_eq!(read, all.iter().map(|&r| host.leaves[r].clone()).collect::<Vec<_>>(), "{case}");
            let paths = RayonBackend.merkle_paths(&tree, shape, &all).expect("paths");
            assert_eq!(paths, host_merkle_paths(&host, shape, &all).expect("host paths"), "{case}");
            assert!(matches!(RayonBackend.leaf_rows(&tree, shape, &[rows]), Err(BackendError::Shape(_))), "{case}");
            RayonBackend.release(&tree, shape);
            assert!(matches!(RayonBackend.leaf_rows(&tree, shape, &[0]), Err(BackendError::Shape(_))), "{case}");
        }
    }

    /// Two proofs that commit the same data hold its columns twice: the first release leaves
    /// them to the second. Shapes no tree has are refused (before anything is computed or kept).
    #[test]
    fn the_same_data_kept_twice_is_released_twice_and_bad_shapes_are_refused() {
        let mut rng = StdRng::seed_from_u64(22);
        let coeffs = random(&mut rng, 16 * 5);
        let shape = Shape { rows: 64, width: 5 };
        let first = RayonBackend.commit_tree(&coeffs, 16, 2, 1, Leaves::Kept).expect("first");
        let second = RayonBackend.commit_tree(&coeffs, 16, 2, 1, Leaves::Kept).expect("second");
        assert_eq!(first.cap, second.cap);
        RayonBackend.release(&first, shape);
        assert_eq!(RayonBackend.leaf_rows(&second, shape, &[3]).expect("still held")[0].len(), 5);
        RayonBackend.release(&second, shape);
        assert!(matches!(RayonBackend.leaf_rows(&second, shape, &[3]), Err(BackendError::Shape(_))));

        for (len, n, cap_height) in [(0, 16, 0), (16 * 5, 16, 7), (15, 16, 0), (24, 12, 0)] {
            let err = RayonBackend.commit_tree(&random(&mut rng, len), n, 2, cap_height, Leaves::Kept);
            assert!(
                matches!(err, Err(BackendError::Shape(_))),
                "{len} coefficients in polynomials of {n}, cap height {cap_height}"
            );
        }
    }
}
