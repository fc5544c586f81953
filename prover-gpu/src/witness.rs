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
//!
//! The Poseidon gates' generators came next in the profile: plonky2's `PoseidonGenerator` runs
//! the permutation with the generic-field rounds (`mds_layer_field`, …) because it serves
//! extension fields too. For those generators (found by their id and watch list), `run_poseidon`
//! sets the same wires with the base field's fast rounds (`mds_layer`, …), the ones plonky2's own
//! `poseidon` runs, in plonky2's `PoseidonGate` wire layout.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use plonky2::field::types::Field;
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::poseidon::{Poseidon, HALF_N_FULL_ROUNDS, N_PARTIAL_ROUNDS, SPONGE_WIDTH};
use plonky2::iop::generator::GeneratedValues;
use plonky2::iop::target::Target;
use plonky2::iop::wire::Wire;
use plonky2::iop::witness::{PartialWitness, PartitionWitness, Witness, WitnessWrite};
use plonky2::plonk::circuit_data::{CommonCircuitData, ProverOnlyCircuitData};
use rayon::prelude::*;

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
    /// For each generator, the row of the Poseidon gate it fills, or `NOT_POSEIDON`.
    poseidon_rows: Vec<u32>,
}

const NOT_POSEIDON: u32 = u32::MAX;

/// plonky2's `PoseidonGate` wire layout (its index functions are crate-private): inputs, outputs,
/// the swap flag, the swap deltas, the S-box inputs of full rounds 1..4, of the 22 partial
/// rounds, then of the last four full rounds; 135 wires in all.
mod gate_wires {
    use super::{HALF_N_FULL_ROUNDS, N_PARTIAL_ROUNDS, SPONGE_WIDTH};
    pub const OUTPUT: usize = SPONGE_WIDTH;
    pub const SWAP: usize = 2 * SPONGE_WIDTH;
    pub const DELTA: usize = SWAP + 1;
    pub const FULL_0: usize = DELTA + 4;
    pub const PARTIAL: usize = FULL_0 + SPONGE_WIDTH * (HALF_N_FULL_ROUNDS - 1);
    pub const FULL_1: usize = PARTIAL + N_PARTIAL_ROUNDS;
}

/// The row of the Poseidon gate a generator fills, if it is plonky2's `PoseidonGenerator`: its
/// id, and a watch list of exactly that gate's inputs and swap flag.
fn poseidon_row(g: &plonky2::iop::generator::WitnessGeneratorRef<F, D>) -> Option<u32> {
    if g.0.id() != "PoseidonGenerator" {
        return None;
    }
    let watch = g.0.watch_list();
    let Some(Target::Wire(Wire { row, .. })) = watch.first().copied() else { return None };
    let expected = (0..SPONGE_WIDTH).chain([gate_wires::SWAP]).map(|column| Target::wire(row, column));
    let exact = watch.len() == SPONGE_WIDTH + 1 && watch.iter().copied().eq(expected);
    u32::try_from(row).ok().filter(|&r| exact && r != NOT_POSEIDON)
}

