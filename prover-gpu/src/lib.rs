//! Proving backends for plonky2: the batch kernels of the commitment step (coset LDE over
//! Goldilocks in plonky2's layout, Poseidon leaf hashing and Merkle trees in plonky2's exact
//! digest layout) on rayon and on CUDA, behind one trait, chosen in one place.

pub mod backend;
pub mod commit;
pub mod cpu;
pub mod cuda;
pub mod dual;
pub mod engine;
pub mod error;
pub mod fri;
pub mod gates;
pub mod lanes;
pub mod layout;
pub mod naive;
pub mod ntt_x8;
pub mod poseidon_x8;
pub mod prove;
pub mod quotient;
pub mod quotient_x8;
pub mod resident;
pub mod select;
pub mod transcript;
pub mod witness;

pub use backend::{Backend, Digest};
pub use commit::{commit, commit_values, Config};
pub use cpu::RayonBackend;
pub use cuda::CudaBackend;
pub use dual::DualBackend;
pub use engine::Prover;
pub use error::{BackendError, Result};
pub use prove::{prove, prove_timed, prove_with_partition, ProofWithInputs, StepTimes};
pub use quotient::{GateProgram, QuotientInputs, QuotientKernelArgs};
pub use select::{choose, Requested};
pub use transcript::Transcript;

/// The field of every kernel.
pub type F = plonky2::field::goldilocks_field::GoldilocksField;

/// The quadratic extension FRI's challenges and openings live in.
pub type FE = <F as plonky2::field::extension::Extendable<2>>::Extension;
