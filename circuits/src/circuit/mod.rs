//! The batch circuit: a fixed number of universal transaction slots, then the operator's fee
//! credit. Public inputs: old state root, new state root, and the transaction-commitment chain
//! before and after the batch (`docs/circuit.md`).

mod gadgets;
pub mod generators;
mod slot;

use std::time::Instant;

use anyhow::Result;
use plonky2::field::types::Field;
use plonky2::gates::gate::GateRef;
use plonky2::gates::noop::NoopGate;
use plonky2::hash::hash_types::HashOutTarget;
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartialWitness, WitnessWrite};
use plonky2::plonk::circuit_data::{CircuitConfig, CircuitData};
use plonky2::plonk::config::PoseidonGoldilocksConfig;
use plonky2::plonk::proof::ProofWithPublicInputs;

use gadgets::{hash, merkle_update, range_check, two_32, u64_checked, virtual_path, zero_bits};
pub use gadgets::{Builder, U64Target};
use generators::SplitGenerator;
use slot::{account_inputs, set_path, set_u64, Running, SlotTargets};

use crate::error::CircuitError;
use crate::hash::{Digest, ACCOUNT_DEPTH, F};
use crate::witness::{BatchWitness, SlotWitness};

/// plonky2's configuration of every proof.
pub type Config = PoseidonGoldilocksConfig;
/// Extension degree.
pub const D: usize = 2;
/// A proof with its public inputs.
pub type Proof = ProofWithPublicInputs<F, Config, D>;

/// Number of public inputs: old root, new root, commitment in, commitment out.
pub const NUM_PUBLIC_INPUTS: usize = 16;

/// The public inputs of a batch proof, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPublicInputs {
    /// State root before the batch.
    pub old_root: Digest,
    /// State root after the batch.
    pub new_root: Digest,
    /// Transaction-commitment chain before the batch.
    pub commitment_in: Digest,
    /// Transaction-commitment chain after the batch.
    pub commitment_out: Digest,
}

impl BatchPublicInputs {
    /// Reads them from a proof's public inputs.
    pub fn from_slice(pi: &[F]) -> Result<Self, CircuitError> {
        if pi.len() != NUM_PUBLIC_INPUTS {
            return Err(CircuitError::Witness(format!("{} public inputs, expected {NUM_PUBLIC_INPUTS}", pi.len())));
        }
        let d = |i: usize| Digest { elements: std::array::from_fn(|j| pi[4 * i + j]) };
        Ok(Self { old_root: d(0), new_root: d(1), commitment_in: d(2), commitment_out: d(3) })
    }

    /// As the flat vector of public inputs.
    pub fn to_vec(&self) -> Vec<F> {
        [self.old_root, self.new_root, self.commitment_in, self.commitment_out]
            .iter()
            .flat_map(|d| d.elements)
            .collect()
    }
}

/// Measured size of the circuit.
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitStats {
    /// Transaction slots.
    pub capacity: usize,
    /// log2 of the padded number of rows.
    pub degree_bits: usize,
    /// Rows (gates) before padding.
    pub rows: usize,
    /// Rows one slot adds, averaged over the slots and rounded up (every slot is universal: a
    /// transfer, a swap or a register costs this).
    pub rows_per_slot: usize,
    /// Rows of the fixed part (roots and the operator's fee credit).
    pub rows_fixed: usize,
    /// Seconds `build` took.
    pub build_seconds: f64,
}

/// What a batch circuit is padded to, so that it shares another circuit's shape (its
/// `CommonCircuitData`): the recursion circuits verify batch proofs and their own proofs with one
/// verifier, which needs both to have the same gates, degree and number of public inputs
/// (`docs/aggregation.md`). The padding adds no constraint on the batch.
#[derive(Clone, Debug, Default)]
pub struct Padding {
    /// Gate types to add to the gate set, though no row of the batch circuit uses them.
    pub gates: Vec<GateRef<F, D>>,
    /// Fewest rows, as a power of two (0: as many as the batch needs).
    pub min_degree_bits: usize,
    /// Public inputs in all (0: the batch's own 16); the ones past the 16 are zero.
    pub public_inputs: usize,
}

