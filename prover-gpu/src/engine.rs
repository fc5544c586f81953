//! Who makes a proof: plonky2's own prover (the baseline `rollup bench` compares against) or our
//! pipeline on a backend. Circuits take a [`Prover`] so the backend is chosen once, by the caller.

use std::sync::Arc;

use plonky2::iop::witness::PartialWitness;
use plonky2::plonk::circuit_data::{CircuitData, CommonCircuitData};

use crate::backend::Backend;
use crate::commit::Config;
use crate::cpu::RayonBackend;
use crate::error::{BackendError, Result};
use crate::prove::{prove, ProofWithInputs, D};
use crate::F;

/// A way to prove.
#[derive(Clone)]
pub enum Prover {
    /// plonky2 1.1's `prove`, untouched: the baseline.
    Stock,
    /// Our pipeline, its commitments on this backend.
    Pipeline(Arc<dyn Backend>),
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Prover {
    /// Our pipeline on the rayon backend.
    pub fn cpu() -> Self {
        Prover::Pipeline(Arc::new(RayonBackend))
    }

    /// `stock`, or the backend's name (`cpu`, `cuda`, `dual`).
    pub fn name(&self) -> &'static str {
        match self {
            Prover::Stock => "stock",
            Prover::Pipeline(b) => b.name(),
        }
    }

    /// Whether its backend computes on a device (CUDA, or the dual backend with one): the
    /// backends whose failures the CPU backend, the oracle, can tell apart from the job's.
    pub fn on_device(&self) -> bool {
        matches!(self, Prover::Pipeline(b) if b.device_streams().is_some())
    }

    /// Whether `in_flight` proofs at once of any of `circuits` fit in its device's free memory
    /// ([`Backend::check_memory`]); the stock prover and host backends always fit.
    pub fn check_memory(&self, circuits: &[&CommonCircuitData<F, D>], in_flight: usize) -> Result<()> {
        match self {
            Prover::Stock => Ok(()),
            Prover::Pipeline(b) => b.check_memory(circuits, in_flight),
        }
    }

    /// Proves `inputs` for `data`. The stock prover's failures are its witness generators'
    /// (plonky2 reports them as untyped errors), so they come back as [`BackendError::Witness`].
    pub fn prove(&self, data: &CircuitData<F, Config, D>, inputs: PartialWitness<F>) -> Result<ProofWithInputs> {
        match self {
            Prover::Stock => data.prove(inputs).map_err(|e| BackendError::Witness(format!("{e:#}"))),
            Prover::Pipeline(b) => prove(b.as_ref(), &data.prover_only, &data.common, inputs),
        }
    }
}
