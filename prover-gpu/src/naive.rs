//! Plain serial oracles: the definitions, evaluated directly.

use plonky2::field::types::Field;

use crate::F;

/// `v_i = Σ_j c_j·(shift·ω^i)^j` by Horner's rule at each point: O(n²), obviously right.
pub fn coset_dft(coeffs: &[F], shift: F) -> Vec<F> {
    let n = coeffs.len();
    let omega = F::primitive_root_of_unity(n.trailing_zeros() as usize);
    let mut x = shift;
    (0..n)
        .map(|_| {
            let v = coeffs.iter().rev().fold(F::ZERO, |acc, c| acc * x + *c);
            x *= omega;
            v
        })
        .collect()
}
