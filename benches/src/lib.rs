//! Shared pieces of the benchmarks.

pub use circuits::load::mixed_load;

use std::sync::Arc;

use prover_gpu::{CudaBackend, Prover};

/// The provers a benchmark compares in one run: plonky2's stock prover (the baseline), our
/// pipeline on rayon, and on CUDA where a device is present (said on stderr when it is not).
pub fn provers() -> Vec<Prover> {
    let mut v = vec![Prover::Stock, Prover::cpu()];
    match CudaBackend::new(0) {
        Ok(b) => v.push(Prover::Pipeline(Arc::new(b))),
        Err(e) => eprintln!("no CUDA prover in this run: {e}"),
    }
    v
}
