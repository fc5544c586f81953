//! Recursive aggregation: batch proofs folded through a tree of recursive proofs into one block
//! proof with a constant size and one verifier key, and the plan of the jobs that make it.

pub mod driver;
pub mod error;
pub mod jobs;
pub mod keys;
pub mod plan;
pub mod prover_data;
pub mod recursion;
pub mod verify;

pub use error::{AggError, Result};
pub use jobs::{AggJob, ProofBytes, ProofKind};
pub use keys::VerifierKeys;
pub use plan::{BlockPlan, JobId, PlannedJob, PlannedKind};
pub use recursion::{AggregationCircuits, AGGREGATION_DEGREE_BITS, MERGE_ARITY};
pub use verify::{BlockPublicInputs, BlockVerifier};
