//! The one place a backend is chosen.

use std::sync::Arc;

use tracing::info;

use crate::backend::Backend;
use crate::cpu::RayonBackend;
use crate::cuda::{CudaBackend, Device};
use crate::error::{BackendError, Result};
use crate::lanes;

/// What the operator asked for (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// CUDA when a device is there, otherwise rayon.
    Auto,
    /// Rayon.
    Cpu,
    /// CUDA, or an error.
    Cuda,
}

/// Chooses the backend and logs which one was taken and why.
pub fn choose(requested: Requested) -> Result<Arc<dyn Backend>> {
    match requested {
        Requested::Cpu => {
            info!(backend = "cpu", hash = lanes::isa().name(), "proving backend: rayon (requested)");
            Ok(Arc::new(RayonBackend))
        }
        Requested::Cuda => {
            let b = CudaBackend::new(0)?;
            info!(
                backend = "cuda",
                device = b.device_name(),
                streams = b.device().streams(),
                "proving backend: CUDA (requested)"
            );
            Ok(Arc::new(b))
        }
        Requested::Auto => match CudaBackend::new(0) {
            Ok(b) => {
                info!(
                    backend = "cuda",
                    device = b.device_name(),
                    streams = b.device().streams(),
                    "proving backend: CUDA (auto: a device is present)"
                );
                Ok(Arc::new(b))
            }
            Err(BackendError::Unavailable(why)) | Err(BackendError::Cuda(why)) => {
                info!(
                    backend = "cpu",
                    hash = lanes::isa().name(),
                    reason = %why,
                    "proving backend: rayon (auto: no usable CUDA device)"
                );
                Ok(Arc::new(RayonBackend))
            }
            Err(e) => Err(e),
        },
    }
}
