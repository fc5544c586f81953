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
//! ([`poseidon_x8::permute_for_gate`]). On the batch circuit 26 966 of the 32 768 rows are
//! Poseidon gates, so their 122 wires each are most of what the step sets.
//!
//! Then (forty-ninth session) the scheduling itself and the arithmetic. plonky2's rounds try a
//! generator, find an input missing, and look up its watchers again when the input is set;
//! which generators can run depends only on which targets are set, and every witness of a
//! circuit sets the same input targets, so the first complete generation's order is kept in
//! the table and later ones follow it, each generator once (falling back to the rounds should
//! a generator find an input unset). And plonky2's `ArithmeticBaseGenerator` (69 559 of the
//! batch circuit's 110 222 generators) allocates its dependency list and its output on every
//! try; its operation, read once from its serialized fields, is computed here. On the batch
//! circuit the step went from 128 ms to 84 ms (`cargo bench -p benches --bench batch --
//! witness`, BENCHMARKS.md, "Witness generation in a learned order"). Since the fiftieth
//! session the extension field's arithmetic gates too (`ArithmeticExtensionGate`,
//! `MulExtensionGate`: 30 624 of a merge's 72 229 generators), which a recursive verifier's
//! arithmetic is.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use plonky2::field::extension::{Extendable, FieldExtension};
use plonky2::field::types::{Field, Field64, PrimeField64};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::poseidon::SPONGE_WIDTH;
use plonky2::iop::generator::GeneratedValues;
use plonky2::iop::target::Target;
use plonky2::iop::wire::Wire;
use plonky2::iop::witness::{PartialWitness, PartitionWitness, Witness, WitnessWrite};
use plonky2::plonk::circuit_data::{CommonCircuitData, ProverOnlyCircuitData};
use plonky2::util::serialization::{Buffer, Read as _};
use rayon::prelude::*;

use crate::commit::Config;
use crate::error::{BackendError, Result};
use crate::poseidon_x8::{self, Lanes, SboxInputs, GATE_SBOX_INPUTS, LANES};
use crate::F;

const D: usize = 2;

/// The quadratic extension the extension gates compute in.
type Ext = <F as Extendable<D>>::Extension;

/// Circuits whose tables are kept: a process proves a few circuits (the batch and the merge).
const CACHED_CIRCUITS: usize = 8;

/// Kept tables, by circuit digest and generator count.
type Cache = Vec<(HashOut<F>, usize, Arc<WatchTable>)>;

/// A circuit's generators as the scheduler runs them: who watches each representative target,
/// how each generator runs, and, once a witness has been generated, the order they ran in.
pub struct WatchTable {
    /// `watchers[offsets[r]..offsets[r + 1]]` watch representative `r`.
    offsets: Vec<u32>,
    watchers: Vec<u32>,
    /// How each generator runs.
    kinds: Vec<Kind>,
    /// The operations of the generators of kind [`Kind::Arithmetic`].
    arithmetic: Vec<ArithmeticOp>,
    /// The order the first complete generation ran the generators in ([`Schedule`]).
    schedule: OnceLock<Schedule>,
    /// Generations that followed the schedule to its end, and those that left it for the
    /// watch lists.
    replayed: AtomicUsize,
    fell_back: AtomicUsize,
}

/// How a generator runs.
#[derive(Clone, Copy)]
enum Kind {
    /// plonky2's own `run`.
    Plonky2,
    /// plonky2's `PoseidonGenerator` of the gate at this row: on lanes, eight gates at a time.
    Poseidon(u32),
    /// The generator of one of plonky2's arithmetic gates: this entry of
    /// [`WatchTable::arithmetic`].
    Arithmetic(u32),
}

/// One operation of one of plonky2's arithmetic gates, as its generator computes it:
/// `output = c0·m0·m1 + c1·addend` over the base field (`ArithmeticGate`) or the quadratic
/// extension (`ArithmeticExtensionGate`), or `output = c0·m0·m1` over the extension
/// (`MulExtensionGate`, whose `c1` is unused).
struct ArithmeticOp {
    gate: ArithmeticGate,
    row: usize,
    /// The operation's first wire: its inputs, then its output, lie from here.
    first: usize,
    c0: F,
    c1: F,
}

