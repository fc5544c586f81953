//! The one place a backend is chosen.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

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

/// Chooses the backend and logs which one was taken and why. `device` is the CUDA device's
/// ordinal (CUDA's numbering), used where CUDA is taken: one prover process per GPU names its
/// own. Under [`Requested::Auto`] a machine without a usable CUDA device proves on the CPU, but a
/// device number past the last of the machine's devices is an error, not a fallback.
pub fn choose(requested: Requested, device: usize) -> Result<Arc<dyn Backend>> {
    match requested {
        Requested::Cpu => {
            info!(backend = "cpu", hash = lanes::isa().name(), "proving backend: rayon (requested)");
            Ok(Arc::new(RayonBackend))
        }
        Requested::Cuda => {
            let (b, compile_seconds) = cuda_compiled(device)?;
            info!(
                backend = "cuda",
                ordinal = device,
                device = b.device_name(),
                streams = b.device().streams(),
                waits = ?b.device().waits(),
                compile_seconds,
                "proving backend: CUDA (requested)"
            );
            Ok(Arc::new(b))
        }
        Requested::Auto => match cuda_compiled(device) {
            Ok((b, compile_seconds)) => {
                info!(
                    backend = "cuda",
                    ordinal = device,
                    device = b.device_name(),
                    streams = b.device().streams(),
                    waits = ?b.device().waits(),
                    compile_seconds,
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

/// Device `ordinal` with every kernel compiled, and the seconds that took. The quotient kernel is
/// otherwise compiled by the first proof that needs it (NVRTC and the driver's JIT: about 5 s of
/// one core for `qt_values`); a prover compiles it when it starts, so that no job and no timed
/// stage of `rollup bench` pays for it. If it does not compile, the backend still proves, its
/// quotient on the CPU: said here, once, as a warning.
fn cuda_compiled(ordinal: usize) -> Result<(CudaBackend, f64)> {
    let t = Instant::now();
    let b = CudaBackend::new(ordinal)?;
    if let Err(e) = b.quotient_kernel_ready() {
        warn!(error = %e, "the CUDA quotient kernel did not compile: quotients run on the CPU");
    }
    Ok((b, t.elapsed().as_secs_f64()))
}