struct OperatorTargets {
    pkh: [Target; 4],
    nonce: Target,
    broot: HashOutTarget,
    /// The operator's fee-token balance before the credit, in its account leaf.
    old: U64Target,
    account_path: Vec<HashOutTarget>,
}

/// The largest batch circuit's rows, as a power of two: 2^19. Its prover, with its own and the
/// merge circuit's constants and sigmas resident and one proof in flight, fits a 16 GiB GPU
/// (15.2 GiB by `prover_gpu::cuda::footprint`; a test holds it there), and 2^20 would need about
/// 30.4 GiB.
pub const MAX_BATCH_DEGREE_BITS: usize = 19;

/// The most slots a batch circuit has: those whose rows, with the ones plonky2's build adds,
/// fill [`MAX_BATCH_DEGREE_BITS`] (a test holds it so). `--capacity` is refused past it.
pub const MAX_BATCH_CAPACITY: usize = 2941;

/// The most rows plonky2's build adds to ours: the public inputs' hash and gate, and the gates
/// that hold the circuit's constants (20 with the network's 84 public inputs; a test checks
/// that this many fit).
const BUILD_ROWS: usize = 64;

/// Refuses a capacity of no slots or past [`MAX_BATCH_CAPACITY`]: the one statement of the bound,
/// for the build, the layout, and the commands' `--capacity`.
pub fn check_capacity(capacity: usize) -> Result<(), CircuitError> {
    if capacity == 0 || capacity > MAX_BATCH_CAPACITY {
        return Err(CircuitError::Config(format!(
            "batch capacity {capacity} must be in 1..={MAX_BATCH_CAPACITY}: {MAX_BATCH_CAPACITY} slots fill \
             2^{MAX_BATCH_DEGREE_BITS} rows, the largest batch circuit, whose prover fits a 16 GiB GPU"
        )));
    }
    Ok(())
}

/// The degree bits of a laid-out circuit: its rows and the most plonky2's build adds, rounded
/// up to a power of two.
fn laid_out_degree_bits(b: &Builder) -> usize {
    (b.num_gates() + BUILD_ROWS).next_power_of_two().trailing_zeros() as usize
}

/// What a batch's witness sets, and the gadget each row range belongs to.
struct Targets {
    slots: Vec<SlotTargets>,
    operator: OperatorTargets,
    account_root: HashOutTarget,
    pool_root: HashOutTarget,
    commitment_in: HashOutTarget,
    labels: Vec<(usize, String)>,
}

/// A batch circuit laid out, before plonky2's build.
struct Laid {
    b: Builder,
    targets: Targets,
    rows: usize,
    rows_per_slot: usize,
    rows_fixed: usize,
}

/// The built batch circuit: build once per process and share.
pub struct BatchCircuit {
    data: CircuitData<F, Config, D>,
    targets: Targets,
    stats: CircuitStats,
}

impl BatchCircuit {
    /// Builds the circuit for `capacity` slots with plonky2's standard recursion config.
    pub fn build(capacity: usize) -> Result<Self, CircuitError> {
        Self::build_padded(capacity, &Padding::default())
    }

    /// [`BatchCircuit::build`], padded to another circuit's shape.
    pub fn build_padded(capacity: usize, padding: &Padding) -> Result<Self, CircuitError> {
        Self::build_shaped(capacity, padding, |_| Vec::new())
    }