/// The arithmetic gates whose generators run here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ArithmeticGate {
    /// `ArithmeticGate`'s `ArithmeticBaseGenerator`.
    Base,
    /// `ArithmeticExtensionGate`'s `ArithmeticExtensionGenerator`.
    Extension,
    /// `MulExtensionGate`'s `MulExtensionGenerator`.
    MulExtension,
}

/// The generators in the order a complete generation ran them, flat: a generator's index, or
/// [`LANES_TAG`]` | k` followed by the `k` Poseidon generators one lane run computed.
type Schedule = Vec<u32>;

const LANES_TAG: u32 = 1 << 31;

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

impl ArithmeticGate {
    const ALL: [Self; 3] = [Self::Base, Self::Extension, Self::MulExtension];

    /// The gate whose generator has this id.
    fn of(id: &str) -> Option<Self> {
        match id {
            "ArithmeticBaseGenerator" => Some(Self::Base),
            "ArithmeticExtensionGenerator" => Some(Self::Extension),
            "MulExtensionGenerator" => Some(Self::MulExtension),
            _ => None,
        }
    }

    /// The wire layouts (plonky2's index functions for them are crate-private): operation `i`
    /// takes wires `width·i ..` — its multiplicands, its addend where it has one, each one
    /// element (base) or `D` (extension), then its output.
    const fn element(self) -> usize {
        match self {
            Self::Base => 1,
            Self::Extension | Self::MulExtension => D,
        }
    }

    /// Input elements: two multiplicands and, but for `MulExtensionGate`, the addend.
    const fn inputs(self) -> usize {
        match self {
            Self::Base | Self::Extension => 3,
            Self::MulExtension => 2,
        }
    }

    /// Wires an operation takes.
    const fn width(self) -> usize {
        (self.inputs() + 1) * self.element()
    }

    /// Whether its generator's fields hold `const_1` (`MulExtensionGenerator`'s do not).
    const fn has_addend(self) -> bool {
        self.inputs() == 3
    }
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
    u32::try_from(row).ok().filter(|_| exact)
}

/// The operation a generator computes, if it is the generator of one of plonky2's arithmetic
/// gates ([`ArithmeticGate`]): its id, its fields as its `serialize` writes them (row,
/// `const_0`, `const_1` but for `MulExtensionGenerator`, operation), and a watch list of exactly
/// that operation's inputs.
fn arithmetic_op(
    g: &plonky2::iop::generator::WitnessGeneratorRef<F, D>,
    common: &CommonCircuitData<F, D>,
) -> Option<ArithmeticOp> {
    let gate = ArithmeticGate::of(&g.0.id())?;
    let mut bytes = Vec::with_capacity(32);
    g.0.serialize(&mut bytes, common).ok()?;
    // Read back as the generator's own `deserialize` reads them, the whole encoding.
    let mut src = Buffer::new(&bytes);
    let row = src.read_usize().ok()?;
    let c0 = src.read_field::<F>().ok()?;
    let c1 = if gate.has_addend() { src.read_field::<F>().ok()? } else { F::ZERO };
    let op = src.read_usize().ok()?;
    let canonical = c0.0 < F::ORDER && c1.0 < F::ORDER;
    let first = op.checked_mul(gate.width())?;
    if src.pos() != bytes.len() || !canonical || first.checked_add(gate.width())? > common.config.num_wires {
        return None;
    }
    let inputs = first..first + gate.inputs() * gate.element();
    let exact = g.0.watch_list().into_iter().eq(inputs.map(|column| Target::wire(row, column)));
    exact.then_some(ArithmeticOp { gate, row, first, c0, c1 })
}

