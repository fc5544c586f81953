//! Errors of the proving backends.

use thiserror::Error;

/// Why a backend call failed.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The backend cannot run here (no driver, no device, no NVRTC).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A CUDA driver or NVRTC call failed.
    #[error("CUDA: {0}")]
    Cuda(String),
    /// Buffers of the wrong size for the call.
    #[error("shape: {0}")]
    Shape(String),
    /// Two backends disagreed (the dual backend).
    #[error("backends disagree in {kernel}: {detail}")]
    Mismatch {
        /// The kernel.
        kernel: &'static str,
        /// Where.
        detail: String,
    },
}

/// Result of the backends.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;
