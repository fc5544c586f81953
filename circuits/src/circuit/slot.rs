//! One transaction slot of the batch circuit: register, transfer, swap or no-op, proven by one
//! universal layout whose Merkle work is shared between the kinds (see `docs/circuit.md`).

use anyhow::Result;
use plonky2::field::types::Field;
use plonky2::hash::hash_types::HashOutTarget;
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartialWitness, WitnessWrite};

use super::gadgets::{
    assert_zero_if, balance_leaf, hash, is_zero, merkle_update, range_check, select, select_hash, select_u64,
    select_vec, two_32, u64_checked, u64_scaled, u64_unchecked, virtual_path, Builder, U64Target,
};
use super::generators::{InverseGenerator, SwapGenerator, SwapLimbTargets};
use crate::hash::{empty_balance_root, u64_limbs, Digest, ACCOUNT_DEPTH, ACCOUNT_LEAF_ELEMENTS, F, TOKEN_DEPTH};
use crate::state::BPS;
use crate::swap::{CARRY_BITS, CARRY_OFFSET};
use crate::tx::{Tx, TAG_REGISTER, TAG_SWAP, TAG_TRANSFER, TX_ELEMENTS};
use crate::witness::SlotWitness;

/// Roots and accumulators threaded from slot to slot.
#[derive(Clone, Copy, Debug)]
pub struct Running {
    /// Account-tree root.
    pub accounts: HashOutTarget,
    /// Pool-tree root.
    pub pools: HashOutTarget,
    /// Transaction-commitment chain.
    pub commitment: HashOutTarget,
    /// Sum of the fees' low limbs.
    pub fee_lo: Target,
    /// Sum of the fees' high limbs.
    pub fee_hi: Target,
}

/// A balance-leaf update opened by the slot.
#[derive(Clone, Debug)]
struct StepTargets {
    old: U64Target,
    path: Vec<HashOutTarget>,
}

/// The slot's primary witness targets.
#[derive(Clone, Debug)]
pub struct SlotTargets {
    is_register: Target,
    is_transfer: Target,
    is_swap: Target,
    /// `[_, a, b, token_or_direction, amount(2), min_out(2), fee(2), nonce, pubkey_hash(4)]`; the
    /// tag (element 0) is derived from the flags.
    fields: [Target; TX_ELEMENTS],
    a_pkh: [Target; 4],
    a_nonce: Target,
    /// The sender's fee-token balance, in its account leaf.
    a_fee: U64Target,
    a_broot: HashOutTarget,
    a_path: Vec<HashOutTarget>,
    /// The balance-tree debit of the paid token and credit of the received one.
    steps: [StepTargets; 2],
    b_pkh: [Target; 4],
    b_nonce: Target,
    b_fee: U64Target,
    b_broot: HashOutTarget,
    /// `[token_a, token_b, reserve_a(2), reserve_b(2), fee_bps]`.
    pool: [Target; 7],
    b_path: Vec<HashOutTarget>,
}

fn u64_at(fields: &[Target], at: usize) -> U64Target {
    U64Target { lo: fields[at], hi: fields[at + 1] }
}

/// The eleven account-leaf inputs ([`crate::hash::account_leaf_inputs`]).
pub(super) fn account_inputs(pkh: &[Target; 4], nonce: Target, fee: U64Target, broot: HashOutTarget) -> Vec<Target> {
    let mut v = pkh.to_vec();
    v.extend([nonce, fee.lo, fee.hi]);
    v.extend_from_slice(&broot.elements);
    v
}