impl ArithmeticOp {
    /// The generator's `run`: the output into `out` and `true` once the inputs are set.
    fn run(&self, witness: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> bool {
        let get = |k: usize| witness.try_get_target(Target::wire(self.row, self.first + k));
        let output = |k: usize| Target::wire(self.row, self.first + self.gate.width() - self.gate.element() + k);
        match self.gate {
            ArithmeticGate::Base => {
                let (Some(m0), Some(m1), Some(addend)) = (get(0), get(1), get(2)) else { return false };
                out.target_values.push((output(0), m0 * m1 * self.c0 + addend * self.c1));
            }
            ArithmeticGate::Extension | ArithmeticGate::MulExtension => {
                let ext = |k: usize| Some(Ext::from_basefield_array([get(k)?, get(k + 1)?]));
                let (Some(m0), Some(m1)) = (ext(0), ext(D)) else { return false };
                let scale = |x: Ext, c: F| FieldExtension::<D>::scalar_mul(&x, c);
                let product = scale(m0 * m1, self.c0);
                let value = if self.gate.has_addend() {
                    let Some(addend) = ext(2 * D) else { return false };
                    product + scale(addend, self.c1)
                } else {
                    product
                };
                let value: [F; D] = FieldExtension::<D>::to_basefield_array(&value);
                for (k, v) in value.into_iter().enumerate() {
                    out.target_values.push((output(k), v));
                }
            }
        }
        true
    }
}

/// Poseidon gates whose inputs are set, run eight at a time on vector lanes
/// ([`poseidon_x8::permute_for_gate`]).
struct PoseidonLanes {
    /// The gates' rows, one per lane in use, and their generators.
    rows: Vec<usize>,
    generators: Vec<u32>,
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
            generators: Vec::with_capacity(LANES),
            states: [[0; LANES]; SPONGE_WIDTH],
            deltas: [[F::ZERO; 4]; LANES],
            sbox: [[0; LANES]; GATE_SBOX_INPUTS],
        }
    }

    /// Takes generator `g`'s gate at `row` into the next free lane if its inputs and swap flag
    /// are set, as plonky2's `PoseidonGenerator::run_once` reads them; `false` (and nothing
    /// taken) while one is missing. The caller runs [`Self::run`] when the lanes are full.
    fn take(&mut self, g: u32, row: usize, witness: &PartitionWitness<F>) -> bool {
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
        self.generators.push(g);
        true
    }

    fn is_full(&self) -> bool {
        self.rows.len() == LANES
    }

    /// Runs the gates taken and sets every wire plonky2's generator sets (the deltas, the S-box
    /// inputs, the outputs) through `queue`, which records the run.
    fn run(&mut self, witness: &mut PartitionWitness<F>, queue: &mut Queue) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if let Some(order) = &mut queue.order {
            order.push(LANES_TAG | self.generators.len() as u32);
            order.extend(&self.generators);
        }
        // Each lane's row of values and of representatives is asked for while the permutation
        // runs: the rows are 2 KiB apart or more, each a new stream for the CPU's prefetchers,
        // and the sets below waited on their loads (`perf`: the set's load of the value, about
        // a third of the step); 0.92× the step, median of four interleaved pairs.
        let k = witness.num_wires;
        for &row in &self.rows {
            // A cache line holds four values (`Option<F>`) and eight representatives.
            let wires = row * k..(row + 1) * k;
            for v in witness.values.get(wires.clone()).unwrap_or_default().iter().step_by(4) {
                poseidon_x8::prefetch(v);
            }
            for r in witness.representative_map.get(wires).unwrap_or_default().iter().step_by(8) {
                poseidon_x8::prefetch(r);
            }
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
        self.clear();
        Ok(())
    }

    /// Empties the lanes, dropping whatever was taken and not run.
    fn clear(&mut self) {
        self.rows.clear();
        self.generators.clear();
    }
}