    /// [`BatchCircuit::build_padded`], with more gates for the gate set chosen once the layout's
    /// degree is known: `more_gates(degree_bits)`. A recursive verifier of this circuit's proofs
    /// takes some gates only from some degree on (plonky2's FRI verifier takes an
    /// `ExponentiationGate` once a query index has more bits than an arithmetic gate has
    /// operations), and a circuit that shares its shape with that verifier carries them. The
    /// degree is the layout's rows and `BUILD_ROWS` rounded up to a power of two: within
    /// `BUILD_ROWS` of a power of two it may be one more than the build's.
    pub fn build_shaped(
        capacity: usize,
        padding: &Padding,
        more_gates: impl Fn(usize) -> Vec<GateRef<F, D>>,
    ) -> Result<Self, CircuitError> {
        let start = Instant::now();
        let (laid, _) = Self::lay_out_shaped(capacity, padding, more_gates)?;
        let data = laid.b.build::<Config>();
        Ok(Self::assemble(capacity, laid.targets, laid.rows, laid.rows_per_slot, laid.rows_fixed, data, start))
    }

    /// [`BatchCircuit::build_shaped`] with plonky2's preprocessing already done: `data` is what
    /// that build made of the same capacity, padding and gates (read back from a file, by
    /// `aggregator`'s prover data). The layout is made again, in a small part of the build's
    /// time, for its targets; `data` is refused if it is not of that layout's shape (rows,
    /// public inputs, gates). That it is the very circuit, constants included, is for the
    /// caller to know: a checksum and the verifier key it names.
    pub fn with_data(
        capacity: usize,
        padding: &Padding,
        more_gates: impl Fn(usize) -> Vec<GateRef<F, D>>,
        data: CircuitData<F, Config, D>,
    ) -> Result<Self, CircuitError> {
        let start = Instant::now();
        let (laid, degree_bits) = Self::lay_out_shaped(capacity, padding, &more_gates)?;
        let common = &data.common;
        let refuse = |what: String| Err(CircuitError::Config(format!("the batch circuit's data {what}")));
        // The layout's degree may be one more than the build's within BUILD_ROWS of a power of
        // two (`laid_out_degree_bits`).
        if common.degree_bits() > degree_bits || common.degree_bits() + 1 < degree_bits {
            return refuse(format!("has 2^{} rows where the layout has 2^{degree_bits}", common.degree_bits()));
        }
        if laid.b.num_gates() > common.degree() {
            return refuse(format!("has {} rows where the layout takes {}", common.degree(), laid.b.num_gates()));
        }
        if common.num_public_inputs != laid.b.num_public_inputs() {
            return refuse(format!(
                "has {} public inputs where the layout has {}",
                common.num_public_inputs,
                laid.b.num_public_inputs()
            ));
        }
        if data.prover_only.public_inputs.len() != common.num_public_inputs {
            return refuse("names other public inputs than its shape".into());
        }
        for gate in padding.gates.iter().chain(&more_gates(degree_bits)) {
            if !common.gates.contains(gate) {
                return refuse(format!("lacks the gate {}", gate.0.id()));
            }
        }
        Ok(Self::assemble(capacity, laid.targets, laid.rows, laid.rows_per_slot, laid.rows_fixed, data, start))
    }

    /// The layout of [`BatchCircuit::build_shaped`], its gates added, and its degree bits.
    fn lay_out_shaped(
        capacity: usize,
        padding: &Padding,
        more_gates: impl Fn(usize) -> Vec<GateRef<F, D>>,
    ) -> Result<(Laid, usize), CircuitError> {
        check_capacity(capacity)?;
        if padding.public_inputs != 0 && padding.public_inputs < NUM_PUBLIC_INPUTS {
            return Err(CircuitError::Config(format!(
                "{} public inputs cannot hold the batch's {NUM_PUBLIC_INPUTS}",
                padding.public_inputs
            )));
        }
        if padding.min_degree_bits > MAX_BATCH_DEGREE_BITS {
            return Err(CircuitError::Config(format!(
                "2^{} rows is past the largest batch circuit's 2^{MAX_BATCH_DEGREE_BITS}",
                padding.min_degree_bits
            )));
        }
        let mut laid = Self::lay_out(capacity, padding);
        let degree_bits = laid_out_degree_bits(&laid.b);
        // Refused before plonky2's preprocessing, the step whose time and memory grow with the
        // rows (docs/circuit.md, "The largest batch circuit").
        if degree_bits > MAX_BATCH_DEGREE_BITS {
            return Err(CircuitError::Config(format!(
                "batch capacity {capacity} lays out {} rows, past the largest batch circuit's 2^{MAX_BATCH_DEGREE_BITS}",
                laid.b.num_gates()
            )));
        }
        for gate in more_gates(degree_bits) {
            laid.b.add_gate_to_gate_set(gate);
        }
        Ok((laid, degree_bits))
    }