/// Checks `out = floor(in·f·r_out / (r_in·10000 + in·f))` with the limbs of [`crate::swap::SwapLimbs`]
/// and returns `out`.
// The column sums index two limb arrays by i and k − 2i, as the schoolbook formula reads.
#[allow(clippy::needless_range_loop)]
fn swap_output(b: &mut Builder, amount_in: U64Target, f: Target, r_in: U64Target, r_out: U64Target) -> U64Target {
    let limbs = SwapLimbTargets {
        h: std::array::from_fn(|_| b.add_virtual_target()),
        k0: b.add_virtual_target(),
        d: std::array::from_fn(|_| b.add_virtual_target()),
        e: std::array::from_fn(|_| b.add_virtual_target()),
        q: std::array::from_fn(|_| b.add_virtual_target()),
        s: std::array::from_fn(|_| b.add_virtual_target()),
        t: std::array::from_fn(|_| b.add_virtual_target()),
        beta: std::array::from_fn(|_| b.add_virtual_target()),
        c: std::array::from_fn(|_| b.add_virtual_target()),
    };
    b.add_simple_generator(SwapGenerator {
        inputs: [amount_in.lo, amount_in.hi, f, r_in.lo, r_in.hi, r_out.lo, r_out.hi],
        limbs: limbs.clone(),
    });
    let l = &limbs;
    for &h in &l.h[..4] {
        range_check(b, h, 16);
    }
    range_check(b, l.h[4], 14);
    range_check(b, l.k0, 14);
    for &x in l.d.iter().chain(&l.s[..2]).chain(&l.t[..2]) {
        range_check(b, x, 32);
    }
    for &x in l.e.iter().chain(&l.q).chain([&l.s[2], &l.t[2]]) {
        range_check(b, x, 16);
    }
    for &beta in &l.beta {
        b.assert_bool(plonky2::iop::target::BoolTarget::new_unsafe(beta));
    }
    for &c in &l.c {
        range_check(b, c, CARRY_BITS);
    }
    let b16 = F::from_canonical_u64(1 << 16);
    let big = two_32();
    let bps = F::from_canonical_u64(BPS);
    // A = in·f in 16-bit limbs h.
    let lhs = b.mul(amount_in.lo, f);
    let h01 = b.mul_const_add(b16, l.h[1], l.h[0]);
    let rhs = b.mul_const_add(big, l.k0, h01);
    b.connect(lhs, rhs);
    let lhs = b.mul_add(amount_in.hi, f, l.k0);
    let h23 = b.mul_const_add(b16, l.h[3], l.h[2]);
    let rhs = b.mul_const_add(big, l.h[4], h23);
    b.connect(lhs, rhs);
    let (a0, a1, a2) = (h01, h23, l.h[4]);
    // D = r_in·10000 + A in 32-bit limbs d0, d1, d2 = a2 + e1.
    let lhs = b.mul_const_add(bps, r_in.lo, a0);
    let rhs = b.mul_const_add(big, l.e[0], l.d[0]);
    b.connect(lhs, rhs);
    let t = b.mul_const_add(bps, r_in.hi, a1);
    let lhs = b.add(t, l.e[0]);
    let rhs = b.mul_const_add(big, l.e[1], l.d[1]);
    b.connect(lhs, rhs);
    let d2 = b.add(a2, l.e[1]);
    let d = [l.d[0], l.d[1], d2];
    // rem + 1 + t = D, so rem < D.
    let one = b.one();
    let lhs = b.add_many([l.s[0], one, l.t[0]]);
    let rhs = b.mul_const_add(big, l.beta[0], d[0]);
    b.connect(lhs, rhs);
    let lhs = b.add_many([l.s[1], l.t[1], l.beta[0]]);
    let rhs = b.mul_const_add(big, l.beta[1], d[1]);
    b.connect(lhs, rhs);
    let lhs = b.add_many([l.s[2], l.t[2], l.beta[1]]);
    b.connect(lhs, d[2]);
    // out·D + rem = A·r_out, column by column in base 2^16.
    let o = [r_out.lo, r_out.hi];
    let mut carry_in = b.zero();
    for k in 0..8usize {
        let mut acc = carry_in;
        for i in 0..3 {
            if k >= 2 * i && k - 2 * i < 4 {
                acc = b.mul_add(l.q[k - 2 * i], d[i], acc);
            }
        }
        if k % 2 == 0 && k / 2 < 3 {
            acc = b.add(acc, l.s[k / 2]);
        }
        for i in 0..2 {
            if k >= 2 * i && k - 2 * i < 5 {
                let p = b.mul(l.h[k - 2 * i], o[i]);
                acc = b.sub(acc, p);
            }
        }
        if k == 7 {
            b.assert_zero(acc);
        } else {
            // acc = (c_k − OFFSET)·2^16
            let shifted = b.add_const(l.c[k], -F::from_canonical_u64(CARRY_OFFSET));
            let rhs = b.mul_const(b16, shifted);
            b.connect(acc, rhs);
            carry_in = shifted;
        }
    }
    U64Target { lo: b.mul_const_add(b16, l.q[1], l.q[0]), hi: b.mul_const_add(b16, l.q[3], l.q[2]) }
}

/// A balance-leaf update: `old ∓ delta`, checked, under `root_in` at the index `bits`.
fn balance_step(
    b: &mut Builder,
    enabled: Target,
    root_in: HashOutTarget,
    bits: &[plonky2::iop::target::BoolTarget],
    step: &StepTargets,
    delta: U64Target,
    subtract: bool,
) -> HashOutTarget {
    let new = u64_checked(b, step.old, delta, subtract);
    let old_leaf = balance_leaf(b, step.old);
    let new_leaf = balance_leaf(b, new);
    merkle_update(b, enabled, root_in, bits, &step.path, old_leaf, new_leaf)
}

