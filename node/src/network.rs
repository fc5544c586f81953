//! What every process of one network must agree on: the genesis and the circuits.

use std::sync::Arc;

use aggregator::{AggregationCircuits, BlockVerifier};
use anyhow::{Context, Result};
use circuits::{BatchCircuit, Genesis};
use tracing::info;

/// The circuits of a network, built once per process and shared by every service in it.
pub struct Circuits {
    /// The batch circuit.
    pub batch: BatchCircuit,
    /// The recursion circuits.
    pub aggregation: AggregationCircuits,
    /// The pinned block verifier.
    pub verifier: BlockVerifier,
}

impl Circuits {
    /// Builds the circuits for batches of `capacity` slots.
    pub fn build(capacity: usize) -> Result<Arc<Self>> {
        let start = std::time::Instant::now();
        let (batch, aggregation) = AggregationCircuits::build(capacity).context("building the circuits")?;
        let verifier = BlockVerifier::new(&aggregation);
        info!(capacity, seconds = start.elapsed().as_secs_f64(), key = %verifier.digest_hex(), "circuits built");
        Ok(Arc::new(Self { batch, aggregation, verifier }))
    }
}

/// The devnet genesis with `accounts` accounts.
pub fn genesis(accounts: u32) -> Genesis {
    Genesis::devnet(accounts)
}
