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
//! extension fields too. For those generators (found by their id and watch list), the scheduler
//! sets the same wires itself, in plonky2's `PoseidonGate` wire layout: first with the base
//! field's fast rounds, one gate at a time, and now eight gates at a time on vector lanes
//! ([`poseidon_x8::permute_for_gate`]). On the batch circuit 27 807 of the 32 768 rows are
//! Poseidon gates, so their 122 wires each are most of what the step sets.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use plonky2::field::types::{Field, PrimeField64};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::poseidon::SPONGE_WIDTH;
use plonky2::iop::generator::GeneratedValues;
use plonky2::iop::target::Target;
use plonky2::iop::wire::Wire;
use plonky2::iop::witness::{PartialWitness, PartitionWitness, Witness, WitnessWrite};
use plonky2::plonk::circuit_data::{CommonCircuitData, ProverOnlyCircuitData};
use rayon::prelude::*;

use crate::commit::Config;
use crate::error::{BackendError, Result};
use crate::poseidon_x8::{self, Lanes, SboxInputs, GATE_SBOX_INPUTS, LANES};
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
/// the swap flag, the swap deltas, then the S-box inputs the gate keeps, in
/// [`poseidon_x8::SboxInputs`]'s order (full rounds 1 to 3, the 22 partial rounds, the last four
/// full rounds); 135 wires in all.
mod gate_wires {
    use super::{GATE_SBOX_INPUTS, SPONGE_WIDTH};
    pub const OUTPUT: usize = SPONGE_WIDTH;
    pub const SWAP: usize = 2 * SPONGE_WIDTH;
    pub const DELTA: usize = SWAP + 1;
    pub const SBOX: usize = DELTA + 4;
    const _: () = assert!(SBOX + GATE_SBOX_INPUTS == 135);
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

/// Poseidon gates whose inputs are set, run eight at a time on vector lanes
/// ([`poseidon_x8::permute_for_gate`]).
struct PoseidonLanes {
    /// The gates' rows, one per lane in use.
    rows: Vec<usize>,
    /// Each lane's state: the gate's inputs, swapped as its flag says.
    states: Lanes,
    /// Each lane's swap deltas, `swap · (input[i + 4] − input[i])`.
    deltas: [[F; 4]; LANES],
    sbox: SboxInputs,
}

impl PoseidonLanes {
    fn new() -> Self {
        Self {
            rows: Vec::with_capacity(LANES),
            states: [[0; LANES]; SPONGE_WIDTH],
            deltas: [[F::ZERO; 4]; LANES],
            sbox: [[0; LANES]; GATE_SBOX_INPUTS],
        }
    }

    /// Takes the gate at `row` into the next free lane if its inputs and swap flag are set, as
    /// plonky2's `PoseidonGenerator::run_once` reads them; `false` (and nothing taken) while
    /// one is missing. The caller runs [`Self::run`] when the lanes are full.
    fn take(&mut self, row: usize, witness: &PartitionWitness<F>) -> bool {
        let get = |column| witness.try_get_target(Target::wire(row, column));
        let mut state = [F::ZERO; SPONGE_WIDTH];
        for (i, s) in state.iter_mut().enumerate() {
            match get(i) {
                Some(v) => *s = v,
                None => return false,
            }
        }
        let Some(swap) = get(gate_wires::SWAP) else { return false };
        let l = self.rows.len();
        self.deltas[l] = std::array::from_fn(|i| swap * (state[i + 4] - state[i]));
        if swap == F::ONE {
            for i in 0..4 {
                state.swap(i, 4 + i);
            }
        }
        for (lane, v) in self.states.iter_mut().zip(state) {
            lane[l] = v.to_noncanonical_u64();
        }
        self.rows.push(row);
        true
    }

    fn is_full(&self) -> bool {
        self.rows.len() == LANES
    }

    /// Runs the gates taken and sets every wire plonky2's generator sets (the deltas, the S-box
    /// inputs, the outputs), queueing the generators that watch a newly set target.
    fn run(&mut self, witness: &mut PartitionWitness<F>, queue: &mut Queue) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        poseidon_x8::permute_for_gate(&mut self.states, &mut self.sbox);
        for (l, &row) in self.rows.iter().enumerate() {
            for (i, &d) in self.deltas[l].iter().enumerate() {
                queue.set(witness, Target::wire(row, gate_wires::DELTA + i), d)?;
            }
            for (k, input) in self.sbox.iter().enumerate() {
                queue.set(witness, Target::wire(row, gate_wires::SBOX + k), F::from_canonical_u64(input[l]))?;
            }
            for (i, lane) in self.states.iter().enumerate() {
                queue.set(witness, Target::wire(row, gate_wires::OUTPUT + i), F::from_canonical_u64(lane[l]))?;
            }
        }
        self.rows.clear();
        Ok(())
    }
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

/// The scheduler's state: which generators have run for good, and which to run next round.
struct Queue<'t> {
    table: &'t WatchTable,
    expired: Vec<bool>,
    next: Vec<u32>,
}

impl Queue<'_> {
    /// Sets `target` to `value` (an error if its partition holds another value), and queues the
    /// generators still to run that watch its partition, if it was unset.
    fn set(&mut self, witness: &mut PartitionWitness<F>, target: Target, value: F) -> Result<()> {
        if let Some(rep) = witness.set_target_returning_rep(target, value).map_err(fail)? {
            let expired = &self.expired;
            self.next.extend(self.table.get(rep).iter().filter(|&&w| !expired[w as usize]));
        }
        Ok(())
    }
}

/// plonky2's `generate_partial_witness`, scheduling with `table`.
///
/// Rounds as plonky2's: every generator first, then those watching a target the last round set.
/// The Poseidon gates' generators found in a round are taken into lanes and run eight at a time
/// (when the lanes fill, and at the round's end), so a generator after one of them in the round
/// may find that gate's outputs unset and wait for the next round, where plonky2's would run
/// at once; the values set are the same.
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
    let mut queue = Queue { table, expired: vec![false; generators.len()], next: Vec::new() };
    let mut remaining = generators.len();
    let mut buffer = GeneratedValues::empty();
    let mut lanes = PoseidonLanes::new();
    while !pending.is_empty() {
        for &g in &pending {
            let g = g as usize;
            if queue.expired[g] {
                continue;
            }
            let done = match table.poseidon_rows.get(g) {
                Some(&row) if row != NOT_POSEIDON => {
                    let taken = lanes.take(row as usize, &witness);
                    if lanes.is_full() {
                        lanes.run(&mut witness, &mut queue)?;
                    }
                    taken
                }
                _ => generators[g].0.run(&witness, &mut buffer),
            };
            if done {
                queue.expired[g] = true;
                remaining -= 1;
            }
            for (t, v) in buffer.target_values.drain(..) {
                queue.set(&mut witness, t, v)?;
            }
        }
        lanes.run(&mut witness, &mut queue)?;
        std::mem::swap(&mut pending, &mut queue.next);
        queue.next.clear();
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
/// of its matrix, in one pass. The values are written canonical (equal to plonky2's as field
/// elements), so a device backend uploads the columns as they lie.
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
                    let value = w.values[rep].map_or(0, |v| v.to_canonical_u64());
                    run[r].write(F::from_canonical_u64(value));
                }
            }
        });
    }
    // SAFETY: the runs above cover the first `len` elements, columns by rows (the tasks' runs of
    // each column are its `chunks_mut`, every row of a run is written), and each was written.
    unsafe { columns.set_len(len) };
    columns
}
