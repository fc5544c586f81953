//! Errors of the proving backends.

use thiserror::Error;

/// Why a backend call failed.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The backend cannot run here (no driver, no device, no NVRTC).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A setting of the backend is not valid (an environment variable it reads).
    #[error("backend setting: {0}")]
    Config(String),
    /// A CUDA driver or NVRTC call failed.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// Buffers of the wrong size for the call.
    #[error("shape: {0}")]
    Shape(String),
    /// The witness generators failed (a copy constraint broken, a target never set).
    #[error("witness generation failed: {0}")]
    Witness(String),
    /// The witness breaks a gate constraint: no valid proof exists.
    #[error("unsatisfied circuit: {0}")]
    Unsatisfied(String),
    /// The circuit uses a plonky2 feature the pipeline does not implement.
    #[error("not supported by the proving pipeline: {0}")]
    Unsupported(String),
    /// The transcript drew an opening point in the trace subgroup (probability about 2^-114).
    #[error("the opening point fell in the trace subgroup; prove again with other inputs")]
    DegenerateChallenge,
    /// Two backends disagreed (the dual backend).
    #[error("backends disagree in {kernel}: {detail}")]
    Mismatch {
        /// The kernel.
        kernel: &'static str,
        /// Where.
        detail: String,
    },
    /// More proofs in flight than the device's free memory holds (checked before the first
    /// proof: [`crate::Backend::check_memory`]).
    #[error(
        "{in_flight} proofs in flight need about {need_mib} MiB of device memory and {free_mib} MiB are free: \
         {fit} fit"
    )]
    DeviceMemory {
        /// Proofs asked to run at once.
        in_flight: usize,
        /// Device memory they need, estimated ([`crate::cuda::footprint`]).
        need_mib: u64,
        /// Device memory free when checked.
        free_mib: u64,
        /// Proofs in flight that do fit (0: not even one).
        fit: usize,
    },
}

impl BackendError {
    /// Whether the failure is the device's rather than the job's: a CUDA driver or NVRTC call
    /// failed ([`Self::Cuda`]), or two backends disagreed ([`Self::Mismatch`]). No job's content
    /// can cause either (a circuit fixes every size the device sees), and a context that hit an
    /// error such as an illegal address stays broken for the life of the process, failing every
    /// later job: a prover worker must not charge these to the job (docs/services.md).
    pub fn is_device_fault(&self) -> bool {
        matches!(self, Self::Cuda(_) | Self::Mismatch { .. })
    }
}

/// Result of the backends.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;
