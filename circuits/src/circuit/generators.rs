//! Witness generators for values the circuit derives: carries, inverses and the swap limbs.
//!
//! The prover only sets the primary witness (transaction fields, opened leaves, paths); these
//! generators fill in the rest, so derived values are correct by construction. They are public
//! so that a serializer of the circuit's prover data can name them (`aggregator`'s prover data
//! file); only this crate makes them.

use anyhow::{anyhow, Result};
use plonky2::field::extension::Extendable;
use plonky2::hash::hash_types::RichField;
use plonky2::iop::generator::{GeneratedValues, SimpleGenerator};
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartitionWitness, Witness, WitnessWrite};
use plonky2::plonk::circuit_data::CommonCircuitData;
use plonky2::util::serialization::{Buffer, IoResult, Read, Write};

use crate::swap::SwapLimbs;

/// Carry of a 32-bit limb addition, or borrow of a subtraction.
#[derive(Debug, Default)]
pub struct CarryGenerator {
    pub(crate) x: Target,
    pub(crate) y: Target,
    pub(crate) carry: Target,
    pub(crate) subtract: bool,
}

impl<F: RichField + Extendable<D>, const D: usize> SimpleGenerator<F, D> for CarryGenerator {
    fn id(&self) -> String {
        "rollup::CarryGenerator".into()
    }
    fn dependencies(&self) -> Vec<Target> {
        vec![self.x, self.y]
    }
    fn run_once(&self, w: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> Result<()> {
        let x = w.get_target(self.x).to_canonical_u64();
        let y = w.get_target(self.y).to_canonical_u64();
        let c = if self.subtract { x < y } else { x.wrapping_add(y) >= 1 << 32 };
        out.set_target(self.carry, F::from_bool(c))
    }
    fn serialize(&self, dst: &mut Vec<u8>, _: &CommonCircuitData<F, D>) -> IoResult<()> {
        dst.write_target(self.x)?;
        dst.write_target(self.y)?;
        dst.write_target(self.carry)?;
        dst.write_bool(self.subtract)
    }
    fn deserialize(src: &mut Buffer, _: &CommonCircuitData<F, D>) -> IoResult<Self> {
        Ok(Self { x: src.read_target()?, y: src.read_target()?, carry: src.read_target()?, subtract: src.read_bool()? })
    }
}

/// `inv = 1/x`, or 0 when `x = 0` (for "is non-zero" checks).
#[derive(Debug, Default)]
pub struct InverseGenerator {
    pub(crate) x: Target,
    pub(crate) inv: Target,
}

impl<F: RichField + Extendable<D>, const D: usize> SimpleGenerator<F, D> for InverseGenerator {
    fn id(&self) -> String {
        "rollup::InverseGenerator".into()
    }
    fn dependencies(&self) -> Vec<Target> {
        vec![self.x]
    }
    fn run_once(&self, w: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> Result<()> {
        let x = w.get_target(self.x);
        out.set_target(self.inv, x.try_inverse().unwrap_or(F::ZERO))
    }
    fn serialize(&self, dst: &mut Vec<u8>, _: &CommonCircuitData<F, D>) -> IoResult<()> {
        dst.write_target(self.x)?;
        dst.write_target(self.inv)
    }
    fn deserialize(src: &mut Buffer, _: &CommonCircuitData<F, D>) -> IoResult<Self> {
        Ok(Self { x: src.read_target()?, inv: src.read_target()? })
    }
}

/// Splits a field element below 2^64 into `low` (32 bits) and `high`.
#[derive(Debug, Default)]
pub struct SplitGenerator {
    pub(crate) x: Target,
    pub(crate) low: Target,
    pub(crate) high: Target,
}

impl<F: RichField + Extendable<D>, const D: usize> SimpleGenerator<F, D> for SplitGenerator {
    fn id(&self) -> String {
        "rollup::SplitGenerator".into()
    }
    fn dependencies(&self) -> Vec<Target> {
        vec![self.x]
    }
    fn run_once(&self, w: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> Result<()> {
        let x = w.get_target(self.x).to_canonical_u64();
        out.set_target(self.low, F::from_canonical_u64(x & 0xffff_ffff))?;
        out.set_target(self.high, F::from_canonical_u64(x >> 32))
    }
    fn serialize(&self, dst: &mut Vec<u8>, _: &CommonCircuitData<F, D>) -> IoResult<()> {
        dst.write_target(self.x)?;
        dst.write_target(self.low)?;
        dst.write_target(self.high)
    }
    fn deserialize(src: &mut Buffer, _: &CommonCircuitData<F, D>) -> IoResult<Self> {
        Ok(Self { x: src.read_target()?, low: src.read_target()?, high: src.read_target()? })
    }
}

/// Targets of the swap check's witnessed limbs, in [`SwapLimbs`] order.
#[derive(Clone, Debug, Default)]
pub struct SwapLimbTargets {
    pub(crate) h: [Target; 5],
    pub(crate) k0: Target,
    pub(crate) d: [Target; 2],
    pub(crate) e: [Target; 2],
    pub(crate) q: [Target; 4],
    pub(crate) s: [Target; 3],
    pub(crate) t: [Target; 3],
    pub(crate) beta: [Target; 2],
    pub(crate) c: [Target; 7],
}

impl SwapLimbTargets {
    fn all(&self) -> Vec<Target> {
        let mut v = Vec::with_capacity(30);
        v.extend_from_slice(&self.h);
        v.push(self.k0);
        v.extend_from_slice(&self.d);
        v.extend_from_slice(&self.e);
        v.extend_from_slice(&self.q);
        v.extend_from_slice(&self.s);
        v.extend_from_slice(&self.t);
        v.extend_from_slice(&self.beta);
        v.extend_from_slice(&self.c);
        v
    }