impl SlotTargets {
    /// Adds one slot to the circuit, threading `run` through it. `label` records which rows
    /// belong to which gadget, so a failed proof can be explained.
    pub fn build(b: &mut Builder, run: Running, label: &mut dyn FnMut(&Builder, String)) -> (Self, Running) {
        let is_register = b.add_virtual_bool_target_safe().target;
        let is_transfer = b.add_virtual_bool_target_safe().target;
        let is_swap = b.add_virtual_bool_target_safe().target;
        let pays = b.add(is_transfer, is_swap);
        let active = b.add(is_register, pays);
        b.assert_bool(plonky2::iop::target::BoolTarget::new_unsafe(active));
        let mut fields = [b.zero(); TX_ELEMENTS];
        for f in fields.iter_mut().skip(1) {
            *f = b.add_virtual_target();
        }
        let t = b.mul_const(F::from_canonical_u8(TAG_TRANSFER), is_transfer);
        let t = b.mul_const_add(F::from_canonical_u8(TAG_SWAP), is_swap, t);
        fields[0] = b.mul_const_add(F::from_canonical_u8(TAG_REGISTER), is_register, t);
        let amount = u64_at(&fields, 4);
        let min_out = u64_at(&fields, 6);
        let fee = u64_at(&fields, 8);
        let (td, nonce) = (fields[3], fields[10]);
        let pkh: [Target; 4] = std::array::from_fn(|i| fields[11 + i]);
        let mut s = SlotTargets {
            is_register,
            is_transfer,
            is_swap,
            fields,
            a_pkh: std::array::from_fn(|_| b.add_virtual_target()),
            a_nonce: b.add_virtual_target(),
            a_fee: U64Target::virtual_(b),
            a_broot: b.add_virtual_hash(),
            a_path: virtual_path(b, ACCOUNT_DEPTH),
            steps: std::array::from_fn(|_| StepTargets { old: U64Target::virtual_(b), path: Vec::new() }),
            b_pkh: std::array::from_fn(|_| b.add_virtual_target()),
            b_nonce: b.add_virtual_target(),
            b_fee: U64Target::virtual_(b),
            b_broot: b.add_virtual_hash(),
            pool: std::array::from_fn(|_| b.add_virtual_target()),
            b_path: virtual_path(b, ACCOUNT_DEPTH),
        };
        for st in &mut s.steps {
            st.path = virtual_path(b, TOKEN_DEPTH);
        }

        label(b, "slot: amounts and ids".into());
        amount.range_check(b);
        min_out.range_check(b);
        fee.range_check(b);
        let a_bits = b.split_le(fields[1], ACCOUNT_DEPTH);
        let b_bits = b.split_le(fields[2], ACCOUNT_DEPTH);
        // A transfer or swap moves a positive amount.
        let nz = amount.zero_test_value(b);
        let inv = b.add_virtual_target();
        b.add_simple_generator(InverseGenerator { x: nz, inv });
        let p = b.mul(nz, inv);
        b.connect(p, pays);
        // A swap's direction is a bit.
        let dm1 = b.add_const(td, -F::ONE);
        let dd = b.mul(td, dm1);
        assert_zero_if(b, is_swap, dd);

        label(b, "slot: token ids, pool selection and swap output".into());
        let [ta, tb, ra_lo, ra_hi, rb_lo, rb_hi, fee_bps] = s.pool;
        let ra = U64Target { lo: ra_lo, hi: ra_hi };
        let rb = U64Target { lo: rb_lo, hi: rb_hi };
        let pool_in = select(b, td, tb, ta);
        let pool_out = select(b, td, ta, tb);
        let r_in = select_u64(b, td, rb, ra);
        let r_out = select_u64(b, td, ra, rb);
        let token_in = select(b, is_swap, pool_in, td);
        let token_out = select(b, is_swap, pool_out, td);
        let in_bits = b.split_le(token_in, TOKEN_DEPTH);
        let out_bits = b.split_le(token_out, TOKEN_DEPTH);
        // Outside swaps the check runs on in = 0, r_in = 1, r_out = 0 (so out = 0).
        let zero = b.zero();
        let one = b.one();
        let zero64 = U64Target { lo: zero, hi: zero };
        let g_in = select_u64(b, is_swap, amount, zero64);
        let g_rin = select_u64(b, is_swap, r_in, U64Target { lo: one, hi: zero });
        let g_rout = select_u64(b, is_swap, r_out, zero64);
        let bps = b.constant(F::from_canonical_u64(BPS));
        let f = b.sub(bps, fee_bps);
        let out = swap_output(b, g_in, f, g_rin, g_rout);
        label(b, "slot: swap output positive and above minimum".into());
        let nz = out.zero_test_value(b);
        let inv = b.add_virtual_target();
        b.add_simple_generator(InverseGenerator { x: nz, inv });
        let p = b.mul(nz, inv);
        b.connect(p, is_swap);
        let g_min = select_u64(b, is_swap, min_out, zero64);
        u64_checked(b, out, g_min, true);

        // The fee token's balances are the account leaves' own; any other token's are in the
        // balance trees, whose steps a fee-token amount disables.
        label(b, "slot: fee-token balances".into());
        let in_fee_token = is_zero(b, token_in);
        let out_fee_token = is_zero(b, token_out);
        let in_tree = b.arithmetic(-F::ONE, F::ONE, pays, in_fee_token, pays);
        let out_tree = b.arithmetic(-F::ONE, F::ONE, pays, out_fee_token, pays);
        let in_leaf = b.mul(pays, in_fee_token);
        // Sender: the amount if the fee token is paid, then the fee, then a swap's output if
        // it is the fee token. Both debits are held by the second's check (`u64_unchecked`).
        let d_in = u64_scaled(b, amount, in_leaf);
        let a_fee1 = u64_unchecked(b, s.a_fee, d_in, true);
        let a_fee2 = u64_checked(b, a_fee1, fee, true);
        let swap_out_leaf = b.mul(is_swap, out_fee_token);
        let c_out = u64_scaled(b, out, swap_out_leaf);
        let a_fee3 = u64_checked(b, a_fee2, c_out, false);
        // Receiver: a transfer's amount, if it is the fee token (a transfer's two tokens are one).
        let transfer_leaf = b.mul(is_transfer, in_fee_token);
        let c_b = u64_scaled(b, amount, transfer_leaf);
        let b_fee_new = u64_checked(b, s.b_fee, c_b, false);

        label(b, "slot: sender debit".into());
        let d_tree = u64_scaled(b, amount, in_tree);
        let s1 = balance_step(b, in_tree, s.a_broot, &in_bits, &s.steps[0], d_tree, true);
        label(b, "slot: credit".into());
        let s2_root = select_hash(b, is_swap, s1, s.b_broot);
        let s2_delta = select_u64(b, is_swap, out, amount);
        let s2_delta = u64_scaled(b, s2_delta, out_tree);
        let s2 = balance_step(b, out_tree, s2_root, &out_bits, &s.steps[1], s2_delta, false);
        let a_broot_new = select_hash(b, is_swap, s2, s1);

        label(b, "slot: sender account".into());
        let nonce_diff = b.sub(nonce, s.a_nonce);
        assert_zero_if(b, pays, nonce_diff);
        let new_nonce = b.add(s.a_nonce, one);
        range_check(b, new_nonce, 32);
        let old_a = hash(b, account_inputs(&s.a_pkh, s.a_nonce, s.a_fee, s.a_broot));
        let zero_hash = b.constant_hash(crate::hash::ZERO_DIGEST);
        let old_a = select_hash(b, is_register, zero_hash, old_a);
        let empty = b.constant_hash(empty_balance_root());
        let reg_inputs = account_inputs(&pkh, zero, zero64, empty);
        let upd_inputs = account_inputs(&s.a_pkh, new_nonce, a_fee3, a_broot_new);
        let new_a_inputs = select_vec(b, is_register, &reg_inputs, &upd_inputs);
        let new_a = hash(b, new_a_inputs);
        let accounts1 = merkle_update(b, active, run.accounts, &a_bits, &s.a_path, old_a, new_a);

        label(b, "slot: receiver or pool".into());
        let new_r_in = u64_checked(b, r_in, amount, false);
        let new_r_out = u64_checked(b, r_out, out, true);
        let new_ra = select_u64(b, td, new_r_out, new_r_in);
        let new_rb = select_u64(b, td, new_r_in, new_r_out);
        let mut pool_old = vec![ta, tb, ra.lo, ra.hi, rb.lo, rb.hi, fee_bps];
        let mut pool_new = vec![ta, tb, new_ra.lo, new_ra.hi, new_rb.lo, new_rb.hi, fee_bps];
        pool_old.resize(ACCOUNT_LEAF_ELEMENTS, zero);
        pool_new.resize(ACCOUNT_LEAF_ELEMENTS, zero);
        let b_old = account_inputs(&s.b_pkh, s.b_nonce, s.b_fee, s.b_broot);
        let b_new = account_inputs(&s.b_pkh, s.b_nonce, b_fee_new, s2);
        let old_inputs = select_vec(b, is_swap, &pool_old, &b_old);
        let new_inputs = select_vec(b, is_swap, &pool_new, &b_new);
        let old_b = hash(b, old_inputs);
        let new_b = hash(b, new_inputs);
        let root_in = select_hash(b, is_swap, run.pools, accounts1);
        let root_out = merkle_update(b, pays, root_in, &b_bits, &s.b_path, old_b, new_b);
        let accounts = select_hash(b, is_swap, accounts1, root_out);
        let pools = select_hash(b, is_swap, root_out, run.pools);

        label(b, "slot: commitment".into());
        let mut chain = run.commitment.elements.to_vec();
        chain.extend_from_slice(&s.fields);
        let next = hash(b, chain);
        let commitment = select_hash(b, active, next, run.commitment);
        let fee_lo = b.mul_add(pays, fee.lo, run.fee_lo);
        let fee_hi = b.mul_add(pays, fee.hi, run.fee_hi);
        (s, Running { accounts, pools, commitment, fee_lo, fee_hi })
    }

