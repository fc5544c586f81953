//! plonky2's commitment step on a backend: the `PolynomialBatch` plonky2's prover builds with
//! `from_coeffs` or `from_values`, built here from the backend's NTT and Merkle kernels (all of
//! its fields are public).

use std::borrow::Cow;
use std::ops::Deref;

use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::plonk::config::PoseidonGoldilocksConfig;

use crate::backend::{check_polynomials, Backend, Leaves, Shape};
use crate::error::{BackendError, Result};
use crate::F;

/// plonky2's configuration.
pub type Config = PoseidonGoldilocksConfig;

/// A commitment.
pub type Commitment = PolynomialBatch<F, Config, 2>;

/// The shape of an unblinded commitment's leaves: `2^(degree_log + rate_bits)` rows of one
/// element per polynomial. It holds whether or not the tree carries its leaves, and whether or
/// not the polynomials carry their coefficients.
pub fn shape(c: &Commitment) -> Shape {
    Shape { rows: 1 << (c.degree_log + c.rate_bits), width: c.polynomials.len() }
}

/// The unblinded commitment to `polynomials` (all of one power-of-two length), as plonky2's
/// `PolynomialBatch::from_coeffs(polynomials, rate_bits, false, cap_height, ..)` makes it.
pub fn commit(
    backend: &dyn Backend,
    polynomials: Vec<PolynomialCoeffs<F>>,
    rate_bits: usize,
    cap_height: usize,
) -> Result<Commitment> {
    commit_coeffs(backend, polynomials, rate_bits, cap_height, Leaves::Host)
}

/// The unblinded commitment to the polynomials interpolating `values` on the subgroup of order
/// `n` (`values` holds them one after another), as plonky2's `PolynomialBatch::from_values`.
pub fn commit_values(
    backend: &dyn Backend,
    values: Vec<F>,
    n: usize,
    rate_bits: usize,
    cap_height: usize,
) -> Result<Commitment> {
    commit_value_columns(backend, values.into(), n, rate_bits, cap_height, Leaves::Host)
}

fn commit_coeffs(
    backend: &dyn Backend,
    polynomials: Vec<PolynomialCoeffs<F>>,
    rate_bits: usize,
    cap_height: usize,
    leaves: Leaves,
) -> Result<Commitment> {
    let n = polynomials.first().map(|p| p.len()).ok_or_else(|| BackendError::Shape("no polynomials".into()))?;
    if polynomials.iter().any(|p| p.len() != n) {
        return Err(BackendError::Shape("polynomials of different lengths".into()));
    }
    let flat: Vec<F> = polynomials.iter().flat_map(|p| p.coeffs.iter().copied()).collect();
    commit_flat(backend, polynomials, &flat, n, rate_bits, cap_height, leaves)
}

fn commit_value_columns(
    backend: &dyn Backend,
    values: Cow<'_, [F]>,
    n: usize,
    rate_bits: usize,
    cap_height: usize,
    leaves: Leaves,
) -> Result<Commitment> {
    if values.is_empty() {
        return Err(BackendError::Shape("no polynomials".into()));
    }
    check_polynomials(values.len(), n)?;
    let len = values.len();
    let (coeffs, merkle_tree) = backend.commit_values_tree(values, n, rate_bits, cap_height, leaves)?;
    // All the coefficients, or, where the backend kept them, none: the polynomials are then
    // empty on the host (their number still gives the commitment's width).
    let polynomials = if coeffs.len() == len {
        coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect()
    } else if coeffs.is_empty() && leaves == Leaves::Kept {
        vec![PolynomialCoeffs::new(Vec::new()); len / n]
    } else {
        // A backend that returned the wrong count keeps nothing for a commitment never made.
        let shape = Shape { rows: n << rate_bits, width: len / n };
        backend.release(&merkle_tree, shape);
        return Err(BackendError::Shape(format!("{} coefficients for {len} values", coeffs.len())));
    };
    Ok(PolynomialBatch {
        polynomials,
        merkle_tree,
        degree_log: n.trailing_zeros() as usize,
        rate_bits,
        blinding: false,
    })
}

/// `polynomials` and `flat` hold the same coefficients; the kernels read the flat copy.
fn commit_flat(
    backend: &dyn Backend,
    polynomials: Vec<PolynomialCoeffs<F>>,
    flat: &[F],
    n: usize,
    rate_bits: usize,
    cap_height: usize,
    leaves: Leaves,
) -> Result<Commitment> {
    Ok(PolynomialBatch {
        polynomials,
        merkle_tree: backend.commit_tree(flat, n, rate_bits, cap_height, leaves)?,
        degree_log: n.trailing_zeros() as usize,
        rate_bits,
        blinding: false,
    })
}

/// A commitment whose tree the backend may keep ([`Leaves::Kept`]): the prover's wires, Z and
/// quotient commitments. Reads as the [`Commitment`] (whose `merkle_tree` has its cap only where
/// the backend kept the rest: [`Backend::leaf_rows`] and [`Backend::merkle_paths`] read it), and
/// releases the backend's copy when dropped, on every path out of the proof, errors included.
pub struct Held<'a> {
    commitment: Commitment,
    backend: &'a dyn Backend,
}

impl<'a> Held<'a> {
    /// [`commit`], the leaves kept by `backend` if it keeps leaves.
    pub fn commit(
        backend: &'a dyn Backend,
        polynomials: Vec<PolynomialCoeffs<F>>,
        rate_bits: usize,
        cap_height: usize,
    ) -> Result<Self> {
        let commitment = commit_coeffs(backend, polynomials, rate_bits, cap_height, Leaves::Kept)?;
        Ok(Self { commitment, backend })
    }

    /// [`commit_values`], the leaves kept by `backend` if it keeps leaves; `values` owned or
    /// lent (see [`Backend::commit_values_tree`]).
    pub fn commit_values(
        backend: &'a dyn Backend,
        values: Cow<'_, [F]>,
        n: usize,
        rate_bits: usize,
        cap_height: usize,
    ) -> Result<Self> {
        let commitment = commit_value_columns(backend, values, n, rate_bits, cap_height, Leaves::Kept)?;
        Ok(Self { commitment, backend })
    }
}

impl Deref for Held<'_> {
    type Target = Commitment;

    fn deref(&self) -> &Commitment {
        &self.commitment
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.backend.release(&self.commitment.merkle_tree, shape(&self.commitment));
    }
}
