//! A gate of our own, beyond plonky2's, that every backend's quotient evaluates.
//!
//! [`RangeCheckGate`] checks several values per row against one bound `2^bits`, each as base-4
//! limbs in advice wires. plonky2's `range_check` spends a whole `BaseSumGate` row (63 routed
//! bits) on any one value; the batch circuit range-checks about 46 values a transaction, so those
//! rows were a fifth of it (docs/circuit.md). With 135 wires a row holds up to 7 checks of 32
//! bits, 15 of 16 bits, or 7 of 36; the circuit chooses fewer where it has fewer values, since
//! every constraint of every gate type is evaluated at every point of the quotient.
//!
//! It lives in this crate because the quotient's evaluators (`quotient_x8`, `cuda/quotient.cuh`)
//! must know its constraints, and they find a circuit's gates by their Rust type.

use anyhow::Result as AnyResult;
use plonky2::field::extension::Extendable;
use plonky2::field::types::Field;
use plonky2::gates::gate::Gate;
use plonky2::gates::util::StridedConstraintConsumer;
use plonky2::hash::hash_types::RichField;
use plonky2::iop::ext_target::ExtensionTarget;
use plonky2::iop::generator::{GeneratedValues, SimpleGenerator, WitnessGeneratorRef};
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartitionWitness, Witness, WitnessWrite};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::circuit_data::{CircuitConfig, CommonCircuitData};
use plonky2::plonk::vars::{EvaluationTargets, EvaluationVars, EvaluationVarsBase};
use plonky2::util::serialization::{Buffer, IoError, IoResult, Read, Write};

/// Checks `num_ops` values, each `< 2^bits`, in one row.
///
/// Wires: the values first (`0..num_ops`, routed), then each value's `⌈bits/2⌉` little-endian
/// limbs (advice). Every limb is in `{0, 1, 2, 3}`, the last one in `{0, 1}` when `bits` is odd,
/// so the limbs' sum is below `2^bits`; `bits ≤ 63` keeps that sum below the field's order, so a
/// value that equals it is that integer. Constraints, value by value: `Σ limb_j·4^j − value`, then
/// each limb's `x(x − 1)(x − 2)(x − 3)` (or `x(x − 1)`). Degree 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangeCheckGate {
    /// The bound's exponent.
    pub bits: usize,
    /// Values checked per row.
    pub num_ops: usize,
}

impl RangeCheckGate {
    /// The largest bound: `2^63 − 1` is the largest limb sum below Goldilocks' order.
    pub const MAX_BITS: usize = 63;

    /// Checks of `bits`, `num_ops` to a row.
    ///
    /// # Panics
    /// When `bits` is 0 or above [`Self::MAX_BITS`], or `num_ops` is 0: a circuit bug, found
    /// when the circuit is built.
    pub fn new(bits: usize, num_ops: usize) -> Self {
        assert!((1..=Self::MAX_BITS).contains(&bits), "range checks of 1 to 63 bits, not {bits}");
        assert!(num_ops > 0, "a range-check row holds at least one value");
        Self { bits, num_ops }
    }

    /// As many checks of `bits` as the configuration's wires hold.
    ///
    /// # Panics
    /// As [`Self::new`], and when one check does not fit a row.
    pub fn new_from_config(config: &CircuitConfig, bits: usize) -> Self {
        let per_op = 1 + bits.div_ceil(2);
        Self::new(bits, (config.num_wires / per_op).min(config.num_routed_wires))
    }

    /// Whether a row of it fits `config`'s wires, its values in routed ones.
    pub fn fits(&self, config: &CircuitConfig) -> bool {
        self.num_ops * self.constraints_per_op() <= config.num_wires && self.num_ops <= config.num_routed_wires
    }

    /// Limbs per value.
    pub fn limbs(&self) -> usize {
        self.bits.div_ceil(2)
    }

    /// Whether the last limb is a bit (odd `bits`).
    pub fn top_limb_is_bit(&self) -> bool {
        self.bits % 2 == 1
    }

    /// The wire of value `op`.
    pub fn wire_value(op: usize) -> usize {
        op
    }