    /// Sets the slot's primary witness.
    pub fn set(&self, pw: &mut PartialWitness<F>, w: &SlotWitness) -> Result<()> {
        let (reg, tr, sw) = match &w.tx {
            None => (false, false, false),
            Some(Tx::Register(_)) => (true, false, false),
            Some(Tx::Transfer(_)) => (false, true, false),
            Some(Tx::Swap(_)) => (false, false, true),
        };
        pw.set_target(self.is_register, F::from_bool(reg))?;
        pw.set_target(self.is_transfer, F::from_bool(tr))?;
        pw.set_target(self.is_swap, F::from_bool(sw))?;
        let elements = w.tx.as_ref().map(Tx::elements).unwrap_or([F::ZERO; TX_ELEMENTS]);
        for (t, v) in self.fields.iter().zip(elements).skip(1) {
            pw.set_target(*t, v)?;
        }
        set_hash_elems(pw, &self.a_pkh, w.a_record.pubkey_hash)?;
        pw.set_target(self.a_nonce, F::from_canonical_u32(w.a_record.nonce))?;
        set_u64(pw, self.a_fee, w.a_record.fee_balance)?;
        pw.set_hash_target(self.a_broot, w.a_balance_root)?;
        set_path(pw, &self.a_path, &w.a_path)?;
        for (st, sw) in self.steps.iter().zip(&w.steps) {
            set_u64(pw, st.old, sw.old)?;
            set_path(pw, &st.path, &sw.path)?;
        }
        set_hash_elems(pw, &self.b_pkh, w.b_record.pubkey_hash)?;
        pw.set_target(self.b_nonce, F::from_canonical_u32(w.b_record.nonce))?;
        set_u64(pw, self.b_fee, w.b_record.fee_balance)?;
        pw.set_hash_target(self.b_broot, w.b_balance_root)?;
        let pool = w.pool.leaf_inputs();
        for (t, v) in self.pool.iter().zip(pool) {
            pw.set_target(*t, v)?;
        }
        set_path(pw, &self.b_path, &w.b_path)?;
        Ok(())
    }
}

fn set_hash_elems(pw: &mut PartialWitness<F>, t: &[Target; 4], d: Digest) -> Result<()> {
    for (t, v) in t.iter().zip(d.elements) {
        pw.set_target(*t, v)?;
    }
    Ok(())
}

/// Sets a u64's limbs.
pub fn set_u64(pw: &mut PartialWitness<F>, t: U64Target, v: u64) -> Result<()> {
    let [lo, hi] = u64_limbs(v);
    pw.set_target(t.lo, lo)?;
    pw.set_target(t.hi, hi)
}

/// Sets a Merkle path.
pub fn set_path(pw: &mut PartialWitness<F>, t: &[HashOutTarget], path: &[Digest]) -> Result<()> {
    anyhow::ensure!(t.len() == path.len(), "path of length {} for a depth-{} tree", path.len(), t.len());
    for (t, v) in t.iter().zip(path) {
        pw.set_hash_target(*t, *v)?;
    }
    Ok(())
}
