//! The rayon backend: plonky2's FFT (its root tables, its zero-skipping LDE) and plonky2's
//! Poseidon, each on vector lanes on AVX-512 or AVX2 where the CPU has either ([`ntt_x8`],
//! [`poseidon_x8`]), parallel over polynomials and rows.

use plonky2::field::types::Field;
use plonky2::util::reverse_index_bits_in_place;
use rayon::prelude::*;

use crate::backend::{check_polynomials, Backend, Digest};
use crate::error::{BackendError, Result};
use crate::ntt_x8::{self, root_table, shift_powers};
use crate::poseidon_x8;
use crate::F;

/// The CPU backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct RayonBackend;

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
        check_polynomials(coeffs.len(), n)?;
        let m = n << rate_bits;
        let (table, powers) = (root_table(m), shift_powers(F::coset_shift(), n));
        let ldes: Vec<Vec<F>> = coeffs
            .par_chunks(n)
            .map(|c| {
                let mut out = vec![F::ZERO; m];
                ntt_x8::coset_lde(c, rate_bits, &powers, &table, &mut out);
                out
            })
            .collect();
        let mut leaves: Vec<Vec<F>> = (0..m).into_par_iter().map(|r| ldes.iter().map(|p| p[r]).collect()).collect();
        drop(ldes);
        reverse_index_bits_in_place(&mut leaves);
        Ok(leaves)
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