impl WatchTable {
    /// The table of `prover`'s generators and their `generator_indices_by_watches`.
    pub fn of(prover: &ProverOnlyCircuitData<F, Config, D>, common: &CommonCircuitData<F, D>) -> Result<Self> {
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
        let mut arithmetic = Vec::new();
        let kinds = prover
            .generators
            .iter()
            .map(|g| {
                if let Some(row) = poseidon_row(g) {
                    Kind::Poseidon(row)
                } else if let Some(op) = arithmetic_op(g, common) {
                    arithmetic.push(op);
                    Kind::Arithmetic(arithmetic.len() as u32 - 1)
                } else {
                    Kind::Plonky2
                }
            })
            .collect();
        Ok(Self {
            offsets,
            watchers,
            kinds,
            arithmetic,
            schedule: OnceLock::new(),
            replayed: AtomicUsize::new(0),
            fell_back: AtomicUsize::new(0),
        })
    }

    /// How many generators this table runs with the fast Poseidon rounds in place of plonky2's.
    pub fn fast_poseidon_generators(&self) -> usize {
        self.kinds.iter().filter(|k| matches!(k, Kind::Poseidon(_))).count()
    }

    /// How many generators of each of plonky2's arithmetic gates this table runs as operations
    /// of its own in place of plonky2's generator, in [`ArithmeticGate`]'s order (base,
    /// extension, multiplication in the extension).
    pub fn fast_arithmetic_generators(&self) -> [usize; 3] {
        ArithmeticGate::ALL.map(|gate| self.arithmetic.iter().filter(|op| op.gate == gate).count())
    }

    /// Whether a complete generation has left its order to follow.
    pub fn has_schedule(&self) -> bool {
        self.schedule.get().is_some()
    }

    /// Generations that followed the schedule to its end, and generations that left it for the
    /// watch lists (a generator found an input unset where the schedule ran it).
    pub fn replays(&self) -> (usize, usize) {
        (self.replayed.load(Ordering::Relaxed), self.fell_back.load(Ordering::Relaxed))
    }

