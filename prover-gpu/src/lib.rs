//! Proving backends (rayon and CUDA) for plonky2; filled by the prover-gpu issue.
