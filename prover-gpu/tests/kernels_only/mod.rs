//! A backend of the rayon backend's three required kernels and nothing else.

use plonky2::field::types::Field;
use prover_gpu::{Backend, Digest, RayonBackend, Result, F};

/// The rayon backend's three required kernels and nothing else, so that every derived step runs
/// the trait's default methods (the path a backend without overrides takes). With
/// `break_pairs`, one element of one digest above the leaves is flipped.
pub struct KernelsOnly {
    /// Flip one element of one digest above the leaves.
    pub break_pairs: bool,
}

impl Backend for KernelsOnly {
    fn name(&self) -> &'static str {
        if self.break_pairs {
            "broken-pairs"
        } else {
            "kernels-only"
        }
    }
    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        RayonBackend.coset_ntt_batch(data, n, shift)
    }
    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        RayonBackend.hash_rows(rows, width, out)
    }
    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        RayonBackend.hash_pairs(children, out)?;
        if self.break_pairs {
            out[out.len() / 2].elements[1] += F::ONE;
        }
        Ok(())
    }
}