    /// The generators watching representative `rep`.
    fn get(&self, rep: usize) -> &[u32] {
        match (self.offsets.get(rep), self.offsets.get(rep + 1)) {
            (Some(&a), Some(&b)) => &self.watchers[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The table of `prover`'s circuit, built on first use and kept.
    pub fn cached(prover: &ProverOnlyCircuitData<F, Config, D>, common: &CommonCircuitData<F, D>) -> Result<Arc<Self>> {
        static TABLES: Mutex<Cache> = Mutex::new(Vec::new());
        // The digest names the circuit; the generator count guards against a digest shared by
        // circuits that differ only in their generators.
        let key = (prover.circuit_digest, prover.generators.len());
        let lookup = |tables: &Cache| tables.iter().find(|(d, n, _)| (*d, *n) == key).map(|(_, _, t)| t.clone());
        if let Some(t) = lookup(&TABLES.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(t);
        }
        let table = Arc::new(Self::of(prover, common)?);
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

/// The scheduler's state: which generators have run for good, which to run next round, and the
/// order they ran in while it is being learned.
struct Queue<'t> {
    table: &'t WatchTable,
    expired: Vec<bool>,
    remaining: usize,
    next: Vec<u32>,
    /// Whether a newly set target queues its watchers (not while following the schedule).
    watch: bool,
    /// The run so far, while learning the schedule.
    order: Option<Schedule>,
}

impl Queue<'_> {
    /// Sets `target` to `value` (an error if its partition holds another value), and, while
    /// watching, queues the generators still to run that watch its partition if it was unset.
    fn set(&mut self, witness: &mut PartitionWitness<F>, target: Target, value: F) -> Result<()> {
        if let Some(rep) = witness.set_target_returning_rep(target, value).map_err(fail)? {
            if self.watch {
                let expired = &self.expired;
                self.next.extend(self.table.get(rep).iter().filter(|&&w| !expired[w as usize]));
            }
        }
        Ok(())
    }

    /// Marks generator `g` as run for good.
    fn expire(&mut self, g: u32) {
        self.expired[g as usize] = true;
        self.remaining -= 1;
    }

    /// Sets the values a generator's run left in `buffer` (plonky2's generators may leave some
    /// behind a run that did not complete, too).
    fn set_generated(&mut self, witness: &mut PartitionWitness<F>, buffer: &mut GeneratedValues<F>) -> Result<()> {
        buffer.target_values.drain(..).try_for_each(|(t, v)| self.set(witness, t, v))
    }

    /// Sets what generator `g` left in `buffer`, after a run that completed, and records it.
    fn completed(&mut self, g: u32, witness: &mut PartitionWitness<F>, buffer: &mut GeneratedValues<F>) -> Result<()> {
        self.expire(g);
        if let Some(order) = &mut self.order {
            order.push(g);
        }
        self.set_generated(witness, buffer)
    }
}

/// Runs generator `g` unless it is a Poseidon gate's, which `lanes` takes: `true` once it has run
/// (or been taken), its values in `buffer`.
fn run_one(
    g: u32,
    prover: &ProverOnlyCircuitData<F, Config, D>,
    table: &WatchTable,
    witness: &PartitionWitness<F>,
    buffer: &mut GeneratedValues<F>,
    lanes: &mut PoseidonLanes,
) -> bool {
    match table.kinds[g as usize] {
        Kind::Poseidon(row) => lanes.take(g, row as usize, witness),
        Kind::Arithmetic(op) => table.arithmetic[op as usize].run(witness, buffer),
        Kind::Plonky2 => prover.generators[g as usize].0.run(witness, buffer),
    }
}

/// plonky2's `generate_partial_witness`, scheduling with `table`.
///
/// The first complete generation for a circuit runs plonky2's rounds: every generator first,
/// then those watching a target the last round set. The Poseidon gates' generators found in a
/// round are taken into lanes and run eight at a time (when the lanes fill, and at the round's
/// end), so a generator after one of them in the round may find that gate's outputs unset and
/// wait for the next round, where plonky2's would run at once; the values set are the same.
/// That generation's order is kept in the table ([`WatchTable::has_schedule`]).
///
/// Later generations follow that order: each generator once, no watch lists, no runs that find
/// an input missing. Which generators can run depends only on which targets are set, not on their
/// values, and a circuit's witnesses set the same input targets, so the order holds for every
/// witness of the circuit. Each generator still checks its inputs, as plonky2's do; should one
/// find an input unset (a witness that set other targets than the first), the generation goes
/// on from there by plonky2's rounds over the generators not yet run, so the order only ever
/// saves work. Either way every generator runs once with its inputs set, so the values are the
/// ones plonky2's generation sets.
pub fn generate_partial_witness<'a>(
    inputs: PartialWitness<F>,
    prover: &'a ProverOnlyCircuitData<F, Config, D>,
    common: &CommonCircuitData<F, D>,
    table: &WatchTable,
) -> Result<PartitionWitness<'a, F>> {
    let count = prover.generators.len();
    if table.kinds.len() != count {
        return Err(BackendError::Shape(format!("a table of {} generators for {count}", table.kinds.len())));
    }
    // plonky2's `PartitionWitness::new`, its values written on every core.
    let mut witness = PartitionWitness {
        values: unset_values(prover.representative_map.len()),
        representative_map: &prover.representative_map,
        num_wires: common.config.num_wires,
        degree: common.degree(),
    };
    for (t, v) in inputs.target_values {
        witness.set_target(t, v).map_err(fail)?;
    }
    let schedule = table.schedule.get();
    let mut queue = Queue {
        table,
        expired: vec![false; count],
        remaining: count,
        next: Vec::new(),
        watch: schedule.is_none(),
        order: schedule.is_none().then(|| Vec::with_capacity(count + count / LANES)),
    };
    let mut buffer = GeneratedValues::empty();
    let mut lanes = PoseidonLanes::new();
    if let Some(schedule) = schedule {
        if follow(schedule, prover, &mut witness, &mut queue, &mut buffer, &mut lanes)? {
            table.replayed.fetch_add(1, Ordering::Relaxed);
            return Ok(witness);
        }
        // Off the schedule: plonky2's rounds over what has not run.
        table.fell_back.fetch_add(1, Ordering::Relaxed);
        lanes.clear();
        queue.watch = true;
        // What the generator that stopped it left behind, as a round sets it.
        queue.set_generated(&mut witness, &mut buffer)?;
    }
    let mut pending: Vec<u32> = (0..count as u32).filter(|&g| !queue.expired[g as usize]).collect();
    while !pending.is_empty() {
        for &g in &pending {
            if queue.expired[g as usize] {
                continue;
            }
            let done = run_one(g, prover, table, &witness, &mut buffer, &mut lanes);
            match table.kinds[g as usize] {
                // Taken: the lanes' run sets its values and records it.
                Kind::Poseidon(_) => {
                    if done {
                        queue.expire(g);
                    }
                    if lanes.is_full() {
                        lanes.run(&mut witness, &mut queue)?;
                    }
                }
                _ if done => queue.completed(g, &mut witness, &mut buffer)?,
                _ => queue.set_generated(&mut witness, &mut buffer)?,
            }
        }
        lanes.run(&mut witness, &mut queue)?;
        std::mem::swap(&mut pending, &mut queue.next);
        queue.next.clear();
    }
    if queue.remaining != 0 {
        return Err(BackendError::Witness(format!("{} generators weren't run", queue.remaining)));
    }
    if let Some(order) = queue.order.take() {
        // A second generation may have learned it first: the same order, whichever is kept.
        let _ = table.schedule.set(order);
    }
    Ok(witness)
}

/// `len` unset values, plonky2's `vec![None; len]` collected on rayon, as [`crate::backend::owned`]
/// copies: an indexed collect writes each task's run of the vector in place.
///
/// A fresh allocation of this size (72 MB on the batch circuit) is mapped on first touch, and
/// those page faults, not the writes, were most of its cost: about 27 ms on one core of the Intel
/// dev machine (where the same writes into mapped pages take 9), a third of the merge's witness
/// step. Touched from every core, the pages fault in parallel, though not twice as fast (the
/// faults contend in the kernel): 20 ms on two cores in the merge's witness bench, and 22.5
/// against 25.7 ms inside `rollup bench` (medians of nine). Where the allocator hands back pages
/// already mapped (the batch circuit's witness bench) nothing changes.
fn unset_values(len: usize) -> Vec<Option<F>> {
    (0..len).into_par_iter().map(|_| None).collect()
}

/// Runs the generators in `schedule`'s order; `false` where one finds an input unset (what ran
/// before it stays run and set, what it took into lanes is left there).
fn follow(
    schedule: &[u32],
    prover: &ProverOnlyCircuitData<F, Config, D>,
    witness: &mut PartitionWitness<F>,
    queue: &mut Queue,
    buffer: &mut GeneratedValues<F>,
    lanes: &mut PoseidonLanes,
) -> Result<bool> {
    let table = queue.table;
    let mut steps = schedule.iter().copied();
    while let Some(step) = steps.next() {
        // Each generator appears once in a learned order; one that is not a generator still to
        // run, or not of the kind its place says, ends the order like a missing input.
        let pending = |g: u32| queue.expired.get(g as usize) == Some(&false);
        if step & LANES_TAG == 0 {
            if !pending(step)
                || matches!(table.kinds[step as usize], Kind::Poseidon(_))
                || !run_one(step, prover, table, witness, buffer, lanes)
            {
                return Ok(false);
            }
            queue.completed(step, witness, buffer)?;
            continue;
        }
        for _ in 0..step & !LANES_TAG {
            let Some(g) = steps.next().filter(|&g| pending(g) && !lanes.generators.contains(&g)) else {
                return Ok(false);
            };
            let Kind::Poseidon(row) = table.kinds[g as usize] else { return Ok(false) };
            if lanes.is_full() || !lanes.take(g, row as usize, witness) {
                return Ok(false);
            }
        }
        for i in 0..lanes.generators.len() {
            queue.expire(lanes.generators[i]);
        }
        lanes.run(witness, queue)?;
    }
    Ok(queue.remaining == 0)
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
