//! Runs every kernel on two backends and insists on equal outputs (risc0's `DualHal`): the way to
//! check the CUDA backend against the CPU inside whole computations.

use crate::backend::{Backend, Digest};
use crate::error::{BackendError, Result};
use crate::quotient::QuotientInputs;
use crate::F;

/// Two backends in lockstep; results come from the first.
pub struct DualBackend<A, B> {
    /// The backend whose results are returned.
    pub first: A,
    /// The backend checked against it.
    pub second: B,
}

fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl<A: Backend, B: Backend> Backend for DualBackend<A, B> {
    fn name(&self) -> &'static str {
        "dual"
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        self.first.peak_device_bytes().max(self.second.peak_device_bytes())
    }

    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        let mut other = data.to_vec();
        self.first.coset_ntt_batch(data, n, shift)?;
        self.second.coset_ntt_batch(&mut other, n, shift)?;
        match first_difference(data, &other) {
            None => Ok(()),
            Some(i) => {
                Err(BackendError::Mismatch { kernel: "coset_ntt_batch", detail: format!("element {i} of n = {n}") })
            }
        }
    }

    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        let mut other = vec![Digest::default(); out.len()];
        self.first.hash_rows(rows, width, out)?;
        self.second.hash_rows(rows, width, &mut other)?;
        match first_difference(out, &other) {
            None => Ok(()),
            Some(i) => Err(BackendError::Mismatch { kernel: "hash_rows", detail: format!("row {i} of width {width}") }),
        }
    }

    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        let out = self.first.quotient_values(q)?;
        let other = self.second.quotient_values(q)?;
        match first_difference(&out, &other) {
            None if out.len() == other.len() => Ok(out),
            None => Err(BackendError::Mismatch {
                kernel: "quotient_values",
                detail: format!("{} values against {}", out.len(), other.len()),
            }),
            Some(i) => {
                let size = q.size();
                let detail = format!("challenge {} at point {} of {size}", i / size, i % size);
                Err(BackendError::Mismatch { kernel: "quotient_values", detail })
            }
        }
    }

    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        let mut other = vec![Digest::default(); out.len()];
        self.first.hash_pairs(children, out)?;
        self.second.hash_pairs(children, &mut other)?;
        match first_difference(out, &other) {
            None => Ok(()),
            Some(i) => Err(BackendError::Mismatch { kernel: "hash_pairs", detail: format!("parent {i}") }),
        }
    }
}
