//! Errors of the aggregator.

use thiserror::Error;

/// Why aggregation or block verification failed.
#[derive(Debug, Error)]
pub enum AggError {
    /// The recursion circuits could not be built with a shared shape.
    #[error("building the recursion circuits: {0}")]
    Build(String),
    /// A child proof could not be set in the merge's witness.
    #[error("proving failed: {0}")]
    Prove(String),
    /// The prover failed: the witness breaks a constraint (children that do not chain), or
    /// the backend failed ([`prover_gpu::BackendError::is_device_fault`]).
    #[error("proving failed: {source}")]
    Backend {
        /// The prover's error.
        #[from]
        source: prover_gpu::BackendError,
    },
    /// Bytes that are not a proof of the expected circuit.
    #[error("malformed proof: {0}")]
    MalformedProof(String),
    /// A public input differs from what the verifier expects.
    #[error("public input {field} mismatch: expected {expected}, got {got}")]
    PublicInputMismatch {
        /// Which input.
        field: &'static str,
        /// Hex of the expected value.
        expected: String,
        /// Hex of the proof's value.
        got: String,
    },
    /// The proof does not verify (or was made for another circuit).
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    /// A verifier key file that cannot be used (`crate::keys`).
    #[error("verifier keys: {0}")]
    VerifierKeys(String),
    /// A file of the circuits' prover data that cannot be used (`crate::prover_data`).
    #[error("prover data: {0}")]
    ProverData(String),
    /// A job's inputs do not fit its kind.
    #[error("invalid job: {0}")]
    InvalidJob(String),
}

impl AggError {
    pub(crate) fn prove(e: impl std::fmt::Display) -> Self {
        AggError::Prove(e.to_string())
    }
}

/// Result of the aggregator.
pub type Result<T, E = AggError> = std::result::Result<T, E>;