    fn from_all(v: &[Target]) -> Option<Self> {
        let mut it = v.iter().copied();
        let mut take = |n: usize| -> Option<Vec<Target>> { (0..n).map(|_| it.next()).collect() };
        Some(Self {
            h: take(5)?.try_into().ok()?,
            k0: take(1)?[0],
            d: take(2)?.try_into().ok()?,
            e: take(2)?.try_into().ok()?,
            q: take(4)?.try_into().ok()?,
            s: take(3)?.try_into().ok()?,
            t: take(3)?.try_into().ok()?,
            beta: take(2)?.try_into().ok()?,
            c: take(7)?.try_into().ok()?,
        })
    }
}

/// Computes [`SwapLimbs`] from `in = (i0, i1)`, `f`, `r_in = (n0, n1)`, `r_out = (o0, o1)`.
#[derive(Debug, Default)]
pub struct SwapGenerator {
    /// `[i0, i1, f, n0, n1, o0, o1]`.
    pub(crate) inputs: [Target; 7],
    pub(crate) limbs: SwapLimbTargets,
}

impl<F: RichField + Extendable<D>, const D: usize> SimpleGenerator<F, D> for SwapGenerator {
    fn id(&self) -> String {
        "rollup::SwapGenerator".into()
    }
    fn dependencies(&self) -> Vec<Target> {
        self.inputs.to_vec()
    }
    fn run_once(&self, w: &PartitionWitness<F>, out: &mut GeneratedValues<F>) -> Result<()> {
        let v: Vec<u64> = self.inputs.iter().map(|t| w.get_target(*t).to_canonical_u64()).collect();
        let limb = |x: u64| -> Result<u64> {
            (x < 1 << 32).then_some(x).ok_or_else(|| anyhow!("swap input limb {x} is not 32-bit"))
        };
        let amount_in = limb(v[0])? | (limb(v[1])? << 32);
        let r_in = limb(v[3])? | (limb(v[4])? << 32);
        let r_out = limb(v[5])? | (limb(v[6])? << 32);
        let l = SwapLimbs::compute(amount_in, v[2], r_in, r_out)
            .ok_or_else(|| anyhow!("swap check has no witness (fee factor {}, reserves {r_in}/{r_out})", v[2]))?;
        let values =
            [&l.h[..], &[l.k0][..], &l.d[..2], &l.e[..], &l.q[..], &l.s[..], &l.t[..], &l.beta[..], &l.c[..]].concat();
        for (t, x) in self.limbs.all().into_iter().zip(values) {
            out.set_target(t, F::from_canonical_u64(x))?;
        }
        Ok(())
    }
    fn serialize(&self, dst: &mut Vec<u8>, _: &CommonCircuitData<F, D>) -> IoResult<()> {
        dst.write_target_vec(&self.inputs)?;
        dst.write_target_vec(&self.limbs.all())
    }
    fn deserialize(src: &mut Buffer, _: &CommonCircuitData<F, D>) -> IoResult<Self> {
        let inputs = src.read_target_vec()?;
        let limbs = src.read_target_vec()?;
        let bad = || plonky2::util::serialization::IoError;
        Ok(Self {
            inputs: inputs.try_into().map_err(|_| bad())?,
            limbs: SwapLimbTargets::from_all(&limbs).ok_or_else(bad)?,
        })
    }
}