    fn assemble(
        capacity: usize,
        targets: Targets,
        rows: usize,
        rows_per_slot: usize,
        rows_fixed: usize,
        data: CircuitData<F, Config, D>,
        start: Instant,
    ) -> Self {
        let stats = CircuitStats {
            capacity,
            degree_bits: data.common.degree_bits(),
            rows,
            rows_per_slot,
            rows_fixed,
            build_seconds: start.elapsed().as_secs_f64(),
        };
        Self { data, targets, stats }
    }

    /// The rows of the circuit of `capacity` slots padded to `padding`, as a power of two (its
    /// degree bits), from its layout alone: what [`BatchCircuit::build_padded`] would build,
    /// found in a small part of its time and memory (no preprocessing). Within `BUILD_ROWS` of a
    /// power of two it may be one more than the build's. Capacities past
    /// [`MAX_BATCH_CAPACITY`] are refused as the build refuses them.
    pub fn degree_bits_of(capacity: usize, padding: &Padding) -> Result<usize, CircuitError> {
        check_capacity(capacity)?;
        Ok(laid_out_degree_bits(&Self::lay_out(capacity, padding).b))
    }

    /// The circuit's gates and targets, before plonky2's build: the slots, the operator's credit,
    /// the public inputs and the padding.
    fn lay_out(capacity: usize, padding: &Padding) -> Laid {
        let mut b = Builder::new(CircuitConfig::standard_recursion_config());
        let mut labels: Vec<(usize, String)> = Vec::new();
        let account_root = b.add_virtual_hash();
        let pool_root = b.add_virtual_hash();
        let commitment_in = b.add_virtual_hash();
        let zero = b.zero();
        let mut run =
            Running { accounts: account_root, pools: pool_root, commitment: commitment_in, fee_lo: zero, fee_hi: zero };
        let mut old_inputs = account_root.elements.to_vec();
        old_inputs.extend_from_slice(&pool_root.elements);
        let old_root = hash(&mut b, old_inputs);
        let fixed_start = b.num_gates();
        let mut slots = Vec::with_capacity(capacity);
        for i in 0..capacity {
            let mut label =
                |b: &Builder, what: String| labels.push((b.num_gates(), format!("slot {i}: {}", &what[6..])));
            let (s, next) = SlotTargets::build(&mut b, run, &mut label);
            slots.push(s);
            run = next;
        }
        labels.push((b.num_gates(), "operator fee credit".into()));
        let after_slots = b.num_gates();
        // Arithmetic rows are shared between neighbouring slots, so one slot's delta varies by a
        // row or two: report the mean, rounded up.
        let rows_per_slot = (after_slots - fixed_start).div_ceil(capacity);
        // Total fees = fee_lo + fee_hi·2^32 must fit a u64: fee_lo = t0 + k·2^32, t1 = fee_hi + k.
        let t0 = b.add_virtual_target();
        let k = b.add_virtual_target();
        b.add_simple_generator(SplitGenerator { x: run.fee_lo, low: t0, high: k });
        range_check(&mut b, t0, 32);
        range_check(&mut b, k, 17);
        let recomposed = b.mul_const_add(two_32(), k, t0);
        b.connect(recomposed, run.fee_lo);
        let t1 = b.add(run.fee_hi, k);
        let total = U64Target { lo: t0, hi: t1 };
        let operator = OperatorTargets {
            pkh: std::array::from_fn(|_| b.add_virtual_target()),
            nonce: b.add_virtual_target(),
            broot: b.add_virtual_hash(),
            old: U64Target::virtual_(&mut b),
            account_path: virtual_path(&mut b, ACCOUNT_DEPTH),
        };
        // u64_checked range-checks t1 through the sum's limbs: old + total < 2^64 needs t1 < 2^32.
        range_check(&mut b, t1, 32);
        let new_bal = u64_checked(&mut b, operator.old, total, false);
        let one = b.one();
        let old_acc = hash(&mut b, account_inputs(&operator.pkh, operator.nonce, operator.old, operator.broot));
        let new_acc = hash(&mut b, account_inputs(&operator.pkh, operator.nonce, new_bal, operator.broot));
        let account_bits = zero_bits(&mut b, ACCOUNT_DEPTH);
        let accounts =
            merkle_update(&mut b, one, run.accounts, &account_bits, &operator.account_path, old_acc, new_acc);
        let mut new_inputs = accounts.elements.to_vec();
        new_inputs.extend_from_slice(&run.pools.elements);
        let new_root = hash(&mut b, new_inputs);
        b.register_public_inputs(&old_root.elements);
        b.register_public_inputs(&new_root.elements);
        b.register_public_inputs(&commitment_in.elements);
        b.register_public_inputs(&run.commitment.elements);
        let rows_fixed = fixed_start + (b.num_gates() - after_slots);
        let rows = b.num_gates();
        for _ in NUM_PUBLIC_INPUTS..padding.public_inputs {
            b.register_public_input(zero);
        }
        for gate in &padding.gates {
            b.add_gate_to_gate_set(gate.clone());
        }
        // More than half the rows: plonky2 pads the rest up to the power of two.
        if padding.min_degree_bits > 0 {
            while b.num_gates() <= 1 << (padding.min_degree_bits - 1) {
                b.add_gate(NoopGate, vec![]);
            }
        }
        let targets = Targets { slots, operator, account_root, pool_root, commitment_in, labels };
        Laid { b, targets, rows, rows_per_slot, rows_fixed }
    }