    /// The wire of value `op`'s limb `j`.
    pub fn wire_limb(&self, op: usize, j: usize) -> usize {
        self.num_ops + op * self.limbs() + j
    }

    /// Constraints per value: the sum, then the limbs.
    pub fn constraints_per_op(&self) -> usize {
        1 + self.limbs()
    }

    /// The constraints of one value from its wire and limbs, in the base field or its extension.
    fn op_constraints<K: Field>(&self, value: K, limbs: &[K]) -> Vec<K> {
        let [one, two, three, four] = [1, 2, 3, 4].map(K::from_canonical_u64);
        let mut out = Vec::with_capacity(self.constraints_per_op());
        out.push(limbs.iter().rev().fold(K::ZERO, |sum, &limb| four * sum + limb) - value);
        for (j, &x) in limbs.iter().enumerate() {
            out.push(if self.top_limb_is_bit() && j + 1 == limbs.len() {
                x * (x - one)
            } else {
                // x(x − 1)(x − 2)(x − 3) = y(y + 2), y = x(x − 3)
                let y = x * (x - three);
                y * (y + two)
            });
        }
        out
    }
}

impl<F: RichField + Extendable<D>, const D: usize> Gate<F, D> for RangeCheckGate {
    fn id(&self) -> String {
        format!("{self:?}")
    }

    fn serialize(&self, dst: &mut Vec<u8>, _common: &CommonCircuitData<F, D>) -> IoResult<()> {
        dst.write_usize(self.bits)?;
        dst.write_usize(self.num_ops)
    }

    fn deserialize(src: &mut Buffer, _common: &CommonCircuitData<F, D>) -> IoResult<Self> {
        let bits = src.read_usize()?;
        let num_ops = src.read_usize()?;
        if !(1..=Self::MAX_BITS).contains(&bits) || num_ops == 0 {
            return Err(IoError);
        }
        Ok(Self { bits, num_ops })
    }

    fn eval_unfiltered(&self, vars: EvaluationVars<F, D>) -> Vec<F::Extension> {
        let mut out = Vec::with_capacity(self.num_ops * self.constraints_per_op());
        for op in 0..self.num_ops {
            let limbs: Vec<_> = (0..self.limbs()).map(|j| vars.local_wires[self.wire_limb(op, j)]).collect();
            out.extend(self.op_constraints(vars.local_wires[Self::wire_value(op)], &limbs));
        }
        out
    }

    fn eval_unfiltered_base_one(&self, vars: EvaluationVarsBase<F>, mut yield_constr: StridedConstraintConsumer<F>) {
        for op in 0..self.num_ops {
            let limbs: Vec<_> = (0..self.limbs()).map(|j| vars.local_wires[self.wire_limb(op, j)]).collect();
            yield_constr.many(self.op_constraints(vars.local_wires[Self::wire_value(op)], &limbs));
        }
    }

    fn eval_unfiltered_circuit(
        &self,
        builder: &mut CircuitBuilder<F, D>,
        vars: EvaluationTargets<D>,
    ) -> Vec<ExtensionTarget<D>> {
        let four = F::from_canonical_u64(4);
        let mut out = Vec::with_capacity(self.num_ops * self.constraints_per_op());
        for op in 0..self.num_ops {
            let limbs: Vec<_> = (0..self.limbs()).map(|j| vars.local_wires[self.wire_limb(op, j)]).collect();
            let mut sum = builder.zero_extension();
            for &limb in limbs.iter().rev() {
                sum = builder.mul_const_add_extension(four, sum, limb);
            }
            out.push(builder.sub_extension(sum, vars.local_wires[Self::wire_value(op)]));
            for (j, &x) in limbs.iter().enumerate() {
                out.push(if self.top_limb_is_bit() && j + 1 == limbs.len() {
                    // x·x − x
                    builder.arithmetic_extension(F::ONE, F::NEG_ONE, x, x, x)
                } else {
                    // y = x·x − 3x, then y·y + 2y
                    let y = builder.arithmetic_extension(F::ONE, -F::from_canonical_u64(3), x, x, x);
                    builder.arithmetic_extension(F::ONE, F::TWO, y, y, y)
                });
            }
        }
        out
    }

