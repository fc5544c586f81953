//! What every process of one network must agree on: the genesis and the circuits.

use std::sync::Arc;

use aggregator::{AggregationCircuits, BlockVerifier};
use anyhow::{Context, Result};
use circuits::{BatchCircuit, Genesis, F};
use plonky2::plonk::circuit_data::CommonCircuitData;
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

    /// Every circuit a prover proves: the batch circuit and the merge circuit.
    pub fn commons(&self) -> [&CommonCircuitData<F, 2>; 2] {
        [&self.batch.data().common, &self.aggregation.block_circuit().common]
    }
}

/// Key under which a node's database records the circuits it was made with.
const CIRCUITS_KEY: &[u8] = b"circuits";

impl Circuits {
    /// Refuses a database made with other circuits, and records these in a new one (`fresh`: the
    /// database holds nothing yet). A network's block verifier key is fixed when it starts
    /// (DESIGN.md, decision 6): proofs and settled blocks made under another key, or batches cut
    /// for another capacity, cannot continue here. The block verifier key's digest covers the
    /// batch circuit too (the merge holds the batch key as a constant).
    pub fn check_database(&self, db: &sled::Db, fresh: bool) -> Result<()> {
        let ours = self.verifier.digest_hex();
        match db.get(CIRCUITS_KEY)? {
            Some(v) if v.as_ref() == ours.as_bytes() => Ok(()),
            Some(v) => anyhow::bail!(
                "this data directory was made with other circuits (block verifier key {}); this \
                 process's key is {ours} (another --capacity, or another version): use another --data-dir",
                String::from_utf8_lossy(&v)
            ),
            None if !fresh => anyhow::bail!(
                "this data directory was made by an earlier version, which did not record its circuits; \
                 this process's block verifier key is {ours}: use another --data-dir"
            ),
            None => {
                db.insert(CIRCUITS_KEY, ours.as_bytes())?;
                db.flush()?;
                Ok(())
            }
        }
    }
}

/// The circuits for batches of 4 slots, built once for all the tests of this binary that need
/// them (each build takes seconds).
#[cfg(test)]
pub fn test_circuits() -> Arc<Circuits> {
    static CIRCUITS: std::sync::OnceLock<Arc<Circuits>> = std::sync::OnceLock::new();
    CIRCUITS.get_or_init(|| Circuits::build(4).expect("circuits")).clone()
}

/// The devnet genesis with `accounts` accounts.
pub fn genesis(accounts: u32) -> Genesis {
    Genesis::devnet(accounts)
}