    /// Measured size.
    pub fn stats(&self) -> &CircuitStats {
        &self.stats
    }

    /// Transaction slots.
    pub fn capacity(&self) -> usize {
        self.targets.slots.len()
    }

    /// plonky2's circuit data (prover and verifier).
    pub fn data(&self) -> &CircuitData<F, Config, D> {
        &self.data
    }

    /// The full witness of a batch, padded with no-ops.
    pub fn witness(&self, w: &BatchWitness) -> Result<PartialWitness<F>, CircuitError> {
        if w.slots.len() > self.capacity() {
            return Err(CircuitError::Witness(format!("{} transactions for {} slots", w.slots.len(), self.capacity())));
        }
        let fill = || -> Result<PartialWitness<F>> {
            let mut pw = PartialWitness::new();
            pw.set_hash_target(self.targets.account_root, w.old_account_root)?;
            pw.set_hash_target(self.targets.pool_root, w.old_pool_root)?;
            pw.set_hash_target(self.targets.commitment_in, w.commitment_in)?;
            let noop = SlotWitness::noop();
            for (i, t) in self.targets.slots.iter().enumerate() {
                t.set(&mut pw, w.slots.get(i).unwrap_or(&noop))?;
            }
            let o = &w.operator;
            for (t, v) in self.targets.operator.pkh.iter().zip(o.record.pubkey_hash.elements) {
                pw.set_target(*t, v)?;
            }
            pw.set_target(self.targets.operator.nonce, F::from_canonical_u32(o.record.nonce))?;
            pw.set_hash_target(self.targets.operator.broot, o.balance_root)?;
            set_u64(&mut pw, self.targets.operator.old, o.record.fee_balance)?;
            set_path(&mut pw, &self.targets.operator.account_path, &o.account_path)?;
            Ok(pw)
        };
        fill().map_err(|e| CircuitError::Witness(e.to_string()))
    }

