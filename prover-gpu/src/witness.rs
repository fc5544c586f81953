//! Witness generation: plonky2's `generate_partial_witness`, with its scheduler's lookups made
//! cheap.
//!
//! plonky2 runs every generator once, then, round after round, the generators watching a target
//! that the last round set. It finds a target's watchers in a `BTreeMap`, and on the batch circuit
//! those lookups were about a fifth of the whole step (measured with `perf`: the B-tree search
//! inside `generate_partial_witness` was the largest self time of the step). Here the same
//! watchers sit in one flat table indexed by the target's representative, built once per circuit
//! and kept for the process. The generators, their order and the values they set are plonky2's,
//! so the witness is plonky2's (up to the public-input gate's unused wires, which plonky2 fills
//! with random values).

use std::sync::{Arc, Mutex};

use plonky2::hash::hash_types::HashOut;
use plonky2::iop::generator::GeneratedValues;
use plonky2::iop::witness::{PartialWitness, PartitionWitness, WitnessWrite};
use plonky2::plonk::circuit_data::{CommonCircuitData, ProverOnlyCircuitData};

use crate::commit::Config;
use crate::error::{BackendError, Result};
use crate::F;

const D: usize = 2;

/// Circuits whose tables are kept: a process proves a few circuits (the batch and the merge).
const CACHED_CIRCUITS: usize = 8;

/// Kept tables, by circuit digest and generator count.
type Cache = Vec<(HashOut<F>, usize, Arc<WatchTable>)>;

/// The generators watching each representative target, as one flat table.
pub struct WatchTable {
    /// `watchers[offsets[r]..offsets[r + 1]]` watch representative `r`.
    offsets: Vec<u32>,
    watchers: Vec<u32>,
}

impl WatchTable {
    /// The table of `prover`'s `generator_indices_by_watches`.
    pub fn of(prover: &ProverOnlyCircuitData<F, Config, D>) -> Result<Self> {
        let targets = prover.representative_map.len();
        let too_large = || BackendError::Shape("more generators or targets than a u32 indexes".into());
        if targets >= u32::MAX as usize || prover.generators.len() >= u32::MAX as usize {
            return Err(too_large());
        }
        let mut offsets = vec![0u32; targets + 1];
        let mut total = 0usize;
        for (&rep, list) in &prover.generator_indices_by_watches {
            if rep >= targets {
                return Err(BackendError::Shape(format!("a generator watches target {rep} of {targets}")));
            }
            offsets[rep + 1] = list.len() as u32;
            total += list.len();
        }
        if total >= u32::MAX as usize {
            return Err(too_large());
        }
        for r in 0..targets {
            offsets[r + 1] += offsets[r];
        }
        let mut watchers = vec![0u32; total];
        for (&rep, list) in &prover.generator_indices_by_watches {
            let start = offsets[rep] as usize;
            for (slot, &g) in watchers[start..start + list.len()].iter_mut().zip(list) {
                *slot = g as u32;
            }
        }
        Ok(Self { offsets, watchers })
    }

    /// The generators watching representative `rep`.
    fn get(&self, rep: usize) -> &[u32] {
        match (self.offsets.get(rep), self.offsets.get(rep + 1)) {
            (Some(&a), Some(&b)) => &self.watchers[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The table of `prover`'s circuit, built on first use and kept.
    pub fn cached(prover: &ProverOnlyCircuitData<F, Config, D>) -> Result<Arc<Self>> {
        static TABLES: Mutex<Cache> = Mutex::new(Vec::new());
        // The digest names the circuit; the generator count guards against a digest shared by
        // circuits that differ only in their generators.
        let key = (prover.circuit_digest, prover.generators.len());
        let lookup = |tables: &Cache| tables.iter().find(|(d, n, _)| (*d, *n) == key).map(|(_, _, t)| t.clone());
        if let Some(t) = lookup(&TABLES.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(t);
        }
        let table = Arc::new(Self::of(prover)?);
        let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = lookup(&tables) {
            return Ok(t);
        }
        if tables.len() == CACHED_CIRCUITS {
            tables.remove(0);
        }
        tables.push((key.0, key.1, table.clone()));
        Ok(table)
    }
}

fn fail(e: impl std::fmt::Display) -> BackendError {
    BackendError::Witness(format!("{e:#}"))
}

/// plonky2's `generate_partial_witness`, scheduling with `table`.
pub fn generate_partial_witness<'a>(
    inputs: PartialWitness<F>,
    prover: &'a ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    table: &WatchTable,
) -> Result<PartitionWitness<'a, F>> {
    let generators = &prover.generators;
    let mut witness = PartitionWitness::new(common.config.num_wires, common.degree(), &prover.representative_map);
    for (t, v) in inputs.target_values {
        witness.set_target(t, v).map_err(fail)?;
    }
    let mut pending: Vec<u32> = (0..generators.len() as u32).collect();
    let mut next = Vec::new();
    let mut expired = vec![false; generators.len()];
    let mut remaining = generators.len();
    let mut buffer = GeneratedValues::empty();
    while !pending.is_empty() {
        for &g in &pending {
            let g = g as usize;
            if expired[g] {
                continue;
            }
            if generators[g].0.run(&witness, &mut buffer) {
                expired[g] = true;
                remaining -= 1;
            }
            for (t, v) in buffer.target_values.drain(..) {
                if let Some(rep) = witness.set_target_returning_rep(t, v).map_err(fail)? {
                    next.extend(table.get(rep).iter().filter(|&&w| !expired[w as usize]));
                }
            }
        }
        std::mem::swap(&mut pending, &mut next);
        next.clear();
    }
    if remaining != 0 {
        return Err(BackendError::Witness(format!("{remaining} generators weren't run")));
    }
    Ok(witness)
}