/// What plonky2's `PoseidonGenerator::run_once` sets for the gate at `row`, with the base
/// field's fast rounds; `false` (and nothing set) while an input is missing.
fn run_poseidon(row: usize, witness: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> bool {
    let get = |column| witness.try_get_target(Target::wire(row, column));
    let mut state = [F::ZERO; SPONGE_WIDTH];
    for (i, s) in state.iter_mut().enumerate() {
        match get(i) {
            Some(v) => *s = v,
            None => return false,
        }
    }
    let Some(swap) = get(gate_wires::SWAP) else { return false };
    let mut set = |column, value| out.target_values.push((Target::wire(row, column), value));
    for i in 0..4 {
        set(gate_wires::DELTA + i, swap * (state[i + 4] - state[i]));
    }
    if swap == F::ONE {
        for i in 0..4 {
            state.swap(i, 4 + i);
        }
    }
    let mut round = 0;
    for r in 0..HALF_N_FULL_ROUNDS {
        <F as Poseidon>::constant_layer(&mut state, round);
        if r != 0 {
            for (i, &v) in state.iter().enumerate() {
                set(gate_wires::FULL_0 + SPONGE_WIDTH * (r - 1) + i, v);
            }
        }
        <F as Poseidon>::sbox_layer(&mut state);
        state = <F as Poseidon>::mds_layer(&state);
        round += 1;
    }
    <F as Poseidon>::partial_first_constant_layer::<F, 1>(&mut state);
    state = <F as Poseidon>::mds_partial_layer_init::<F, 1>(&state);
    for r in 0..N_PARTIAL_ROUNDS {
        set(gate_wires::PARTIAL + r, state[0]);
        state[0] = <F as Poseidon>::sbox_monomial::<F, 1>(state[0]);
        if r < N_PARTIAL_ROUNDS - 1 {
            state[0] += F::from_canonical_u64(<F as Poseidon>::FAST_PARTIAL_ROUND_CONSTANTS[r]);
        }
        state = <F as Poseidon>::mds_partial_layer_fast(&state, r);
    }
    round += N_PARTIAL_ROUNDS;
    for r in 0..HALF_N_FULL_ROUNDS {
        <F as Poseidon>::constant_layer(&mut state, round);
        for (i, &v) in state.iter().enumerate() {
            set(gate_wires::FULL_1 + SPONGE_WIDTH * r + i, v);
        }
        <F as Poseidon>::sbox_layer(&mut state);
        state = <F as Poseidon>::mds_layer(&state);
        round += 1;
    }
    for (i, &v) in state.iter().enumerate() {
        set(gate_wires::OUTPUT + i, v);
    }
    true
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
        let poseidon_rows = prover.generators.iter().map(|g| poseidon_row(g).unwrap_or(NOT_POSEIDON)).collect();
        Ok(Self { offsets, watchers, poseidon_rows })
    }

    /// How many generators this table runs with the fast Poseidon rounds in place of plonky2's.
    pub fn fast_poseidon_generators(&self) -> usize {
        self.poseidon_rows.iter().filter(|&&r| r != NOT_POSEIDON).count()
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
            let done = match table.poseidon_rows.get(g) {
                Some(&row) if row != NOT_POSEIDON => run_poseidon(row as usize, &witness, &mut buffer),
                _ => generators[g].0.run(&witness, &mut buffer),
            };
            if done {
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

/// Rows a task of [`wire_columns`] fills: its writes are 135 runs of 2 KiB, one per column.
const ROWS_PER_TASK: usize = 256;

/// The wire columns of a generated witness, one after another (`columns[j * degree + i]` is wire
/// `j` of row `i`), a wire that nothing set being zero: plonky2's `full_witness` and a transpose
/// of its matrix, in one pass.
///
/// On the batch circuit (135 wires, 2^15 rows: 35 MB) that took about 40 ms of a witness step of
/// about 150 ms, the largest step a device leaves on the host. Reading the values is the small
/// part (6 ms on one core); most of it was the memory: plonky2's matrix and then the columns,
/// each zeroed on one thread, every page of a fresh 35 MB allocation faulted in by the zeroing.
/// Here the columns are written once, every element (a wire that nothing set gets its zero
/// there), by tasks of 256 rows on rayon, so the pages are first touched in parallel and nothing
/// is written twice. Each task reads its rows' targets in order, as plonky2 does (targets, and
/// mostly their representatives, are row-major), and writes a run of each column.
pub fn wire_columns(w: &PartitionWitness<'_, F>) -> Vec<F> {
    let (n, k) = (w.degree, w.num_wires);
    let len = k * n;
    let mut columns: Vec<F> = Vec::with_capacity(len);
    if len == 0 {
        return columns;
    }
    {
        // Each task's run of every column: task b gets rows [b·256, (b + 1)·256) of each.
        let mut tasks: Vec<Vec<&mut [MaybeUninit<F>]>> =
            (0..n.div_ceil(ROWS_PER_TASK)).map(|_| Vec::with_capacity(k)).collect();
        for column in columns.spare_capacity_mut()[..len].chunks_mut(n) {
            for (task, run) in tasks.iter_mut().zip(column.chunks_mut(ROWS_PER_TASK)) {
                task.push(run);
            }
        }
        tasks.into_par_iter().enumerate().for_each(|(b, mut runs)| {
            let first = b * ROWS_PER_TASK;
            for r in 0..runs[0].len() {
                // Wire (row i, column j) is target i·k + j (plonky2's `Target::index`).
                let row = &w.representative_map[(first + r) * k..(first + r + 1) * k];
                for (run, &rep) in runs.iter_mut().zip(row) {
                    run[r].write(w.values[rep].unwrap_or(F::ZERO));
                }
            }
        });
    }
    // SAFETY: the runs above cover the first `len` elements, columns by rows (the tasks' runs of
    // each column are its `chunks_mut`, every row of a run is written), and each was written.
    unsafe { columns.set_len(len) };
    columns
}