    /// Proves a batch with `prover`.
    pub fn prove(&self, prover: &prover_gpu::Prover, w: &BatchWitness) -> Result<Proof, CircuitError> {
        let pw = self.witness(w)?;
        prover
            .prove(&self.data, pw)
            .map_err(|source| CircuitError::Prove { gadget: self.explain(&source.to_string()), source })
    }

    /// Verifies a batch proof with plonky2's verifier.
    pub fn verify(&self, proof: &Proof) -> Result<BatchPublicInputs, CircuitError> {
        self.data.verify(proof.clone()).map_err(CircuitError::Verify)?;
        BatchPublicInputs::from_slice(proof.public_inputs.get(..NUM_PUBLIC_INPUTS).unwrap_or(&[]))
    }

    /// Names the gadget whose rows hold the wire a witness-generation error mentions. Poseidon
    /// rows belong to one gadget; arithmetic rows are shared by consecutive gadgets, and a
    /// range-check row by up to 16 checks of one width, from several gadgets and slots, so for a
    /// failed arithmetic or range check the name is of the gadget that opened the row, which may
    /// be an earlier one. plonky2's message, kept beside it, names the exact wire. None when the
    /// message names no row.
    pub fn explain(&self, msg: &str) -> Option<String> {
        let row = msg
            .split("row: ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok());
        row.map(|row| {
            self.targets
                .labels
                .iter()
                .rev()
                .find(|(start, _)| *start <= row)
                .map(|(_, l)| l.clone())
                .unwrap_or_else(|| "state roots".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The network's batch: 84 public inputs (the merge's), the most plonky2's build hashes.
    fn network(min_degree_bits: usize) -> Padding {
        Padding { gates: Vec::new(), min_degree_bits, public_inputs: 84 }
    }

    /// `BUILD_ROWS` is enough: a layout that leaves exactly that many rows of 2^15 free builds at
    /// 2^15.
    #[test]
    fn plonkys_build_adds_at_most_build_rows() {
        let Laid { mut b, .. } = BatchCircuit::lay_out(4, &network(0));
        while b.num_gates() < (1 << 15) - BUILD_ROWS {
            b.add_gate(NoopGate, vec![]);
        }
        assert_eq!(b.build::<Config>().common.degree_bits(), 15, "plonky2's build added more than {BUILD_ROWS} rows");
    }

    /// The most slots fill the largest circuit: one more would spill past it.
    #[test]
    fn the_largest_capacity_fills_the_largest_circuit() {
        let rows = |capacity| BatchCircuit::lay_out(capacity, &network(15)).b.num_gates() + BUILD_ROWS;
        let (most, more) = (rows(MAX_BATCH_CAPACITY), rows(MAX_BATCH_CAPACITY + 1));
        assert!(most <= 1 << MAX_BATCH_DEGREE_BITS, "{MAX_BATCH_CAPACITY} slots take {most} rows: lower it");
        assert!(more > 1 << MAX_BATCH_DEGREE_BITS, "{} slots take {more} rows: raise it", MAX_BATCH_CAPACITY + 1);
        for capacity in [0, MAX_BATCH_CAPACITY + 1, 1 << 16] {
            match BatchCircuit::build_padded(capacity, &network(15)) {
                Err(CircuitError::Config(e)) => assert!(e.contains(&format!("1..={MAX_BATCH_CAPACITY}")), "{e}"),
                other => panic!("capacity {capacity}: {:?}", other.map(|c| c.stats().clone())),
            }
        }
    }
}
