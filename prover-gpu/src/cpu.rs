//! The rayon backend: radix-2 NTTs and plonky2's Poseidon, parallel over polynomials and rows.

use plonky2::field::types::Field;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::plonk::config::Hasher;
use rayon::prelude::*;

use crate::backend::{Backend, Digest};
use crate::error::{BackendError, Result};
use crate::layout::reverse_bits;
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

/// In-place radix-2 decimation-in-time NTT of one polynomial (natural order in and out).
pub fn ntt_in_place(a: &mut [F], twiddles: &[F]) {
    let n = a.len();
    let log_n = n.trailing_zeros() as usize;
    for i in 0..n {
        let r = reverse_bits(i, log_n);
        if i < r {
            a.swap(i, r);
        }
    }
    let mut half = 1;
    while half < n {
        let stride = n / (2 * half);
        for start in (0..n).step_by(2 * half) {
            for k in 0..half {
                let v = a[start + k + half] * twiddles[k * stride];
                let u = a[start + k];
                a[start + k] = u + v;
                a[start + k + half] = u - v;
            }
        }
        half *= 2;
    }
}

impl Backend for RayonBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        if n == 0 || !n.is_power_of_two() || !data.len().is_multiple_of(n) {
            return Err(BackendError::Shape(format!("{} elements in polynomials of {n}", data.len())));
        }
        let omega = F::primitive_root_of_unity(n.trailing_zeros() as usize);
        let twiddles = powers(omega, n / 2);
        let shifts = powers(shift, n);
        data.par_chunks_mut(n).for_each(|p| {
            p.iter_mut().zip(&shifts).for_each(|(c, s)| *c *= *s);
            ntt_in_place(p, &twiddles);
        });
        Ok(())
    }

    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        if width == 0 || rows.len() != width * out.len() {
            return Err(BackendError::Shape(format!("{} elements for {} rows of {width}", rows.len(), out.len())));
        }
        out.par_iter_mut().zip(rows.par_chunks(width)).for_each(|(o, r)| *o = PoseidonHash::hash_or_noop(r));
        Ok(())
    }

    fn coset_lde_leaves(&self, coeffs: &[F], n: usize, rate_bits: usize) -> Result<Vec<Vec<F>>> {
        if n == 0 || !n.is_power_of_two() || !coeffs.len().is_multiple_of(n) {
            return Err(BackendError::Shape(format!("{} coefficients in polynomials of {n}", coeffs.len())));
        }
        let batch = coeffs.len() / n;
        let m = n << rate_bits;
        let mut lde = vec![F::ZERO; batch * m];
        lde.par_chunks_mut(m).zip(coeffs.par_chunks(n)).for_each(|(l, c)| l[..n].copy_from_slice(c));
        self.coset_ntt_batch(&mut lde, m, F::coset_shift())?;
        let log_m = m.trailing_zeros() as usize;
        Ok((0..m).into_par_iter().map(|r| (0..batch).map(|p| lde[p * m + reverse_bits(r, log_m)]).collect()).collect())
    }

    fn merkle_tree_of_leaves(&self, leaves: &[Vec<F>], cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let level: Vec<Digest> = leaves.par_iter().map(|l| PoseidonHash::hash_or_noop(l)).collect();
        self.tree_above(level, cap_height)
    }

    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        if children.len() != 2 * out.len() {
            return Err(BackendError::Shape(format!("{} children for {} parents", children.len(), out.len())));
        }
        out.par_iter_mut().zip(children.par_chunks(2)).for_each(|(o, c)| *o = PoseidonHash::two_to_one(c[0], c[1]));
        Ok(())
    }
}