    fn generators(&self, row: usize, _local_constants: &[F]) -> Vec<WitnessGeneratorRef<F, D>> {
        (0..self.num_ops)
            .map(|op| WitnessGeneratorRef::new(LimbsGenerator { row, op, gate: *self }.adapter()))
            .collect()
    }

    fn num_wires(&self) -> usize {
        self.num_ops * self.constraints_per_op()
    }

    fn num_constants(&self) -> usize {
        0
    }

    fn degree(&self) -> usize {
        if self.bits == 1 {
            2
        } else {
            4
        }
    }

    fn num_constraints(&self) -> usize {
        self.num_ops * self.constraints_per_op()
    }

    fn num_ops(&self) -> usize {
        self.num_ops
    }
}

/// Fills one value's limbs. A value of `bits` or more cannot be written as limbs; the generator
/// then writes its value's low `bits` back to the value's wire, so witness generation stops with
/// plonky2's "set twice with different values" at this gate's row, the same failure plonky2's own
/// range check (a high bit wired to zero) gives.
/// Public so that a serializer of a circuit's prover data can name it; only the gate makes it.
#[derive(Debug)]
pub struct LimbsGenerator {
    row: usize,
    op: usize,
    gate: RangeCheckGate,
}

/// Only for plonky2's generator serializers, which name a generator by a default value's id.
impl Default for LimbsGenerator {
    fn default() -> Self {
        Self { row: 0, op: 0, gate: RangeCheckGate { bits: 2, num_ops: 1 } }
    }
}

impl<F: RichField + Extendable<D>, const D: usize> SimpleGenerator<F, D> for LimbsGenerator {
    fn id(&self) -> String {
        "RangeCheckLimbsGenerator".into()
    }

    fn dependencies(&self) -> Vec<Target> {
        vec![Target::wire(self.row, RangeCheckGate::wire_value(self.op))]
    }

    fn run_once(&self, witness: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> AnyResult<()> {
        let value_target = Target::wire(self.row, RangeCheckGate::wire_value(self.op));
        let value = witness.get_target(value_target).to_canonical_u64();
        let low = value & ((1u64 << self.gate.bits) - 1);
        for j in 0..self.gate.limbs() {
            let limb = (low >> (2 * j)) & 3;
            out.set_target(Target::wire(self.row, self.gate.wire_limb(self.op, j)), F::from_canonical_u64(limb))?;
        }
        out.set_target(value_target, F::from_canonical_u64(low))
    }

    fn serialize(&self, dst: &mut Vec<u8>, _common: &CommonCircuitData<F, D>) -> IoResult<()> {
        dst.write_usize(self.row)?;
        dst.write_usize(self.op)?;
        dst.write_usize(self.gate.bits)?;
        dst.write_usize(self.gate.num_ops)
    }

    fn deserialize(src: &mut Buffer, _common: &CommonCircuitData<F, D>) -> IoResult<Self> {
        let row = src.read_usize()?;
        let op = src.read_usize()?;
        let gate = RangeCheckGate { bits: src.read_usize()?, num_ops: src.read_usize()? };
        if !(1..=RangeCheckGate::MAX_BITS).contains(&gate.bits) || op >= gate.num_ops {
            return Err(IoError);
        }
        Ok(Self { row, op, gate })
    }
}

/// Asserts `x < 2^gate.bits` in a slot of a row of `gate`, sharing rows with the circuit's other
/// checks in the same gate.
///
/// # Panics
/// When a row of `gate` does not fit the builder's configuration.
pub fn range_check<F: RichField + Extendable<D>, const D: usize>(
    b: &mut CircuitBuilder<F, D>,
    x: Target,
    gate: RangeCheckGate,
) {
    assert!(gate.fits(&b.config), "{gate:?} does not fit a row of this circuit");
    let (row, op) = b.find_slot(gate, &[], &[]);
    b.connect(x, Target::wire(row, RangeCheckGate::wire_value(op)));
}
